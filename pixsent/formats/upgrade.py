"""Caffe's in-memory upgrades of old net and solver definitions (util/upgrade_proto.cpp, run on read).

Order, as in Caffe's UpgradeNetAsNeeded: V0 (``layers { layer { type: "conv" ... } }``) -> V1; legacy
data-transform fields of Data/ImageData/WindowData -> ``transform_param``; V1 ``layers`` (enum types,
``blobs_lr``/``weight_decay``/``param`` names) -> V2 ``layer`` (type strings, ParamSpec); net-level
``input``/``input_dim``/``input_shape`` -> one Input layer named "input" moved to the front (a bare
``input`` without dims, as old caffemodels have, is simply dropped); BatchNorm layers declaring three
``param`` specs get lr_mult = decay_mult = 0. Solvers: the enum ``solver_type`` becomes the string ``type``.
"""

from __future__ import annotations

from collections.abc import Callable

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError

V1 = caffe_pb2.V1LayerParameter

# V1 enum name -> V2 type string (Caffe's UpgradeV1LayerType).
V1_TYPE_NAMES: dict[str, str] = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# V0 type string -> V1 enum name (Caffe's UpgradeV0LayerType).
V0_TYPE_NAMES: dict[str, str] = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

SOLVER_TYPE_NAMES: dict[str, str] = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}

