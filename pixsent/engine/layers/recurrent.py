"""Recurrent layers: RNN and LSTM (Caffe's RecurrentLayer family) and the LSTMUnit step they use.

Caffe builds each recurrent layer as a hidden net unrolled over the T time steps of its input; pixsent
runs the same arithmetic as a loop. Inputs: x (T x N x ...), cont (T x N, 0 at the first step of a
sequence), an optional static input (N x ...) added at every step, and with ``expose_hidden`` the initial
hidden state(s) (1 x N x num_output each), after which the final state(s) become extra tops. Without
``expose_hidden`` each forward starts from the state the previous forward ended with (zeros at first),
and no gradient crosses from one forward to the next (Caffe zeroes those diffs). cont multiplies the
previous hidden state (and the LSTM's forget gate), so a 0 starts a new sequence. Parameters are created
in the order of the unrolled net's first use of each (recurrent_layer.cpp keeps only the owners).
"""

from __future__ import annotations

import math

import torch

from pixsent.engine.layers.base import Layer, Shape
from pixsent.engine.layers.guards import count_bottoms, count_tops, refuse_backward
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError


class _LSTMUnitFunction(torch.autograd.Function):
    """One LSTM step on rows (N x H cell, N x 4H gate inputs in order i, f, o, g, N cont values).

    i, o = sigmoid; g = tanh; f = cont * sigmoid (0 where cont is 0); c = f c_prev + i g; h = o tanh(c).
    Backward as lstm_unit_layer.cpp's CPU code, with t = dc + dh o (1 - tanh(c)^2): dc_prev = t f,
    di = t g i (1 - i), df = t c_prev f (1 - f), do = dh tanh(c) o (1 - o), dg = t i (1 - g^2). Note df
    uses f (1 - f) with f already scaled by cont, which is the exact derivative only for cont in {0, 1}.
    """

    @staticmethod
    def forward(ctx, c_prev, x, cont):
        hdim = c_prev.shape[1]
        i = torch.sigmoid(x[:, :hdim])
        f = torch.sigmoid(x[:, hdim : 2 * hdim]) * cont[:, None]
        f = torch.where(cont[:, None] == 0, torch.zeros_like(f), f)
        o = torch.sigmoid(x[:, 2 * hdim : 3 * hdim])
        g = torch.tanh(x[:, 3 * hdim :])
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, o * tanh_c

    @staticmethod
    def backward(ctx, dc, dh):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        t = dc + dh * o * (1 - tanh_c * tanh_c)
        dx = torch.cat(
            [t * g * i * (1 - i), t * c_prev * f * (1 - f), dh * tanh_c * o * (1 - o), t * i * (1 - g * g)],
            dim=1,
        )
        return t * f, dx, None


def lstm_unit(c_prev: torch.Tensor, x: torch.Tensor, cont: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, h) of one LSTM step on N x H / N x 4H / N tensors, with Caffe's backward."""
    return _LSTMUnitFunction.apply(c_prev, x, cont.detach().to(x.dtype))


