"""Layer semantics vs numpy references of Caffe's loops (tolerance 1e-5 relative unless stated)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.net import Net
from pixsent.errors import NetError

RNG = np.random.default_rng(7)


def make_net(text: str, phase: int = caffe_pb2.TEST, **kw) -> Net:
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase, **kw)


def input_layer(shapes: dict[str, tuple[int, ...]]) -> str:
    tops = "".join(f' top: "{n}"' for n in shapes)
    dims = "".join("shape {" + "".join(f" dim: {d}" for d in s) + " }" for s in shapes.values())
    return f'layer {{ name: "in" type: "Input" {tops} input_param {{ {dims} }} }}\n'


def run(net: Net, **inputs: np.ndarray) -> Net:
    for k, v in inputs.items():
        net.blobs[k].data[...] = v
    net.forward()
    return net


def close(a, b, tol=1e-5) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1.0), np.abs(a - b).max()


# ---------------------------------------------------------------- pooling
def caffe_pool(x: np.ndarray, k: int, s: int, p: int, method: str, ceil: bool = True) -> np.ndarray:
    """Caffe's pooling_layer.cpp loops, written out in numpy."""
    n, c, h, w = x.shape

    def size(d: int) -> int:
        num = d + 2 * p - k
        out = (-(-num // s) if ceil else num // s) + 1
        if p and (out - 1) * s >= d + p:
            out -= 1
        return out

    oh, ow = size(h), size(w)
    y = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            y[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / area
    return y


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(
    "h,w,k,s,p,ceil",
    [
        (16, 16, 3, 2, 1, True),
        (36, 36, 3, 2, 0, True),
        (7, 9, 3, 2, 1, True),
        (10, 11, 4, 3, 2, True),
        (13, 13, 3, 2, 1, False),
        (8, 8, 5, 2, 4, True),
        (6, 6, 2, 2, 1, True),
    ],
)
def test_pooling_matches_caffe_loops(method, h, w, k, s, p, ceil):
    x = RNG.normal(size=(2, 3, h, w)).astype(np.float32)
    rm = "" if ceil else "round_mode: FLOOR"
    net = make_net(
        input_layer({"x": x.shape})
        + f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ pool: {method} '
        f"kernel_size: {k} stride: {s} pad: {p} {rm} }} }}"
    )
    close(run(net, x=x).blobs["y"].data, caffe_pool(x, k, s, p, method, ceil))


def test_pooling_ceil_and_divisor_at_both_borders():
    # 16 -> 9 with k3 s2 p1: first window rows -1..1 (divisor 3), last rows 15..17 cut at 17 (divisor 2)
    x = np.ones((1, 1, 16, 16), np.float32)
    net = make_net(
        input_layer({"x": x.shape})
        + 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE kernel_size: 3 '
        "stride: 2 pad: 1 } }"
    )
    y = run(net, x=x).blobs["y"].data[0, 0]
    assert y.shape == (9, 9)
    assert y[0, 0] == pytest.approx(4 / 9) and y[-1, -1] == pytest.approx(1 / 4) and y[4, 4] == 1


def test_pooling_explicit_path_equals_native():
    from pixsent.engine.layers.vision import Pooling

    x = torch.from_numpy(RNG.normal(size=(2, 3, 16, 15)).astype(np.float32))
    lp = text_format.Parse(
        'name: "p" type: "Pooling" bottom: "x" top: "y" '
        "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
        caffe_pb2.LayerParameter(),
    )
    from pixsent.engine.context import NetContext

    layer = Pooling(lp, NetContext())
    layer.setup([tuple(x.shape)])
    close(layer._ave_explicit(x, layer.kernel), layer._ave(x, layer.kernel))


def test_global_pooling():
    x = RNG.normal(size=(2, 4, 5, 7)).astype(np.float32)
    net = make_net(
        input_layer({"x": x.shape}) + 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
        "pooling_param { pool: AVE global_pooling: true } }"
    )
    close(run(net, x=x).blobs["y"].data, x.mean(axis=(2, 3), keepdims=True))


@pytest.mark.parametrize(
    "fields",
    [
        "kernel_size: 3 pad_h: 1",  # pixsent used to pool with pad (1, 0); OpenCV pools with pad (0, 0)
        "kernel_size: 3 pad_w: 1",
        "kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1",
        "kernel_size: 3 stride: 2 stride_h: 2 stride_w: 1",
        "kernel_size: 3 kernel_h: 3 kernel_w: 2",
        "global_pooling: true kernel_size: 3",
    ],
)
def test_pooling_refuses_what_caffe_refuses(fields):
    """pooling_layer.cpp LayerSetUp: the plain field or both _h and _w, and no kernel with global pooling."""
    text = input_layer({"x": (1, 2, 8, 9)}) + (
        f'layer {{ name: "pool9" type: "Pooling" bottom: "x" top: "y" pooling_param {{ {fields} }} }}'
    )
    with pytest.raises(NetError, match="pool9"):
        make_net(text)


def test_pooling_hw_pair_equals_plain_fields():
    x = RNG.normal(size=(1, 2, 8, 9)).astype(np.float32)
    nets = [
        make_net(
            input_layer({"x": x.shape}) + 'layer { name: "p" type: "Pooling" bottom: "x" top: "y" '
            f"pooling_param {{ pool: AVE {f} }} }}"
        )
        for f in (
            "kernel_size: 3 pad: 1 stride: 2",
            "kernel_h: 3 kernel_w: 3 pad_h: 1 pad_w: 1 stride_h: 2 stride_w: 2",
        )
    ]
    a, b = (run(n, x=x).blobs["y"].data for n in nets)
    assert a.shape == (1, 2, 5, 5) and np.array_equal(a, b)


# ---------------------------------------------------------------- LRN
def test_lrn_across_channels():
    x = RNG.normal(size=(2, 7, 4, 5)).astype(np.float32) * 3
    net = make_net(
        input_layer({"x": x.shape}) + 'layer { name: "n" type: "LRN" bottom: "x" top: "y" '
        "lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 } }"
    )
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    s = sum(sq[:, i : i + 7] for i in range(5))
    close(run(net, x=x).blobs["y"].data, x * (2 + 0.1 / 5 * s) ** -0.75)


def test_lrn_within_channel():
    x = RNG.normal(size=(2, 3, 6, 5)).astype(np.float32) * 3
    net = make_net(
        input_layer({"x": x.shape}) + 'layer { name: "n" type: "LRN" bottom: "x" top: "y" '
        "lrn_param { local_size: 3 alpha: 0.2 beta: 0.75 "
        "norm_region: WITHIN_CHANNEL k: 5 } }"
    )
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (0, 0), (1, 1), (1, 1)))
    s = sum(sq[:, :, i : i + 6, j : j + 5] for i in range(3) for j in range(3))
    close(run(net, x=x).blobs["y"].data, x * (1 + 0.2 / 9 * s) ** -0.75)  # k unused, as in Caffe


# ---------------------------------------------------------------- losses and accuracy
def softmax_loss_net(extra: str, n: int = 4, c: int = 3) -> Net:
    return make_net(
        input_layer({"x": (n, c), "l": (n,)})
        + f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" {extra} }}',
        caffe_pb2.TRAIN,
        **{},
    )


@pytest.mark.parametrize(
    "extra,norm",
    [
        ("", 3),
        ("loss_param { normalization: FULL }", 4),
        ("loss_param { normalization: BATCH_SIZE }", 4),
        ("loss_param { normalization: NONE }", 1),
        ("loss_param { normalize: false }", 4),
        ("loss_param { normalization: VALID }", 3),
    ],
)
def test_softmax_loss_ignore_label_and_normalization(extra, norm):
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    lab = np.array([0, 2, 1, 1], np.float32)
    if "ignore" not in extra:
        extra = (
            extra.replace("loss_param {", "loss_param { ignore_label: 1")
            if extra
            else "loss_param { ignore_label: 1 }"
        )
    net = softmax_loss_net(extra)
    net.keep_blob_diffs = True
    run(net, x=x, l=lab)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    valid = lab != 1
    # label 1 is ignored: 3 valid of 4 ... except the 2 rows labelled 1 -> 2 valid
    valid_count = valid.sum()
    expect_norm = {3: valid_count, 4: 4, 1: 1}[norm]
    loss = -np.log(p[np.arange(4), lab.astype(int)])[valid].sum() / expect_norm
    assert net.blobs["loss"].data == pytest.approx(loss, rel=1e-5)
    net.backward()
    grad = p.copy()
    grad[np.arange(4), lab.astype(int)] -= 1
    grad[~valid] = 0
    close(net.blobs["x"].diff, grad / expect_norm)


def test_softmax_loss_clamps_at_flt_min_but_keeps_gradient():
    x = np.array([[0.0, 200.0]], np.float32)
    net = softmax_loss_net("", n=1, c=2)
    net.keep_blob_diffs = True
    run(net, x=x, l=np.array([0], np.float32))
    assert float(net.blobs["loss"].data) == pytest.approx(-np.log(np.finfo(np.float32).tiny), rel=1e-6)
    net.backward()
    close(net.blobs["x"].diff, np.array([[-1.0, 1.0]]))


def test_loss_weight_scales_loss_and_gradient():
    x = RNG.normal(size=(4, 3)).astype(np.float32)
    lab = np.array([0, 2, 1, 1], np.float32)
    a = softmax_loss_net("")
    b = softmax_loss_net("loss_weight: 2.5")
    for net in (a, b):
        net.keep_blob_diffs = True
        for k, v in {"x": x, "l": lab}.items():
            net.blobs[k].data[...] = v
    la, lb = a.forward(), b.forward()
    assert lb == pytest.approx(2.5 * la, rel=1e-6)
    a.backward()
    b.backward()
    close(b.blobs["x"].diff, 2.5 * a.blobs["x"].diff)


def accuracy_net(extra: str, n: int, c: int) -> Net:
    return make_net(
        input_layer({"x": (n, c), "l": (n,)})
        + f'layer {{ name: "acc" type: "Accuracy" bottom: "x" bottom: "l" top: "acc" {extra} }}'
    )


def test_accuracy_top_k_and_tie_rule():
    x = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]], np.float32)
    lab = np.array([2, 0, 2, 0], np.float32)
    top1 = run(accuracy_net("", 4, 3), x=x, l=lab).blobs["acc"].data
    assert float(top1) == pytest.approx(0.5)  # rows 2 and 3 right
    top2 = run(accuracy_net("accuracy_param { top_k: 2 }", 4, 3), x=x, l=lab).blobs["acc"].data
    # row 1: class 0 ties class 1 (0.3) and 0.4 is above -> 2 classes >= -> wrong even at top 2
    assert float(top2) == pytest.approx(0.75)
    tie = np.array([[0.5, 0.5]], np.float32)
    assert float(run(accuracy_net("", 1, 2), x=tie, l=np.array([0], np.float32)).blobs["acc"].data) == 0.0
    ign = run(accuracy_net("accuracy_param { ignore_label: 0 }", 4, 3), x=x, l=lab).blobs["acc"].data
    assert float(ign) == pytest.approx(0.5)  # rows 0 (wrong) and 2 (right)


