"""The policy node's parameters: declared in one table, read into one validated dataclass.

config/policy.yaml documents each parameter for users; the descriptions here are what
`ros2 param describe` shows. Array parameters are declared by type without a default (rclpy cannot
infer the type of an empty list), so "not set" and "set to []" both mean "empty".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

# name -> (default or Parameter.Type for arrays, description)
PARAMETERS: dict[str, tuple[Any, str]] = {
    "checkpoint": ("", "Checkpoint directory (config.yaml, stats.json, model.safetensors, meta.json). Required."),
    "camera_names": (Parameter.Type.STRING_ARRAY,
                     "Camera names in the order the checkpoint was trained with; must equal the checkpoint's."),
    "camera_topics": (Parameter.Type.STRING_ARRAY, "Image topic of each camera, same order as camera_names."),
    "transport": ("raw", "'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage, JPEG/PNG)."),
    "image_size": (Parameter.Type.INTEGER_ARRAY,
                   "[height, width] every frame must have (others are rejected as bad input); empty: any size."),
    "control_rate_hz": (10.0, "Control (inference + command) rate in Hz."),
    "history_length": (0, "Segments kept when the checkpoint's context window (max_timesteps) is full; the "
                          "oldest are dropped. 0: half the window. Must be < max_timesteps."),
    "device": ("auto", "Torch device: 'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:N'."),
    "output_frame": ("base_link", "frame_id of every published command."),
    "workspace_lower": (Parameter.Type.DOUBLE_ARRAY,
                        "Lower limit per action dimension (order of the action space); empty: training data min."),
    "workspace_upper": (Parameter.Type.DOUBLE_ARRAY,
                        "Upper limit per action dimension; empty: training data max."),
    "max_step_change": (Parameter.Type.DOUBLE_ARRAY,
                        "Largest change per tick and dimension vs. the last executed command; 0 or .inf: no limit; "
                        "empty: no limit at all."),
    "image_timeout_s": (0.5, "A camera whose newest frame is older than this (receive time) holds all commands."),
    "ee_pose_topic": ("", "geometry_msgs/PoseStamped of the current end-effector pose; required for delta actions."),
    "ee_pose_timeout_s": (0.5, "Commands are held when the end-effector pose is older than this."),
    "instruction_max_chars": (1000, "Longer instructions are rejected as bad input."),
    "dry_run": (True, "Compute and publish action_segment/status, but never publish robot commands."),
    "autostart": (True, "Configure and activate on start-up (no lifecycle manager or ros2 CLI needed)."),
    "status_rate_hz": (1.0, "Rate of the status message."),
    "cpu_threads": (0, "torch intra-op threads for CPU inference; 0: torch's default (all cores). On a shared CPU "
                       "1-2 threads give steadier latency."),
    "warmup_steps": (2, "Policy steps run on blank images during configure (first-call costs off the hot path)."),
}

# Parameters rclpy itself declares (or interprets) on every node.
_BUILTIN_PREFIXES = ("use_sim_time", "qos_overrides.", "start_type_description_service")


@dataclass(frozen=True)
class PolicyNodeParams:
    checkpoint: str
    camera_names: tuple[str, ...]
    camera_topics: tuple[str, ...]
    transport: str
    image_size: tuple[int, ...]
    control_rate_hz: float
    history_length: int
    device: str
    output_frame: str
    workspace_lower: tuple[float, ...]
    workspace_upper: tuple[float, ...]
    max_step_change: tuple[float, ...]
    image_timeout_s: float
    ee_pose_topic: str
    ee_pose_timeout_s: float
    instruction_max_chars: int
    dry_run: bool
    autostart: bool
    status_rate_hz: float
    cpu_threads: int
    warmup_steps: int

    def __post_init__(self) -> None:
        problems = []
        if not self.checkpoint:
            problems.append("'checkpoint' is empty: set it to a checkpoint directory")
        if not self.camera_names:
            problems.append("'camera_names' is empty")
        if len(set(self.camera_names)) != len(self.camera_names):
            problems.append(f"'camera_names' has duplicates: {list(self.camera_names)}")
        if len(self.camera_topics) != len(self.camera_names):
            problems.append(f"'camera_topics' has {len(self.camera_topics)} entries for "
                            f"{len(self.camera_names)} camera_names")
        if len(set(self.camera_topics)) != len(self.camera_topics):
            problems.append(f"'camera_topics' has duplicates: {list(self.camera_topics)}")
        if self.transport not in ("raw", "compressed"):
            problems.append(f"'transport' is {self.transport!r}: must be 'raw' or 'compressed'")
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) <= 0):
            problems.append(f"'image_size' must be [] or [height, width] > 0, got {list(self.image_size)}")
        for name in ("control_rate_hz", "image_timeout_s", "ee_pose_timeout_s", "status_rate_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"'{name}' must be a finite number > 0, got {value}")
        if self.instruction_max_chars < 1:
            problems.append(f"'instruction_max_chars' must be >= 1, got {self.instruction_max_chars}")
        if self.history_length < 0:
            problems.append(f"'history_length' must be >= 0 (0: half the context window), got {self.history_length}")
        if self.cpu_threads < 0:
            problems.append(f"'cpu_threads' must be >= 0 (0: torch's default), got {self.cpu_threads}")
        if self.warmup_steps < 0:
            problems.append(f"'warmup_steps' must be >= 0, got {self.warmup_steps}")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            problems.append(f"'device' is {self.device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if not self.output_frame:
            problems.append("'output_frame' is empty")
        if any(math.isnan(v) or v < 0 for v in self.max_step_change):
            problems.append(f"'max_step_change' entries must be >= 0 (0 = no limit), got {list(self.max_step_change)}")
        if problems:
            raise ValueError("invalid policy node parameters:\n  - " + "\n  - ".join(problems))

    @property
    def image_hw(self) -> tuple[int, int] | None:
        return (self.image_size[0], self.image_size[1]) if self.image_size else None

    @property
    def step_limits(self) -> tuple[float, ...]:
        """max_step_change with 0 mapped to inf (no limit)."""
        return tuple(math.inf if v == 0 else v for v in self.max_step_change)


def declare_parameters(node: Node) -> None:
    for name, (default, description) in PARAMETERS.items():
        node.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))


def unknown_parameter_names(node: Node) -> list[str]:
    """Overrides given for this node (params file / -p) that match no declared parameter.

    rclpy silently ignores such overrides; a typo in the YAML would then run with a default,
    which for e.g. `dry_run` is not acceptable. rclpy keeps the overrides in a private dict;
    if a future rclpy renames it we lose this check, not correctness.
    """
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    return sorted(name for name in overrides
                  if name not in PARAMETERS and not name.startswith(_BUILTIN_PREFIXES))


def read_parameters(node: Node) -> PolicyNodeParams:
    """Read and validate; raises ValueError listing every problem (and every valid name on a typo)."""
    unknown = unknown_parameter_names(node)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; valid parameters: {sorted(PARAMETERS)}")
    values: dict[str, Any] = {}
    for f in fields(PolicyNodeParams):
        try:
            value = node.get_parameter(f.name).value
        except ParameterUninitializedException:
            value = None
        if isinstance(PARAMETERS[f.name][0], Parameter.Type):
            value = tuple(value) if value is not None else ()
        values[f.name] = value
    return PolicyNodeParams(**values)
