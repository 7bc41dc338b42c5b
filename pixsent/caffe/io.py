"""pycaffe's ``caffe.io``: image loading, resizing, 10-crop oversampling, the Transformer, proto <-> array.

Semantics follow BVLC Caffe's python/caffe/io.py (master 9b891540) as run with scikit-image 0.22,
reproduced here with Pillow and scipy.ndimage only (no scikit-image dependency); see each docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from pixsent.caffe.errors import BlobValueError
from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import DataError, FormatError

__all__ = [
    "Transformer",
    "array_to_blobproto",
    "array_to_datum",
    "arraylist_to_blobprotovecor_str",
    "arraylist_to_blobprotovector_str",
    "blobproto_to_array",
    "blobprotovector_str_to_arraylist",
    "datum_to_array",
    "load_image",
    "oversample",
    "resize_image",
]

# ----------------------------------------------------------------------------------------------------
# proto / datum / ndarray conversion


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """Blob values (or diff) as a float64 array shaped by the legacy num/channels/height/width when any
    of them is set, else by ``shape.dim`` (pycaffe's rule, so old mean.binaryproto files come out 4-D).
    Values that do not fit the shape (e.g. a blob without shape holding several) raise ValueError, as
    numpy's reshape does in pycaffe."""
    values = np.array(blob.diff if return_diff else blob.data, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape: tuple[int, ...] = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if int(np.prod(shape)) != values.size:
        raise BlobValueError(f"BlobProto: shape {shape} does not match its {values.size} values")
    return values.reshape(shape)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """A BlobProto with ``shape`` set to the array's shape (any rank), values stored as float."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist: Sequence[np.ndarray]) -> bytes:
    """Serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


# pycaffe's historical misspelling, kept so old scripts keep working.
arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str


def blobprotovector_str_to_arraylist(data: bytes) -> list[np.ndarray]:
    """Arrays of a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr: np.ndarray, label: int | None = None) -> caffe_pb2.Datum:
    """A C x H x W array as a Datum: uint8 arrays go to raw ``data`` bytes, others to ``float_data``."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.flat)
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """Datum pixels as C x H x W: uint8 for raw bytes, float64 for ``float_data``.

    pycaffe cannot read ``encoded`` datums; here they are decoded (OpenCV, BGR, as Caffe's DecodeDatum).
    """
    if datum.encoded:
        import cv2

        img = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise FormatError("Datum: encoded image data cannot be decoded")
        return img[np.newaxis] if img.ndim == 2 else img.transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=np.float64).reshape(shape)


# ----------------------------------------------------------------------------------------------------
# Image IO

_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])  # scikit-image's rgb2gray (ITU-R BT.709)


def _to_float(arr: np.ndarray) -> np.ndarray:
    """scikit-image's img_as_float: unsigned ints divided by their max, floats kept, bools to 0/1."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return arr.astype(np.float64) / np.iinfo(arr.dtype).max
    if np.issubdtype(arr.dtype, np.signedinteger):
        return np.maximum(arr.astype(np.float64) / np.iinfo(arr.dtype).max, -1.0)
    return arr


def _decode(filename: str | Path) -> np.ndarray:
    """Pixels as Pillow gives them to imageio (no EXIF rotation; palettes expanded to RGB/RGBA)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(filename) as img:
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                img = img.convert("RGB")
            return np.asarray(img)
    except FileNotFoundError as exc:
        raise DataError(f"{filename}: image file not found") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{filename}: cannot decode image ({exc})") from exc


