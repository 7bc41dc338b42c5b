"""Build Caffe nets in Python: layers are calls, tops are values, `NetSpec.to_proto()` gives a NetParameter.

Semantics follow BVLC Caffe's python/caffe/net_spec.py (read for facts, not copied):
- a layer's name is the name of its first top unless ``name=`` is given; unnamed tops get
  ``<Type><count>`` names;
- ``in_place=True`` makes the layer's tops equal its bottoms;
- a layer with ``ntop=0`` (Silence) is its Function, which a NetSpec attribute may hold (the attribute
  names the layer); a bottom that is not a Top raises TypeError (also a NetError);
- keyword arguments go to the layer's own ``<type>_param`` message (found from the schema:
  ``FooParameter`` -> ``foo_param`` for type ``Foo``), while generic LayerParameter fields
  (``param``, ``include``, ``exclude``, ``loss_weight``, ``propagate_down``, any ``*_param``) go to
  the layer itself; dicts become messages, lists become repeated fields, a scalar given for a repeated
  field becomes a one-element list, and enum fields accept the value or its name (``'MAX'``).

pixsent addition: assigning a *list* of tops to one NetSpec name makes "phase twins" (e.g. the TRAIN and
TEST Data layers of a train_val net) that share top and layer names; a later layer using the list as its
bottom reads that shared name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pixsent.caffe.errors import NetSpecTypeError
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

# LayerParameter fields that are set on the layer itself whatever its type.
GENERIC_FIELDS = frozenset({"phase", "param", "include", "exclude", "loss_weight", "propagate_down", "blobs"})


def _schema_param_fields() -> dict[str, tuple[str, ...]]:
    """Map layer type -> its options field, read from the schema (``FooParameter foo_param`` -> ``Foo``)."""
    table: dict[str, tuple[str, ...]] = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            table[field.message_type.name.removesuffix("Parameter")] = (field.name,)
    return table


# Layer type -> option messages searched in order for a keyword. Types whose options live in a message
# with another name (losses, Deconvolution) are listed explicitly.
PARAM_FIELDS: dict[str, tuple[str, ...]] = {
    **_schema_param_fields(),
    "Deconvolution": ("convolution_param",),
    "SoftmaxWithLoss": ("softmax_param", "loss_param"),
    "SigmoidCrossEntropyLoss": ("loss_param",),
    "EuclideanLoss": ("loss_param",),
    "MultinomialLogisticLoss": ("loss_param",),
    "HingeLoss": ("hinge_loss_param", "loss_param"),
    "InfogainLoss": ("infogain_loss_param", "loss_param"),
    "ContrastiveLoss": ("contrastive_loss_param", "loss_param"),
}


def _is_repeated(field: FieldDescriptor) -> bool:
    """Whether ``field`` is repeated (protobuf >= 6 dropped ``label`` for ``is_repeated``)."""
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _scalar(field: FieldDescriptor, value: Any, where: str) -> Any:
    """Convert one scalar for ``field``: enum names become numbers."""
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        enum_value = field.enum_type.values_by_name.get(value)
        if enum_value is None:
            names = ", ".join(v.name for v in field.enum_type.values)
            raise NetError(f"{where}: {field.name}={value!r} is not one of {names}")
        return enum_value.number
    return value


def _fill(msg: Message, value: Any, where: str) -> None:
    """Fill message ``msg`` from a dict (recursively) or copy it from a message of the same type."""
    if isinstance(value, Message):
        msg.CopyFrom(value)
        return
    if not isinstance(value, dict):
        raise NetError(f"{where}: {msg.DESCRIPTOR.name} needs a dict, got {value!r}")
    for key, item in value.items():
        assign(msg, key, item, where)


def assign(msg: Message, name: str, value: Any, where: str = "net") -> None:
    """Set field ``name`` of ``msg`` from a Python value (dict -> message, list -> repeated)."""
    field = msg.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise NetError(f"{where}: {msg.DESCRIPTOR.name} has no field {name!r}")
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if _is_repeated(field):
        container = getattr(msg, name)
        for item in value if isinstance(value, list | tuple) else [value]:
            if is_message:
                _fill(container.add(), item, where)
            else:
                container.append(_scalar(field, item, where))
    elif is_message:
        _fill(getattr(msg, name), value, where)
    else:
        try:
            setattr(msg, name, _scalar(field, value, where))
        except (TypeError, ValueError) as exc:
            raise NetError(f"{where}: {name}={value!r}: {exc}") from None


class Top:
    """One output blob of a layer call; becomes a name when the net is serialised."""

    __slots__ = ("fn", "index")

    def __init__(self, fn: Function, index: int) -> None:
        self.fn = fn
        self.index = index

    def to_proto(self) -> caffe_pb2.NetParameter:
        """The NetParameter of every layer needed to compute this top."""
        return to_proto(self)


TopLike = Top | Sequence[Top]


class Function:
    """A layer call: its type, its bottoms (tops of other calls) and its keyword options."""

    def __init__(self, type_name: str, inputs: Sequence[TopLike], params: dict[str, Any]) -> None:
        params = dict(params)
        self.type_name = type_name
        self.inputs = tuple(inputs)
        self.ntop = int(params.pop("ntop", 1))
        self.in_place = bool(params.pop("in_place", False))
        self.layer_name: str | None = params.pop("name", None)
        self.params = params
        self.tops = tuple(Top(self, i) for i in range(self.ntop))


class _Builder:
    """Turns calls into LayerParameters in dependency order, naming tops and layers."""

    def __init__(self, names: dict[Top, str], fn_names: dict[Function, str] | None = None) -> None:
        self.names = names
        self.fn_names = fn_names or {}
        self.layers: dict[Function, caffe_pb2.LayerParameter] = {}
        self.autonames: Counter[str] = Counter()

    def _auto(self, type_name: str) -> str:
        self.autonames[type_name] += 1
        return f"{type_name}{self.autonames[type_name]}"

    def top_name(self, top: Top) -> str:
        if top not in self.names:
            self.names[top] = self._auto(top.fn.type_name)
        return self.names[top]

    def emit_top(self, top: TopLike) -> str:
        """Emit the layer(s) producing ``top`` (all twins of a list) and return the blob name."""
        group = list(top) if isinstance(top, list | tuple) else [top]
        if not group or not all(isinstance(t, Top) for t in group):
            raise NetSpecTypeError(f"bottom must be a top of another layer (or a list of twins), got {top!r}")
        for t in group:
            self.emit(t.fn)
        first = group[0]
        return self.layers[first.fn].top[first.index]

    def emit(self, fn: Function) -> None:
        if fn in self.layers:
            return
        bottoms = [self.emit_top(inp) for inp in fn.inputs]
        layer = caffe_pb2.LayerParameter(type=fn.type_name)
        layer.bottom.extend(bottoms)
        if fn.in_place:
            if len(bottoms) < fn.ntop:
                raise NetError(f"{fn.type_name} layer: in_place needs {fn.ntop} bottom(s)")
            layer.top.extend(bottoms[: fn.ntop])
        else:
            layer.top.extend(self.top_name(t) for t in fn.tops)
        if fn.layer_name is not None:
            layer.name = fn.layer_name
        elif fn.ntop:
            layer.name = self.top_name(fn.tops[0])
        elif fn in self.fn_names:
            layer.name = self.fn_names[fn]
        else:
            layer.name = self._auto(fn.type_name)
        where = f"layer {layer.name!r} ({fn.type_name})"
        for key, value in fn.params.items():
            _assign_layer_option(layer, fn.type_name, key, value, where)
        self.layers[fn] = layer


def _assign_layer_option(
    layer: caffe_pb2.LayerParameter, type_name: str, key: str, value: Any, where: str
) -> None:
    """Route one keyword to the layer itself or to the first of its option messages that has the field."""
    if key in GENERIC_FIELDS or key.endswith("_param"):
        assign(layer, key, value, where)
        return
    for field_name in PARAM_FIELDS.get(type_name, ()):
        sub = getattr(layer, field_name)
        if key in sub.DESCRIPTOR.fields_by_name:
            assign(sub, key, value, where)
            return
    options = PARAM_FIELDS.get(type_name, ())
    raise NetError(f"{where}: unknown option {key!r} (searched {', '.join(options) or 'no option message'})")


def to_proto(*tops: TopLike | Function) -> caffe_pb2.NetParameter:
    """NetParameter with every layer needed for ``tops``; unassigned tops get automatic names."""
    builder = _Builder({})
    for top in tops:
        if isinstance(top, Function):
            builder.emit(top)
        else:
            builder.emit_top(top)
    net = caffe_pb2.NetParameter()
    net.layer.extend(builder.layers.values())
    return net


class NetSpec:
    """Tops assigned as attributes (or items) take the attribute as name; `to_proto` emits them in order."""

    def __init__(self) -> None:
        object.__setattr__(self, "tops", {})

    def __setattr__(self, name: str, value: TopLike) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> TopLike:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    __setitem__ = __setattr__

    def __getitem__(self, name: str) -> TopLike:
        return self.tops[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tops

    def keys(self) -> list[str]:
        return list(self.tops)

    def to_proto(self, name: str | None = None) -> caffe_pb2.NetParameter:
        """NetParameter of every layer needed for the assigned tops, using the assigned names."""
        names: dict[Top, str] = {}
        fn_names: dict[Function, str] = {}
        for key, value in self.tops.items():
            if isinstance(value, Function):  # a layer without tops (ntop=0, e.g. Silence)
                fn_names[value] = key
                continue
            for top in value if isinstance(value, list | tuple) else [value]:
                names[top] = key
        builder = _Builder(names, fn_names)
        for value in self.tops.values():
            if isinstance(value, Function):
                builder.emit(value)
            else:
                builder.emit_top(value)
        net = caffe_pb2.NetParameter()
        if name:
            net.name = name
        net.layer.extend(builder.layers.values())
        return net

    def to_prototxt(self, name: str | None = None) -> str:
        """Protobuf text format of `to_proto` (what Caffe reads as a .prototxt)."""
        return text_format.MessageToString(self.to_proto(name))


class Layers:
    """``L.Convolution(bottom, kernel_size=3, ...)`` creates a layer call of that Caffe type."""

    def __getattr__(self, type_name: str) -> Callable[..., Any]:
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*bottoms: TopLike, **kwargs: Any) -> Top | tuple[Top, ...] | Function:
            fn = Function(type_name, bottoms, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops

        return layer_fn


class Parameters:
    """``P.Pooling.MAX`` is the enum value ``PoolingParameter.MAX`` of the schema."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, f"{name}Parameter", None)
        if message is None:
            raise AttributeError(f"caffe_pb2 has no {name}Parameter")

        class _Enums:
            def __getattr__(self, value_name: str) -> int:
                try:
                    return getattr(message, value_name)
                except AttributeError:
                    raise AttributeError(f"{name}Parameter has no enum value {value_name}") from None

        return _Enums()


layers = Layers()
params = Parameters()
