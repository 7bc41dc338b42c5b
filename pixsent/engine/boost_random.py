"""Boost.Random 1.74's distributions over a 32-bit Mersenne Twister, value for value, in float32 or double.

Caffe (CPU) draws every random number through Boost.Random's ``variate_generator`` on ``boost::mt19937``;
in Boost 1.47+ that calls the distribution with the engine directly, so each distribution below consumes
the raw 32-bit stream exactly as Boost does. What Boost 1.74 does (read from its headers):

- ``uniform_real<T>(a, b)``: ``T(u) / (T(2^32 - 1) + 1) * (b - a) + a`` in T arithmetic, a fresh draw
  whenever the result is not below b (float: ``T(u)`` rounds, so u near 2^32 gives b and is redrawn).
- ``uniform_01<T>``: ``T(u) * (1 / (T(2^32 - 1) + 1))``, redrawn while the result is 1.
- ``bernoulli_distribution<T>(p)``: no draw at all when p is 0, else ``T(u) <= p * T(2^32 - 1)``.
- ``uniform_int<long>(0, i)`` (i < 2^32 - 1): bucket size floor((2^32 - 1) / (i + 1)), plus one when the
  remainder equals i; u / bucket is redrawn while it exceeds i.
- ``normal_distribution<T>``: a 128-box ziggurat. One draw u gives the box ``(u & 255) >> 1``, the sign
  (bit 0 set: +) and ``r = (u >> 8) * 2^-24``; ``x = r * T(X[i])`` is taken when ``x < X[i+1]`` (a
  double comparison). Box 0 otherwise samples the tail beyond X[1] from two exponentials; other boxes draw
  a uniform_01 ``y01`` for the height and accept by the tangent/chord bounds or ``y < exp(-x*x/2)``, else
  start over. The result is ``z * sigma + mean`` in T.
- ``exponential_distribution<T>(lambda)``: a 256-box ziggurat of the same shape (box ``u & 255``), box 0
  shifting by X[1] and starting over; the result is divided by lambda.

The common cases (one draw per value) are vectorised over ``random_raw`` blocks; the rare ones run as
scalar code on the same stream. No block ever draws past what the sequential algorithm would consume, so
the generator ends exactly where Boost's would. ``exp`` is taken in double and rounded to float, which
matches glibc's ``expf`` except within a hair of a rounding tie (it only decides the rare exact-curve test).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from pixsent.engine.boost_tables import EXPONENTIAL_X, EXPONENTIAL_Y, NORMAL_X, NORMAL_Y

F32 = np.float32
_TWO32 = 4294967296.0
_RANGE_F32 = F32(4294967296.0)  # float(2^32 - 1) rounds up to 2^32; + 1 stays 2^32
_UNIT_F32 = F32(1.0) / _RANGE_F32
_R24 = F32(2.0**-24)

_NX = np.asarray(NORMAL_X, dtype=np.float64)
_NY = np.asarray(NORMAL_Y, dtype=np.float64)
_NX32 = _NX.astype(F32)
_NX32_R24 = _NX32 * _R24  # box width times 2^-24: r * X[i] in one exact-scaling multiply
# the smallest float at or above X[i+1]: ``x < X[i+1]`` (float against double) as a float comparison
_NX_NEXT32 = _NX[1:].astype(F32)
_NX_NEXT32 = np.where(_NX[1:] > _NX_NEXT32, np.nextafter(_NX_NEXT32, F32(np.inf)), _NX_NEXT32).astype(F32)
_EX32 = np.asarray(EXPONENTIAL_X, dtype=np.float64).astype(F32)
_EY = np.asarray(EXPONENTIAL_Y, dtype=np.float64)


#: values handled per vectorised block (bounds the temporaries to a few tens of MB)
BLOCK = 1 << 20


class RawSource(Protocol):
    """Anything handing out the next ``n`` raw 32-bit outputs of the engine (advancing it)."""

    def raw(self, n: int) -> np.ndarray: ...


class _OutOfBlock(Exception):
    """A scalar path needed raws past the end of the block drawn so far."""


class _Stream:
    """Scalar reads of a block already drawn, from ``pos`` on; past its end from ``source`` (if given),
    else raising _OutOfBlock."""

    def __init__(self, block: np.ndarray, pos: int, source: RawSource | None = None) -> None:
        self.block, self.pos, self.source = block, pos, source

    def __call__(self) -> int:
        if self.pos < len(self.block):
            u = int(self.block[self.pos])
        elif self.source is not None:
            u = int(self.source.raw(1)[0])
        else:
            raise _OutOfBlock
        self.pos += 1
        return u


def _expf(x: np.float32) -> np.float32:
    return F32(math.exp(float(x)))


# ---------------------------------------------------------------------------------------------- scalar
def uniform01_f32(next_u) -> np.float32:
    """boost::uniform_01<float>: u * 2^-32 in float, redrawn while it rounds to 1."""
    while True:
        r = F32(next_u()) * _UNIT_F32
        if r < F32(1.0):
            return r


def unit_exponential_f32(next_u) -> np.float32:
    """Boost's exponential ziggurat for float with lambda 1 (scalar)."""
    shift = F32(0.0)
    while True:
        u = next_u()
        i = u & 255
        x = F32(u >> 8) * _R24 * _EX32[i]
        if x < _EX32[i + 1]:
            return shift + x
        if i == 0:
            shift = shift + _EX32[1]
            continue
        y01 = uniform01_f32(next_u)
        y = F32(_EY[i]) + y01 * F32(_EY[i + 1] - _EY[i])
        above_upper = F32(EXPONENTIAL_X[i] - EXPONENTIAL_X[i + 1]) * y01 - (_EX32[i] - x)
        above_lower = y - (F32(_EY[i + 1]) + (_EX32[i + 1] - x) * F32(_EY[i + 1]))
        if above_upper < 0 and (above_lower < 0 or y < _expf(-x)):
            return x + shift


