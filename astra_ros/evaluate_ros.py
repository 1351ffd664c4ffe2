"""Closed-loop evaluation through ROS: the simulator bridge and the policy node as separate
processes over loopback DDS, driven with the same seeds as the ROS-free astra_sim.evaluate.

    python -m astra_ros.evaluate_ros --env tabletop --checkpoint CKPT --episodes 10 \
        [--task place --task rotate ...] [--seed 1000000] [--env-option image_size=96 ...] \
        [--out runs/eval_ros] [--video-episodes 4] [--domain-id N]

Per task and seed: the policy node's `stop` service ends its episode (it answers once no command
of that episode can still go out), the bridge's `reset_episode` starts the scene and returns the
instruction, the instruction is published on the node's `instruction` topic, and the bridge's
`episode_event` says how the episode ended. The executed actions come from the node's
`action_segment` topic. Success per task with Wilson 95% intervals is computed and printed with
astra_sim.evaluate's `summarize` / `format_table`, so both paths report the same way; the JSON
result goes to OUT/eval_ros.json and a video of the first episodes to OUT/rollouts.mp4.

Everything is real ROS: rclpy over Fast DDS, kept on this machine (own ROS_DOMAIN_ID, the
project's loopback profile, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and inside a namespace of
its own, so it can run beside other ROS jobs. The policy node runs with dry_run:=false (it only
ever talks to the simulator here).

Why it may differ from the ROS-free path (astra_sim.evaluate), and where it cannot:
  * tabletop (one env step per command): the inputs are bit-identical (rgb8 and mono16 over DDS)
    and the node steps once per new observation (new_frames_only), with workspace limits equal to
    the env's action bounds, which is exactly how astra_sim.evaluate clips. The one arithmetic
    difference: the node's safety filter re-wraps full-circle angles, which can move a theta by
    ~1e-16 rad; an outcome can only change if a value lies that close to a success tolerance.
    Latency limits are relaxed (the simulated world waits for the policy), so no command is
    withheld for being late.
  * 6-D pose backends (fixed-rate stepping): the simulator does not wait for the policy, so the
    commands it executes depend on timing (which observation a command answered, how many steps
    a slow model skipped): the outcomes are comparable in distribution, not step by step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from astra_ros.bridge_params import coerce_bridge_value, format_env_options
from astra_ros.checkpoint_params import read_checkpoint_info, write_params_file
from astra_ros.policy_node import SUMMARY_PREFIX as NODE_SUMMARY_PREFIX
from astra_ros.ros_processes import RosProcess, loopback_environment
from astra_ros.service_calls import call_service
from astra_ros.rollout_video import compose_frame, write_video
from astra_ros.sim_bridge import SUMMARY_PREFIX as BRIDGE_SUMMARY_PREFIX
from astra_ros.sim_episode import EVENT_NAMES, STARTED
from astra_ros.sim_wiring import policy_params_for_bridge
from astra_sim.evaluate import DEFAULT_EVAL_SEED, brief, format_table, summarize
from astra_sim.tabletop import TASK_KINDS

# Tasks evaluated when none is named: every task kind of the tabletop, else the env as configured.
DEFAULT_TASKS: dict[str, list[str]] = {"tabletop": list(TASK_KINDS)}

STARTUP_TIMEOUT_S = 240.0  # torch import + checkpoint + warm-up on a loaded 2-core machine
EPISODE_TIMEOUT_S = 300.0
SERVICE_TIMEOUT_S = 60.0  # a reset may build a new simulator scene (ManiSkill: seconds)


@dataclass
class RosEvalSetup:
    """What to run: a checkpoint in an environment, and how the two processes are configured."""

    checkpoint: Path
    env_name: str = "tabletop"
    env_options: dict[str, Any] = field(default_factory=dict)
    out_dir: Path = Path("runs/eval_ros")
    domain_id: int = 0
    namespace: str = ""
    step_mode: str = "auto"
    # True: the bridge publishes /clock and the node runs on it; None: for fixed-rate (pose)
    # backends, so the policy ticks per simulated, not wall-clock, time (a CPU-rendered simulator
    # runs slower than real time); never for per-command stepping (bridge_params: PER_COMMAND_CLOCK)
    sim_time: Optional[bool] = None
    node_overrides: dict[str, Any] = field(default_factory=dict)  # extra policy node parameters
    bridge_overrides: dict[str, Any] = field(default_factory=dict)  # extra bridge parameters

    def __post_init__(self) -> None:
        self.checkpoint, self.out_dir = Path(self.checkpoint).resolve(), Path(self.out_dir)
        self.namespace = self.namespace or f"/astra_eval_{os.getpid()}"
        self.domain_id = self.domain_id or default_domain_id()


def default_domain_id() -> int:
    """$ROS_DOMAIN_ID when set, else one derived from the process id (the namespace isolates too)."""
    value = os.environ.get("ROS_DOMAIN_ID", "")
    return int(value) if value.isdigit() and 0 < int(value) <= 232 else 150 + os.getpid() % 80


def node_parameters(setup: RosEvalSetup, action_bounds: Optional[tuple]) -> dict[str, Any]:
    """The policy node's parameters for the evaluation: the bridge's topics, commands enabled."""
    values: dict[str, Any] = {"dry_run": False, "device": "cpu", "cpu_threads": 1, "status_rate_hz": 5.0,
                              "warmup_steps": 1, **setup.node_overrides}
    return policy_params_for_bridge(str(setup.checkpoint), action_bounds, **values)


def bridge_parameters(setup: RosEvalSetup, sim_time: bool) -> dict[str, Any]:
    values: dict[str, Any] = {"env": setup.env_name, "env_options": format_env_options(setup.env_options),
                              "initial_seed": -1, "step_mode": setup.step_mode, "cpu_threads": 1,
                              "publish_clock": sim_time}
    values.update(setup.bridge_overrides)
    return {name: coerce_bridge_value(name, value) for name, value in values.items()}


class _Driver:
    """The evaluation's own ROS participant: service clients, the instruction publisher, and
    recorders of events, action segments, status and (for videos) camera frames."""

    def __init__(self, domain_id: int, namespace: str, cameras: Sequence[str]) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        from astra_ros.msg import ActionSegment, EpisodeEvent, PolicyStatus
        from astra_ros.qos import COMMAND_QOS, EVENT_QOS, INSTRUCTION_QOS, SENSOR_QOS, STATUS_QOS
        from astra_ros.srv import ResetEpisode

        self._rclpy, self._String, self._Trigger, self._Reset = rclpy, String, Trigger, ResetEpisode
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("astra_eval_driver", namespace=namespace, context=self.context)
        self._cond = threading.Condition()
        self.events: list = []
        self.segments: list = []
        self.status = None
        self.frames: Optional[dict[float, dict[str, np.ndarray]]] = None  # stamp -> camera -> image, while recording
        self.cameras = list(cameras)
        node = self.node
        node.create_subscription(EpisodeEvent, "episode_event", self._append(self.events), EVENT_QOS)
        node.create_subscription(ActionSegment, "action_segment", self._append(self.segments), COMMAND_QOS)
        node.create_subscription(PolicyStatus, "status", self._on_status, STATUS_QOS)
        for camera in self.cameras:
            node.create_subscription(Image, f"camera/{camera}/image_raw", self._frame_recorder(camera), SENSOR_QOS)
        self.instruction_pub = node.create_publisher(String, "instruction", INSTRUCTION_QOS)
        self.reset_client = node.create_client(ResetEpisode, "reset_episode")
        self.stop_client = node.create_client(Trigger, "stop")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self._thread = threading.Thread(target=self.executor.spin, name="astra_eval_driver", daemon=True)
        self._thread.start()

    def _append(self, store: list):
        def callback(msg) -> None:
            with self._cond:
                store.append(msg)
                self._cond.notify_all()
        return callback

    def _on_status(self, msg) -> None:
        with self._cond:
            self.status = msg
            self._cond.notify_all()

    def _frame_recorder(self, camera: str):
        from astra_ros.image_conversion import image_to_rgb
        from astra_ros.pose_conversion import stamp_to_seconds

        def callback(msg) -> None:
            if self.frames is None:
                return
            image = np.array(image_to_rgb(msg))  # a copy: the message buffer is reused
            with self._cond:
                if self.frames is not None:
                    self.frames.setdefault(stamp_to_seconds(msg.header.stamp), {})[camera] = image
        return callback

    def wait(self, predicate, timeout_s: float) -> bool:
        """Wait (event-driven: woken by every message) until `predicate()` holds."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    def call(self, client, request, timeout_s: float = SERVICE_TIMEOUT_S):
        return call_service(client, request, timeout_s)

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(5)


