"""CPU of processes and of the machine over a window, read from Linux ``/proc``.

A benchmark figure alone does not say whether the machine ran out of CPU or the pipeline
stalled with cores idle (issue 10 found a quarter of this machine idle at full load); the
per-process CPU and the machine's idle share over the same measured window do. psutil would
give the same numbers but is not a dependency; these are a few lines of ``/proc`` (Linux
only: elsewhere :func:`available` is false and the report has no ``cpu``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available() -> bool:
    return os.path.exists("/proc/stat") and os.path.exists("/proc/self/stat")


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def machine_ticks() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs since boot (idle includes iowait)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    return values[3] + values[4], sum(values)


@dataclass
class CpuWindow:
    """CPU over one window: :meth:`start`, then :meth:`stop` returns cores used per name
    (summed over that name's pids) and the machine's ``idle_share`` (0..1) and
    ``busy_cores``."""

    pids: Mapping[str, list[int]]
    _cpu: dict[str, float] = field(default_factory=dict)
    _machine: tuple[int, int] = (0, 0)
    _started: float = 0.0

    def _sample(self) -> dict[str, float]:
        return {name: sum(s for pid in pids if (s := process_cpu_s(pid)) is not None)
                for name, pids in self.pids.items()}

    def start(self) -> None:
        self._cpu = self._sample()
        self._machine = machine_ticks()
        self._started = time.monotonic()

    def stop(self) -> dict[str, float]:
        elapsed = max(1e-6, time.monotonic() - self._started)
        cpu = self._sample()
        idle, total = machine_ticks()
        idle_ticks, total_ticks = idle - self._machine[0], total - self._machine[1]
        cpus = os.cpu_count() or 1
        report = {name: round((cpu[name] - self._cpu.get(name, 0.0)) / elapsed, 2)
                  for name in cpu}
        share = idle_ticks / total_ticks if total_ticks > 0 else 0.0
        report["idle_share"] = round(share, 3)
        report["busy_cores"] = round((1.0 - share) * cpus, 2)
        return report
