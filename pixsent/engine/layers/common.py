"""Shape and arithmetic layers: InnerProduct, Softmax, Concat, Slice, Split, Flatten, Reshape, Eltwise,
Scale, Bias, BatchNorm, Silence."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine.fastpath import FAST
from pixsent.engine.layers.base import Layer, Shape, accumulate_diff
from pixsent.engine.registry import register_layer
from pixsent.errors import NetError


def canonical_axis(layer: str, axis: int, ndim: int) -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is a NetError."""
    if not -ndim <= axis < max(ndim, 1):
        raise NetError(f"layer {layer!r}: axis {axis} out of range for a {ndim}-axis blob")
    return axis + ndim if axis < 0 else axis


@register_layer("InnerProduct")
class InnerProduct(Layer):
    """y = x W^T + b with x flattened from ``axis`` on; weights (num_output, K), or (K, num_output) with
    ``transpose``."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.inner_product_param
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self.name, p.axis, len(shape))
        k = math.prod(shape[self.axis :])
        n = int(p.num_output)
        if n <= 0:
            raise NetError(f"layer {self.name!r}: num_output must be positive")
        self.transpose = bool(p.transpose)
        self.bias_term = bool(p.bias_term)
        self.num_output = n
        if not self.blobs:
            self.blobs.append(self.make_param((k, n) if self.transpose else (n, k), p.weight_filler))
            if self.bias_term:
                self.blobs.append(self.make_param((n,), p.bias_filler))
        return [tuple(shape[: self.axis]) + (n,)]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        lead = tuple(x.shape[: self.axis])
        x2 = x.reshape(math.prod(lead), -1)
        weight = self.blobs[0]
        bias = self.blobs[1] if self.bias_term else None
        params_learn = weight.requires_grad or (bias is not None and bias.requires_grad)
        if FAST.fast_fc and torch.is_grad_enabled() and params_learn:
            y = _InnerProductAccumulate.apply(x2, weight, bias, self.transpose)
        elif self.transpose:
            y = x2 @ weight
            if bias is not None:
                y = y + bias
        else:
            y = F.linear(x2, weight, bias)
        return [y.reshape(lead + (self.num_output,))]


class _InnerProductAccumulate(torch.autograd.Function):
    """y = x W^T + b whose backward adds dW = dy^T x (x^T dy with ``transpose``) and db = sum of dy
    straight into the parameters' diffs with one GEMM of beta 1, as Caffe's InnerProduct backward does;
    the parameters get no autograd gradient of their own (so no second weight-sized tensor per step)."""

    @staticmethod
    def forward(ctx, x, weight, bias, transpose: bool):
        ctx.save_for_backward(x, weight)
        ctx.transpose = transpose
        ctx.bias = bias
        if transpose:
            y = x @ weight
            return y.add_(bias) if bias is not None else y
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        bias = ctx.bias
        dx = None
        if ctx.needs_input_grad[0]:
            dx = dy @ weight.t() if ctx.transpose else dy @ weight
        with torch.no_grad():
            if weight.requires_grad:
                if weight.grad is None:
                    weight.grad = torch.zeros_like(weight)
                if ctx.transpose:
                    weight.grad.addmm_(x.t(), dy)
                else:
                    weight.grad.addmm_(dy.t(), x)
            if bias is not None and bias.requires_grad:
                accumulate_diff(bias, dy.sum(0))
        return dx, None, None, None


@register_layer("Softmax")
class Softmax(Layer):
    """exp(x - max) / sum over ``axis`` (default 1, the channels)."""

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        axis = canonical_axis(self.name, self.param.softmax_param.axis, x.dim())
        return [torch.softmax(x, dim=axis)]


@register_layer("Concat")
class Concat(Layer):
    """Concatenate bottoms along ``axis`` (legacy ``concat_dim`` when set)."""

    def _axis(self, ndim: int) -> int:
        p = self.param.concat_param
        axis = p.concat_dim if p.HasField("concat_dim") else p.axis
        return canonical_axis(self.name, axis, ndim)

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        axis = self._axis(len(bottom_shapes[0]))
        first = list(bottom_shapes[0])
        for s in bottom_shapes[1:]:
            if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != axis):
                raise NetError(f"layer {self.name!r}: bottoms {bottom_shapes} differ outside the concat axis")
        first[axis] = sum(s[axis] for s in bottom_shapes)
        return [tuple(first)]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(bottoms) == 1:
            return [bottoms[0]]
        return [torch.cat(bottoms, dim=self._axis(bottoms[0].dim()))]


@register_layer("Slice")
class Slice(Layer):
    """Split the bottom along ``axis`` at ``slice_point``s (equal parts, one per top, when none are given)."""

    def _sizes(self, shape: Shape) -> tuple[int, list[int]]:
        p = self.param.slice_param
        axis = canonical_axis(self.name, p.slice_dim if p.HasField("slice_dim") else p.axis, len(shape))
        total = shape[axis]
        ntop = len(self.param.top)
        if p.slice_point:
            points = [0, *p.slice_point, total]
            if len(points) - 1 != ntop or any(b <= a for a, b in zip(points, points[1:])):
                raise NetError(
                    f"layer {self.name!r}: slice points {list(p.slice_point)} do not fit {ntop} tops"
                )
            return axis, [b - a for a, b in zip(points, points[1:])]
        if total % ntop:
            raise NetError(f"layer {self.name!r}: axis size {total} does not divide into {ntop} tops")
        return axis, [total // ntop] * ntop

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        axis, sizes = self._sizes(bottom_shapes[0])
        return [tuple(n if i == axis else d for i, d in enumerate(bottom_shapes[0])) for n in sizes]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        axis, sizes = self._sizes(tuple(bottoms[0].shape))
        return list(torch.split(bottoms[0], sizes, dim=axis))


@register_layer("Split")
class Split(Layer):
    """Copies of the bottom (autograd sums the tops' gradients, as Caffe's Split backward does)."""

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [bottoms[0]] * len(self.param.top)


@register_layer("Flatten")
class Flatten(Layer):
    """Merge axes ``axis``..``end_axis`` (default 1..-1) into one."""

    def _shape(self, shape: Shape) -> Shape:
        p = self.param.flatten_param
        a = canonical_axis(self.name, p.axis, len(shape))
        e = canonical_axis(self.name, p.end_axis, len(shape))
        return tuple(shape[:a]) + (math.prod(shape[a : e + 1]),) + tuple(shape[e + 1 :])

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [self._shape(bottom_shapes[0])]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [bottoms[0].reshape(self._shape(tuple(bottoms[0].shape)))]


@register_layer("Reshape")
class Reshape(Layer):
    """Replace axes [axis, axis + num_axes) by ``shape``; 0 copies the bottom's dim there, -1 is inferred."""

    def _shape(self, shape: Shape) -> Shape:
        p = self.param.reshape_param
        ndim = len(shape)
        start = p.axis + ndim + 1 if p.axis < 0 else p.axis
        if not 0 <= start <= ndim:
            raise NetError(f"layer {self.name!r}: reshape axis {p.axis} out of range for {shape}")
        end = ndim if p.num_axes == -1 else start + p.num_axes
        if end > ndim:
            raise NetError(f"layer {self.name!r}: num_axes {p.num_axes} out of range for {shape}")
        dims = list(p.shape.dim)
        new: list[int] = []
        infer = -1
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= ndim:
                    raise NetError(f"layer {self.name!r}: dim 0 copies axis {start + i} that {shape} lacks")
                new.append(shape[start + i])
            elif d == -1:
                if infer >= 0:
                    raise NetError(f"layer {self.name!r}: at most one -1 in the new shape")
                infer = i
                new.append(1)
            else:
                new.append(int(d))
        out = list(shape[:start]) + new + list(shape[end:])
        total = math.prod(shape)
        if infer >= 0:
            known = math.prod(out)
            if known == 0 or total % known:
                raise NetError(f"layer {self.name!r}: cannot infer -1 reshaping {shape} to {dims}")
            out[start + infer] = total // known
        if math.prod(out) != total:
            raise NetError(f"layer {self.name!r}: cannot reshape {shape} ({total} values) to {tuple(out)}")
        return tuple(out)

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return [self._shape(bottom_shapes[0])]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [bottoms[0].reshape(self._shape(tuple(bottoms[0].shape)))]


