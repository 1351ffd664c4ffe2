"""One deliberate choice of torch's CPU thread count for every entry point.

Torch defaults to one intra-op thread per core. On a small machine that is shared (a 2-core
robot computer running ROS, a data loader, a simulator), OpenMP threads then spin on busy cores:
measured on a 2-core machine with one other busy process, a training step went from 0.22 s to
4.09 s and a 38m streaming step from ~60 ms to ~1.5 s with 2 threads, while 1 thread stayed near
its idle figure. So entry points never keep the default: they take a number, or "auto", which
leaves one core for everything else (1 thread on 2 cores, at most 8).
"""

from __future__ import annotations

import os
import sys

import torch


def auto_threads(cpu_count: int | None = None) -> int:
    cores = cpu_count if cpu_count is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                     else os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


def configure_threads(requested: int = 0, what: str = "astra", announce: bool = True) -> int:
    """Set torch's intra-op threads (``requested`` > 0, or 0 for :func:`auto_threads`); print the
    choice and the machine's load on stderr, so every figure can be judged; return the count."""
    if requested < 0:
        raise ValueError(f"threads={requested}: must be >= 0 (0 = auto)")
    threads = requested or auto_threads()
    torch.set_num_threads(threads)
    if announce:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"[{what}] torch threads: {threads} ({'set' if requested else 'auto'}), "
              f"{os.cpu_count()} cores, load average {load:.2f}", file=sys.stderr, flush=True)
    return threads


def machine_info() -> dict:
    """Threads, cores and load, for benchmark JSON."""
    return {"torch_threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "loadavg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
