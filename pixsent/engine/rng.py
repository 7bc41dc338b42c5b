"""Caffe's random streams on the CPU: ``Caffe::RNG`` (boost::mt19937) and the caffe_rng_* draws over it.

What Caffe 1.0 does (common.cpp, util/math_functions.cpp, util/rng.hpp), in short:

- Each thread has its own Caffe singleton and so its own generator; ``Caffe::set_random_seed(s)`` replaces
  the calling thread's generator by ``mt19937(s)`` (unsigned 32-bit seed; unseeded, it comes from
  /dev/urandom). The solver seeds it with ``random_seed`` (+ solver rank) before building its nets.
- ``caffe_rng_rand()`` is one raw 32-bit output; ``Rand(n)`` of the data transformer is that modulo n.
- ``caffe_rng_uniform(n, a, b)`` draws boost::uniform_real<Dtype>(a, nextafter(b)), so b itself can come
  out; ``caffe_rng_gaussian(n, mu, sigma)`` boost::normal_distribution<Dtype> (sigma must be > 0);
  ``caffe_rng_bernoulli(n, p)`` boost::bernoulli_distribution over the type of ``p`` (Dropout passes
  ``1. - threshold_``, a double; the sparse gaussian filler a float).
- ``shuffle`` is Caffe's own Fisher-Yates with boost::uniform_int (not std::shuffle).

numpy's MT19937 produces the standard 32-bit stream, and boost's ``seed(uint32)`` is the standard
init_genrand (its extra state normalisation only touches bits the twist never reads), so a numpy
generator set to init_genrand's state gives boost's raw outputs, drawn in vectorised blocks.

The GPU streams of Caffe (curand) are not reproduced; pixsent draws the same CPU streams whatever device
a net runs on.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np

from pixsent.engine import boost_random as br

F32 = np.float32


def init_genrand(seed: int) -> np.ndarray:
    """The 624-word MT19937 state of ``mt19937(seed)`` (Knuth's multiplier 1812433253)."""
    key = np.empty(624, dtype=np.uint32)
    x = int(seed) & 0xFFFFFFFF
    key[0] = x
    for i in range(1, 624):
        x = (1812433253 * (x ^ (x >> 30)) + i) & 0xFFFFFFFF
        key[i] = x
    return key


class CaffeRng:
    """One Caffe::RNG: a boost::mt19937 with Caffe's draws. Its state saves and restores exactly."""

    def __init__(self, seed: int | None = None) -> None:
        self._bits = np.random.MT19937(0)
        self._deferred: list[Callable[[], object]] = []
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        """Reseed as ``mt19937(seed)``; None takes a seed from the OS as Caffe's cluster_seedgen does."""
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        self.set_state(np.append(init_genrand(seed), np.uint32(624)))

    # -- deferred draws -------------------------------------------------------------------------
    def defer(self, draw: Callable[[], object]) -> None:
        """Queue draws whose values nobody needs (fillers of parameters a caffemodel overwrites next): they
        run, in order, only when the stream is next used or its state read, and never when it is reseeded
        or set first. So wherever the stream is observed it stands where Caffe's would, and a deploy net
        loaded from weights that nothing draws after costs no filler time."""
        self._deferred.append(draw)

    def _settle(self) -> None:
        """Run the deferred draws (each one may draw more: they are taken off the queue first)."""
        while self._deferred:
            pending, self._deferred = self._deferred, []
            for draw in pending:
                draw()

    # -- state ----------------------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """625 uint32: the 624-word key, then the position in it."""
        self._settle()
        st = self._bits.state["state"]
        return np.append(np.asarray(st["key"], dtype=np.uint32), np.uint32(st["pos"]))

    def set_state(self, state: np.ndarray) -> None:
        """Restore a ``get_state`` value."""
        state = np.asarray(state, dtype=np.uint32)
        if state.shape != (625,) or int(state[624]) > 624:
            raise ValueError(f"not an mt19937 state: shape {state.shape}")
        self._deferred = []  # draws queued before a new state never happened, as far as anyone can tell
        self._bits.state = {
            "bit_generator": "MT19937",
            "state": {"key": state[:624].copy(), "pos": int(state[624])},
        }

    # -- raw ------------------------------------------------------------------------------------
    def raw(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit outputs (uint64 array holding 32-bit values)."""
        if self._deferred:
            self._settle()
        return self._bits.random_raw(int(n))

    def rand(self) -> int:
        """caffe_rng_rand(): one raw 32-bit output."""
        if self._deferred:
            self._settle()
        return int(self._bits.random_raw())

    def rand_mod(self, n: int, count: int | None = None) -> int | np.ndarray:
        """The data transformer's Rand(n) = raw % n; ``count`` of them as an array when given."""
        if n <= 0:
            raise ValueError(f"Rand({n}): n must be positive")
        if count is None:
            return self.rand() % n
        return (self.raw(count) % n).astype(np.int64)

    # -- caffe_rng_* ----------------------------------------------------------------------------
    def uniform(self, n: int, a: float, b: float) -> np.ndarray:
        """caffe_rng_uniform<float>: ``n`` floats of uniform_real(a, nextafter(b)) (b may come out)."""
        a32, b32 = F32(a), F32(b)
        if not a32 <= b32:
            raise ValueError(f"uniform: min {a} above max {b}")
        upper = np.nextafter(b32, F32(np.finfo(F32).max)) if b32 < np.finfo(F32).max else b32
        return br.uniform_real_f32(self, n, a32, upper)

    def gaussian(self, n: int, mu: float, sigma: float) -> np.ndarray:
        """caffe_rng_gaussian<float>: ``n`` floats of normal_distribution(mu, sigma); sigma must be > 0."""
        if not F32(sigma) > 0:
            raise ValueError(f"gaussian: sigma must be positive, got {sigma}")
        return br.normal_f32(self, n, F32(mu), F32(sigma))

    def bernoulli(self, n: int, p: float, real: type = np.float64) -> np.ndarray:
        """caffe_rng_bernoulli: ``n`` bools, true with probability p (compared in ``real`` arithmetic)."""
        if not 0 <= p <= 1:
            raise ValueError(f"bernoulli: p must be in [0, 1], got {p}")
        return br.bernoulli(self, n, p, real)

    def shuffle(self, n: int) -> np.ndarray:
        """Caffe's shuffle of n items, as the permutation of 0..n-1 it leaves."""
        return br.shuffle_permutation(self, n)


_LOCAL = threading.local()


def current() -> CaffeRng:
    """This thread's Caffe generator (``caffe_rng()``), created from OS entropy on first use."""
    rng = getattr(_LOCAL, "rng", None)
    if rng is None:
        rng = _LOCAL.rng = CaffeRng()
    return rng


def set_random_seed(seed: int) -> None:
    """Caffe::set_random_seed for the calling thread: its generator restarts as mt19937(seed)."""
    current().seed(int(seed) & 0xFFFFFFFF)


def fork(parent: CaffeRng | None = None) -> CaffeRng:
    """A new generator seeded by one draw of ``parent`` (default: this thread's), as Caffe seeds the
    data transformer's, the prefetch thread's and ImageData's shuffling generators."""
    return CaffeRng((parent or current()).rand())
