"""Caffe's random streams (engine/rng.py, engine/boost_random.py) against Boost 1.74 itself.

The reference numbers were printed by a small C++ program using boost::mt19937 with Boost 1.74's
uniform_real (Caffe's nextafter upper bound), normal_distribution, bernoulli_distribution and Caffe's
shuffle (boost::uniform_int), built on Debian 12 like the golden files. Each case checks the values
(sha256 of their bytes: exact) and the next raw output (the generator consumed exactly as many draws).
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from pixsent.engine import rng as caffe_rng
from pixsent.engine.rng import CaffeRng


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def test_raw_stream_is_boost_mt19937():
    g = CaffeRng(1701)
    assert g.raw(5).tolist() == [384112814, 2227967492, 495543390, 3464664558, 2227988250]
    assert g.rand() == 2284365251
    # the C++ standard's check value: the 10000th output of mt19937 seeded 5489
    assert int(CaffeRng(5489).raw(10000)[-1]) == 4123659995


@pytest.mark.parametrize(
    "seed, n, mu, sigma, first, digest, nxt",
    [
        (3, 300000, 0.0, 1.0, -0.9288638234138489,
         "3561de3c259e1cc41e228f52e2194a7d74c8b3f4996ed68c8a15965ee5a7693a", 3296487929),
        (2017, 50000, 0.5, 0.01, 0.5004364848136902,
         "7d67a634c3888ba25b9991e1bc6cf9b05fdd55aa2e9c194732d08d10cd414725", 605682559),
    ],
)  # fmt: skip
def test_gaussian_matches_boost_normal_distribution(seed, n, mu, sigma, first, digest, nxt):
    g = CaffeRng(seed)
    v = g.gaussian(n, mu, sigma)  # 300000 draws include ~170 tail samples and ~8000 wedge tests
    assert v.dtype == np.float32 and float(v[0]) == first
    assert sha(v) == digest
    assert g.rand() == nxt


@pytest.mark.parametrize(
    "seed, a, b, first, digest, nxt",
    [
        (7, -0.1, 0.1, -0.0847383439540863,
         "0c5ad1cf7de5f23c32a82f95ba4b37ebb9b5d29da287a68fd3515092848c1547", 651471838),
        (8, 0.0, 1.0, 0.873429536819458,
         "ab0ca1a8ff9a856f127a5008c8c0b9e7e3de82d55d482cb6ae8384b951b383de", 2458536543),
    ],
)  # fmt: skip
def test_uniform_matches_caffe_rng_uniform(seed, a, b, first, digest, nxt):
    g = CaffeRng(seed)
    v = g.uniform(100000, a, b)
    assert float(v[0]) == first and sha(v) == digest and g.rand() == nxt
    assert v.min() >= np.float32(a) and v.max() <= np.float32(b)


def test_bernoulli_double_and_float():
    g = CaffeRng(11)
    v = g.bernoulli(100000, 0.5)  # Dropout's: p is a double
    assert int(v.sum()) == 49909 and g.rand() == 2404293231
    assert sha(v.astype(np.uint8)) == "9dac37f955225e340949e2cdc0230d7987054a070824e12037597bc48ee1c46e"
    g = CaffeRng(12)
    v = g.bernoulli(100000, 0.3, np.float32)  # the sparse gaussian filler's: p is a float
    assert int(v.sum()) == 30029 and g.rand() == 3395422289
    assert sha(v.astype(np.uint8)) == "239ecebd64c5fc05ce3c87b5c1098276dc76c0ddf86c163193ba6e92f4a7ab5f"
    g = CaffeRng(13)
    before = g.get_state()
    assert not g.bernoulli(10, 0.0).any()  # p == 0: Boost draws nothing
    assert np.array_equal(g.get_state(), before)


def test_shuffle_matches_caffe_shuffle():
    g = CaffeRng(5)
    perm = g.shuffle(1000)
    assert perm[:8].tolist() == [325, 825, 57, 501, 481, 476, 343, 596]
    assert sha(perm.astype(np.int64)) == "8d57be56b927f8367792cd02a5aa9cb336f8a0f013adb81e03aec55eaf9c4027"
    assert g.rand() == 3298208229
    assert sorted(perm.tolist()) == list(range(1000))


def test_rand_mod_and_fork():
    g = CaffeRng(1701)
    assert g.rand_mod(5) == 384112814 % 5
    assert g.rand_mod(7, count=2).tolist() == [2227967492 % 7, 495543390 % 7]
    child = caffe_rng.fork(g)  # seeded by the next raw draw of g
    assert child.rand() == CaffeRng(3464664558).rand()


def test_state_round_trip_continues_the_stream():
    g = CaffeRng(42)
    g.gaussian(1234, 0.0, 1.0)
    state = g.get_state()
    a = (g.gaussian(5000, 0.0, 1.0), g.uniform(10, -1, 1), g.raw(3))
    g.set_state(state)
    b = (g.gaussian(5000, 0.0, 1.0), g.uniform(10, -1, 1), g.raw(3))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    with pytest.raises(ValueError):
        g.set_state(np.zeros(10, np.uint32))


def test_invalid_parameters_raise():
    g = CaffeRng(1)
    with pytest.raises(ValueError):
        g.gaussian(3, 0.0, 0.0)  # Caffe CHECKs sigma > 0
    with pytest.raises(ValueError):
        g.uniform(3, 1.0, 0.0)
    with pytest.raises(ValueError):
        g.bernoulli(3, 1.5)


def test_generator_per_thread_like_caffe():
    caffe_rng.set_random_seed(1701)
    seen = []

    def other():
        caffe_rng.set_random_seed(99)  # the other thread's own generator
        seen.append(caffe_rng.current().rand())

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [CaffeRng(99).rand()]
    assert caffe_rng.current().rand() == 384112814  # this thread's stream is untouched


# ---------------------------------------------------------------- fillers and layers on the Caffe stream
def fill_caffe(kind: str, shape, seed: int = 5, **kw) -> tuple[np.ndarray, CaffeRng]:
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.fillers import fill

    g = CaffeRng(seed)
    return fill(shape, caffe_pb2.FillerParameter(type=kind, **kw), g).numpy(), g


def test_fillers_draw_what_filler_hpp_draws():
    v, g = fill_caffe("uniform", (4, 5), min=-2.0, max=3.0)
    assert (
        np.array_equal(v.ravel(), CaffeRng(5).uniform(20, -2.0, 3.0)) and g.rand() == CaffeRng(5).raw(21)[-1]
    )
    v, _ = fill_caffe("xavier", (8, 3, 2, 2))  # fan_in = 12: uniform(+-sqrt(3/12))
    assert np.array_equal(v.ravel(), CaffeRng(5).uniform(96, -0.5, 0.5))
    v, _ = fill_caffe("msra", (6, 8), variance_norm=2)  # AVERAGE: n = (8 + 6) / 2 = 7
    std = float(np.float32(np.sqrt(np.float32(2) / np.float32(7))))
    assert np.array_equal(v.ravel(), CaffeRng(5).gaussian(48, 0.0, std))
    v, g = fill_caffe("constant", (3, 3), value=0.25)
    assert (v == np.float32(0.25)).all() and g.rand() == CaffeRng(5).rand()  # no draws


def test_sparse_gaussian_and_positive_unitball():
    v, _ = fill_caffe("gaussian", (64, 100), std=1.0, sparse=8)
    ref = CaffeRng(5)
    want = ref.gaussian(6400, 0.0, 1.0) * ref.bernoulli(6400, 8 / 64, np.float32)
    assert np.array_equal(v.ravel(), want) and abs((v != 0).mean() - 0.125) < 0.02
    v, _ = fill_caffe("positive_unitball", (5, 7))
    rows = CaffeRng(5).uniform(35, 0.0, 1.0).reshape(5, 7)
    sums = np.zeros(5, np.float32)
    for j in range(7):  # Caffe sums each row in order, in float
        sums += rows[:, j]
    assert np.array_equal(v, rows / sums[:, None])


def test_bilinear_filler_in_float():
    v, _ = fill_caffe("bilinear", (2, 1, 4, 4))
    w = np.float32(1) - np.abs(np.arange(4, dtype=np.float32) / np.float32(2) - np.float32(0.75))
    assert np.array_equal(v[1, 0], w[:, None] * w[None, :]) and v[0, 0, 1, 1] == np.float32(0.5625)


def test_dropout_mask_is_one_bernoulli_per_element_in_blob_order():
    import torch
    from google.protobuf import text_format

    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 3 dim: 4 dim: 5 } } }
    layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.3 } }
    """
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe_pb2.TRAIN, seed=77)
    x = np.arange(1, 61, dtype=np.float32).reshape(3, 4, 5)
    net.blobs["x"].data[...] = x
    with torch.no_grad():
        net.forward()
    ref, p = CaffeRng(77), 1.0 - float(np.float32(0.3))  # Caffe's 1. - threshold_, in double
    keep = ref.bernoulli(60, p).reshape(3, 4, 5)
    scale = np.float32(1.0 / (1.0 - float(np.float32(0.3))))
    assert np.array_equal(net.blobs["y"].data, x * keep * scale)
    net.forward()  # the next forward continues the same stream
    assert np.array_equal(net.blobs["y"].data, x * ref.bernoulli(60, p).reshape(3, 4, 5) * scale)


