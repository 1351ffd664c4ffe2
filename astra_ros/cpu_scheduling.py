"""How the node's threads use the CPU: torch's thread count and, optionally, real-time scheduling.

Both were measured on a 2-core machine shared with other jobs (docs/DEPLOYMENT.md, Benchmark):
* torch's default of one OpenMP thread per core made steps 10-25x slower whenever another process
  was busy, so the node uses 1 thread unless told otherwise (params.resolve_torch_threads);
* the node's own cost per step (tick -> publish, minus the model) is ~0.3 ms of Python work, but
  its p99 was 4-5 ms under load: the time a ready thread waits for a core that other processes
  hold. SCHED_FIFO (`realtime_priority`) removes that wait (p99 1.8 ms, same load); it needs
  CAP_SYS_NICE or an rtprio limit (`ulimit -r`, /etc/security/limits.conf), and a model step
  then runs at that priority too, so give the node a core of its own on a busy machine.
"""

from __future__ import annotations

import os


def set_torch_threads(count: int) -> int:
    """Set torch's intra-op thread count (CPU inference) -> the count torch now reports."""
    import torch

    torch.set_num_threads(count)
    return torch.get_num_threads()


def set_realtime_priority(priority: int) -> str:
    """Put the calling thread under SCHED_FIFO at `priority` (1-99); threads it creates later
    inherit it. -> "" on success, else why not (the node keeps running with normal scheduling)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return (f"realtime_priority={priority}: not permitted (needs CAP_SYS_NICE or an rtprio limit >= "
                f"{priority}, see `ulimit -r`); running with normal scheduling")
    except (OSError, AttributeError) as err:  # AttributeError: no sched_setscheduler on this platform
        return f"realtime_priority={priority}: {err}; running with normal scheduling"
    return ""
