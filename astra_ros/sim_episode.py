"""Episodes of an astra_sim Env as the simulator bridge runs them. Pure Python, no ROS.

`EpisodeRunner` owns the environments (one per task, built on first use), starts episodes with a
seed and a task, turns checked command values into env steps, counts what it refuses by reason,
keeps the simulated clock, and says how an episode ended. The bridge node (sim_bridge.py) only
moves messages in and out of it, so everything here is tested without ROS.

* Tasks: the bridge's `task` names a task of the backend; `task_env_options` turns it into the
  env options the backend takes (the same options astra_sim.evaluate uses per task), so an
  episode through ROS and one through astra_sim.evaluate with the same seed and task are the
  same scene and instruction.
* Actions: SE(2) pick-and-place values are clipped into the env's action bounds, exactly as
  astra_sim.evaluate does before env.step; 6-D pose values go to the env as they are, and the
  env checks them (angles wrapped, bounds, inverse kinematics) and raises
  astra_sim.pose_sim.ActionRejected with a reason before anything is executed.
* Holding still (stepping at a fixed rate without a new command): the last applied action, or,
  before the first one, the pose the robot is at (from the observation's proprioception).
* Simulated time starts at 1 s (a zero stamp means "unstamped" to the policy node) and advances by
  one control period per env step and per reset, so it never runs backwards across episodes.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from astra_ros.sim_commands import CommandRefused
from astra_sim.env import Env, Observation, make_env
from astra_sim.pose_sim import ActionRejected

# EpisodeEvent.msg constants (test_sim_episode checks they match the generated message).
STARTED, SUCCESS, FAILURE, TIMEOUT = 0, 1, 2, 3
EVENT_NAMES = {STARTED: "started", SUCCESS: "success", FAILURE: "failure", TIMEOUT: "timeout"}
SIM_TIME_START_S = 1.0

# The env option that selects a task, per backend (astra_sim.evaluate.evaluate_tasks uses the same).
TASK_OPTIONS: dict[str, Callable[[str], dict[str, Any]]] = {
    "tabletop": lambda task: {"tasks": [task]},
    "maniskill": lambda task: {"task": task},
    "metaworld": lambda task: {"task": task},
}


def task_env_options(env_name: str, task: str) -> dict[str, Any]:
    """Env options that select `task` ("" = none: the env as configured)."""
    if not task:
        return {}
    if env_name not in TASK_OPTIONS:
        raise ValueError(f"environment {env_name!r} has no task option; known: {sorted(TASK_OPTIONS)}")
    return TASK_OPTIONS[env_name](task)


def pose_from_proprio(names: list[str], values: np.ndarray) -> Optional[np.ndarray]:
    """(6,) x y z roll pitch yaw of the end effector from proprioception named `<p>_x, <p>_y, <p>_z`
    (+ optional `<p>_roll, <p>_pitch, <p>_yaw`, else 0: a backend whose orientation is fixed),
    or None when the proprioception holds no position."""
    index = {name: i for i, name in enumerate(names)}
    for name in names:
        if name.endswith("_x"):
            prefix = name[:-2]
            if f"{prefix}_y" in index and f"{prefix}_z" in index:
                return np.array([values[index[f"{prefix}_{axis}"]] if f"{prefix}_{axis}" in index else 0.0
                                 for axis in ("x", "y", "z", "roll", "pitch", "yaw")], dtype=np.float64)
    return None


@dataclass
class EpisodeRecord:
    """One episode: what it was started with, what happened, how it ended."""

    episode: int
    seed: int
    task: str
    instruction: str
    started_sim_s: float
    steps: int = 0
    applied: int = 0
    refused: Counter = field(default_factory=Counter)
    event: int = STARTED
    message: str = ""

    @property
    def done(self) -> bool:
        return self.event != STARTED

    @property
    def success(self) -> bool:
        return self.event == SUCCESS

    def refused_text(self) -> str:
        return ", ".join(f"{reason}: {n}" for reason, n in sorted(self.refused.items()))


@dataclass(frozen=True)
class StepOutcome:
    observation: Observation
    record: EpisodeRecord  # event != STARTED when this step ended the episode
    step_ms: float  # env.step alone


class EpisodeRunner:
    """Episodes of one backend (any task), stepped with checked command values."""

    def __init__(self, env_name: str, env_options: dict[str, Any], task: str = "",
                 make: Callable[..., Env] = make_env) -> None:
        self.env_name = env_name
        self.env_options = dict(env_options)
        self.default_task = task
        self._make = make
        self._envs: dict[str, Env] = {}
        self.env = self._env_for(task)  # built now: configuration errors surface at start-up
        self.record: Optional[EpisodeRecord] = None
        self.observation: Optional[Observation] = None
        self.sim_time_s = SIM_TIME_START_S
        self.episodes = 0
        self._last_applied: Optional[np.ndarray] = None

    # ---- what the env is -----------------------------------------------------------------------
    @property
    def action_kind(self) -> str:
        return self.env.action_space.kind

    @property
    def pick_and_place(self) -> bool:
        """Pick-and-place envs step once per command: they have no 'hold still' action."""
        return self.action_kind == "discrete_se2"

    @property
    def proprio_names(self) -> list[str]:
        return list(self.env.sensor_info().get("proprio_names") or [])

    @property
    def period_s(self) -> float:
        return 1.0 / float(self.env.control_rate_hz)

    @property
    def live(self) -> bool:
        return self.record is not None and not self.record.done

    def _env_for(self, task: str) -> Env:
        if task not in self._envs:
            options = {**self.env_options, **task_env_options(self.env_name, task)}  # the task's option wins
            self._envs[task] = self._make(self.env_name, **options)
        return self._envs[task]

    # ---- episodes ------------------------------------------------------------------------------
    def reset(self, seed: int, task: str = "") -> tuple[EpisodeRecord, Optional[EpisodeRecord]]:
        """Start an episode -> (its record, the record of the episode it aborted, if one was running)."""
        env = self._env_for(task or self.default_task)  # may raise: nothing has changed then
        aborted = None
        if self.live:
            aborted = self.record
            aborted.event, aborted.message = FAILURE, f"aborted by a reset (seed {seed}) after {aborted.steps} steps"
        self.env = env
        self.observation, instruction = env.reset(int(seed))
        self.sim_time_s += self.period_s
        self.episodes += 1
        self.record = EpisodeRecord(self.episodes, int(seed), task or self.default_task, instruction, self.sim_time_s)
        self._last_applied = None
        return self.record, aborted

    def refuse(self, reason: str, message: str = "") -> None:
        """Count a refused command against the current episode (if any)."""
        if self.record is not None:
            self.record.refused[reason] += 1
            self.record.message = f"{reason}: {message}" if message else reason

    def to_action(self, values: np.ndarray) -> np.ndarray:
        """Command values -> the env action (SE(2): clipped into the bounds, as astra_sim.evaluate does)."""
        values = np.asarray(values, dtype=np.float64)
        low, high = self.env.action_bounds
        if values.shape != low.shape:
            raise CommandRefused("malformed", f"command has {values.size} values, the action space has {low.size}")
        if not np.isfinite(values).all():
            raise CommandRefused("nonfinite", f"command has non-finite values: {values.tolist()}")
        return np.clip(values, low, high) if self.pick_and_place else values

    def step(self, values: np.ndarray) -> StepOutcome:
        """One env step with `values`; CommandRefused (counted) when it cannot be executed.

        A simulator error (anything else the env raises) ends the episode as FAILURE; the bridge
        stays up."""
        record = self.record
        if record is None or record.done:
            raise self._refused("no_episode", "no episode is running (call reset_episode)")
        try:
            action = self.to_action(values)
        except CommandRefused as err:
            raise self._refused(err.reason, str(err)) from None
        t0 = time.perf_counter()
        try:
            obs, success, done, _info = self.env.step(action)
        except ActionRejected as err:
            raise self._refused(err.reason, str(err)) from None
        except Exception as err:  # a simulator failure must end the episode, not the bridge
            record.event, record.message = FAILURE, f"simulator error: {type(err).__name__}: {err}"
            raise self._refused("simulator_error", record.message) from None
        step_ms = (time.perf_counter() - t0) * 1e3
        self.observation = obs
        self.sim_time_s += self.period_s
        record.steps += 1
        record.applied += 1
        self._last_applied = action
        if done:
            record.event = SUCCESS if success else TIMEOUT
            record.message = "goal reached" if success else f"step limit reached after {record.steps} steps"
        return StepOutcome(obs, record, step_ms)

    def _refused(self, reason: str, message: str) -> CommandRefused:
        self.refuse(reason, message)
        return CommandRefused(reason, message)

    def hold_action(self) -> np.ndarray:
        """The action that keeps a pose robot where it is: the last applied one, else its current pose."""
        if self._last_applied is not None:
            return self._last_applied.copy()
        if self.pick_and_place:
            raise RuntimeError("a pick-and-place env has no hold-still action")
        low, high = self.env.action_bounds
        obs = self.observation
        pose = None if obs is None or obs.proprio is None else pose_from_proprio(self.proprio_names, obs.proprio)
        if pose is None:
            raise RuntimeError(f"{self.env_name}: no end-effector position in the proprioception {self.proprio_names}")
        gripper = high[-1]  # open
        names = self.proprio_names
        if "gripper_opening" in names and obs is not None and obs.proprio is not None:
            gripper = float(obs.proprio[names.index("gripper_opening")])
        return np.array([*pose, gripper], dtype=np.float64)

    def expert_action(self) -> np.ndarray:
        return np.asarray(self.env.expert_action(), dtype=np.float64)

    def close(self) -> None:
        for env in self._envs.values():
            close = getattr(env, "close", None)
            if close is not None:
                close()


def seconds_to_stamp_parts(seconds: float) -> tuple[int, int]:
    """Seconds -> (sec, nanosec) of a builtin_interfaces/Time."""
    nanoseconds = int(round(seconds * 1e9))
    return nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000

