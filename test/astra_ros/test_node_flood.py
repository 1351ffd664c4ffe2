"""Issue 12, defect 9: the node keeps commanding under heavy input.

Two 60 Hz cameras (224x224 rgb8) plus 300 malformed frames per second on the same topics, for a
few seconds, driven by the node benchmark's flood mode (`astra_ros.bench_node
--bad-frames-per-s`), which starts the node in its own process. With rclpy 9.1.2's
MultiThreadedExecutor (busy-resubmit bug, rclpy issue #1452) the node fell to 3-8 commands per
second and lost a third to a half of the good frames here; the bounds below are deliberately
generous for a loaded CI machine. The precise figures come from the benchmark itself
(docs/DEPLOYMENT.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")

from node_harness import REPO_ROOT  # noqa: E402


def test_commands_and_frames_keep_up_under_a_flood(ros_domain_id):
    result = subprocess.run(
        [sys.executable, "-m", "astra_ros.bench_node", "--duration", "6", "--camera-rate-hz", "60",
         "--bad-frames-per-s", "300", "--model-steps", "10", "--domain-id", str(ros_domain_id)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout)
    assert figures["control_rate_hz"] >= 7.0, figures
    assert figures["frames_received"] >= 0.8 * figures["frames_published"], figures
    assert figures["bad_messages_counted"] >= 0.8 * figures["bad_frames_sent"] > 0, figures
    assert figures["node_exit_code"] == 0 and figures["torch_threads"] == 1, figures
