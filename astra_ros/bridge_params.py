"""The simulator bridge's parameters: one table, one validated dataclass. Pure Python, no ROS.

config/sim_bridge.yaml documents each one for users; declaring and reading them on the node is
astra_ros.ros_parameters with this table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from astra_ros.params import STRING_ARRAY, coerce_table_value, resolve_values
from astra_sim.demos import parse_env_options

STEP_MODES = ("auto", "per_command", "fixed_rate")
PER_COMMAND_CLOCK = ("'publish_clock' needs step_mode fixed_rate: stepping per command, simulated time stands still "
                     "between commands, and so would the control timer of a policy node on sim time")

# name -> (default, or an array type tag, description)
BRIDGE_PARAMETERS: dict[str, tuple[Any, str]] = {
    "env": ("tabletop", "astra_sim environment: tabletop | maniskill | metaworld (or module:factory)."),
    "env_options": (STRING_ARRAY, "Environment options as key=value (value in JSON, as --env-option of the "
                                  "astra_sim commands), e.g. [image_size=96, action_bins=64]; the env's error "
                                  "message lists its valid keys."),
    "task": ("", "Task of episodes whose reset_episode request names none; '': the env as configured."),
    "initial_seed": (0, "Start an episode with this seed at start-up; -1: wait for reset_episode."),
    "step_mode": ("auto", "'per_command': one env step per command (pick-and-place envs; the simulated world waits); "
                          "'fixed_rate': step at step_rate_hz with the newest command (pose envs); 'auto': "
                          "per_command for SE(2) pick-and-place, fixed_rate for 6-D pose."),
    "step_rate_hz": (0.0, "fixed_rate: env steps per second of wall time; 0: the env's control rate."),
    "republish_rate_hz": (10.0, "per_command: how often the current observation is sent again while the env "
                                "waits for a command (same stamp: the same simulated instant), so subscribers' "
                                "staleness checks hold and a lost best-effort frame is replaced."),
    "publish_clock": (False, "Publish /clock from the simulated time and stamp everything with it (nodes then use "
                             "use_sim_time); fixed_rate only."),
    "frame_id": ("base_link", "The env's action frame: frame_id of poses and commands; commands in another frame "
                              "are refused."),
    "publish_expert": (False, "Also publish the scripted expert's next action on expert/pick_place or "
                              "expert/target_pose + expert/gripper_command (demonstrations, plumbing checks)."),
    "cpu_threads": (0, "torch intra-op threads (ManiSkill's simulator runs torch); 0: $OMP_NUM_THREADS, else 1."),
}


def coerce_bridge_value(name: str, value: Any) -> Any:
    """`value` in the exact type rcl declares `name` with (for parameters files written from Python)."""
    return coerce_table_value(BRIDGE_PARAMETERS, name, value)


def format_env_options(options: Mapping[str, Any]) -> list[str]:
    """{key: value} -> ["key=value", ...] with JSON values: what astra_sim.demos.parse_env_options
    (the --env-option parser of the simulator command lines) reads back."""
    return [f"{key}={json.dumps(value)}" for key, value in options.items()]


@dataclass(frozen=True)
class BridgeParams:
    env: str
    env_options: tuple[str, ...]
    task: str
    initial_seed: int
    step_mode: str
    step_rate_hz: float
    republish_rate_hz: float
    publish_clock: bool
    frame_id: str
    publish_expert: bool
    cpu_threads: int

    def __post_init__(self) -> None:
        problems = []
        if not self.env:
            problems.append("'env' is empty")
        try:
            parse_env_options(self.env_options)
        except ValueError as err:
            problems.append(f"'env_options': {err}")
        if self.initial_seed < -1:
            problems.append(f"'initial_seed' must be >= 0, or -1 (no episode at start-up), got {self.initial_seed}")
        if self.step_mode not in STEP_MODES:
            problems.append(f"'step_mode' is {self.step_mode!r}: must be one of {list(STEP_MODES)}")
        if not (math.isfinite(self.step_rate_hz) and self.step_rate_hz >= 0):
            problems.append(f"'step_rate_hz' must be >= 0 (0: the env's control rate), got {self.step_rate_hz}")
        if not (math.isfinite(self.republish_rate_hz) and self.republish_rate_hz > 0):
            problems.append(f"'republish_rate_hz' must be > 0, got {self.republish_rate_hz}")
        if self.publish_clock and self.step_mode == "per_command":
            problems.append(PER_COMMAND_CLOCK)
        if not self.frame_id:
            problems.append("'frame_id' is empty")
        if self.cpu_threads < 0:
            problems.append(f"'cpu_threads' must be >= 0, got {self.cpu_threads}")
        if problems:
            raise ValueError("invalid simulator bridge parameters:\n  - " + "\n  - ".join(problems))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "BridgeParams":
        return cls(**resolve_values(BRIDGE_PARAMETERS, values, [f.name for f in fields(cls)]))

    @property
    def options(self) -> dict[str, Any]:
        return parse_env_options(self.env_options)

    def resolved_step_mode(self, pick_and_place_env: bool) -> str:
        """'auto' decided for the env; ValueError for fixed_rate on a pick-and-place env."""
        mode = self.step_mode
        if mode == "auto":
            mode = "per_command" if pick_and_place_env else "fixed_rate"
        elif mode == "fixed_rate" and pick_and_place_env:
            raise ValueError("step_mode fixed_rate: this env's actions are whole pick-and-places, it has no "
                             "'hold still' action to step with between commands; use per_command")
        if mode == "per_command" and self.publish_clock:
            raise ValueError(PER_COMMAND_CLOCK)
        return mode
