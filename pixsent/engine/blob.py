"""Blob: a named torch tensor (data) with its gradient (diff), seen from numpy like Caffe's Blob."""

from __future__ import annotations

import numpy as np
import torch

from pixsent.errors import NetError


class Blob:
    """Caffe's Blob over torch: ``tensor`` holds the values, ``grad_tensor`` the diff.

    Parameter blobs wrap a leaf tensor whose ``.grad`` is the diff; activation blobs take the tensor the
    last forward produced and the gradient the last backward left for it.
    """

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...] = (),
        *,
        device: torch.device | str = "cpu",
        tensor: torch.Tensor | None = None,
        is_param: bool = False,
    ) -> None:
        self.name = name
        self.device = torch.device(device)
        self.is_param = is_param
        self._shape = tuple(int(d) for d in (tensor.shape if tensor is not None else shape))
        self._tensor = tensor
        self._diff: torch.Tensor | None = None

    # -- tensors ----------------------------------------------------------------------------------
    @property
    def tensor(self) -> torch.Tensor:
        """The values (zeros of the set-up shape until a forward fills them)."""
        if self._tensor is None:
            self._tensor = torch.zeros(self._shape, dtype=torch.float32, device=self.device)
        return self._tensor

    @tensor.setter
    def tensor(self, value: torch.Tensor) -> None:
        self._tensor = value
        self._shape = tuple(value.shape)

    @property
    def grad_tensor(self) -> torch.Tensor:
        """The diff: a parameter's ``.grad`` (zeros when absent) or the last backward's gradient."""
        if self.is_param:
            t = self.tensor
            if t.grad is None:
                t.grad = torch.zeros_like(t)
            return t.grad
        if self._diff is None or tuple(self._diff.shape) != self._shape:
            self._diff = torch.zeros(self._shape, dtype=torch.float32, device=self.device)
        return self._diff

    @grad_tensor.setter
    def grad_tensor(self, value: torch.Tensor | None) -> None:
        if self.is_param:
            self.tensor.grad = value
        else:
            self._diff = value

    # -- numpy views ------------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """Values as numpy: a writable view on CPU, a copy from other devices."""
        return _numpy(self.tensor)

    @data.setter
    def data(self, value: np.ndarray) -> None:
        with torch.no_grad():
            self.tensor.copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(self._shape))

    @property
    def diff(self) -> np.ndarray:
        """Diff as numpy: a writable view on CPU, a copy from other devices."""
        return _numpy(self.grad_tensor)

    @diff.setter
    def diff(self, value: np.ndarray) -> None:
        with torch.no_grad():
            self.grad_tensor.copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(self._shape))

    # -- shape ------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    def _legacy(self, i: int) -> int:
        """Caffe's LegacyShape: axis ``i`` of a blob padded with trailing 1s to 4 axes."""
        if len(self._shape) > 4:
            raise NetError(
                f"blob {self.name}: num/channels/height/width need at most 4 axes, has {self._shape}"
            )
        return self._shape[i] if i < len(self._shape) else 1

    @property
    def num(self) -> int:
        return self._legacy(0)

    @property
    def channels(self) -> int:
        return self._legacy(1)

    @property
    def height(self) -> int:
        return self._legacy(2)

    @property
    def width(self) -> int:
        return self._legacy(3)

    def reshape(self, *shape: int) -> None:
        """Give the blob a new shape; values keep the old ones when the count matches, else become zeros."""
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if shape == self._shape:
            return
        old = self._tensor
        if old is not None and old.numel() == int(np.prod(shape, dtype=np.int64)) and not self.is_param:
            new = old.detach().reshape(shape).clone()
        else:
            new = torch.zeros(shape, dtype=torch.float32, device=self.device)
        if old is not None and old.requires_grad and old.is_leaf:
            new.requires_grad_(True)
        self._tensor = new
        self._shape = shape
        self._diff = None

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, {self._shape})"


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy array sharing memory with a CPU tensor (a host copy otherwise)."""
    t = t.detach()
    if t.device.type == "cpu":
        return t.numpy()
    return t.cpu().numpy()
