"""Pure pieces of the node: instruction checks, the publish-time freshness check, the exit
summary's JSON, the inference worker and the signal handling (no ROS)."""

import json
import os
import signal
import threading
import time

import pytest

from astra_ros.inference_worker import InferenceWorker
from astra_ros.instruction import InstructionError, check_instruction
from astra_ros.safety import late_command_reason
from astra_ros.shutdown_signals import ShutdownRequest
from astra_ros.stats import LatencyWindow


@pytest.mark.parametrize("raw, kind", [
    (b"\xff\xfe\xfd", "invalid_utf8"),
    (b"pick \xc3\x28 up", "invalid_utf8"),
    (b"   ", "empty_instruction"),
    (b"x" * 1001, "long_instruction"),
])
def test_bad_instructions_are_refused_with_a_kind(raw, kind):
    text = raw.decode("utf-8", errors="replace")  # what rclpy hands the callback
    with pytest.raises(InstructionError) as info:
        check_instruction(text, max_chars=1000)
    assert info.value.kind == kind


def test_good_instructions_pass_stripped():
    assert check_instruction("  put the cube in the bowl \n", 1000) == "put the cube in the bowl"
    assert check_instruction("mets le cube rouge à gauche", 1000) == "mets le cube rouge à gauche"


def test_late_command_reason():
    assert late_command_reason(0.2, 0.1, image_timeout_s=0.5, max_step_latency_s=0.3) == ""
    reason = late_command_reason(0.9, 0.8, image_timeout_s=0.5, max_step_latency_s=0.3)
    assert "oldest frame is 0.900s old" in reason and "step took 0.800s" in reason
    assert "step took" in late_command_reason(0.1, 0.31, 0.5, 0.3)


def test_summary_of_an_empty_window_is_strict_json():
    window = LatencyWindow(10)

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    assert json.loads(json.dumps(window.summary()), parse_constant=refuse) == {"p50": None, "p99": None, "count": 0}
    window.add(2.0)
    assert window.summary() == {"p50": 2.0, "p99": 2.0, "count": 1}


def test_worker_runs_one_job_at_a_time_and_never_queues():
    started, release = threading.Event(), threading.Event()
    done = []

    def run(job):
        started.set()
        release.wait(5)
        done.append(job)

    worker = InferenceWorker(run, on_error=lambda err: None)
    assert worker.submit(1)
    assert started.wait(5)
    assert not worker.submit(2), "a second job must be refused while one runs"
    release.set()
    deadline = time.monotonic() + 5
    while worker.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.submit(3)
    assert worker.stop(5) and done[0] == 1 and 2 not in done
    assert not worker.submit(4)


def test_repeated_signals_request_one_shutdown():
    seen = []
    request = ShutdownRequest(lambda name, count: seen.append((name, count)))
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        request.install()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        request.wait(poll_s=0.01)  # returns: no KeyboardInterrupt, however many signals
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert request.requested and seen == [("SIGINT", 1), ("SIGINT", 2), ("SIGTERM", 3)]


def test_realtime_priority_is_applied_or_refused_with_a_reason():
    """In a subprocess (the pytest process keeps its scheduling): either SCHED_FIFO is in force
    afterwards, or the function says why not (no privilege) and nothing changed."""
    import subprocess
    import sys

    code = ("import os; from astra_ros.cpu_scheduling import set_realtime_priority\n"
            "problem = set_realtime_priority(1)\n"
            "policy = os.sched_getscheduler(0)\n"
            "assert (problem == '' and policy == os.SCHED_FIFO) or "
            "(problem.startswith('realtime_priority=1') and policy != os.SCHED_FIFO), (problem, policy)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