@register_layer("LSTMUnit")
class LSTMUnit(Layer):
    """Bottoms c_prev (1 x N x H), gate inputs (1 x N x 4H), cont (1 x N); tops c and h (1 x N x H).
    See _LSTMUnitFunction; cont gets no gradient."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        count_bottoms(self.param, len(bottom_shapes), 3)
        count_tops(self.param, 2)
        refuse_backward(self.param, 2, "sequence indicators")
        c, x, cont = bottom_shapes
        n = c[1] if len(c) == 3 else -1
        if len(c) != 3 or len(x) != 3 or len(cont) != 2 or {c[0], x[0], cont[0]} != {1}:
            raise NetError(
                f"layer {self.name!r}: LSTMUnit needs 1 x N x H, 1 x N x 4H and 1 x N bottoms, "
                f"got {bottom_shapes}"
            )
        if x[1] != n or cont[1] != n or x[2] != 4 * c[2]:
            raise NetError(f"layer {self.name!r}: LSTMUnit bottoms do not agree: {bottom_shapes}")
        return [c, c]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        c_prev, x, cont = bottoms
        c, h = lstm_unit(c_prev[0], x[0], cont[0])
        return [c[None], h[None]]


class _Recurrent(Layer):
    """Shared set-up of RNN and LSTM: bottoms, tops, parameters and the carried state."""

    #: names of the recurrent states, in Caffe's bottom/top order
    states: tuple[str, ...] = ()
    #: rows of the input and hidden transforms per hidden unit (4 gates for the LSTM)
    gates = 1

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.recurrent_param
        self.hidden = int(p.num_output)
        if self.hidden <= 0:
            raise NetError(f"layer {self.name!r}: recurrent_param.num_output must be positive")
        self.expose = bool(p.expose_hidden)
        exposed = len(self.states) if self.expose else 0
        count_bottoms(self.param, len(bottom_shapes), 2 + exposed, 3 + exposed)
        count_tops(self.param, 1 + exposed)
        refuse_backward(self.param, 1, "sequence indicators")
        x, cont = bottom_shapes[0], bottom_shapes[1]
        if len(x) < 2:
            raise NetError(f"layer {self.name!r}: bottom 0 must have at least 2 axes (T x N x ...), got {x}")
        t, n = x[0], x[1]
        if getattr(self, "steps", t) != t:
            raise NetError(f"layer {self.name!r}: input number of timesteps changed ({self.steps} -> {t})")
        self.steps = t
        if tuple(cont) != (t, n):
            raise NetError(f"layer {self.name!r}: cont must be T x N = {t} x {n}, got {cont}")
        self.static = len(bottom_shapes) > 2 + exposed
        static_dim = 0
        if self.static:
            s = bottom_shapes[2]
            if not s or s[0] != n:
                raise NetError(f"layer {self.name!r}: static input {s} must start with N = {n}")
            static_dim = math.prod(s[1:])
        state_shape = (1, n, self.hidden)
        for s in bottom_shapes[2 + self.static :]:
            if tuple(s) != state_shape:
                raise NetError(f"layer {self.name!r}: initial state {s} must be {state_shape}")
        if not self.blobs:
            self._make_params(math.prod(x[2:]), static_dim)
        if getattr(self, "_state", None) is None or tuple(self._state[0].shape) != state_shape:
            self._state = [torch.zeros(state_shape, device=self.ctx.device) for _ in self.states]
        return [(t, n, self.hidden)] + [state_shape] * exposed

    def _make_params(self, input_dim: int, static_dim: int) -> None:
        """Input weights and bias, static-input weights, then the recurrent weights (see subclasses)."""
        p = self.param.recurrent_param
        rows = self.gates * self.hidden
        self.blobs.append(self.make_param((rows, input_dim), p.weight_filler))
        self.blobs.append(self.make_param((rows,), p.bias_filler))
        if self.static:
            self.blobs.append(self.make_param((rows, static_dim), p.weight_filler))
        self.blobs.append(self.make_param((rows, self.hidden), p.weight_filler))

    def _inputs(self, bottoms: list[torch.Tensor]):
        """Per-step input transforms (T x N x rows), the static term or None, cont and the initial states."""
        x, cont = bottoms[0], bottoms[1].detach().to(bottoms[0].dtype)
        t, n = x.shape[0], x.shape[1]
        w_x, b_x = self.blobs[0], self.blobs[1]
        xw = torch.nn.functional.linear(x.reshape(t, n, -1), w_x, b_x)
        static = None
        if self.static:
            static = bottoms[2].reshape(n, -1) @ self.blobs[2].t()
        if self.expose:
            init = list(bottoms[2 + self.static :])
        else:
            init = [s.to(x.dtype) for s in self._state]
        return xw, static, cont, [s[0] for s in init]

    def _finish(self, outputs: list[torch.Tensor], finals: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.expose:
            self._state = [f.detach()[None] for f in finals]
            return [torch.stack(outputs)]
        return [torch.stack(outputs)] + [f[None] for f in finals]


@register_layer("RNN")
class RNN(_Recurrent):
    """Elman RNN (rnn_layer.cpp): h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static s]),
    o_t = tanh(W_ho h_t + b_o); top o (T x N x num_output). Blobs W_xh, b_h, [W_xh_static,] W_hh, W_ho,
    b_o; exposed state h."""

    states = ("h",)

    def _make_params(self, input_dim: int, static_dim: int) -> None:
        super()._make_params(input_dim, static_dim)
        p = self.param.recurrent_param
        self.blobs.append(self.make_param((self.hidden, self.hidden), p.weight_filler))
        self.blobs.append(self.make_param((self.hidden,), p.bias_filler))

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        xw, static, cont, (h,) = self._inputs(bottoms)
        w_hh, w_ho, b_o = self.blobs[-3], self.blobs[-2], self.blobs[-1]
        outputs = []
        for t in range(xw.shape[0]):
            pre = (cont[t][:, None] * h) @ w_hh.t() + xw[t]
            if static is not None:
                pre = pre + static
            h = torch.tanh(pre)
            outputs.append(torch.tanh(torch.nn.functional.linear(h, w_ho, b_o)))
        return self._finish(outputs, [h])


@register_layer("LSTM")
class LSTM(_Recurrent):
    """LSTM (lstm_layer.cpp): gates = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static s], then an
    LSTMUnit step; top h (T x N x num_output). Blobs W_xc, b_c, [W_xc_static,] W_hc with 4 x num_output
    rows in gate order i, f, o, g; exposed states h then c."""

    states = ("h", "c")
    gates = 4

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        xw, static, cont, (h, c) = self._inputs(bottoms)
        w_hc = self.blobs[-1]
        outputs = []
        for t in range(xw.shape[0]):
            gates = (cont[t][:, None] * h) @ w_hc.t() + xw[t]
            if static is not None:
                gates = gates + static
            c, h = lstm_unit(c, gates, cont[t])
            outputs.append(h)
        return self._finish(outputs, [h, c])
