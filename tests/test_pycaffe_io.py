"""caffe.io of the pycaffe facade against pycaffe's semantics and the golden files of real Caffe's pycaffe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pixsent.caffe as caffe
from pixsent.caffe import io as cio
from pixsent.caffe.proto import caffe_pb2

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def predictions(golden: Path):
    return np.load(golden / "oversample" / "predictions.npz")


def _image_paths(golden: Path) -> list[str]:
    return (golden / "oversample" / "images.txt").read_text().split()


def test_import_is_lazy_and_torch_free():
    code = (
        "import sys, pixsent.caffe as c, pixsent.caffe.proto.caffe_pb2 as pb; "
        "assert c.TRAIN == pb.TRAIN and c.TEST == pb.TEST; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "c.io.load_image; assert 'torch' not in sys.modules, 'io imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError):
        caffe.no_such_thing  # noqa: B018


def test_load_image_equals_pycaffe(golden: Path, predictions):
    """load_image of the 3 golden images equals pycaffe's float32 RGB arrays exactly (tolerance 0)."""
    for rel in _image_paths(golden):
        stem = Path(rel).stem
        img = caffe.io.load_image(str(golden / "images" / rel))
        ref = predictions[f"{stem}/image"]
        assert img.dtype == np.float32 and img.shape == ref.shape
        assert np.abs(img - ref).max() == 0.0


