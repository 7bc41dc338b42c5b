"""Layers with parameters that a weights file did not provide, said in one line when weights are loaded.

Caffe's CopyTrainedLayersFrom copies blobs by layer name and silently leaves every other layer at its filler.
Fine-tuning relies on that (the paper's renamed fc8_twitter starts from its filler), but a caffemodel cut
short at a layer boundary loads the same way and trains on random weights without a word; pixsent copies
as Caffe does and names the layers left out.
"""

from __future__ import annotations

from collections.abc import Iterable

from pixsent.engine import glog


def uncovered_layers(net, covered: Iterable[str]) -> list[str]:
    """Names of ``net``'s layers that have parameters but are not in ``covered``, in net order."""
    done = set(covered)
    return [name for name, layer in zip(net.layer_names, net.layers) if layer.blobs and name not in done]


def log_uncovered(net, covered: Iterable[str], origin: str) -> list[str]:
    """Log (INFO) the layers with parameters that ``origin`` did not provide; returns them."""
    missing = uncovered_layers(net, covered)
    if missing:
        glog.info(
            f"Layers with parameters not in {origin}, left at their initial values: {', '.join(missing)}",
            "net.cpp:0",
        )
    return missing