def _normal_tail_f32(next_u) -> np.float32:
    """The normal tail beyond X[1]: exponential(X[1]) proposals accepted when 2 * e1 > x * x."""
    start = _NX32[1]
    while True:
        x = unit_exponential_f32(next_u) / start
        y = unit_exponential_f32(next_u) / F32(1.0)
        if F32(2.0) * y > x * x:
            return x + start


def _normal_attempt(u: int, next_u) -> np.float32 | None:
    """One pass of Boost's normal loop for the pair drawn as ``u``: the signed value, or None to start
    over (the wedge rejected it)."""
    i = (u & 255) >> 1
    sign = F32(1.0) if u & 1 else F32(-1.0)
    x = F32(u >> 8) * _R24 * _NX32[i]
    if float(x) < NORMAL_X[i + 1]:
        return x * sign
    if i == 0:
        return _normal_tail_f32(next_u) * sign
    y01 = uniform01_f32(next_u)
    xi, yi = _NX32[i], F32(_NY[i])
    y = yi + y01 * F32(_NY[i + 1] - _NY[i])
    chord = F32(NORMAL_X[i] - NORMAL_X[i + 1]) * y01 - (xi - x)
    tangent = y - (yi + (xi - x) * yi * xi)
    upper, lower = (chord, tangent) if NORMAL_X[i] >= 1 else (tangent, chord)
    if upper < 0 and (lower < 0 or y < _expf(-(x * x / F32(2.0)))):
        return x * sign
    return None


def unit_normal_f32(next_u) -> np.float32:
    """One standard normal float exactly as boost::normal_distribution<float> draws it (scalar)."""
    while True:
        z = _normal_attempt(next_u(), next_u)
        if z is not None:
            return z


def uniform_int(next_u, hi: int) -> int:
    """boost::uniform_int<long>(0, hi) for 0 < hi < 2^32 - 1 (scalar)."""
    bucket = 0xFFFFFFFF // (hi + 1) + (0xFFFFFFFF % (hi + 1) == hi)
    while True:
        r = next_u() // bucket
        if r <= hi:
            return r


