"""Pre-trained Caffe models: the registry (models/registry.json), backbones, mean specifications."""
