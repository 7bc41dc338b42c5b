"""BVLC reference CaffeNet as net_spec calls, layer by layer, with BVLC's layer names so weights copy by name.

CaffeNet differs from AlexNet by pooling before LRN. Fillers are those of BVLC/caffe's
models/bvlc_reference_caffenet/train_val.prototxt as stored at commit 74bf4b72 (bias 0.4 for conv2, conv5,
fc6, fc7; 1 for conv4; 0.1 for fc8; older copies used 1 and 0): they only matter for a layer that is not
copied from a caffemodel, which in the paper's experiments is never an existing layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from pixsent.caffe.net_spec import NetSpec, Top, TopLike
from pixsent.caffe.net_spec import layers as L
from pixsent.caffe.net_spec import params as P
from pixsent.caffe.proto import caffe_pb2

# Parameter multipliers: (weights, bias) as ParamSpec dicts.
EXISTING_PARAMS = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
NEW_PARAMS = [dict(lr_mult=10, decay_mult=1), dict(lr_mult=20, decay_mult=0)]


@dataclass(frozen=True)
class Filler:
    """Gaussian weight std and constant bias of one layer."""

    std: float
    bias: float

    def kwargs(self) -> dict:
        return {
            "weight_filler": dict(type="gaussian", std=self.std),
            "bias_filler": dict(type="constant", value=self.bias),
        }


REFERENCE_FILLERS: dict[str, Filler] = {
    "conv1": Filler(0.01, 0.0),
    "conv2": Filler(0.01, 0.4),
    "conv3": Filler(0.01, 0.0),
    "conv4": Filler(0.01, 1.0),
    "conv5": Filler(0.01, 0.4),
    "fc6": Filler(0.005, 0.4),
    "fc7": Filler(0.005, 0.4),
    "fc8": Filler(0.01, 0.1),
}
NEW_LAYER_FILLER = Filler(0.01, 0.0)  # the paper's new layers: gaussian std 0.01, bias 0


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of the CaffeNet trunk."""

    name: str
    num_output: int
    kernel: int
    stride: int = 1
    pad: int = 0
    group: int = 1


TRUNK: tuple[ConvSpec, ...] = (
    ConvSpec("conv1", 96, 11, stride=4),
    ConvSpec("conv2", 256, 5, pad=2, group=2),
    ConvSpec("conv3", 384, 3, pad=1),
    ConvSpec("conv4", 384, 3, pad=1, group=2),
    ConvSpec("conv5", 256, 3, pad=1, group=2),
)
POOL_AFTER = {"conv1": ("pool1", "norm1"), "conv2": ("pool2", "norm2"), "conv5": ("pool5", None)}
LRN = dict(local_size=5, alpha=1e-4, beta=0.75)
DROPOUT_RATIO = 0.5


def _learning(name: str, new: bool, filler: Filler | None) -> dict:
    """param multipliers and fillers for a learnable layer: the paper's 10/20 for new ones."""
    chosen = filler or (NEW_LAYER_FILLER if new else REFERENCE_FILLERS.get(name, NEW_LAYER_FILLER))
    return {"param": NEW_PARAMS if new else EXISTING_PARAMS, **chosen.kwargs()}


def conv(
    n: NetSpec, spec: ConvSpec, bottom: TopLike, *, new: bool = False, filler: Filler | None = None
) -> Top:
    """Convolution named ``spec.name``; stride/pad/group written only when not Caffe's defaults."""
    shape: dict = {"num_output": spec.num_output}
    if spec.pad:
        shape["pad"] = spec.pad
    shape["kernel_size"] = spec.kernel
    if spec.group != 1:
        shape["group"] = spec.group
    if spec.stride != 1:
        shape["stride"] = spec.stride
    n[spec.name] = L.Convolution(bottom, **shape, **_learning(spec.name, new, filler))
    return n[spec.name]


def fc(n: NetSpec, name: str, bottom: TopLike, num_output: int, *, new: bool = False) -> Top:
    """InnerProduct layer; new layers get lr_mult 10/20 and the paper's fillers."""
    n[name] = L.InnerProduct(bottom, num_output=num_output, **_learning(name, new, None))
    return n[name]


def relu_dropout(n: NetSpec, index: str, top: Top, *, dropout: bool = True) -> Top:
    """In-place ``relu<index>`` (+ ``drop<index>``) on ``top``, as CaffeNet does after fc6/fc7."""
    n[f"relu{index}"] = L.ReLU(top, in_place=True)
    if dropout:
        n[f"drop{index}"] = L.Dropout(n[f"relu{index}"], in_place=True, dropout_ratio=DROPOUT_RATIO)
        return n[f"drop{index}"]
    return n[f"relu{index}"]


def trunk(n: NetSpec, data: TopLike) -> Top:
    """conv1 ... pool5 of CaffeNet on ``data``; returns pool5 (256 x 6 x 6 at 227 x 227)."""
    top: TopLike = data
    for index, spec in enumerate(TRUNK, start=1):
        out = conv(n, spec, top)
        n[f"relu{index}"] = L.ReLU(out, in_place=True)
        top = n[f"relu{index}"]
        if spec.name in POOL_AFTER:
            pool_name, norm_name = POOL_AFTER[spec.name]
            n[pool_name] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=3, stride=2)
            top = n[pool_name]
            if norm_name:
                n[norm_name] = L.LRN(top, **LRN)
                top = n[norm_name]
    return top  # type: ignore[return-value]


def hidden_fc(n: NetSpec, index: int, bottom: TopLike, width: int = 4096) -> Top:
    """``fc<index>`` -> ReLU -> Dropout 0.5 (CaffeNet's fc6 and fc7)."""
    out = fc(n, f"fc{index}", bottom, width)
    return relu_dropout(n, str(index), out)


def reference(n: NetSpec, data: TopLike, num_output: int = 1000) -> Top:
    """The whole reference CaffeNet on ``data`` with an ``fc8`` of ``num_output``; returns fc8."""
    top = hidden_fc(n, 7, hidden_fc(n, 6, trunk(n, data)))
    return fc(n, "fc8", top, num_output)


def reference_deploy(
    num_outputs: int = 1000, *, name: str = "CaffeNet", batch_size: int = 10
) -> caffe_pb2.NetParameter:
    """Deploy net of an unmodified CaffeNet-architecture model (CaffeNet, Places205, DeepSentiBank, MVSO)."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch_size, 3, 227, 227]))
    n.prob = L.Softmax(reference(n, n.data, num_outputs))
    return n.to_proto(name=name)
