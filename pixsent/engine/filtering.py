"""Caffe's Net::FilterNet and StateMeetsRule: which layers a phase/level/stage state includes."""

from __future__ import annotations

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError


def state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """A rule holds when every condition it sets holds: phase, min/max level, all stages, no not_stage."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def layer_included(state: caffe_pb2.NetState, layer: caffe_pb2.LayerParameter) -> bool:
    """Kept when any include rule holds; without include rules, kept unless an exclude rule holds."""
    if layer.include and layer.exclude:
        raise NetError(f"layer {layer.name!r}: specify either include or exclude rules, not both")
    if layer.include:
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def filter_net(
    param: caffe_pb2.NetParameter, state: caffe_pb2.NetState | None = None
) -> caffe_pb2.NetParameter:
    """A copy of ``param`` holding only the layers ``state`` (default: ``param.state``) includes."""
    state = state if state is not None else param.state
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if layer_included(state, layer):
            out.layer.add().CopyFrom(layer)
    return out
