"""`pixsent predict`: probabilities of a two-class net equal pycaffe's Classifier; the registry resolves the
released weights' deploy net and mean; the fully convolutional model and non-sentiment nets are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pixsent.caffe as caffe
from pixsent.caffe.proto import caffe_pb2
from pixsent.cli import main
from pixsent.engine.net import Net
from pixsent.errors import DataError
from pixsent.formats.prototxt import write_prototxt
from pixsent.recipes.demo import DemoConfig, deploy_net, draw_image
from pixsent.workflow import predict as pr

MEAN = (104.0, 117.0, 123.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """A small two-class CaffeNet-shaped deploy net with seeded random weights, and three JPEGs."""
    import cv2

    d = tmp_path_factory.mktemp("predict")
    net_param = deploy_net(DemoConfig(), "fc8_twitter")
    deploy = d / "deploy.prototxt"
    write_prototxt(net_param, deploy)
    net = Net(net_param, caffe_pb2.TEST)
    net.save(d / "w.caffemodel")
    rng = np.random.RandomState(0)
    images = []
    for i in range(3):
        path = d / f"im{i}.jpg"
        cv2.imwrite(str(path), draw_image(rng, i % 2))
        images.append(path)
    return deploy, d / "w.caffemodel", images


@pytest.mark.parametrize("oversample", [False, True])
def test_predict_equals_classifier(model, capsys, oversample):
    deploy, weights, images = model
    argv = ["predict", *map(str, images), "--weights", str(weights), "--model", str(deploy)]
    argv += ["--mean", ",".join(map(str, MEAN)), "--image-size", "72", "--json"]
    assert main(argv + (["--oversample"] if oversample else [])) == 0
    rows = json.loads(capsys.readouterr().out)
    clf = caffe.Classifier(
        str(deploy),
        str(weights),
        image_dims=(72, 72),
        mean=np.array(MEAN),
        raw_scale=255,
        channel_swap=(2, 1, 0),
    )
    for row, path in zip(rows, images):
        ref = clf.predict([caffe.io.load_image(str(path))], oversample=oversample)[0]
        assert abs(row["p_positive"] - ref[1]) < 1e-6 and abs(row["p_negative"] - ref[0]) < 1e-6
        assert row["label"] == ("positive" if ref[1] >= ref[0] else "negative")


def test_released_weights_need_no_other_argument(tmp_path):
    weights = tmp_path / "twitter_finetuned_test4_iter_180.caffemodel"
    weights.write_bytes(b"")  # resolution only looks at the name
    cfg = pr.resolve(pr.PredictConfig(weights))
    assert cfg.model == pr.REPO / "prototxt/five_agrees/fc8_twitter/deploy.prototxt"
    assert cfg.mean is not None and "ilsvrc_2012_mean" in str(cfg.mean)


def test_fully_convolutional_model_points_to_maps(tmp_path):
    weights = tmp_path / "twitter_finetuned_test4_iter_180_conv.caffemodel"
    weights.write_bytes(b"")
    with pytest.raises(DataError, match="pixsent maps"):
        pr.resolve(pr.PredictConfig(weights))


def test_non_sentiment_net_is_refused(golden, capsys):
    mini = golden / "mini_caffenet"
    img = golden / "images" / (golden / "oversample" / "images.txt").read_text().split()[0]
    argv = ["predict", str(img), "--weights", str(mini / "weights.caffemodel"), "--model"]
    rc = main(argv + [str(mini / "deploy.prototxt"), "--mean", "104,117,123"])
    err = capsys.readouterr().err
    assert rc != 0 and "3 classes" in err and "Traceback" not in err