def test_load_image_gray_and_alpha(tmp_path: Path):
    gray = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    col = cio.load_image(tmp_path / "g.png")
    assert col.shape == (12, 10, 3) and np.array_equal(col[..., 0], col[..., 2])
    assert np.allclose(col[..., 1], gray / 255.0, atol=1e-7)
    assert cio.load_image(tmp_path / "g.png", color=False).shape == (12, 10, 1)
    rgba = np.dstack([np.full((5, 6), v, np.uint8) for v in (10, 20, 30, 128)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = cio.load_image(tmp_path / "a.png")
    assert img.shape == (5, 6, 3) and np.allclose(img[0, 0], np.array([10, 20, 30]) / 255.0)
    # colour -> luminance with alpha blended on white, as scikit-image's as_gray
    lum = cio.load_image(tmp_path / "a.png", color=False)
    a = 128 / 255.0
    expect = (1 - a) + a * (np.array([10, 20, 30]) / 255.0) @ np.array([0.2125, 0.7154, 0.0721])
    assert lum.shape == (5, 6, 1) and abs(float(lum[0, 0, 0]) - expect) < 1e-6


def test_load_image_missing_file_names_it(tmp_path: Path):
    from pixsent.errors import DataError

    with pytest.raises(DataError, match="nope.jpg"):
        cio.load_image(tmp_path / "nope.jpg")


def test_resize_image_equals_pycaffe(golden: Path, predictions):
    """resize_image(img, (256, 256)) equals pycaffe + skimage 0.22: measured max abs diff 0, bound 1e-6."""
    img = cio.load_image(golden / "images" / "test" / "img32_c0.jpg")
    out = cio.resize_image(img, (256, 256))
    ref = predictions["img32_c0/resized_256"]
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-6


def test_resize_image_constant_border_pull():
    """Mode 'constant' interpolates against the image minimum beyond the border (README: 0.289 at 40->256)."""
    im = np.full((40, 40, 1), 0.5, np.float32)
    im[0, 0, 0] = 0.0  # min 0 so the flat 0.5 field is rescaled, not the constant-image shortcut
    out = cio.resize_image(im, (256, 256))
    assert abs(float(out[128, 0, 0]) - 0.2890625) < 1e-6
    assert abs(float(out[128, 128, 0]) - 0.5) < 1e-6


def test_resize_image_flat_and_other_channels():
    flat = np.full((7, 9, 3), 0.25, np.float32)
    out = cio.resize_image(flat, (4, 5))
    assert out.shape == (4, 5, 3) and out.dtype == np.float32 and np.all(out == 0.25)
    four = np.random.RandomState(0).rand(6, 8, 4).astype(np.float32)
    assert cio.resize_image(four, (12, 16)).shape == (12, 16, 4)
    shrink = cio.resize_image(np.random.RandomState(1).rand(60, 80, 3).astype(np.float32), (30, 20))
    assert shrink.shape == (30, 20, 3) and shrink.min() >= 0.0 and shrink.max() <= 1.0


def test_oversample_order():
    im = np.arange(8 * 9 * 2, dtype=np.float32).reshape(8, 9, 2)
    crops = cio.oversample([im, im + 1000], (4, 5))
    assert crops.shape == (20, 4, 5, 2) and crops.dtype == np.float32
    boxes = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]  # TL, TR, BL, BR, centre (4 - 2, int(4.5 - 2.5))
    for n, base in enumerate((im, im + 1000)):
        for k, (y, x) in enumerate(boxes):
            assert np.array_equal(crops[10 * n + k], base[y : y + 4, x : x + 5])
            assert np.array_equal(crops[10 * n + 5 + k], base[y : y + 4, x : x + 5][:, ::-1])


def _transformer() -> cio.Transformer:
    t = cio.Transformer({"data": (1, 3, 6, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_transformer_preprocess_and_round_trip():
    t = _transformer()
    img = np.random.RandomState(2).rand(6, 5, 3).astype(np.float32)
    before = img.copy()
    x = t.preprocess("data", img)
    assert x.shape == (3, 6, 5) and x.dtype == np.float32
    expect = (img.transpose(2, 0, 1)[[2, 1, 0]] * 255 - np.array([104.0, 117.0, 123.0])[:, None, None]) * 0.5
    assert np.abs(x - expect).max() < 1e-4  # float32 arithmetic, values up to ~80
    assert np.array_equal(img, before), "preprocess must not write into its input"
    back = t.deprocess("data", x)
    assert back.shape == (6, 5, 3) and np.abs(back - img).max() < 1e-6


def test_transformer_resizes_and_checks():
    t = cio.Transformer({"data": (1, 3, 6, 5)})
    assert t.preprocess("data", np.random.RandomState(3).rand(12, 10, 3)).shape == (6, 5, 3)
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.set_raw_scale("nope", 2)
    with pytest.raises(Exception, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(Exception, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="channels"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ValueError, match="incompatible"):
        t.set_mean("data", np.zeros((3, 7, 5)))
    t.set_mean("data", np.ones((3, 6, 5)))
    assert t.mean["data"].shape == (3, 6, 5)


def test_blobproto_conversions(golden: Path):
    arr = np.random.RandomState(4).rand(2, 3, 4).astype(np.float32)
    blob = cio.array_to_blobproto(arr, diff=arr * 2)
    assert list(blob.shape.dim) == [2, 3, 4]
    assert np.array_equal(cio.blobproto_to_array(blob), arr)
    assert np.array_equal(cio.blobproto_to_array(blob, return_diff=True), arr * 2)
    vec = cio.arraylist_to_blobprotovecor_str([arr, arr[0]])
    back = cio.blobprotovector_str_to_arraylist(vec)
    assert [b.shape for b in back] == [(2, 3, 4), (3, 4)]
    legacy = caffe_pb2.BlobProto()
    legacy.ParseFromString((golden / "mean.binaryproto").read_bytes())
    mean = cio.blobproto_to_array(legacy)
    assert mean.shape == (1, 3, 36, 36)
    assert np.array_equal(mean[0].astype(np.float32), np.load(golden / "mean.npy"))


def test_datum_conversions(golden: Path):
    u8 = np.random.RandomState(5).randint(0, 256, (3, 4, 5)).astype(np.uint8)
    d = cio.array_to_datum(u8, label=1)
    assert d.label == 1 and len(d.data) == 60 and np.array_equal(cio.datum_to_array(d), u8)
    f = cio.array_to_datum(u8.astype(np.float32) / 3)
    assert not f.HasField("label") and np.allclose(cio.datum_to_array(f), u8 / 3, atol=1e-5)
    with pytest.raises(ValueError):
        cio.array_to_datum(u8[0])
    import lmdb

    arrays = []
    for name in ("train_raw", "train_encoded"):
        env = lmdb.open(str(golden / "lmdb" / name), readonly=True, lock=False)
        with env.begin() as txn, txn.cursor() as cur:
            cur.first()
            datum = caffe_pb2.Datum()
            datum.ParseFromString(cur.value())
            arrays.append(cio.datum_to_array(datum))
        env.close()
    assert arrays[0].shape == (3, 36, 36) and np.array_equal(arrays[0], arrays[1])
