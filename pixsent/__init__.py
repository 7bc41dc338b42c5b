"""pixsent: Caffe-faithful replication of "From Pixels to Sentiment" on today's machines.

Layers of the package (each depends only on the ones above it):
  pixsent.formats  Caffe's file formats (prototxt, caffemodel, binaryproto, solverstate, LMDB/Datum)
  pixsent.data     image lists, convert_imageset, compute_image_mean, downloads (no paper knowledge)
  pixsent.engine   PyTorch executor of NetParameter/SolverParameter with Caffe's semantics
  pixsent.caffe    pycaffe-compatible facade (import pixsent.caffe as caffe) and net_spec builder
  pixsent.zoo      pre-trained models: registry, backbones, means
  pixsent.workflow the fold workflow: steps, stamps, run folders, evaluation, prediction
  pixsent.recipes  what the workflow trains: the paper's CaffeNet variants, the generated demo
  pixsent.analysis layer probes, net surgery, sentiment maps
  pixsent.distill  cross-modal distillation (text teacher -> image student)
  pixsent.cli      the `pixsent` command, Caffe's command line included
(docs/ARCHITECTURE.md; tests/test_layering.py checks it)
"""

__version__ = "0.1.0"