def load_image(filename: str | Path, color: bool = True) -> np.ndarray:
    """Image as float32 H x W x 3 RGB in [0, 1] (or H x W x 1 when ``color`` is False).

    As pycaffe: grey images are tiled to 3 channels when ``color``; an alpha channel is dropped;
    ``color=False`` turns colour images to luminance (0.2125 R + 0.7154 G + 0.0721 B, alpha blended on
    white first) as scikit-image's ``as_gray`` does.
    """
    img = _decode(filename)
    if not color and img.ndim == 3:
        rgb = _to_float(img)
        if rgb.shape[2] == 4:
            alpha = rgb[..., 3:4]
            rgb = (1.0 - alpha) + alpha * rgb[..., :3]
        img = rgb[..., :3] @ _GRAY_WEIGHTS
    img = _to_float(img).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def _skimage_resize(im: np.ndarray, out_hw: tuple[int, int], order: int) -> np.ndarray:
    """scikit-image 0.22 ``resize(im, out_hw, order)`` with its defaults (mode 'constant' as pycaffe
    calls it, cval 0, clip, anti-aliasing only when shrinking).

    That resize blurs with a Gaussian of sigma max(0, (in/out - 1) / 2) per axis when an output axis is
    smaller, then calls ndimage.zoom with grid_mode=True and 'grid-constant' (interpolates against 0 past
    the border, which pulls the outer rows and columns towards 0), then clips to the input range.
    Verified against golden ``img32_c0/resized_256``: max abs diff 0.
    """
    in_shape = np.array(im.shape, dtype=float)
    out_shape = np.array(tuple(out_hw) + im.shape[2:], dtype=float)
    factors = in_shape / out_shape
    src = im
    if order > 0 and np.any(out_shape < in_shape):
        sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
        src = ndimage.gaussian_filter(im, sigma, mode="constant", cval=0.0)
    out = ndimage.zoom(src, tuple(1.0 / factors), order=order, mode="grid-constant", cval=0.0, grid_mode=True)
    lo, hi = min(float(im.min()), 0.0), max(float(im.max()), 0.0)
    return np.clip(out, lo, hi, out=out)


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Resize H x W x K to new_dims (height, width), float32, as pycaffe's ``caffe.io.resize_image``.

    With 1 or 3 channels the image is rescaled to [0, 1] by its own min and max, resized as
    scikit-image does (see ``_skimage_resize``) and scaled back; a constant image comes back filled
    with its value. Other channel counts go through ``ndimage.zoom`` (mode 'constant', no grid mode).
    """
    im = np.asarray(im)
    new_hw = (int(new_dims[0]), int(new_dims[1]))
    if im.shape[-1] in (1, 3):
        im_min, im_max = im.min(), im.max()
        if im_max > im_min:
            im_std = (im - im_min) / (im_max - im_min)
            resized = _skimage_resize(im_std, new_hw, interp_order) * (im_max - im_min) + im_min
        else:
            return np.full((new_hw[0], new_hw[1], im.shape[-1]), im_min, dtype=np.float32)
    else:
        scale = tuple(np.array(new_hw, dtype=float) / np.array(im.shape[:2]))
        resized = ndimage.zoom(im, scale + (1,), order=interp_order)
    return resized.astype(np.float32)


def _crop_boxes(im_hw: Sequence[int], crop_hw: Sequence[int]) -> np.ndarray:
    """(y0, x0, y1, x1) of the 4 corners (TL, TR, BL, BR) and the centre; the centre box is
    centre -/+ half the crop, truncated towards zero as pycaffe's int array assignment does."""
    h, w = int(im_hw[0]), int(im_hw[1])
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    boxes = [(i, j, i + ch, j + cw) for i in (0, h - ch) for j in (0, w - cw)]
    centre = [h / 2.0 - ch / 2.0, w / 2.0 - cw / 2.0, h / 2.0 + ch / 2.0, w / 2.0 + cw / 2.0]
    boxes.append(tuple(int(v) for v in centre))
    return np.array(boxes, dtype=int)