# ---------------------------------------------------------------------------------------------- vectorised
def _wedge_accepts(box: np.ndarray, x: np.ndarray, y01: np.ndarray) -> np.ndarray:
    """Boost's wedge test (boxes > 0) for many (box, x, y01) at once, float32 in Boost's order."""
    xi = _NX32[box]
    yi = _NY[box].astype(F32)
    y = yi + y01 * (_NY[box + 1] - _NY[box]).astype(F32)
    chord = (_NX[box] - _NX[box + 1]).astype(F32) * y01 - (xi - x)
    tangent = y - (yi + (xi - x) * yi * xi)
    convex = _NX[box] >= 1
    upper = np.where(convex, chord, tangent)
    lower = np.where(convex, tangent, chord)
    curve = np.exp(-(x * x / F32(2.0)).astype(np.float64)).astype(F32)
    return (upper < 0) & ((lower < 0) | (y < curve))


def _normal_block(block: np.ndarray, source: RawSource) -> np.ndarray:
    """The normals Boost draws from ``block`` (a pass that needs raws past its end finishes on ``source``).

    Each position p, if a pass starts there, uses ``advance[p]`` raws and yields ``values[p]`` or nothing
    (a rejected wedge). About 97 % of positions are one-raw fast passes; the others ("special") decide
    where passes start. A special is surely a start when no earlier special reaches past it; only the
    rest (clusters, a few per thousand specials) are settled by a Python loop, in order.
    """
    block = block.astype(np.uint32)
    m = len(block)
    low = (block & np.uint32(255)).astype(np.uint8)
    box = low >> np.uint8(1)
    x = (block >> np.uint32(8)).astype(F32) * _NX32_R24[box]
    fast = x < _NX_NEXT32[box]
    values = np.where(low & np.uint8(1), x, -x)
    special = np.flatnonzero(~fast)
    if special.size == 0:
        return values
    # per-special bookkeeping only (about 3 % of positions): raws each pass takes, whether it yields, and
    # whether it runs past the block (finished last, on the source)
    n_special = special.size
    adv = np.ones(n_special, dtype=np.intp)
    yielded = np.zeros(n_special, dtype=bool)
    late = special + 1 >= m
    inner_k = np.flatnonzero(~late)
    inner = special[inner_k]
    y01 = block[inner + 1].astype(F32) * _UNIT_F32
    sbox = box[inner].astype(np.intp)
    easy = (sbox > 0) & (y01 < F32(1.0))
    e = inner[easy]
    yielded[inner_k[easy]] = _wedge_accepts(sbox[easy], x[e], y01[easy])
    adv[inner_k[easy]] = 2
    for k in inner_k[~easy].tolist():  # the tail and redrawn heights: scalar, within the block
        p = int(special[k])
        stream = _Stream(block, p + 1)
        try:
            z = _normal_attempt(int(block[p]), stream)
        except _OutOfBlock:
            late[k] = True
            continue
        adv[k] = stream.pos - p
        yielded[k] = z is not None
        if z is not None:
            values[p] = z
    reach = special + adv
    before = np.maximum.accumulate(np.concatenate(([0], reach[:-1])))
    sure = (before <= special) & ~late  # nothing earlier can reach it: it starts a pass
    is_start = sure.copy()
    stop = m
    unsure = np.flatnonzero(~sure)
    if unsure.size:
        sure_reach = np.maximum.accumulate(np.concatenate(([0], np.where(sure, reach, 0)[:-1])))
        own = 0  # furthest reach of the unsure specials found to start
        for k in unsure.tolist():
            p = int(special[k])
            if max(int(sure_reach[k]), own) > p:
                continue  # inside an earlier pass
            if late[k]:
                stop = p
                break
            is_start[k] = True
            own = max(own, p + int(adv[k]))
        is_start &= special < stop
    # what is kept: every one-raw fast pass (``fast``, False at the specials) that no special pass consumed,
    # and the specials that start a pass and yield, all before ``stop``
    keep = fast
    begun = special[is_start]
    keep[begun[yielded[is_start]]] = True
    keep[begun[adv[is_start] == 2] + 1] = False
    for p, a in zip(begun[adv[is_start] > 2].tolist(), adv[is_start][adv[is_start] > 2].tolist()):
        keep[p + 1 : p + a] = False
    keep[stop:] = False
    out = values[keep]
    if stop < m:
        stream = _Stream(block, stop + 1, source)
        z = _normal_attempt(int(block[stop]), stream)
        tail = [z] if z is not None else [unit_normal_f32(stream)]
        out = np.concatenate([out, np.asarray(tail, dtype=F32)])
    return out


