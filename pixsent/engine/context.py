"""Per-net execution context: device, phase, the random streams and the data-parallel rank (one dataclass).

Random numbers follow Caffe (see ``pixsent.engine.rng``): a net draws fillers, data-layer seeds and Dropout
masks from the calling thread's Caffe generator (``rng.current()``, seeded by ``set_random_seed``), or,
when built with an explicit ``seed``, from a generator of its own seeded with it. ``PIXSENT_RNG=torch``
(or ``rng_mode="torch"``) draws fillers and Dropout masks from torch generators instead: faster for big
nets and on GPUs, but not Caffe's numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from pixsent.caffe.proto import caffe_pb2
from pixsent.engine import rng as caffe_rng
from pixsent.engine.rng import CaffeRng

RNG_MODES = ("caffe", "torch")


def set_random_seed(seed: int) -> None:
    """Caffe::set_random_seed: nets built afterwards draw fillers, crops and dropout masks from ``seed``."""
    caffe_rng.set_random_seed(int(seed))
    torch.manual_seed(int(seed))


def default_rng_mode() -> str:
    """``PIXSENT_RNG`` (caffe or torch), caffe when unset."""
    mode = os.environ.get("PIXSENT_RNG", "caffe").strip().lower() or "caffe"
    if mode not in RNG_MODES:
        from pixsent.errors import PixsentError

        raise PixsentError(f"PIXSENT_RNG={mode!r}: use caffe or torch")
    return mode


@dataclass
class NetContext:
    """Where and how a net runs, and which random streams it draws from."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    phase: int = caffe_pb2.TEST
    seed: int | None = None
    rank: int = 0
    world_size: int = 1
    rng_mode: str = field(default_factory=default_rng_mode)
    #: layers whose parameters a caffemodel overwrites right after set-up: their fillers are deferred
    #: (``CaffeRng.defer``), drawn only if the stream is used afterwards
    overwritten_layers: frozenset[str] = frozenset()
    generator: torch.Generator = field(init=False, repr=False)
    device_generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self._own_rng = CaffeRng(self.seed) if self.seed is not None else None
        if self.rng_mode not in RNG_MODES:
            raise ValueError(f"rng_mode {self.rng_mode!r}: use caffe or torch")
        # the torch generators serve rng_mode torch; seeding them from torch's RNG leaves Caffe's stream alone
        torch_seed = int(self.seed) if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(torch_seed)
        self.device_generator = torch.Generator(device=self.device)
        self.device_generator.manual_seed(torch_seed + 1)

    @property
    def train(self) -> bool:
        """True in the TRAIN phase."""
        return self.phase == caffe_pb2.TRAIN

    @property
    def rng(self) -> CaffeRng:
        """The Caffe generator this net draws from now: its own (explicit seed) or the thread's."""
        return self._own_rng if self._own_rng is not None else caffe_rng.current()

    @property
    def own_rng(self) -> CaffeRng | None:
        """The net's own generator (built with an explicit seed), else None."""
        return self._own_rng

    @property
    def torch_rng(self) -> bool:
        """True when fillers and Dropout use the torch generators (``rng_mode`` torch)."""
        return self.rng_mode == "torch"

    def filler_rng(self) -> CaffeRng | torch.Generator:
        """What fillers draw from: the Caffe generator, or the torch one in ``rng_mode`` torch."""
        return self.generator if self.torch_rng else self.rng
