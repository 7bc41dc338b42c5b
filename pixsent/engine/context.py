"""Per-net execution context: device, phase, seeded RNGs and the data-parallel rank (one dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pixsent.caffe.proto import caffe_pb2

_GLOBAL_SEED: list[int | None] = [None]


def set_random_seed(seed: int) -> None:
    """Caffe::set_random_seed: nets built afterwards draw fillers, crops and dropout masks from ``seed``."""
    _GLOBAL_SEED[0] = int(seed)
    torch.manual_seed(int(seed))


def default_seed() -> int:
    """The seed a new context uses: the last set_random_seed value, else one drawn from torch's RNG."""
    if _GLOBAL_SEED[0] is not None:
        return _GLOBAL_SEED[0]
    return int(torch.randint(0, 2**62, (1,)).item())


@dataclass
class NetContext:
    """Where and how a net runs; the generators make fillers, data order and dropout reproducible.

    Caffe's own RNG streams (boost mt19937) are not reproduced: a seed gives a fixed, but different,
    sequence of filler values, crop offsets and dropout masks.
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    phase: int = caffe_pb2.TEST
    seed: int | None = None
    rank: int = 0
    world_size: int = 1
    generator: torch.Generator = field(init=False, repr=False)
    device_generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.seed is None:
            self.seed = default_seed()
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(int(self.seed))
        self.device_generator = torch.Generator(device=self.device)
        self.device_generator.manual_seed(int(self.seed) + 1)

    @property
    def train(self) -> bool:
        """True in the TRAIN phase."""
        return self.phase == caffe_pb2.TRAIN
