"""Caffe's automatic Split layers (util/insert_splits.cpp): where one top feeds several bottoms.

Facts kept from Caffe 1.0, settled by reading insert_splits.cpp:
- each bottom use counts against the *latest* producer of that blob name (layer index, top index), so an
  in-place layer starts a new producer; a top whose ``loss_weight`` is given and non-zero in the prototxt
  counts as one more use (the default weight 1 of loss layers is applied later and does not count);
- a producer used more than once gets, right after its layer, a layer ``<blob>_<layer>_<top index>_split``
  of type Split with tops ``<blob>_<layer>_<top index>_split_<k>``, k = 0 .. uses - 1, handed to the
  consumers in layer order; when the top carries a loss weight, split top 0 takes that weight (the others
  0), the producing layer's loss_weight list is cleared and the consumers start at k = 1;
- legacy net-level inputs count as tops of a layer named "input" (pixsent turns them into an Input layer of
  that name, so the names agree).
"""

from __future__ import annotations

from collections import Counter

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import NetError

Source = tuple[int, int]  # (layer index, top index)


def split_layer_name(layer: str, blob: str, top_index: int) -> str:
    """Caffe's SplitLayerName: ``<blob>_<layer>_<top index>_split``."""
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(layer: str, blob: str, top_index: int, k: int) -> str:
    """Caffe's SplitBlobName: ``<blob>_<layer>_<top index>_split_<k>``."""
    return f"{split_layer_name(layer, blob, top_index)}_{k}"


def _uses(param: caffe_pb2.NetParameter) -> tuple[dict[Source, int], dict[Source, float], list[list[Source]]]:
    """Per producer: its number of uses and its explicit loss weight; per layer: each bottom's producer."""
    latest: dict[str, Source] = {}
    uses: Counter[Source] = Counter()
    loss: dict[Source, float] = {}
    sources: list[list[Source]] = []
    for i, layer in enumerate(param.layer):
        mine = []
        for j, blob in enumerate(layer.bottom):
            if blob not in latest:
                raise NetError(f"layer {layer.name!r}: unknown bottom blob {blob!r} (bottom index {j})")
            mine.append(latest[blob])
            uses[latest[blob]] += 1
        sources.append(mine)
        for j, blob in enumerate(layer.top):
            latest[blob] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            src = latest[layer.top[j]]
            loss[src] = float(layer.loss_weight[j])
            if loss[src]:
                uses[src] += 1
    return dict(uses), loss, sources


def insert_splits(param: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of ``param`` with Split layers inserted and shared bottoms renamed, as Caffe's Net sees it."""
    uses, loss, sources = _uses(param)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    if all(n <= 1 for n in uses.values()):
        return out
    del out.layer[:]
    handed: Counter[Source] = Counter()  # split tops handed out so far per producer
    for i, original in enumerate(param.layer):
        layer = out.layer.add()
        layer.CopyFrom(original)
        for j, src in enumerate(sources[i]):
            if uses.get(src, 0) > 1:
                producer = param.layer[src[0]].name
                layer.bottom[j] = split_blob_name(producer, original.bottom[j], src[1], handed[src])
                handed[src] += 1
        for j, blob in enumerate(original.top):
            n = uses.get((i, j), 0)
            if n <= 1:
                continue
            weight = loss.get((i, j), 0.0)
            split = out.layer.add(name=split_layer_name(original.name, blob, j), type="Split")
            split.bottom.append(blob)
            for k in range(n):
                split.top.append(split_blob_name(original.name, blob, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                del layer.loss_weight[:]
                handed[(i, j)] += 1
    return out