def oversample(images: Sequence[np.ndarray], crop_dims: Sequence[int]) -> np.ndarray:
    """10 crops per image (float32, 10N x h x w x K): top-left, top-right, bottom-left, bottom-right,
    centre, then the same five mirrored left-right; all images must share the first one's size."""
    crop_hw = (int(crop_dims[0]), int(crop_dims[1]))
    shape = np.asarray(images[0]).shape
    boxes = _crop_boxes(shape[:2], crop_hw)
    crops = np.empty((10 * len(images), crop_hw[0], crop_hw[1], shape[-1]), dtype=np.float32)
    for n, im in enumerate(images):
        for k, (y0, x0, y1, x1) in enumerate(boxes):
            crops[10 * n + k] = im[y0:y1, x0:x1, :]
        crops[10 * n + 5 : 10 * n + 10] = crops[10 * n : 10 * n + 5, :, ::-1, :]
    return crops


# ----------------------------------------------------------------------------------------------------
# Pre-processing


class Transformer:
    """Turns H x W x K images into a net input's K x H x W layout (pycaffe's ``caffe.io.Transformer``).

    ``inputs`` maps input blob name -> its shape (N, K, H, W). ``preprocess`` applies, in order: float32,
    resize to (H, W), transpose, channel swap, ``raw_scale``, mean subtraction, ``input_scale``.
    """

    def __init__(self, inputs: Mapping[str, Sequence[int]]) -> None:
        self.inputs = dict(inputs)
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise Exception(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """H' x W' x K image -> K x H x W float32 array for input blob ``in_``."""
        self._check_input(in_)
        # Always a private float32 copy: pycaffe's in-place scaling could write into the caller's array.
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = tuple(self.inputs[in_][2:])
        if tuple(caffe_in.shape[:2]) != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if (order := self.transpose.get(in_)) is not None:
            caffe_in = caffe_in.transpose(order)
        if (swap := self.channel_swap.get(in_)) is not None:
            caffe_in = caffe_in[list(swap), :, :]
        # In-place ops keep float32 whatever the mean's dtype, exactly as pycaffe's -= and *= do.
        if (raw := self.raw_scale.get(in_)) is not None:
            caffe_in *= raw
        if (mean := self.mean.get(in_)) is not None:
            caffe_in -= mean
        if (scale := self.input_scale.get(in_)) is not None:
            caffe_in *= scale
        return caffe_in

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Inverse of ``preprocess`` (without the resize): K x H x W (squeezed) -> H x W x K."""
        self._check_input(in_)
        out = np.array(data, copy=True).squeeze()
        if (scale := self.input_scale.get(in_)) is not None:
            out /= scale
        if (mean := self.mean.get(in_)) is not None:
            out += mean
        if (raw := self.raw_scale.get(in_)) is not None:
            out /= raw
        if (swap := self.channel_swap.get(in_)) is not None:
            out = out[np.argsort(swap), :, :]
        if (order := self.transpose.get(in_)) is not None:
            out = out.transpose(np.argsort(order))
        return out

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Axis order taking the image's H x W x K to the blob's K x H x W, e.g. (2, 0, 1)."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception("Transpose order needs to have the same number of dimensions as the input.")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Channel order after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception("Channel swap needs to have the same number of dimensions as the input channels.")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Factor applied before mean subtraction (255 for [0, 1] images and CaffeNet-style models)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Mean to subtract: one value per channel (K,) or a full K x H x W (or H x W) image.

        As pycaffe, a full mean must already have the input's K x H x W shape (no resizing).
        """
        self._check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError("Mean shape invalid")
            if tuple(ms) != tuple(self.inputs[in_][1:]):
                raise ValueError("Mean shape incompatible with input shape.")
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Factor applied after mean subtraction (e.g. 0.017 for some models)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


def input_transformer(
    net,
    mean: np.ndarray | None = None,
    input_scale: float | None = None,
    raw_scale: float | None = None,
    channel_swap: Sequence[int] | None = None,
) -> Transformer:
    """The Transformer of a net's first input as pycaffe's Classifier and Detector set it up: transpose
    H x W x K -> K x H x W, then each given setting."""
    name = net.inputs[0]
    t = Transformer({name: net.blobs[name].data.shape})
    t.set_transpose(name, (2, 0, 1))
    if mean is not None:
        t.set_mean(name, mean)
    if input_scale is not None:
        t.set_input_scale(name, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(name, channel_swap)
    return t
