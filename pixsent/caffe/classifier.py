"""pycaffe's ``caffe.Classifier``: a TEST-phase Net that resizes, crops (10-crop or centre) and classifies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pixsent.caffe import io as caffe_io
from pixsent.caffe.proto import caffe_pb2
from pixsent.caffe.pycaffe import Net


class Classifier(Net):
    """Image classifier as in BVLC python/caffe/classifier.py.

    Preprocessing of the first net input: transpose H x W x K -> K x H x W, then the optional channel
    swap, raw_scale, mean and input_scale (``caffe.io.Transformer``). ``image_dims`` is the size images
    are resized to before cropping (default: the net's input size, i.e. whole-image crop).
    """

    def __init__(
        self,
        model_file: str,
        pretrained_file: str,
        image_dims: Sequence[int] | None = None,
        mean: np.ndarray | None = None,
        input_scale: float | None = None,
        raw_scale: float | None = None,
        channel_swap: Sequence[int] | None = None,
    ) -> None:
        super().__init__(model_file, pretrained_file, caffe_pb2.TEST)
        in_ = self.inputs[0]
        self.transformer = caffe_io.input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs: Sequence[np.ndarray], oversample: bool = True) -> np.ndarray:
        """N x C class probabilities of H x W x K images.

        Each image is resized to ``image_dims`` (``caffe.io.resize_image``); with ``oversample`` the
        10 crops of ``caffe.io.oversample`` are classified and their outputs averaged, otherwise only
        the centre crop (box centre -/+ half the crop size, truncated to int as pycaffe does).
        """
        dims = (int(self.image_dims[0]), int(self.image_dims[1]))
        resized = np.zeros((len(inputs), dims[0], dims[1], inputs[0].shape[2]), dtype=np.float32)
        for ix, im in enumerate(inputs):
            resized[ix] = caffe_io.resize_image(im, dims)
        if oversample:
            crops = caffe_io.oversample(resized, self.crop_dims)
        else:
            y0, x0, y1, x1 = caffe_io._crop_boxes(dims, self.crop_dims)[4]
            crops = resized[:, y0:y1, x0:x1, :]
        in_ = self.inputs[0]
        caffe_in = np.zeros(np.array(crops.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for ix, crop in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, crop)
        out = self.forward_all(**{in_: caffe_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
