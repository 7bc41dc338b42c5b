"""RNN, LSTM and LSTMUnit against numpy versions of Caffe's unrolled nets (rnn_layer.cpp, lstm_layer.cpp,
lstm_unit_layer.cpp); gradients by central finite differences in float64 (relative error <= 1e-6) and,
where Caffe's LSTMUnit backward is not the exact one (non-binary cont), against its formula (<= 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from layer_harness import build, check_gradients, input_layer, net_from, rel, t64

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

RNG = np.random.default_rng(29)
FILL = (
    'weight_filler { type: "uniform" min: -0.5 max: 0.5 } bias_filler { type: "uniform" min: -0.5 max: 0.5 }'
)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def np_rnn(x, cont, params, h0, static=None):
    if static is None:
        w_xh, b_h, w_hh, w_ho, b_o = params
        extra = 0
    else:
        w_xh, b_h, w_s, w_hh, w_ho, b_o = params
        extra = static.reshape(static.shape[0], -1) @ w_s.T
    t_, n = x.shape[:2]
    xw = x.reshape(t_, n, -1) @ w_xh.T + b_h
    h, outs = h0, []
    for t in range(t_):
        h = np.tanh((cont[t][:, None] * h) @ w_hh.T + xw[t] + extra)
        outs.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(outs), h


def np_lstm_unit(c_prev, gates, cont):
    hdim = c_prev.shape[1]
    i = sigmoid(gates[:, :hdim])
    f = np.where(cont[:, None] == 0, 0.0, cont[:, None] * sigmoid(gates[:, hdim : 2 * hdim]))
    o = sigmoid(gates[:, 2 * hdim : 3 * hdim])
    g = np.tanh(gates[:, 3 * hdim :])
    c = f * c_prev + i * g
    return c, o * np.tanh(c)


def np_lstm(x, cont, params, h0, c0, static=None):
    if static is None:
        w_xc, b_c, w_hc = params
        extra = 0
    else:
        w_xc, b_c, w_s, w_hc = params
        extra = static.reshape(static.shape[0], -1) @ w_s.T
    t_, n = x.shape[:2]
    xw = x.reshape(t_, n, -1) @ w_xc.T + b_c
    h, c, outs = h0, c0, []
    for t in range(t_):
        c, h = np_lstm_unit(c, (cont[t][:, None] * h) @ w_hc.T + xw[t] + extra, cont[t])
        outs.append(h)
    return np.stack(outs), h, c


T, N, D, H = 4, 3, 5, 2
CONT = np.array([[0, 0, 1], [1, 1, 0], [1, 0, 1], [1, 1, 1]], np.float64)  # 0 starts a sequence


def params64(layer):
    layer.blobs = [b.detach().double().requires_grad_(True) for b in layer.blobs]
    return layer.blobs


@pytest.mark.parametrize("static", [False, True])
def test_rnn_exposed_forward_and_gradients(static):
    shapes = [(T, N, D, 1), (T, N)] + ([(N, 3)] if static else []) + [(1, N, H)]
    layer, tops = build(
        f'type: "RNN" top: "o" top: "hT" recurrent_param {{ num_output: {H} expose_hidden: true {FILL} }}',
        shapes,
    )
    assert tops == [(T, N, H), (1, N, H)]
    want_shapes = [(H, D), (H,)] + ([(H, 3)] if static else []) + [(H, H), (H, H), (H,)]
    assert [tuple(b.shape) for b in layer.blobs] == want_shapes  # W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o
    params = params64(layer)
    x, h0 = RNG.normal(size=(T, N, D, 1)), RNG.normal(size=(1, N, H))
    s = RNG.normal(size=(N, 3)) if static else None
    bottoms = [t64(x, True), t64(CONT)] + ([t64(s, True)] if static else []) + [t64(h0, True)]
    o, h_t = layer.forward(bottoms)
    want_o, want_h = np_rnn(x, CONT, [p.detach().numpy() for p in params], h0[0], s)
    assert rel(o.detach(), want_o) <= 1e-12 and rel(h_t.detach()[0], want_h) <= 1e-12
    wrt = [bottoms[0], bottoms[-1]] + ([bottoms[2]] if static else []) + params
    check_gradients(layer, bottoms, wrt)


@pytest.mark.parametrize("static", [False, True])
def test_lstm_exposed_forward_and_gradients(static):
    shapes = [(T, N, D), (T, N)] + ([(N, 2, 2)] if static else []) + [(1, N, H), (1, N, H)]
    layer, tops = build(
        f'type: "LSTM" top: "h" top: "hT" top: "cT" '
        f"recurrent_param {{ num_output: {H} expose_hidden: true {FILL} }}",
        shapes,
    )
    assert tops == [(T, N, H), (1, N, H), (1, N, H)]
    assert [tuple(b.shape) for b in layer.blobs] == [(4 * H, D), (4 * H,)] + (
        [(4 * H, 4)] if static else []
    ) + [(4 * H, H)]
    params = params64(layer)
    x, h0, c0 = RNG.normal(size=(T, N, D)), RNG.normal(size=(1, N, H)), RNG.normal(size=(1, N, H))
    s = RNG.normal(size=(N, 2, 2)) if static else None
    bottoms = [t64(x, True), t64(CONT)] + ([t64(s, True)] if static else []) + [t64(h0, True), t64(c0, True)]
    h, h_t, c_t = layer.forward(bottoms)
    want_h, want_ht, want_ct = np_lstm(x, CONT, [p.detach().numpy() for p in params], h0[0], c0[0], s)
    assert rel(h.detach(), want_h) <= 1e-12
    assert rel(h_t.detach()[0], want_ht) <= 1e-12 and rel(c_t.detach()[0], want_ct) <= 1e-12
    wrt = [bottoms[0]] + bottoms[-2:] + ([bottoms[2]] if static else []) + params
    check_gradients(layer, bottoms, wrt)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_hidden_state_carries_across_forwards(kind):
    """Without expose_hidden a forward starts from the last one's final state (zeros at first); cont 0
    discards it; no gradient crosses between forwards."""
    layer, _ = build(f'type: "{kind}" recurrent_param {{ num_output: {H} {FILL} }}', [(T, N, D), (T, N)])
    params = params64(layer)
    pv = [p.detach().numpy() for p in params]
    x1, x2 = t64(RNG.normal(size=(T, N, D)), True), t64(RNG.normal(size=(T, N, D)), True)
    cont = np.ones((T, N))
    cont[0, 0] = 0  # stream 0 restarts at the second forward, streams 1 and 2 continue
    zeros = np.zeros((N, H))
    out1 = layer.forward([x1, t64(cont)])[0]
    out2 = layer.forward([x2, t64(cont)])[0]
    if kind == "RNN":
        want1, h1 = np_rnn(x1.detach().numpy(), cont, pv, zeros)
        want2, _ = np_rnn(x2.detach().numpy(), cont, pv, h1)
    else:
        want1, h1, c1 = np_lstm(x1.detach().numpy(), cont, pv, zeros, zeros)
        want2, _, _ = np_lstm(x2.detach().numpy(), cont, pv, h1, c1)
    assert rel(out1.detach(), want1) <= 1e-12 and rel(out2.detach(), want2) <= 1e-12
    out2.sum().backward()
    assert x1.grad is None and x2.grad is not None


def test_lstm_unit_layer_and_caffe_gradient_for_non_binary_cont():
    layer, tops = build('type: "LSTMUnit" top: "c" top: "h"', [(1, N, H), (1, N, 4 * H), (1, N)])
    assert tops == [(1, N, H), (1, N, H)]
    c_prev, gates = t64(RNG.normal(size=(1, N, H)), True), t64(RNG.normal(size=(1, N, 4 * H)), True)
    cont = t64([[1.0, 0.0, 1.0]], True)
    c, h = layer.forward([c_prev, gates, cont])
    want_c, want_h = np_lstm_unit(
        c_prev.detach().numpy()[0], gates.detach().numpy()[0], cont.detach().numpy()[0]
    )
    assert rel(c.detach()[0], want_c) <= 1e-12 and rel(h.detach()[0], want_h) <= 1e-12
    check_gradients(layer, [c_prev, gates, cont], [c_prev, gates])
    assert cont.grad is None
    # cont 0.5: Caffe's df uses f (1 - f) with f = cont * sigmoid, not cont * sigmoid (1 - sigmoid)
    cont = t64([[0.5, 0.5, 0.5]])
    c_prev.grad = gates.grad = None
    c, h = layer.forward([c_prev, gates, cont])
    dc, dh = RNG.normal(size=(1, N, H)), RNG.normal(size=(1, N, H))
    torch.autograd.backward([c, h], [torch.tensor(dc), torch.tensor(dh)])
    x, cp = gates.detach().numpy()[0], c_prev.detach().numpy()[0]
    i, f = sigmoid(x[:, :H]), 0.5 * sigmoid(x[:, H : 2 * H])
    o, g = sigmoid(x[:, 2 * H : 3 * H]), np.tanh(x[:, 3 * H :])
    tanh_c = np.tanh(f * cp + i * g)
    term = dc[0] + dh[0] * o * (1 - tanh_c**2)
    want_dx = np.concatenate(
        [
            term * g * i * (1 - i),
            term * cp * f * (1 - f),
            dh[0] * tanh_c * o * (1 - o),
            term * i * (1 - g * g),
        ],
        1,
    )
    assert rel(gates.grad.numpy()[0], want_dx) <= 1e-12
    assert rel(c_prev.grad.numpy()[0], term * f) <= 1e-12


@pytest.mark.parametrize(
    "text,shapes,match",
    [
        ('type: "RNN" recurrent_param { num_output: 0 }', [(T, N, D), (T, N)], "num_output must be positive"),
        (f'type: "RNN" recurrent_param {{ num_output: {H} }}', [(T, N, D), (T, N + 1)], "cont must be"),
        (f'type: "RNN" recurrent_param {{ num_output: {H} }}', [(T,), (T, N)], "at least 2 axes"),
        (f'type: "LSTM" recurrent_param {{ num_output: {H} }}', [(T, N, D)], "takes 2 to 3 bottoms"),
        (
            f'type: "LSTM" top: "h" recurrent_param {{ num_output: {H} expose_hidden: true }}',
            [(T, N, D), (T, N), (1, N, H), (1, N, H)],
            "makes 3 tops",
        ),
        (
            f'type: "RNN" top: "o" top: "h" recurrent_param {{ num_output: {H} expose_hidden: true }}',
            [(T, N, D), (T, N), (1, N, H + 1)],
            "initial state",
        ),
        (
            f'type: "RNN" propagate_down: true propagate_down: true recurrent_param {{ num_output: {H} }}',
            [(T, N, D), (T, N)],
            "sequence indicators",
        ),
        ('type: "LSTMUnit" top: "c" top: "h"', [(1, N, H), (1, N, 3 * H), (1, N)], "do not agree"),
    ],
)
def test_recurrent_checks(text, shapes, match):
    with pytest.raises(NetError, match=match):
        build(text, shapes)


def test_timesteps_cannot_change_and_caffemodel_roundtrip(tmp_path):
    text = (
        input_layer({"x": (T, N, D), "cont": (T, N)})
        + f'layer {{ name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
        f"recurrent_param {{ num_output: {H} {FILL} }} }}\n"
    )
    net = net_from(text, caffe_pb2.TRAIN)
    net.save(tmp_path / "m.caffemodel")
    saved = caffe_pb2.NetParameter.FromString((tmp_path / "m.caffemodel").read_bytes())
    assert [list(b.shape.dim) for b in saved.layer[1].blobs] == [[4 * H, D], [4 * H], [4 * H, H]]
    other = net_from(text, caffe_pb2.TEST, weights=str(tmp_path / "m.caffemodel"))
    x = RNG.normal(size=(T, N, D))
    for n in (net, other):
        n.blobs["x"].data[...] = x
        n.blobs["cont"].data[...] = CONT
        n.forward()
    assert rel(other.blobs["h"].data, net.blobs["h"].data) == 0
    net.blobs["x"].reshape(T + 1, N, D)
    with pytest.raises(NetError, match="timesteps changed"):
        net.reshape()


@pytest.mark.slow
def test_solver_trains_an_embed_lstm_net_from_hdf5(tmp_path):
    """End to end: HDF5Data -> Embed -> LSTM -> InnerProduct -> SoftmaxWithLoss under the Adam solver learns
    to output the previous token of each stream (which needs the recurrent state)."""
    h5py = pytest.importorskip("h5py")
    from google.protobuf import text_format

    from pixsent.engine.solvers import make_solver

    t_, n, vocab = 5, 8, 6
    tok = RNG.integers(0, vocab, size=(20, t_, n)).astype(np.float32)
    prev = np.concatenate([np.zeros_like(tok[:, :1]), tok[:, :-1]], axis=1)
    cont = np.ones_like(tok)
    cont[:, 0] = 0
    with h5py.File(tmp_path / "d.h5", "w") as fh:
        fh["tok"], fh["cont"], fh["label"] = tok.reshape(-1), cont.reshape(-1), prev.reshape(-1) % 3
    (tmp_path / "list.txt").write_text(str(tmp_path / "d.h5"))

    def layer(name: str, type_: str, bottoms: str, tops: str, body: str) -> str:
        b = "".join(f' bottom: "{x}"' for x in bottoms.split())
        t = "".join(f' top: "{x}"' for x in tops.split())
        return f'layer {{ name: "{name}" type: "{type_}"{b}{t} {body} }}\n'

    uniform = 'weight_filler { type: "uniform" min: -0.3 max: 0.3 }'
    net = (
        layer(
            "d",
            "HDF5Data",
            "",
            "tok cont label",
            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: {t_ * n} }}',
        )
        + layer("e", "Embed", "tok", "e", f"embed_param {{ num_output: 8 input_dim: {vocab} {uniform} }}")
        + layer("x", "Reshape", "e", "x", f"reshape_param {{ shape {{ dim: {t_} dim: {n} dim: 8 }} }}")
        + layer("c", "Reshape", "cont", "c", f"reshape_param {{ shape {{ dim: {t_} dim: {n} }} }}")
        + layer("l", "Reshape", "label", "l", f"reshape_param {{ shape {{ dim: {t_} dim: {n} }} }}")
        + layer("lstm", "LSTM", "x c", "h", f"recurrent_param {{ num_output: 16 {uniform} }}")
        + layer(
            "ip",
            "InnerProduct",
            "h",
            "s",
            'inner_product_param { num_output: 3 axis: 2 weight_filler { type: "xavier" } }',
        )
        + layer("loss", "SoftmaxWithLoss", "s l", "loss", "softmax_param { axis: 2 }")
    )
    param = text_format.Parse(
        'type: "Adam" base_lr: 0.02 momentum: 0.9 lr_policy: "fixed" max_iter: 100 display: 0 '
        "snapshot_after_train: false random_seed: 1 solver_mode: CPU",
        caffe_pb2.SolverParameter(),
    )
    text_format.Parse(net, param.net_param)
    solver = make_solver(param)
    assert solver.net.learnable_param_names == ["e/0", "e/1", "lstm/0", "lstm/1", "lstm/2", "ip/0", "ip/1"]
    before = solver.net.forward()
    solver.step(40)
    after = solver.net.forward()
    assert before > 0.9 and after < 0.5 * before, (before, after)