def test_euclidean_loss():
    a, b = RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=(3, 4)).astype(np.float32)
    net = make_net(
        input_layer({"a": (3, 4), "b": (3, 4)})
        + 'layer { name: "e" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }',
        caffe_pb2.TRAIN,
    )
    net.keep_blob_diffs = True
    run(net, a=a, b=b)
    assert float(net.blobs["loss"].data) == pytest.approx(((a - b) ** 2).sum() / 6, rel=1e-5)
    net.backward()
    close(net.blobs["a"].diff, (a - b) / 3)
    close(net.blobs["b"].diff, (b - a) / 3)


# ---------------------------------------------------------------- dropout
def test_dropout_scales_in_train_identity_in_test():
    x = np.ones((4, 1000), np.float32)
    text = input_layer({"x": x.shape}) + (
        'layer { name: "d" type: "Dropout" bottom: "x" top: "x" dropout_param { dropout_ratio: 0.25 } }'
    )
    y = run(make_net(text, caffe_pb2.TRAIN, seed=3), x=x).blobs["x"].data
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.03  # 4000 draws: 3 sigma ~ 0.02
    assert np.array_equal(run(make_net(text, caffe_pb2.TEST), x=x).blobs["x"].data, x)


# ---------------------------------------------------------------- common layers
def test_concat_slice_split_flatten_reshape():
    a = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    b = RNG.normal(size=(2, 2, 4, 5)).astype(np.float32)
    net = make_net(
        input_layer({"a": a.shape, "b": b.shape})
        + """
        layer { name: "c" type: "Concat" bottom: "a" bottom: "b" top: "c" }
        layer { name: "s" type: "Slice" bottom: "c" top: "s1" top: "s2" top: "s3"
                slice_param { axis: 1 slice_point: 1 slice_point: 4 } }
        layer { name: "sp" type: "Split" bottom: "s2" top: "t1" top: "t2" }
        layer { name: "f" type: "Flatten" bottom: "t1" top: "f" }
        layer { name: "r" type: "Reshape" bottom: "t2" top: "r"
                reshape_param { shape { dim: 0 dim: -1 dim: 5 } } }
        layer { name: "r2" type: "Reshape" bottom: "s3" top: "r2"
                reshape_param { axis: 2 shape { dim: 20 } } }
        """
    )
    run(net, a=a, b=b)
    c = np.concatenate([a, b], 1)
    close(net.blobs["c"].data, c)
    close(net.blobs["s1"].data, c[:, :1])
    close(net.blobs["f"].data, c[:, 1:4].reshape(2, -1))
    close(net.blobs["r"].data, c[:, 1:4].reshape(2, 12, 5))
    close(net.blobs["r2"].data, c[:, 4:].reshape(2, 1, 20))
    assert net.blobs["r"].shape == (2, 12, 5)
    assert sorted(net.outputs) == ["f", "r", "r2", "s1"]


