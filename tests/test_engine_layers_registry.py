"""The layer registry covers Caffe 1.0's layer factory (every type BVLC Caffe 1.0 registers, 59) plus the
two BVLC master added later (Clip, Swish); ``Python`` may be missing until the Python-layer work lands."""

from __future__ import annotations

from pixsent.engine.layers import LAYERS

#: every type registered by BVLC Caffe 1.0's layer factory (REGISTER_LAYER_CLASS / REGISTER_LAYER_CREATOR)
CAFFE_1_0 = {
    "AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Concat", "ContrastiveLoss",
    "Convolution", "Crop", "Data", "Deconvolution", "Dropout", "DummyData", "ELU", "Eltwise", "Embed",
    "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Data", "HDF5Output", "HingeLoss", "Im2col", "ImageData",
    "InfogainLoss", "InnerProduct", "Input", "LRN", "LSTM", "LSTMUnit", "Log", "MVN", "MemoryData",
    "MultinomialLogisticLoss", "PReLU", "Parameter", "Pooling", "Power", "Python", "RNN", "Reduction", "ReLU",
    "Reshape", "SPP", "Scale", "Sigmoid", "SigmoidCrossEntropyLoss", "Silence", "Slice", "Softmax",
    "SoftmaxWithLoss", "Split", "TanH", "Threshold", "Tile", "WindowData",
}  # fmt: skip
BVLC_MASTER = {"Clip", "Swish"}
#: pixsent's own types (not Caffe's): documented in their modules
PIXSENT_ONLY = {"SoftmaxCrossEntropyLoss"}


def test_caffe_1_0_list_is_complete():
    assert len(CAFFE_1_0) == 59


def test_registry_lists_every_caffe_type():
    missing = (CAFFE_1_0 | BVLC_MASTER) - set(LAYERS) - {"Python"}
    assert not missing, sorted(missing)


def test_registry_has_no_unknown_types():
    assert set(LAYERS) - CAFFE_1_0 - BVLC_MASTER - PIXSENT_ONLY == set()


def test_registered_classes_carry_their_type():
    for name, cls in LAYERS.items():
        assert cls.type_name == name