# V0 scalar field -> {V0 type: (V1 sub-message, field)}; fields absent for a type are ignored
# (Caffe logs them as incompatible and carries on).
_V0_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "num_output": {
        "conv": ("convolution_param", "num_output"),
        "innerproduct": ("inner_product_param", "num_output"),
    },
    "biasterm": {
        "conv": ("convolution_param", "bias_term"),
        "innerproduct": ("inner_product_param", "bias_term"),
    },
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {
        "conv": ("convolution_param", "kernel_size"),
        "pool": ("pooling_param", "kernel_size"),
    },
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "group": {"conv": ("convolution_param", "group")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {
        "data": ("data_param", "source"),
        "hdf5_data": ("hdf5_data_param", "source"),
        "images": ("image_data_param", "source"),
        "window_data": ("window_data_param", "source"),
        "infogain_loss": ("infogain_loss_param", "source"),
    },
    "batchsize": {
        "data": ("data_param", "batch_size"),
        "hdf5_data": ("hdf5_data_param", "batch_size"),
        "images": ("image_data_param", "batch_size"),
        "window_data": ("window_data_param", "batch_size"),
    },
    "rand_skip": {
        "data": ("data_param", "rand_skip"),
        "images": ("image_data_param", "rand_skip"),
    },
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
}
# V0 fields that go to transform_param whatever the layer type.
_V0_TRANSFORM = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}
# V1 layer types whose own parameter message once carried the transform fields.
_DATA_TRANSFORM_OWNERS = {
    "DATA": "data_param",
    "IMAGE_DATA": "image_data_param",
    "WINDOW_DATA": "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _set(msg, field: str, value) -> None:
    """Assign ``value`` to ``msg.field`` (appended when the schema field is repeated)."""
    descriptor = msg.DESCRIPTOR.fields_by_name.get(field)
    if descriptor is None:
        return
    repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 5; older ones only have label
    if repeated if repeated is not None else descriptor.label == descriptor.LABEL_REPEATED:
        getattr(msg, field).append(value)
    else:
        setattr(msg, field, value)


# ---------------------------------------------------------------- V0 -> V1


def needs_v0_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when some V1 ``layers`` entry nests an old V0 ``layer`` message."""
    return any(lay.HasField("layer") for lay in net.layers)


def _remove_v0_padding_layers(net: caffe_pb2.NetParameter, source: str) -> list[V1]:
    """Fold V0 "padding" layers into the pad of the conv/pool layer that consumes them."""
    producer: dict[str, int] = {name: -1 for name in net.input}
    kept: list[V1] = []
    for i, conn in enumerate(net.layers):
        if conn.layer.type != "padding":
            new = V1()
            new.CopyFrom(conn)
            kept.append(new)
            for j, bottom in enumerate(conn.bottom):
                if bottom not in producer:
                    raise FormatError(
                        f"{source}: unknown bottom blob {bottom!r} of V0 layer {conn.layer.name!r}"
                    )
                src = producer[bottom]
                if src >= 0 and net.layers[src].layer.type == "padding":
                    pad_layer = net.layers[src]
                    if conn.layer.type not in ("conv", "pool"):
                        raise FormatError(
                            f"{source}: padding layer feeds non-conv/pool layer {conn.layer.name!r}"
                        )
                    new.layer.pad = pad_layer.layer.pad
                    new.bottom[j] = pad_layer.bottom[0]
        for top in conn.top:
            producer[top] = i
    return kept


def _upgrade_v0_layer(conn: V1, source: str) -> V1:
    """One V0 layer (nested in a V1 connection) -> a V1LayerParameter."""
    out = V1()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    v0 = conn.layer
    kind = v0.type
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if kind not in V0_TYPE_NAMES:
            raise FormatError(f"{source}: unknown V0 layer type {kind!r} (layer {v0.name!r})")
        out.type = V1.LayerType.Value(V0_TYPE_NAMES[kind])
    for blob in v0.blobs:
        out.blobs.add().CopyFrom(blob)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for v0_field, targets in _V0_FIELDS.items():
        if v0.HasField(v0_field) and kind in targets:
            sub, field = targets[kind]
            value = getattr(v0, v0_field)
            if v0_field == "pool":  # same numbering (MAX, AVE, STOCHASTIC)
                value = int(value)
            _set(getattr(out, sub), field, value)
    for v0_field, field in _V0_TRANSFORM.items():
        if v0.HasField(v0_field):
            setattr(out.transform_param, field, getattr(v0, v0_field))
    if v0.HasField("hdf5_output_param") and kind == "hdf5_output":
        out.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
    return out


def upgrade_v0_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> None:
    """In place: V0 layers -> V1 layers (name, inputs, input_dim and force_backward kept)."""
    layers = [_upgrade_v0_layer(conn, source) for conn in _remove_v0_padding_layers(net, source)]
    del net.layers[:]
    net.layers.extend(layers)


# ---------------------------------------------------------------- data transform fields


def needs_data_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when a V1 data layer still carries scale/mean_file/crop_size/mirror in its own parameters."""
    for lay in net.layers:
        owner = _DATA_TRANSFORM_OWNERS.get(V1.LayerType.Name(lay.type)) if lay.HasField("type") else None
        if owner and lay.HasField(owner):
            sub = getattr(lay, owner)
            if any(f in sub.DESCRIPTOR.fields_by_name and sub.HasField(f) for f in _TRANSFORM_FIELDS):
                return True
    return False


def upgrade_data_transform(net: caffe_pb2.NetParameter) -> None:
    """In place: move the legacy transform fields of V1 data layers into ``transform_param``."""
    for lay in net.layers:
        owner = _DATA_TRANSFORM_OWNERS.get(V1.LayerType.Name(lay.type)) if lay.HasField("type") else None
        if not owner or not lay.HasField(owner):
            continue
        sub = getattr(lay, owner)
        for field in _TRANSFORM_FIELDS:
            if field in sub.DESCRIPTOR.fields_by_name and sub.HasField(field):
                setattr(lay.transform_param, field, getattr(sub, field))
                sub.ClearField(field)


# ---------------------------------------------------------------- V1 -> V2

# Every sub-message that V1 and V2 layers share by name is copied as is.
_SHARED_PARAMS = tuple(
    f.name
    for f in V1.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
)


def _upgrade_v1_layer(v1: V1, source: str) -> caffe_pb2.LayerParameter:
    """One V1LayerParameter -> LayerParameter (Caffe's UpgradeV1LayerParameter)."""
    out = caffe_pb2.LayerParameter()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    for rule in v1.include:
        out.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        out.exclude.add().CopyFrom(rule)
    if v1.HasField("type"):
        out.type = V1_TYPE_NAMES[V1.LayerType.Name(v1.type)]
    for blob in v1.blobs:
        out.blobs.add().CopyFrom(blob)

    def spec(i: int) -> caffe_pb2.ParamSpec:
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = int(mode)  # STRICT/PERMISSIVE have the same numbers
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for name in _SHARED_PARAMS:
        if v1.HasField(name):
            getattr(out, name).CopyFrom(getattr(v1, name))
    if v1.HasField("layer"):
        raise FormatError(f"{source}: layer {v1.name!r} still holds a V0 layer after the V0 upgrade")
    return out


def upgrade_v1_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> None:
    """In place: V1 ``layers`` -> V2 ``layer``; ``layer`` entries already present are dropped, as in Caffe."""
    layers = [_upgrade_v1_layer(v1, source) for v1 in net.layers]
    net.ClearField("layers")
    net.ClearField("layer")
    net.layer.extend(layers)


# ---------------------------------------------------------------- net inputs, BatchNorm


def upgrade_input(net: caffe_pb2.NetParameter, source: str = "<net>") -> None:
    """In place: net-level input/input_shape/input_dim -> an Input layer "input" at the front."""
    names = list(net.input)
    if net.input_shape or net.input_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(names):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if net.input_shape:
                if i >= len(net.input_shape):
                    raise FormatError(f"{source}: input {name!r} has no input_shape")
                shape.CopyFrom(net.input_shape[i])
            else:
                dims = net.input_dim[4 * i : 4 * i + 4]
                if len(dims) != 4:
                    raise FormatError(f"{source}: input {name!r} needs 4 input_dim values, got {len(dims)}")
                shape.dim.extend(dims)
        existing = list(net.layer)
        net.ClearField("layer")
        net.layer.append(layer)
        net.layer.extend(existing)
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)