def test_window_data_draws_from_the_caffe_stream(tmp_path):
    import cv2
    from google.protobuf import text_format

    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine.net import Net

    cv2.imwrite(str(tmp_path / "im.png"), np.full((30, 40, 3), 90, np.uint8))
    wins = ["1 0.9 0 0 20 20", "2 0.8 5 5 30 25", "3 0.95 10 2 39 29", "0 0.1 0 0 39 29"]
    (tmp_path / "w.txt").write_text("\n".join(["# 0", "im.png", "3 30 40", "4", *wins]) + "\n")
    text = (
        f'layer {{ name: "w" type: "WindowData" top: "data" top: "label" window_data_param {{ '
        f'source: "{tmp_path / "w.txt"}" root_folder: "{tmp_path}/" batch_size: 4 fg_fraction: 0.5 }} '
        "transform_param { crop_size: 8 mirror: true } }"
    )
    net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), caffe_pb2.TRAIN, seed=9)
    main = CaffeRng(9)
    main.rand()  # the transformer's seed (mirror), replaced by ...
    sampler = caffe_rng.fork(main)  # ... the window sampler's own generator, drawn in DataLayerSetUp
    try:
        for _ in range(3):
            net.forward()
            want = []
            for pool in ([0], [1, 2, 3]):  # 2 background windows, then 2 foreground ones
                for _ in range(2):
                    want.append(pool[sampler.rand() % len(pool)])
                    sampler.rand()  # the mirror coin
            assert net.blobs["label"].data.tolist() == want
    finally:
        net.close()