@pytest.mark.parametrize(
    "op,expect",
    [
        ("operation: SUM coeff: 2 coeff: -1", lambda a, b: 2 * a - b),
        ("operation: PROD", lambda a, b: a * b),
        ("operation: MAX", np.maximum),
    ],
)
def test_eltwise(op, expect):
    a, b = RNG.normal(size=(2, 3, 4)).astype(np.float32), RNG.normal(size=(2, 3, 4)).astype(np.float32)
    net = make_net(
        input_layer({"a": a.shape, "b": b.shape})
        + f'layer {{ name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "y" eltwise_param {{ {op} }} }}'
    )
    close(run(net, a=a, b=b).blobs["y"].data, expect(a, b))


def test_scale_bias_power_prelu():
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    net = make_net(
        input_layer({"x": x.shape})
        + """
        layer { name: "sc" type: "Scale" bottom: "x" top: "sc"
                scale_param { bias_term: true filler { type: "uniform" } bias_filler { type: "gaussian" } } }
        layer { name: "bi" type: "Bias" bottom: "x" top: "bi"
                bias_param { axis: 2 num_axes: 2 filler { type: "gaussian" } } }
        layer { name: "pw" type: "Power" bottom: "x" top: "pw" power_param { power: 2 scale: 0.5 shift: 3 } }
        layer { name: "pr" type: "PReLU" bottom: "x" top: "pr" prelu_param { filler { type: "uniform" } } }
        """
    )
    run(net, x=x)
    s, b = net.params["sc"][0].data, net.params["sc"][1].data
    assert s.shape == (3,) and b.shape == (3,)
    close(net.blobs["sc"].data, x * s[:, None, None] + b[:, None, None])
    bb = net.params["bi"][0].data
    assert bb.shape == (4, 5)
    close(net.blobs["bi"].data, x + bb)
    close(net.blobs["pw"].data, (3 + 0.5 * x) ** 2)
    a = net.params["pr"][0].data
    close(net.blobs["pr"].data, np.maximum(x, 0) + a[:, None, None] * np.minimum(x, 0))