def upgrade_batch_norm(net: caffe_pb2.NetParameter) -> None:
    """In place: old BatchNorm layers listing three param specs get lr_mult = decay_mult = 0 (statistics)."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


NET_UPGRADES: list[tuple[str, Callable[[caffe_pb2.NetParameter], bool], Callable[..., None]]] = [
    ("V0LayerParameter", needs_v0_upgrade, upgrade_v0_net),
    ("data transformation fields", needs_data_upgrade, lambda net, source: upgrade_data_transform(net)),
    ("V1LayerParameter", lambda net: len(net.layers) > 0, upgrade_v1_net),
    ("input fields", lambda net: len(net.input) > 0, upgrade_input),
    (
        "BatchNorm param specs",
        lambda net: any(la.type == "BatchNorm" and len(la.param) == 3 for la in net.layer),
        lambda net, source: upgrade_batch_norm(net),
    ),
]


def net_needs_upgrade(net: caffe_pb2.NetParameter) -> list[str]:
    """Names of the upgrades ``net`` needs (empty when it is current)."""
    return [name for name, needed, _ in NET_UPGRADES if needed(net)]


def upgrade_net(net: caffe_pb2.NetParameter, source: str = "<net>") -> caffe_pb2.NetParameter:
    """Upgrade ``net`` in place to the current format and return it (idempotent; no-op when current)."""
    for _name, needed, apply in NET_UPGRADES:
        if needed(net):
            apply(net, source)
    return net


def upgrade_solver(solver: caffe_pb2.SolverParameter, source: str = "<solver>") -> caffe_pb2.SolverParameter:
    """In place: enum ``solver_type`` -> string ``type`` (both given is an error, as in Caffe); returns it.

    Nets embedded in the solver (net_param, train_net_param, test_net_param) are upgraded too.
    """
    if solver.HasField("solver_type"):
        if solver.HasField("type"):
            raise FormatError(f"{source}: solver_type (enum) and type (string) cannot both be given")
        name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
        solver.type = SOLVER_TYPE_NAMES[name]
        solver.ClearField("solver_type")
    if solver.HasField("net_param"):
        upgrade_net(solver.net_param, source)
    if solver.HasField("train_net_param"):
        upgrade_net(solver.train_net_param, source)
    for net in solver.test_net_param:
        upgrade_net(net, source)
    return solver
