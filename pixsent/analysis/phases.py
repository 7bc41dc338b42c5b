"""Wall time and memory of each phase of a long analysis (feature extraction, per-layer fits), for benchmarks.

A phase records its start and end (``time.time()``, so another process sampling this one's memory can
attribute samples to phases), its duration, and the process's resident peak (VmHWM) and current anonymous
memory (RssAnon) at its end, read from ``/proc/self/status`` (absent on systems without it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def proc_status_kib(pid: int | str = "self") -> dict[str, int]:
    """The ``kB`` fields of ``/proc/<pid>/status`` (VmHWM, VmRSS, RssAnon, RssFile...); {} if unreadable."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


@dataclass
class PhaseLog:
    """An ordered list of finished phases: dicts with phase, tags, start, end, seconds and memory in MiB."""

    events: list[dict] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str, **tags: object) -> Iterator[None]:
        """Time the ``with`` body as one phase named ``name`` (tags: layer, fold, classifier...)."""
        start, t0 = time.time(), time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        mem = proc_status_kib()
        self.events.append(
            {
                "phase": name,
                **tags,
                "start": start,
                "end": start + seconds,
                "seconds": seconds,
                "hwm_mib": mem.get("VmHWM", 0) / 1024,
                "anon_mib": mem.get("RssAnon", 0) / 1024,
            }
        )