class RosEvaluation:
    """Bridge + policy node processes and the driver, for `with RosEvaluation(setup) as ev: ...`."""

    def __init__(self, setup: RosEvalSetup) -> None:
        self.setup = setup
        self.bridge: Optional[RosProcess] = None
        self.node: Optional[RosProcess] = None
        self.driver: Optional[_Driver] = None
        self.summaries: dict[str, Optional[dict]] = {}
        self.startup_s = 0.0
        self.sim_time = False

    def __enter__(self) -> "RosEvaluation":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        setup = self.setup
        t0 = time.perf_counter()
        setup.out_dir.mkdir(parents=True, exist_ok=True)
        info = read_checkpoint_info(setup.checkpoint)
        per_command = setup.step_mode == "per_command" or (setup.step_mode == "auto" and info.action_kind == "discrete_se2")
        self.sim_time = (not per_command) if setup.sim_time is None else setup.sim_time
        bounds = None
        if setup.env_name == "tabletop":  # cheap to build; other backends keep the checkpoint's range
            from astra_sim.env import make_env

            bounds = make_env(setup.env_name, **setup.env_options).action_bounds
        node_params = node_parameters(setup, bounds)
        node_params["use_sim_time"] = self.sim_time  # an rclpy parameter of every node, not in the node's table
        node_file = write_params_file(setup.out_dir / "policy_params.yaml", node_params)
        bridge_file = write_params_file(setup.out_dir / "bridge_params.yaml", bridge_parameters(setup, self.sim_time))
        env = loopback_environment(setup.domain_id)
        namespace = ["-r", f"__ns:={setup.namespace}"]
        self.bridge = RosProcess("astra_ros.sim_bridge", ["--params-file", str(bridge_file), *namespace], env,
                                 setup.out_dir / "bridge.log")
        self.node = RosProcess("astra_ros.policy_node", ["--params-file", str(node_file), *namespace], env,
                               setup.out_dir / "policy_node.log")
        self.driver = _Driver(setup.domain_id, setup.namespace, info.cameras)
        self._wait_ready()
        self.startup_s = time.perf_counter() - t0

    def _wait_ready(self) -> None:
        driver, deadline = self.driver, time.monotonic() + STARTUP_TIMEOUT_S
        while not driver.reset_client.wait_for_service(timeout_sec=0.5):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bridge did not come up in {STARTUP_TIMEOUT_S}s:\n{self.bridge.log_tail()}")

        def settled() -> bool:
            status = driver.status
            return status is not None and (status.state == "active" or status.last_error.startswith("configure"))

        while not driver.wait(settled, 0.5):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the policy node did not become active in {STARTUP_TIMEOUT_S}s:\n"
                                   f"{self.node.log_tail()}")
        if driver.status.state != "active":
            raise RuntimeError(f"the policy node failed to configure: {driver.status.last_error}")

    def _check_alive(self) -> None:
        for name, process in (("bridge", self.bridge), ("policy node", self.node)):
            if process is not None and not process.alive():
                raise RuntimeError(f"the {name} exited with code {process.proc.returncode}:\n{process.log_tail()}")

    def run_episode(self, seed: int, task: str, record_video: bool = False) -> dict[str, Any]:
        """One episode through ROS -> its record (seed, task, success, steps, actions, ...)."""
        driver = self.driver
        stopped = driver.call(driver.stop_client, driver._Trigger.Request())  # no command of the last episode after this
        if not stopped.success:
            raise RuntimeError(f"the policy node refused to stop: {stopped.message}")
        with driver._cond:
            driver.segments.clear()
            driver.frames = {} if record_video else None
        t0 = time.perf_counter()
        reset = driver.call(driver.reset_client, driver._Reset.Request(seed=int(seed), task=task))
        if not reset.ok:
            raise RuntimeError(f"reset_episode(seed={seed}, task={task!r}) failed: {reset.message}")
        sent_s = driver.now_s()
        driver.instruction_pub.publish(driver._String(data=reset.instruction))

        def ended():
            return next((e for e in driver.events if e.episode == reset.episode and e.event != STARTED), None)

        if not driver.wait(lambda: ended() is not None, EPISODE_TIMEOUT_S):
            self._check_alive()
            raise TimeoutError(f"episode {reset.episode} (seed {seed}, task {task!r}) did not end in "
                               f"{EPISODE_TIMEOUT_S}s; bridge log:\n{self.bridge.log_tail()}")
        event = ended()
        wall_s = time.perf_counter() - t0

        def segments() -> list:  # this episode's sent commands, by step (stamped after the instruction)
            mine = [s for s in driver.segments if not s.dry_run and
                     s.header.stamp.sec + s.header.stamp.nanosec * 1e-9 >= sent_s]
            return sorted(mine, key=lambda s: s.step)[:event.steps]

        driver.wait(lambda: len(segments()) >= event.steps, 10.0)
        steps = segments()
        with driver._cond:
            frames, driver.frames = driver.frames, None
        return {
            "seed": int(seed), "task": task or event.task, "instruction": reset.instruction,
            "success": event.event == 1, "event": EVENT_NAMES[event.event], "steps": int(event.steps),
            "commands_refused": int(event.commands_refused), "message": event.message,
            "actions": [list(s.executed) for s in steps], "latencies_ms": [float(s.inference_latency_ms) for s in steps],
            "wall_s": round(wall_s, 3), "frames": frames,
        }

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        for name, process, prefix in (("policy_node", self.node, NODE_SUMMARY_PREFIX),
                                      ("bridge", self.bridge, BRIDGE_SUMMARY_PREFIX)):
            if process is not None:
                code = process.stop()
                self.summaries[name] = process.summary(prefix)
                self.summaries[f"{name}_exit_code"] = code  # type: ignore[assignment]
        self.node = self.bridge = None


