"""pycaffe's ``caffe.Detector``: classify windows of images (R-CNN style), as BVLC python/caffe/detector.py.

Windows are (ymin, xmin, ymax, xmax) boxes; each is cut from the image (``caffe.io.load_image``: RGB floats
in [0, 1]), warped to the net's input size by the Transformer and classified with ``forward_all``. With
``context_pad`` the box is grown so that, once warped, ``context_pad`` pixels of context surround it; parts
outside the image are filled with the mean in unprocessed image space. ``detect_selective_search`` needs
the external selective_search_ijcv_with_python module (and MATLAB), as in pycaffe.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np

from pixsent.caffe import io as caffe_io
from pixsent.caffe.proto import caffe_pb2
from pixsent.caffe.pycaffe import Net


class Detector(Net):
    """Window classifier over a TEST-phase net; preprocessing as ``Classifier`` (transpose, channel swap,
    raw_scale, mean, input_scale of the first input)."""

    def __init__(
        self,
        model_file: str,
        pretrained_file: str,
        mean: np.ndarray | None = None,
        input_scale: float | None = None,
        raw_scale: float | None = None,
        channel_swap: Sequence[int] | None = None,
        context_pad: int | None = None,
    ) -> None:
        super().__init__(model_file, pretrained_file, caffe_pb2.TEST)
        self.transformer = caffe_io.input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows: Iterable[tuple[str, Sequence]]) -> list[dict]:
        """[(image file, windows), ...] -> one {'window', 'prediction', 'filename'} dict per window."""
        images_windows = list(images_windows)
        window_inputs = []
        for image_fname, windows in images_windows:
            image = caffe_io.load_image(image_fname).astype(np.float32)
            for window in windows:
                window_inputs.append(self.crop(image, np.asarray(window)))
        in_ = self.inputs[0]
        shape = (len(window_inputs), window_inputs[0].shape[2]) + tuple(self.blobs[in_].data.shape[2:])
        caffe_in = np.zeros(shape, dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        ix = 0
        for image_fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix], "filename": image_fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames: Sequence[str]) -> list[dict]:
        """Windows proposed by selective search (external module), then ``detect_windows``."""
        import selective_search_ijcv_with_python as selective_search  # noqa: PLC0415 - optional, as pycaffe

        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im: np.ndarray, window: np.ndarray) -> np.ndarray:
        """The window's pixels (H x W x K), with ``context_pad`` context and mean padding when set."""
        window = np.asarray(window)
        crop = im[int(window[0]) : int(window[2]), int(window[1]) : int(window[3])]
        if not self.context_pad:
            return crop
        box = window.astype(np.float64).copy()
        crop_size = self.blobs[self.inputs[0]].width  # square inputs, as pycaffe assumes
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h = (box[2] - box[0] + 1) / 2.0
        half_w = (box[3] - box[1] + 1) / 2.0
        center = (box[0] + half_h, box[1] + half_w)
        scaled_dims = scale * np.array((-half_h, -half_w, half_h, half_w))
        box = np.round(np.tile(center, 2) + scaled_dims)
        full_h = box[2] - box[0] + 1
        full_w = box[3] - box[1] + 1
        scale_h = crop_size / full_h
        scale_w = crop_size / full_w
        pad_y = int(round(max(0, -box[0]) * scale_h))
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h = box[2] - box[0] + 1
        clip_w = box[3] - box[1] + 1
        if not (clip_h > 0 and clip_w > 0):
            raise ValueError(f"window {window.tolist()} lies outside the image")
        crop_h = int(round(clip_h * scale_h))
        crop_w = int(round(clip_w * scale_w))
        crop_h = min(crop_h, crop_size - pad_y)
        crop_w = min(crop_w, crop_size - pad_x)
        context_crop = im[int(box[0]) : int(box[2]), int(box[1]) : int(box[3])]
        context_crop = caffe_io.resize_image(context_crop, (crop_h, crop_w))
        out = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        out[pad_y : pad_y + crop_h, pad_x : pad_x + crop_w] = context_crop
        return out

    def configure_crop(self, context_pad: int | None) -> None:
        """Crop dimensions (H x W x K of the input) and the padding mean in unprocessed image space."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = [tpose[t] for t in tpose]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        channel_order = self.transformer.channel_swap.get(in_)
        raw_scale = self.transformer.raw_scale.get(in_)
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.broadcast_to(mean, tuple(self.blobs[in_].data.shape[1:])).copy()
        crop_mean = crop_mean.transpose(inv_tpose)
        if channel_order is not None:
            inverse = [list(channel_order).index(i) for i in range(crop_mean.shape[2])]
            crop_mean = crop_mean[:, :, inverse]
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
