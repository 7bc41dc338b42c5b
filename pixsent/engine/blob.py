"""Blob: a named torch tensor (data) with its gradient (diff), seen from numpy like Caffe's Blob.

Live memory, as in Caffe: the array ``blob.data`` (or ``.diff``) hands out is a view of storage the blob
keeps until its shape changes, and every later forward (backward) writes its values into that storage, so
a held array always shows the newest values. Storage is pinned on the first host access: blobs nobody looks
at cost nothing (the net passes its own tensors from layer to layer, autograd graphs included).
"""

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
        #: persistent storage handed to numpy (None until pinned); holds the values after every net write
        self._live: torch.Tensor | None = None
        #: whether ``_diff`` is pinned storage that backward passes write into
        self._diff_pinned = False
        #: the blob's own tensor is its storage (Input tops: layers read and the user writes it directly)
        self.owned = False

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
        shape = tuple(value.shape)
        if shape != self._shape:
            self._unpin()
        self._shape = shape

    def _unpin(self) -> None:
        """Forget pinned storage (a reshape gives the blob new memory, as Caffe's held arrays go stale)."""
        self._live = None
        if self._diff_pinned:
            self._diff_pinned = False
            self._diff = None

    @property
    def pinned(self) -> bool:
        """True once a host view of the data exists (the net then copies new values into it)."""
        return self._live is not None

    def live(self) -> torch.Tensor:
        """The blob's persistent data storage (contiguous, on its device), pinned on first use."""
        if self.owned or self.is_param:
            return self.tensor
        if self._live is None or tuple(self._live.shape) != self._shape:
            self._live = torch.empty(self._shape, dtype=torch.float32, device=self.device)
            self._live.copy_(self.tensor.detach())
        return self._live

    def value(self) -> torch.Tensor:
        """The blob's values as the user sees them: the pinned storage when there is one."""
        return self._live if self._live is not None else self.tensor

    def sync_live(self) -> None:
        """Copy the newest tensor into pinned storage (the net calls this after writing the blob)."""
        live, t = self._live, self._tensor
        if live is not None and t is not None and live is not t:
            with torch.no_grad():
                live.copy_(t.detach())

    def read(self) -> torch.Tensor:
        """The tensor a layer reads at the start of a pass: the pinned storage (the user may have written
        it) wired to the last graph, so gradients still reach the layers that made it."""
        t = self.tensor
        live = self._live
        if live is None or live is t:
            return t
        if t.requires_grad and torch.is_grad_enabled():
            return t + (live - t).detach()
        return live

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
        elif self._diff_pinned and self._diff is not None and value is not None:
            if tuple(value.shape) == tuple(self._diff.shape):
                with torch.no_grad():
                    self._diff.copy_(value.detach())
            else:
                self._diff_pinned, self._diff = False, value
        else:
            self._diff = value

    @property
    def has_diff(self) -> bool:
        """True when a diff was written (by a backward or the user) since the blob got its shape."""
        return self.is_param or (self._diff is not None and tuple(self._diff.shape) == self._shape)

    # -- numpy views ------------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """Values as numpy: a live, writable view on CPU (see the module docstring), a copy elsewhere."""
        return _numpy(self.live())

    @data.setter
    def data(self, value: np.ndarray) -> None:
        with torch.no_grad():
            self.live().copy_(torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(self._shape))

    def live_diff(self) -> torch.Tensor:
        """The blob's persistent diff storage, pinned on first use (a parameter's ``.grad``)."""
        g = self.grad_tensor
        if not self.is_param and not self._diff_pinned:
            if not g.is_contiguous() or g.requires_grad:
                g = g.detach().contiguous().clone()
                self._diff = g
            self._diff_pinned = True
        return g

    @property
    def diff(self) -> np.ndarray:
        """Diff as numpy: a live, writable view on CPU, a copy from other devices."""
        return _numpy(self.live_diff())

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
        old = self._live if self._live is not None else self._tensor
        if old is not None and old.numel() == int(np.prod(shape, dtype=np.int64)) and not self.is_param:
            new = old.detach().reshape(shape).clone()
        else:
            new = torch.zeros(shape, dtype=torch.float32, device=self.device)
        if old is not None and old.requires_grad and old.is_leaf:
            new.requires_grad_(True)
        self._unpin()
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
