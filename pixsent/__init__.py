"""pixsent: Caffe-faithful replication of "From Pixels to Sentiment" on today's machines.

Layers of the package (each depends only on the ones above it):
  pixsent.formats  Caffe's file formats (prototxt, caffemodel, binaryproto, solverstate, LMDB/Datum)
  pixsent.data     image lists, convert_imageset, compute_image_mean, downloads (no paper knowledge)
  pixsent.engine   PyTorch executor of NetParameter/SolverParameter with Caffe's semantics
  pixsent.caffe    pycaffe-compatible facade (import pixsent.caffe as caffe) and net_spec builder
  pixsent.paper    the paper: variants, solvers, folds, evaluation, analysis, maps, distillation, tables
  pixsent.cli      the `pixsent` command
"""

__version__ = "0.1.0"
