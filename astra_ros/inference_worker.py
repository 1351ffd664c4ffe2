"""A single inference thread with at most one job in flight. Pure Python, no ROS.

The node's executor thread must never wait for the model: the control tick `submit`s a job and
returns at once. When the worker is still busy with the previous job, `submit` refuses (the
node counts an overrun) instead of queueing, so work never piles up behind a slow step and a
command is never computed from frames older than one tick.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

Job = TypeVar("Job")


class InferenceWorker(Generic[Job]):
    """One daemon thread running `run(job)` for each accepted job; `submit` never blocks."""

    def __init__(self, run: Callable[[Job], None], on_error: Callable[[BaseException], None],
                 name: str = "astra_inference") -> None:
        self._run, self._on_error = run, on_error
        self._cond = threading.Condition()
        self._job: Job | None = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> bool:
        """Hand `job` to the thread; False (job dropped) when busy or stopping."""
        with self._cond:
            if self._busy or self._job is not None or self._stopping:
                return False
            self._job = job
            self._cond.notify_all()  # the loop, and any wait_idle()
            return True

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._job is not None

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no job is queued or running (True), or `timeout_s` passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._busy or self._job is not None) or not self._thread.is_alive(),
                                       timeout_s)

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Refuse new jobs, let a running one finish (up to `timeout_s`); True when the thread ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()  # the loop, and any wait_idle()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job, self._job, self._busy = self._job, None, True
            try:
                self._run(job)
            except Exception as err:  # a failing step must not kill the thread (or the node)
                self._on_error(err)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()  # wait_idle()