def normal_f32(source: RawSource, n: int, mean: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    """``n`` draws of boost::normal_distribution<float>(mean, sigma) (Caffe's caffe_rng_gaussian).

    Each block holds at most as many raws as values still wanted; every value takes at least one raw, so
    the engine is never advanced past what Boost would consume.
    """
    out = np.empty(n, dtype=F32)
    filled = 0
    while filled < n:
        got = _normal_block(source.raw(min(n - filled, BLOCK)), source)
        out[filled : filled + got.size] = got
        filled += got.size
    # z * sigma + mean in float, in place: no two more arrays of n floats (151 MB each for CaffeNet fc6)
    out *= F32(sigma)
    out += F32(mean)
    return out


def uniform_real_f32(source: RawSource, n: int, a: float, b: float) -> np.ndarray:
    """``n`` draws of boost::uniform_real<float>(a, b): values in [a, b); one rounding to b is redrawn."""
    a32, b32 = F32(a), F32(b)
    width = b32 - a32
    out = np.empty(n, dtype=F32)
    filled = 0
    while filled < n:
        v = source.raw(min(n - filled, BLOCK)).astype(F32) / _RANGE_F32 * width + a32
        ok = v[v < b32]
        out[filled : filled + ok.size] = ok
        filled += ok.size
    return out


def bernoulli(source: RawSource, n: int, p: float, real: type = np.float64) -> np.ndarray:
    """``n`` draws of boost::bernoulli_distribution<real>(p) as bools; p == 0 draws nothing (all False)."""
    if p == 0:
        return np.zeros(n, dtype=bool)
    out = np.empty(n, dtype=bool)
    for lo in range(0, n, BLOCK):
        u = source.raw(min(BLOCK, n - lo))
        if real is np.float64:
            # u is an integer, exact in double: u <= t holds exactly when u <= floor(t), so no conversion
            out[lo : lo + u.size] = u <= np.uint64(math.floor(float(p) * (_TWO32 - 1.0)))
        else:
            out[lo : lo + u.size] = u.astype(F32) <= F32(p) * _RANGE_F32
    return out


def shuffle_permutation(source: RawSource, n: int) -> np.ndarray:
    """Caffe's ``shuffle`` (util/rng.hpp) applied to 0..n-1: for i = n-1 down to 1, swap element i with
    element uniform_int(0, i). Returns the shuffled indices."""
    perm = np.arange(n, dtype=np.int64)
    if n <= 1:
        return perm
    his = np.arange(n - 1, 0, -1, dtype=np.int64)
    picks = np.empty(n - 1, dtype=np.int64)
    pending = np.empty(0, dtype=np.int64)
    k = 0
    while k < n - 1:
        need = n - 1 - k
        if pending.size < need:
            pending = np.concatenate([pending, source.raw(need - pending.size).astype(np.int64)])
        hi = his[k:]
        r = pending // (0xFFFFFFFF // (hi + 1) + (0xFFFFFFFF % (hi + 1) == hi))
        bad = np.flatnonzero(r > hi)
        if bad.size == 0:
            picks[k:] = r
            break
        j = int(bad[0])  # keep the picks before the rejected draw, skip it, and redo the rest
        picks[k : k + j] = r[:j]
        k += j
        pending = pending[j + 1 :]
    for i, j in zip(his.tolist(), picks.tolist()):
        perm[i], perm[j] = perm[j], perm[i]
    return perm