@register_layer("Eltwise")
class Eltwise(Layer):
    """Element-wise SUM (with per-bottom ``coeff``), PROD or MAX (gradient to the first maximal bottom)."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.eltwise_param
        if any(s != bottom_shapes[0] for s in bottom_shapes):
            raise NetError(f"layer {self.name!r}: Eltwise bottoms differ in shape: {bottom_shapes}")
        if p.coeff and (p.operation != caffe_pb2.EltwiseParameter.SUM or len(p.coeff) != len(bottom_shapes)):
            raise NetError(f"layer {self.name!r}: coeff needs SUM and one value per bottom")
        return [bottom_shapes[0]]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        p = self.param.eltwise_param
        op = p.operation
        if op == caffe_pb2.EltwiseParameter.SUM:
            coeff = list(p.coeff) or [1.0] * len(bottoms)
            out = bottoms[0] * coeff[0] if coeff[0] != 1 else bottoms[0]
            for c, b in zip(coeff[1:], bottoms[1:]):
                out = out + (b * c if c != 1 else b)
            return [out]
        if op == caffe_pb2.EltwiseParameter.PROD:
            out = bottoms[0]
            for b in bottoms[1:]:
                out = out * b
            return [out]
        return [torch.stack(bottoms).max(dim=0).values]


def _param_shape(layer: str, shape: Shape, axis: int, num_axes: int) -> tuple[int, Shape]:
    """Axis and shape of a Scale/Bias parameter covering ``num_axes`` axes of ``shape`` from ``axis``."""
    axis = canonical_axis(layer, axis, len(shape)) if shape else 0
    if num_axes < -1:
        raise NetError(f"layer {layer!r}: num_axes must be >= -1")
    end = len(shape) if num_axes == -1 else axis + num_axes
    if end > len(shape):
        raise NetError(f"layer {layer!r}: axis {axis} + num_axes {num_axes} exceed {shape}")
    return axis, tuple(shape[axis:end])


def _broadcast(t: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    """View ``t`` (shape of axes axis..axis+t.dim()) so it broadcasts against an ndim-axis tensor."""
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (ndim - axis - t.dim()))


class _AffineBase(Layer):
    """Shared logic of Scale and Bias: a learned parameter or a second bottom, broadcast from ``axis``."""

    def _msg(self):
        raise NotImplementedError

    def _default_filler(self) -> caffe_pb2.FillerParameter:
        raise NotImplementedError

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self._msg()
        shape = bottom_shapes[0]
        if len(bottom_shapes) > 1:
            other = bottom_shapes[1]
            self.axis = canonical_axis(self.name, p.axis, len(shape)) if other else 0
            if tuple(shape[self.axis : self.axis + len(other)]) != tuple(other):
                raise NetError(
                    f"layer {self.name!r}: second bottom {other} does not match {shape} at axis {p.axis}"
                )
        else:
            self.axis, pshape = _param_shape(self.name, shape, p.axis, p.num_axes)
            if not self.blobs:
                filler = p.filler if p.HasField("filler") else self._default_filler()
                self.blobs.append(self.make_param(pshape, filler))
        return [shape]


@register_layer("Scale")
class Scale(_AffineBase):
    """x * scale (learned, filler default constant 1, or the second bottom), plus a learned bias with
    ``bias_term``; the scale spans axes axis..axis+num_axes of x."""

    def _msg(self):
        return self.param.scale_param

    def _default_filler(self) -> caffe_pb2.FillerParameter:
        return caffe_pb2.FillerParameter(type="constant", value=1.0)

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        tops = super().setup(bottom_shapes)
        p = self.param.scale_param
        self.bias_term = bool(p.bias_term)
        self.scale_from_bottom = len(bottom_shapes) > 1
        want = 1 + (0 if self.scale_from_bottom else 1)
        if self.bias_term and len(self.blobs) < want:
            if self.scale_from_bottom:
                bshape = tuple(bottom_shapes[1])
            else:
                bshape = tuple(self.blobs[0].shape)
            bf = p.bias_filler if p.HasField("bias_filler") else caffe_pb2.FillerParameter(type="constant")
            self.blobs.append(self.make_param(bshape, bf))
        return tops

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        scale = bottoms[1] if self.scale_from_bottom else self.blobs[0]
        out = x * _broadcast(scale, x.dim(), self.axis)
        if self.bias_term:
            out = out + _broadcast(self.blobs[-1], x.dim(), self.axis)
        return [out]


@register_layer("Bias")
class Bias(_AffineBase):
    """x + bias (learned, filler default constant 0, or the second bottom), broadcast from ``axis``."""

    def _msg(self):
        return self.param.bias_param

    def _default_filler(self) -> caffe_pb2.FillerParameter:
        return caffe_pb2.FillerParameter(type="constant", value=0.0)

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        bias = bottoms[1] if len(bottoms) > 1 else self.blobs[0]
        return [x + _broadcast(bias, x.dim(), self.axis)]


@register_layer("BatchNorm")
class BatchNorm(Layer):
    """Caffe's BatchNorm: normalise per channel (axis 1) without scale/shift.

    Blobs: summed mean, summed variance and the moving-average factor s; the statistics in use are
    blob / s (0 when s is 0). With use_global_stats (default: TEST phase) those are used; otherwise the
    batch mean and biased variance E[(x - mean)^2] are used and the blobs become
    maf * blob + batch statistic (variance times m / (m - 1), m = values per channel), s -> maf * s + 1.
    The three blobs get lr_mult 0 (Caffe refuses any other value).
    """

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        p = self.param.batch_norm_param
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise NetError(f"layer {self.name!r}: BatchNorm needs at least 2 axes, got {shape}")
        self.use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") else not self.ctx.train
        self.maf = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        zero = caffe_pb2.FillerParameter(type="constant")
        if not self.blobs:
            self.blobs = [
                self.make_param((shape[1],), zero),
                self.make_param((shape[1],), zero),
                self.make_param((1,), zero),
            ]
        for i in range(3):
            if len(self.param.param) == i:
                self.param.param.add().lr_mult = 0.0
            elif self.param.param[i].lr_mult != 0:
                raise NetError(
                    f"layer {self.name!r}: batch norm statistics cannot be learned (lr_mult must be 0)"
                )
        return [shape]

    def global_stats(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) in use with global statistics: blob / s, 0 where s is 0 (optionally in dtype)."""
        s = self.blobs[2].detach().to(dtype)[0]
        factor = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
        return self.blobs[0].detach().to(dtype) * factor, self.blobs[1].detach().to(dtype) * factor

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        x = bottoms[0]
        c = x.shape[1]
        view = (1, c) + (1,) * (x.dim() - 2)
        dims = [0] + list(range(2, x.dim()))
        if self.use_global:
            mean, var = self.global_stats()
        else:
            mean = x.mean(dim=dims)
            var = ((x - mean.reshape(view)) ** 2).mean(dim=dims)
            m = x.numel() // c
            correction = m / (m - 1) if m > 1 else 1.0
            with torch.no_grad():
                self.blobs[2].mul_(self.maf).add_(1.0)
                self.blobs[0].mul_(self.maf).add_(mean.detach())
                self.blobs[1].mul_(self.maf).add_(var.detach() * correction)
        out = (x - mean.reshape(view)) / torch.sqrt(var.reshape(view) + self.eps)
        return [out]


@register_layer("Silence")
class Silence(Layer):
    """Consumes its bottoms and produces nothing (so they are not net outputs)."""

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        return []

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        return []
