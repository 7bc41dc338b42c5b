"""pixsent's engine: Caffe nets and solvers executed with PyTorch (CPU or CUDA)."""