def test_batchnorm_train_updates_running_stats_and_test_uses_them():
    x = RNG.normal(loc=2.0, size=(4, 3, 2, 2)).astype(np.float32)
    text = input_layer({"x": x.shape}) + (
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
        "batch_norm_param { moving_average_fraction: 0.9 } }"
    )
    tr = run(make_net(text, caffe_pb2.TRAIN), x=x)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3))
    close(tr.blobs["x"].data, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5))
    m = 4 * 2 * 2
    close(tr.params["bn"][0].data, mean)
    close(tr.params["bn"][1].data, var * m / (m - 1))
    close(tr.params["bn"][2].data, [1.0])
    assert [p.lr_mult for p in tr.layers[1].param.param] == [0, 0, 0]
    te = make_net(text, caffe_pb2.TEST)
    te.share_weights(tr)
    run(te, x=x)
    v = var * m / (m - 1)
    close(te.blobs["x"].data, (x - mean[:, None, None]) / np.sqrt(v[:, None, None] + 1e-5))


def test_deconvolution_matches_numpy_scatter():
    x = RNG.normal(size=(1, 2, 3, 3)).astype(np.float32)
    net = make_net(
        input_layer({"x": x.shape})
        + 'layer { name: "d" type: "Deconvolution" bottom: "x" top: "y" convolution_param { num_output: 3 '
        'kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "gaussian" } '
        'bias_filler { type: "gaussian" } } }'
    )
    run(net, x=x)
    w, b = net.params["d"][0].data, net.params["d"][1].data
    assert w.shape == (2, 3, 3, 3)
    full = np.zeros((1, 3, 7, 7))
    for ci in range(2):
        for i in range(3):
            for j in range(3):
                full[0, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += x[0, ci, i, j] * w[ci]
    expect = full[:, :, 1:6, 1:6] + b[None, :, None, None]
    close(net.blobs["y"].data, expect)


def test_inner_product_axis_and_transpose():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    net = make_net(
        input_layer({"x": x.shape})
        + """
        layer { name: "a" type: "InnerProduct" bottom: "x" top: "a"
                inner_product_param { num_output: 5 axis: 2 weight_filler { type: "gaussian" } } }
        layer { name: "t" type: "InnerProduct" bottom: "x" top: "t"
                inner_product_param { num_output: 5 transpose: true weight_filler { type: "gaussian" } } }
        """
    )
    run(net, x=x)
    wa = net.params["a"][0].data
    assert wa.shape == (5, 4) and net.blobs["a"].shape == (2, 3, 5)
    close(net.blobs["a"].data, x @ wa.T)
    wt = net.params["t"][0].data
    assert wt.shape == (12, 5)
    close(net.blobs["t"].data, x.reshape(2, 12) @ wt)


# ---------------------------------------------------------------- net-level semantics
FILTER_NET = """
state { stage: "deploy" }
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "b" include { phase: TEST } }
layer { name: "lvl" type: "ReLU" bottom: "x" top: "c" include { min_level: 2 } }
layer { name: "staged" type: "ReLU" bottom: "x" top: "d" include { stage: "deploy" stage: "extra" } }
layer { name: "not_deploy" type: "ReLU" bottom: "x" top: "e" exclude { stage: "deploy" } }
layer { name: "maxlvl" type: "ReLU" bottom: "x" top: "f" include { max_level: 1 } }
layer { name: "notstage" type: "ReLU" bottom: "x" top: "g" include { not_stage: "extra" } }
"""


@pytest.mark.parametrize(
    "phase,level,stages,expect",
    [
        (caffe_pb2.TRAIN, 0, (), ["in", "train_only", "maxlvl", "notstage"]),
        (caffe_pb2.TEST, 0, (), ["in", "test_only", "maxlvl", "notstage"]),
        (caffe_pb2.TEST, 2, ("extra",), ["in", "test_only", "lvl", "staged"]),
    ],
)
def test_filter_rules(phase, level, stages, expect):
    net = make_net(FILTER_NET, phase, level=level, stages=stages)
    # x feeds the three layers kept, so Caffe's split layer follows "in" (insert_splits runs after FilterNet)
    assert net.layer_names == [expect[0], "x_in_0_split", *expect[1:]]


def test_shared_params_by_name_are_one_tensor():
    net = make_net(
        input_layer({"x": (2, 4)})
        + """
        layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" lr_mult: 3 }
                inner_product_param { num_output: 4 bias_term: false weight_filler { type: "gaussian" } } }
        layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" }
                inner_product_param { num_output: 4 bias_term: false weight_filler { type: "gaussian" } } }
        layer { name: "l" type: "EuclideanLoss" bottom: "b" bottom: "x" top: "loss" }
        """,
        caffe_pb2.TRAIN,
    )
    layer = dict(zip(net.layer_names, net.layers))
    assert layer["a"].blobs[0] is layer["b"].blobs[0]
    assert net.learnable_param_names == ["a/0"] and net.params_lr == [3.0]
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    net.backward()
    w = torch.tensor(net.params["a"][0].data.copy(), requires_grad=True)
    xt = torch.from_numpy(x)
    ((xt @ w.T @ w.T - xt) ** 2).sum().div(4).backward()
    close(net.params["a"][0].diff, w.grad.numpy())


def test_copy_shape_mismatch_names_layer_and_shapes(tmp_path):
    text = input_layer({"x": (1, 4)}) + (
        'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
        "inner_product_param { num_output: %d } }"
    )
    src = make_net(text % 3)
    src.save(tmp_path / "w.caffemodel")
    with pytest.raises(NetError, match=r"'fc'.*\(3, 4\).*\(5, 4\)"):
        make_net(text % 5).copy_trained_layers_from(str(tmp_path / "w.caffemodel"))
    dst = make_net(text % 3)
    dst.copy_trained_layers_from(f"{tmp_path / 'w.caffemodel'},{tmp_path / 'w.caffemodel'}")
    assert np.array_equal(dst.params["fc"][0].data, src.params["fc"][0].data)


def test_propagate_down_false_stops_gradient():
    net = make_net(
        input_layer({"a": (2, 3), "b": (2, 3)})
        + 'layer { name: "e" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" '
        "propagate_down: true propagate_down: false }",
        caffe_pb2.TRAIN,
    )
    net.keep_blob_diffs = True
    run(net, a=np.ones((2, 3), np.float32), b=np.zeros((2, 3), np.float32))
    net.backward()
    assert net.blobs["a"].diff.any() and not net.blobs["b"].diff.any()


@pytest.mark.parametrize(
    "name", ["constant", "uniform", "gaussian", "xavier", "msra", "bilinear", "positive_unitball"]
)
def test_fillers_statistics(name):
    from pixsent.engine.fillers import fill

    p = caffe_pb2.FillerParameter(type=name, value=0.5, min=-2, max=2, std=0.3)
    g = torch.Generator().manual_seed(0)
    shape = (64, 32, 4, 4)
    v = fill(shape, p, g).numpy()
    assert v.shape == shape
    fan_in = 32 * 16
    if name == "constant":
        assert (v == 0.5).all()
    elif name == "uniform":
        assert v.min() >= -2 and v.max() <= 2 and abs(v.mean()) < 0.05
    elif name == "gaussian":
        assert abs(v.std() - 0.3) < 0.01
    elif name == "xavier":
        assert np.abs(v).max() <= np.sqrt(3 / fan_in) and abs(v.std() - np.sqrt(1 / fan_in)) < 0.002
    elif name == "msra":
        assert abs(v.std() - np.sqrt(2 / fan_in)) < 0.002
    elif name == "bilinear":
        assert v[0, 0, 0, 0] == pytest.approx(0.0625) and v[0, 0, 1, 1] == pytest.approx(0.5625)
    else:
        assert (v >= 0).all()
        close(v.reshape(64, -1).sum(1), np.ones(64))


def test_sparse_gaussian_keeps_expected_share():
    from pixsent.engine.fillers import fill

    p = caffe_pb2.FillerParameter(type="gaussian", sparse=8)
    v = fill((64, 1000), p, torch.Generator().manual_seed(0)).numpy()
    assert abs((v != 0).mean() - 8 / 64) < 0.01
