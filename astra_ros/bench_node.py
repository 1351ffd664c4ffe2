"""End-to-end benchmark of the policy node; prints one JSON object.

    python -m astra_ros.bench_node --duration 300            # the 5-minute run (tiny preset)
    python -m astra_ros.bench_node --duration 20             # a quick check
    python -m astra_ros.bench_node --checkpoint runs/x/best  # your own checkpoint
    python -m astra_ros.bench_node --duration 60 --camera-rate-hz 60 --bad-frames-per-s 300   # a flood

What it does, all on this machine over loopback DDS (own domain id):
1. builds a tiny-preset checkpoint with random weights (unless --checkpoint is given);
2. times the model step alone in this process (AstraPolicy.step on two 224x224 frames);
3. starts the node as its own process (`python -m astra_ros.policy_node --ros-args --params-file`),
   publishes two 224x224 rgb8 cameras at --camera-rate-hz and one instruction, for --duration s;
4. records every ActionSegment (the node publishes one per step), the status, and the node's
   resident memory (/proc/<pid>/status VmRSS) every 2 s;
5. stops the node with SIGINT and reads the summary line it logs on exit.

Threads are chosen, not inherited: --threads (default 0: $OMP_NUM_THREADS if set, else 1, the
node's own rule) goes to the node's cpu_threads and to the offline timing; the JSON gives the
count the node reports and the machine's load average (os.getloadavg) before and after the run,
so a reader can judge a figure.

Figures (ms unless named otherwise):
  e2e_ms           camera header stamp (= publish time here) -> command published, per step
                   (includes the wait for the next control tick: up to one period)
  step_ms          control tick -> command published (model + node work)
  model_ms         policy.step alone, inside the node
  overhead_ms      step_ms - model_ms (- reset_ms) per step: the node's own cost (target <= 2 ms),
                   split into handoff_ms (tick -> the worker starts the job) and publish_ms
                   (model done -> safety filter, messages, publish, record executed)
  model_offline_ms policy.step alone in this process, before the node starts
  control_rate_hz  ActionSegments received per second
  frames_lost      camera frames published but never received by the node
  rss_growth_mb    node RSS at the end minus after warm-up; rss_slope_mb_per_min a fit over the run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ("front", "wrist")


def make_tiny_checkpoint(directory: Path) -> Path:
    import torch

    from astra_core.action_space import POSE6D_DIMS, ActionStats
    from astra_core.checkpoint import save_checkpoint
    from astra_core.model import Astra, AstraConfig

    cfg = AstraConfig.from_yaml(REPO_ROOT / "astra_core" / "presets" / "tiny.yaml")
    lo = [-0.3, -0.3, 0.0, -math.pi, -math.pi, -math.pi, 0.0]
    hi = [0.3, 0.3, 0.5, math.pi, math.pi, math.pi, 1.0]
    stats = ActionStats(names=list(POSE6D_DIMS), min=lo, max=hi, mean=[(a + b) / 2 for a, b in zip(lo, hi)],
                        std=[(b - a) / 4 for a, b in zip(lo, hi)], count=1000)
    torch.manual_seed(0)
    return save_checkpoint(directory, Astra(cfg, stats))


def time_model_step(checkpoint: Path, size: int, steps: int, threads: int) -> dict:
    import torch

    from astra_core.runtime import AstraPolicy

    if threads:
        torch.set_num_threads(threads)

    policy = AstraPolicy.from_checkpoint(checkpoint, device="cpu")
    rng = np.random.default_rng(0)
    frames = {cam: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for cam in policy.camera_names}
    policy.reset("pick up the red cube")
    latencies = []
    for i in range(steps + 5):
        out = policy.step(frames)
        policy.record_executed(out.values)
        if i >= 5:  # first calls allocate
            latencies.append(out.latency_ms)
    return {"p50": round(float(np.percentile(latencies, 50)), 3), "p99": round(float(np.percentile(latencies, 99)), 3),
            "count": len(latencies)}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of streaming (default 300)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a random-init tiny preset")
    parser.add_argument("--control-rate-hz", type=float, default=10.0)
    parser.add_argument("--camera-rate-hz", type=float, default=10.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the RSS baseline (default: min(30, duration/5))")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads for the node (cpu_threads) and the offline timing; "
                             "0: $OMP_NUM_THREADS if set, else 1")
    parser.add_argument("--realtime-priority", type=int, default=0,
                        help="the node's realtime_priority (SCHED_FIFO 1-99; 0: normal scheduling)")
    parser.add_argument("--bad-frames-per-s", type=float, default=0.0,
                        help="also publish this many malformed frames per second on the camera topics (a flood)")
    parser.add_argument("--model-steps", type=int, default=200, help="steps of the offline model timing")
    args = parser.parse_args(argv)

    # DDS on this host only, and a domain of our own, for this process and the node process.
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_loopback.xml"))
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id if args.domain_id is not None else 150 + os.getpid() % 80)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from astra_ros.image_conversion import rgb_to_image
    from astra_ros.msg import ActionSegment, PolicyStatus
    from astra_ros.policy_node import SUMMARY_PREFIX

    from astra_ros.params import resolve_torch_threads

    threads = resolve_torch_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    print(f"bench_node: torch intra-op threads {threads} (--threads {args.threads}), load average {load_before}",
          file=sys.stderr, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="astra_bench_node_"))
    checkpoint = args.checkpoint or make_tiny_checkpoint(workdir / "tiny")
    model_offline = time_model_step(checkpoint, args.image_size, args.model_steps, threads)

    params = workdir / "params.yaml"
    params.write_text(yaml.safe_dump({"astra_policy": {"ros__parameters": {
        "checkpoint": str(checkpoint), "camera_names": list(CAMERAS),
        "camera_topics": [f"/bench/{c}/image" for c in CAMERAS], "image_size": [args.image_size] * 2,
        "control_rate_hz": args.control_rate_hz, "device": "cpu", "dry_run": False, "cpu_threads": threads,
        "realtime_priority": args.realtime_priority,
        "workspace_lower": [], "workspace_upper": [], "max_step_change": []}}}))
    node_log = workdir / "node.log"
    with open(node_log, "wb") as log:
        node = subprocess.Popen([sys.executable, "-m", "astra_ros.policy_node", "--ros-args", "--params-file",
                                 str(params)], cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))

    context = rclpy.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("astra_bench", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    segments: list[tuple[float, float, float]] = []  # (receive, header stamp, model ms)
    statuses: list = []
    peer.create_subscription(ActionSegment, "/action_segment", lambda m: segments.append(
        (time.time(), m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, m.inference_latency_ms)), 100)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    peer.create_subscription(PolicyStatus, "/status", statuses.append, latched)
    pubs = {c: peer.create_publisher(Image, f"/bench/{c}/image", qos_profile_sensor_data) for c in CAMERAS}
    instruction = peer.create_publisher(String, "/instruction", latched)

    result: dict = {"error": None}
    try:
        deadline = time.monotonic() + 180
        while not any(s.state == "active" for s in statuses):
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node did not become active; log {node_log}:\n{node_log.read_text()[-3000:]}")
            time.sleep(0.1)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8) for _ in range(8)]
        bad_frame = Image(height=args.image_size, width=args.image_size, encoding="yuv422", step=1, data=bytes(8))
        bad_sent = 0
        instruction.publish(String(data="pick up the red cube"))
        warmup = args.warmup if args.warmup is not None else min(30.0, args.duration / 5)
        rss: list[tuple[float, float]] = []
        published = 0
        start = time.monotonic()
        next_frame, next_rss = start, start
        while (now := time.monotonic()) < start + args.duration:
            if now >= next_rss:
                value = rss_mb(node.pid)
                if value is not None:
                    rss.append((now - start, value))
                next_rss += 2.0
            stamp = peer.get_clock().now().to_msg()
            for i, cam in enumerate(CAMERAS):
                pubs[cam].publish(rgb_to_image(images[(published + i) % len(images)], "rgb8", frame_id=cam,
                                               stamp=stamp))
            published += 1
            next_frame += 1.0 / args.camera_rate_hz
            if args.bad_frames_per_s > 0:  # spread the malformed frames over the frame period
                per_period = args.bad_frames_per_s / args.camera_rate_hz
                while bad_sent < published * per_period:
                    pubs[CAMERAS[bad_sent % len(CAMERAS)]].publish(bad_frame)
                    bad_sent += 1
                    time.sleep(max(0.0, min(next_frame - time.monotonic(), 1.0 / args.bad_frames_per_s)))
            time.sleep(max(0.0, next_frame - time.monotonic()))
        time.sleep(1.0)  # let the last frames and commands arrive
        last_status = statuses[-1]

        node.send_signal(signal.SIGINT)
        node.wait(30)
        summary_lines = [ln for ln in node_log.read_text().splitlines() if ln.startswith(SUMMARY_PREFIX)]
        summary = json.loads(summary_lines[-1][len(SUMMARY_PREFIX):]) if summary_lines else {}

        times = np.array([r for r, _, _ in segments])
        after = [(t, v) for t, v in rss if t >= warmup]
        slope = float(np.polyfit([t for t, _ in after], [v for _, v in after], 1)[0] * 60) if len(after) > 2 else None
        transport = [(r - s) * 1e3 for r, s, _ in segments]
        result = {
            "duration_s": args.duration,
            "image_size": [args.image_size, args.image_size],
            "cameras": len(CAMERAS),
            "torch_threads": summary.get("torch_threads", threads),
            "realtime_priority": summary.get("realtime_priority"),
            "cpu_count": os.cpu_count(),
            "load_avg_before": load_before,
            "load_avg_after": [round(v, 2) for v in os.getloadavg()],
            "control_rate_target_hz": args.control_rate_hz,
            "control_rate_hz": round((len(times) - 1) / (times[-1] - times[0]), 3) if len(times) > 1 else 0.0,
            "commands": len(segments),
            "e2e_ms": summary.get("e2e_ms"),
            "step_ms": summary.get("step_ms"),
            "model_ms": summary.get("model_ms"),
            "overhead_ms": summary.get("overhead_ms"),
            "handoff_ms": summary.get("handoff_ms"),
            "publish_ms": summary.get("publish_ms"),
            "reset_ms": summary.get("reset_ms"),
            "model_offline_ms": model_offline,
            "command_transport_ms": {"p50": round(float(np.percentile(transport, 50)), 3),
                                     "p99": round(float(np.percentile(transport, 99)), 3)} if transport else None,
            "frames_published": published * len(CAMERAS),
            "frames_received": summary.get("frames_received", int(last_status.frames_received)),
            "frames_lost": published * len(CAMERAS) - summary.get("frames_received", int(last_status.frames_received)),
            "frames_unused": summary.get("frames_unused"),
            "bad_frames_sent": bad_sent,
            "bad_messages_counted": summary.get("bad_messages"),
            "overruns": summary.get("overruns"),
            "stale_ticks": summary.get("stale_ticks"),
            "rss_mb_after_warmup": round(after[0][1], 2) if after else None,
            "rss_mb_end": round(rss[-1][1], 2) if rss else None,
            "rss_growth_mb": round(rss[-1][1] - after[0][1], 2) if after else None,
            "rss_slope_mb_per_min": round(slope, 4) if slope is not None else None,
            "rss_samples": len(rss),
            "node_exit_code": node.returncode,
            "node_log": str(node_log),
        }
    except Exception as err:  # still print JSON, with the error
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        executor.shutdown()
        peer.destroy_node()
        context.try_shutdown()
    print(json.dumps(result, indent=2))
    return 0 if result.get("error") is None else 1


if __name__ == "__main__":
    sys.exit(main())