def evaluate_through_ros(setup: RosEvalSetup, tasks: Sequence[str], seeds: Sequence[int], video_episodes: int = 4,
                         progress=print) -> dict[str, Any]:
    """Every seed of every task through ROS -> astra_sim.evaluate.summarize's result plus the
    processes' summaries, the start-up time and the video path."""
    episodes: list[dict[str, Any]] = []
    latencies: list[float] = []
    clips: list[np.ndarray] = []
    t0 = time.perf_counter()
    with RosEvaluation(setup) as evaluation:
        progress(f"[ros] bridge + policy node up in {evaluation.startup_s:.1f}s (ROS_DOMAIN_ID={setup.domain_id}, "
                 f"namespace {setup.namespace})")
        loop_t0 = time.perf_counter()
        for task in tasks:
            for i, seed in enumerate(seeds):
                record = evaluation.run_episode(seed, task, record_video=i < video_episodes)
                record["task"] = record["task"] or str(setup.env_options.get("task", setup.env_name))  # table row
                frames = record.pop("frames")
                if frames:
                    clips += video_frames(frames, evaluation.driver.cameras, record)
                latencies += record.pop("latencies_ms")
                episodes.append(record)
                progress(f"[ros] {record['task']} seed {seed}: {record['event']} after "
                         f"{record['steps']} steps ({record['wall_s']:.2f}s, {record['commands_refused']} refused) "
                         f"{record['instruction']!r}")
        loop_s = time.perf_counter() - loop_t0
    result = summarize(episodes, latencies, time.perf_counter() - t0)
    result.update(checkpoint=str(setup.checkpoint), env=setup.env_name, env_options=setup.env_options,
                  through_ros=True, startup_s=round(evaluation.startup_s, 2), episodes_s=round(loop_s, 2),
                  domain_id=setup.domain_id, namespace=setup.namespace, sim_time=evaluation.sim_time,
                  processes=evaluation.summaries)
    if clips:
        result["video"] = str(write_video(setup.out_dir / "rollouts.mp4", clips, fps=clip_fps(setup.env_name)))
    (setup.out_dir / "eval_ros.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def clip_fps(env_name: str) -> float:
    return 2.0 if env_name == "tabletop" else 10.0  # a pick-and-place per half second; pose envs near real time


def video_frames(frames: dict[float, dict[str, np.ndarray]], cameras: Sequence[str], record: dict) -> list[np.ndarray]:
    """One episode's recorded observations (by stamp, all cameras) -> captioned video frames; the
    last observation is held for a second with the outcome in its caption."""
    stamps = [s for s in sorted(frames) if all(c in frames[s] for c in cameras)]
    caption = [f"{record['task']} seed {record['seed']}: {record['instruction']}"]
    out = [compose_frame([frames[s][c] for c in cameras], caption + [f"step {i}"]) for i, s in enumerate(stamps)]
    if stamps:
        outcome = f"{record['event'].upper()} after {record['steps']} steps"
        out += [compose_frame([frames[stamps[-1]][c] for c in cameras], caption + [outcome])] * 2
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from astra_sim.demos import add_env_arguments, env_options_from_args

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task")
    parser.add_argument("--task", action="append", default=None,
                        help="task to evaluate (repeatable); default: the tabletop's four kinds, else the env's task")
    parser.add_argument("--seed", type=int, default=DEFAULT_EVAL_SEED, help="first evaluation seed")
    parser.add_argument("--out", default="runs/eval_ros", help="where eval_ros.json, the logs and the video go")
    parser.add_argument("--video-episodes", type=int, default=2, help="episodes per task in the video (0: none)")
    parser.add_argument("--domain-id", type=int, default=0, help="ROS_DOMAIN_ID (0: $ROS_DOMAIN_ID or one from the pid)")
    parser.add_argument("--step-mode", default="auto", choices=("auto", "per_command", "fixed_rate"))
    parser.add_argument("--clock", default="auto", choices=("auto", "sim", "wall"),
                        help="sim: the bridge publishes /clock and the node uses it (auto: for fixed-rate stepping)")
    add_env_arguments(parser)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    tasks = args.task or (DEFAULT_TASKS.get(args.env) or [""])
    setup = RosEvalSetup(Path(args.checkpoint), args.env, env_options_from_args(args), Path(args.out),
                         args.domain_id, step_mode=args.step_mode, sim_time={"auto": None, "sim": True, "wall": False}[args.clock])
    seeds = list(range(args.seed, args.seed + args.episodes))
    result = evaluate_through_ros(setup, tasks, seeds, args.video_episodes,
                                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(result, f"closed-loop success through ROS of {args.checkpoint}"), file=sys.stderr)
    print(json.dumps({k: v for k, v in brief(result).items() if k != "processes"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
