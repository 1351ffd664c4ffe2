"""Throughput benchmark of the demonstration recorder; prints one JSON object.

    python -m astra_ros.bench_recorder                          # 30 s at 10 Hz, two 224x224 rgb8 cameras
    python -m astra_ros.bench_recorder --seconds 60 --output both
    python -m astra_ros.bench_recorder --camera-rate-hz 30 --control-rate-hz 30 --transport compressed

What it does, all on this machine over loopback DDS (own domain id):
1. starts the recorder as its own process (`python -m astra_ros.recorder_node --ros-args
   --params-file`), writing into a temporary folder (--keep keeps it);
2. publishes two cameras (a smooth rendered-looking scene plus sensor noise, so PNG sizes are
   realistic), PoseStamped + GripperCommand commands at the control rate, and an instruction;
3. records one episode of --seconds, stops it (the stop answer says steps and gaps), then
   stops the recorder with SIGINT and reads the summary line it prints on exit.

Figures:
  frames_written          steps x cameras in the dataset episode
  frames_per_s            frames written per second of recording (what the stream asked for, if
                          nothing was dropped: cameras x control rate)
  capacity_frames_per_s   frames written per second of the writer thread's own time (decoding,
                          PNG encoding, writing, the commit): how fast the recorder could go
  write_ms                writer time per step (p50 / p99; every chunk_size-th step encodes a chunk)
  stop_s                  the stop call's answer time (the queue drained, the episode committed)
  gap_steps, bad_steps    ticks not written (a stream had no fresh sample / the writer fell behind)
The recorder has one executor thread and one writer thread; image encoding runs with
OMP_NUM_THREADS (--threads, default 1). The JSON gives the thread settings and the load average
(os.getloadavg) before and after, so a reader can judge a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from astra_ros.ros_processes import RosProcess, loopback_environment
from astra_ros.service_calls import call_service

CAMERAS = ("front", "wrist")
SUMMARY_PREFIX = "astra_recorder summary: "


def scene(size: int, camera: int, k: int, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth moving gradient scene with a block in it, plus Gaussian sensor noise."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x + 2 * k) % 256, (y + 60 * camera) % 256, np.full_like(x, (3 * k) % 256)], -1).astype(np.float32)
    c = (k * 3) % size
    img[size // 3: size // 2, c // 2: c // 2 + size // 6] = (200, 40, 40)
    if noise_std:
        img += rng.normal(0, noise_std, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the recorded episode (default 30)")
    parser.add_argument("--control-rate-hz", type=float, default=10.0)
    parser.add_argument("--camera-rate-hz", type=float, default=10.0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    parser.add_argument("--output", choices=("dataset", "rosbag", "both"), default="dataset")
    parser.add_argument("--noise-std", type=float, default=2.0, help="sensor noise of the frames (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the recorder (default 1)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    parser.add_argument("--keep", type=Path, default=None, help="write into this folder and keep it")
    args = parser.parse_args(argv)

    domain = args.domain_id if args.domain_id is not None else 150 + os.getpid() % 80
    os.environ.update(loopback_environment(domain))  # this process's DDS too: loopback only, own domain
    work = args.keep or Path(tempfile.mkdtemp(prefix="astra-bench-recorder-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    try:
        result = run(args, work, domain)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result.update(load_average_before=[round(v, 2) for v in load_before],
                  load_average_after=[round(v, 2) for v in os.getloadavg()])
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


def run(args, work: Path, domain: int) -> dict:
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    from astra_ros.image_conversion import rgb_to_compressed, rgb_to_image
    from astra_ros.msg import GripperCommand
    from astra_ros.pose_conversion import set_pose_from_xyzrpy
    from astra_ros.qos import COMMAND_QOS, INSTRUCTION_QOS, SENSOR_QOS
    from astra_ros.srv import StartRecording, StopRecording

    suffix = "/compressed" if args.transport == "compressed" else ""
    params = {"output": args.output, "dataset_path": str(work / "dataset"), "bag_path": str(work / "bags"),
              "camera_names": list(CAMERAS), "transport": args.transport,
              "camera_topics": [f"/bench/{c}/image_raw{suffix}" for c in CAMERAS], "action_topic": "/bench/target_pose",
              "gripper_topic": "/bench/gripper_command", "instruction_topic": "/bench/instruction",
              "control_rate_hz": float(args.control_rate_hz), "max_queued_steps": 1000}
    params_file = work / "recorder.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    env = loopback_environment(domain, base=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    recorder = RosProcess("astra_ros.recorder_node", ["--params-file", str(params_file), "-r", "__ns:=/bench_recorder"],
                          env, work / "recorder.log")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("astra_bench_recorder_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    stop_streams = threading.Event()
    try:
        image_type = CompressedImage if suffix else Image
        cams = {c: node.create_publisher(image_type, params["camera_topics"][i], SENSOR_QOS) for i, c in enumerate(CAMERAS)}
        pose_pub = node.create_publisher(PoseStamped, params["action_topic"], COMMAND_QOS)
        grip_pub = node.create_publisher(GripperCommand, params["gripper_topic"], COMMAND_QOS)
        node.create_publisher(String, params["instruction_topic"], INSTRUCTION_QOS).publish(String(data="stack the blocks"))
        rng = np.random.default_rng(0)
        frames = [[scene(args.image_size, m, k, args.noise_std, rng) for k in range(32)] for m in range(len(CAMERAS))]

        def stream() -> None:
            period, start, k = 1.0 / args.camera_rate_hz, time.monotonic(), 0
            command_period, next_command = 1.0 / args.control_rate_hz, time.monotonic()
            while not stop_streams.is_set():
                now = node.get_clock().now().to_msg()
                for m, cam in enumerate(CAMERAS):
                    pixels = frames[m][k % 32]
                    msg = rgb_to_compressed(pixels, "jpeg", cam, now) if suffix else rgb_to_image(pixels, "rgb8", cam, now)
                    cams[cam].publish(msg)
                while time.monotonic() >= next_command:
                    pose = PoseStamped()
                    pose.header.stamp, pose.header.frame_id = now, "base_link"
                    set_pose_from_xyzrpy(pose.pose, [0.3 + 0.001 * k, 0.0, 0.2, 0.0, 0.1, 0.2])
                    pose_pub.publish(pose)
                    grip_pub.publish(GripperCommand(header=pose.header, position=0.5))
                    next_command += command_period
                k += 1
                time.sleep(max(0.0, start + k * period - time.monotonic()))

        publisher = threading.Thread(target=stream, daemon=True)
        publisher.start()
        start_client = node.create_client(StartRecording, "/bench_recorder/astra_recorder/start_episode")
        stop_client = node.create_client(StopRecording, "/bench_recorder/astra_recorder/stop_episode")
        if not start_client.wait_for_service(timeout_sec=60):
            raise RuntimeError(f"the recorder did not come up:\n{recorder.log_tail()}")
        stop_client.wait_for_service(timeout_sec=60)
        started = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the recorder has the instruction and fresh frames
            started = call_service(start_client, StartRecording.Request(note="bench"), 30.0)
            if started.ok:
                break
            time.sleep(0.2)
        if started is None or not started.ok:
            raise RuntimeError(f"the recorder refused to start: {started.message if started else 'no answer'}")
        time.sleep(args.seconds)
        t0 = time.monotonic()
        stopped = call_service(stop_client, StopRecording.Request(success=True), 300.0)
        stop_s = time.monotonic() - t0
    finally:
        stop_streams.set()
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        recorder.stop(120)  # SIGINT: the recorder closes the dataset and prints its summary
    summary = recorder.summary(SUMMARY_PREFIX) or {}
    frames_written = stopped.steps * len(CAMERAS)
    return {
        "ok": bool(stopped.ok), "message": stopped.message, "seconds": args.seconds, "output": args.output,
        "transport": args.transport, "image_size": args.image_size, "cameras": len(CAMERAS),
        "camera_rate_hz": args.camera_rate_hz, "control_rate_hz": args.control_rate_hz,
        "steps": stopped.steps, "gap_steps": stopped.gap_steps, "bad_steps": stopped.bad_steps,
        "frames_written": frames_written, "frames_per_s": round(frames_written / args.seconds, 1),
        "capacity_frames_per_s": summary.get("frames_per_writer_s"), "writer_busy_s": summary.get("writer_busy_s"),
        "write_ms": summary.get("write_ms"), "stop_s": round(stop_s, 3),
        "dataset_bytes": sum(f.stat().st_size for f in (work / "dataset").rglob("*") if f.is_file())
        if (work / "dataset").exists() else 0,
        "threads": {"recorder": "1 executor + 1 writer", "OMP_NUM_THREADS": args.threads, "cpu_count": os.cpu_count()},
    }


if __name__ == "__main__":
    sys.exit(main())
