"""The policy node's parameters: one table, one validated dataclass. Pure Python, no ROS.

config/policy.yaml documents each parameter for users; the descriptions here are what
`ros2 param describe` shows. Declaring and reading them on a node is in ros_parameters.py; this
module has no rclpy import so that tools (astra_ros.checkpoint_params, the demo) can build and
check a parameters file on a machine without ROS.

Array parameters are declared by type without a default (rclpy cannot infer the type of an empty
list), so "not set" and "set to []" both mean "empty". Empty `camera_names` / `camera_topics`
are filled from the checkpoint (`resolve_cameras`) before validation.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

# Type tags of the array parameters (ros_parameters.py maps them to rclpy's Parameter.Type).
STRING_ARRAY, INTEGER_ARRAY, DOUBLE_ARRAY = "string_array", "integer_array", "double_array"
ARRAY_TYPES = (STRING_ARRAY, INTEGER_ARRAY, DOUBLE_ARRAY)

# How the node reads proprioception (parameter proprio_msg_type).
PROPRIO_MSG_TYPES = ("joint_state", "pose")

# name -> (default, or an array type tag, description)
PARAMETERS: dict[str, tuple[Any, str]] = {
    "checkpoint": ("", "Checkpoint directory (config.yaml, stats.json, model.safetensors, meta.json). Required."),
    "camera_names": (STRING_ARRAY,
                     "Camera names in the order the checkpoint was trained with; empty: the checkpoint's. "
                     "When set, must equal the checkpoint's."),
    "camera_topics": (STRING_ARRAY, "Image topic of each camera, same order as camera_names; "
                                    "empty: camera/<name>/image_raw (camera/<name>/image_raw/compressed)."),
    "transport": ("raw", "'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage, JPEG/PNG)."),
    "image_size": (INTEGER_ARRAY,
                   "[height, width] every frame must have (others are rejected as bad input); empty: any size."),
    "max_image_pixels": (2_073_600, "Frames with more pixels (height x width) are refused before decoding "
                                    "(kind 'too_large'); default 1920x1080. 0: no limit."),
    "control_rate_hz": (10.0, "Control (inference + command) rate in Hz."),
    "history_length": (0, "Segments kept when the checkpoint's context window (max_timesteps) is full; the "
                          "oldest are dropped. 0: half the window. Must be < max_timesteps."),
    "device": ("auto", "Torch device: 'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:N'."),
    "output_frame": ("base_link", "frame_id of every published command."),
    "workspace_lower": (DOUBLE_ARRAY,
                        "Lower limit per action dimension (order of the action space); empty: training data min."),
    "workspace_upper": (DOUBLE_ARRAY,
                        "Upper limit per action dimension; empty: training data max."),
    "max_step_change": (DOUBLE_ARRAY,
                        "Largest change per tick and dimension vs. the last executed command; 0 or .inf: no limit; "
                        "empty: no limit at all."),
    "image_timeout_s": (0.5, "A camera whose newest frame is older than this (receive time) holds all commands; "
                             "checked at the tick and again when the command is published."),
    "max_step_latency_s": (0.3, "A command whose step (control tick -> publish) took longer is withheld "
                                "(kind 'late_command')."),
    "mask_topics": (STRING_ARRAY,
                    "Instance-mask topic of each camera (sensor_msgs/Image, mono16 or mono8 labels, 0 = background, "
                    "same size as the image), same order as camera_names. Required by object-token checkpoints and "
                    "refused for others; empty: no masks."),
    "mask_stamp_tolerance_s": (0.0, "A mask belongs to the camera frame whose header stamp is within this of its own "
                                    "(seconds); 0: identical stamps."),
    "proprio_topic": ("", "Proprioception topic; required by checkpoints trained with proprioception and refused for "
                          "others. '': not subscribed."),
    "proprio_msg_type": ("joint_state", "'joint_state' (sensor_msgs/JointState: the positions named by "
                                        "proprio_joint_names) or 'pose' (geometry_msgs/PoseStamped: x y z roll pitch yaw)."),
    "proprio_joint_names": (STRING_ARRAY, "JointState names giving the checkpoint's proprioception values, in its "
                                          "order; empty: the checkpoint's own proprioception names (stats.json)."),
    "proprio_timeout_s": (0.5, "Commands are held when the newest proprioception message is older than this."),
    "new_frames_only": (False, "Step only on new frames: every camera's stamp later than the previous step's and "
                               "received after the instruction (simulators that publish one observation per command)."),
    "ee_pose_topic": ("", "geometry_msgs/PoseStamped of the current end-effector pose; required for delta actions."),
    "ee_pose_timeout_s": (0.5, "Commands are held when the end-effector pose is older than this."),
    "instruction_max_chars": (1000, "Longer instructions are rejected as bad input."),
    "dry_run": (True, "Compute and publish action_segment/status, but never publish robot commands."),
    "autostart": (True, "Configure and activate on start-up (no lifecycle manager or ros2 CLI needed)."),
    "status_rate_hz": (1.0, "Rate of the status message."),
    "cpu_threads": (0, "torch intra-op threads for CPU inference; 0: $OMP_NUM_THREADS if set, else 1 (steady "
                       "latency on a CPU shared with other work). The count used is logged."),
    "realtime_priority": (0, "SCHED_FIFO priority (1-99) for the node's threads: removes the wait for a busy core "
                             "from the control loop; needs CAP_SYS_NICE or an rtprio limit. 0: normal scheduling."),
    "warmup_steps": (2, "Policy steps run on blank images during configure (first-call costs off the hot path)."),
}


def default_camera_topic(camera: str, transport: str) -> str:
    """The image_transport naming convention, relative (resolves in the node's namespace)."""
    return f"camera/{camera}/image_raw" + ("/compressed" if transport == "compressed" else "")


def proprio_problems(proprio_topic: str, proprio_msg_type: str, proprio_joint_names: Sequence[str]) -> list[str]:
    """What is wrong with the proprioception parameters ([] = nothing): the one check of the policy
    node and the recorder, which read proprioception alike (astra_ros.proprio, the same parameter
    names), so a parameters file that one refuses the other refuses too."""
    problems = []
    if proprio_msg_type not in PROPRIO_MSG_TYPES:
        problems.append(f"'proprio_msg_type' is {proprio_msg_type!r}: must be one of {list(PROPRIO_MSG_TYPES)}")
    if proprio_joint_names and (proprio_msg_type != "joint_state" or not proprio_topic):
        problems.append("'proprio_joint_names' only applies with a 'proprio_topic' of proprio_msg_type 'joint_state'")
    if len(set(proprio_joint_names)) != len(proprio_joint_names):
        problems.append(f"'proprio_joint_names' has duplicates: {list(proprio_joint_names)}")
    return problems


def resolve_torch_threads(cpu_threads: int, environ: Mapping[str, str] = os.environ) -> int:
    """The torch intra-op thread count to use: `cpu_threads` when > 0, else $OMP_NUM_THREADS when it
    is a positive integer, else 1. One thread is the default because OpenMP threads spinning on a
    busy 2-core machine made a step 10-25x slower (docs/DEPLOYMENT.md), and a larger count is a
    deliberate choice."""
    if cpu_threads > 0:
        return cpu_threads
    value = environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


@dataclass(frozen=True)
class PolicyNodeParams:
    checkpoint: str
    camera_names: tuple[str, ...]
    camera_topics: tuple[str, ...]
    transport: str
    image_size: tuple[int, ...]
    max_image_pixels: int
    control_rate_hz: float
    history_length: int
    device: str
    output_frame: str
    workspace_lower: tuple[float, ...]
    workspace_upper: tuple[float, ...]
    max_step_change: tuple[float, ...]
    image_timeout_s: float
    max_step_latency_s: float
    mask_topics: tuple[str, ...]
    mask_stamp_tolerance_s: float
    proprio_topic: str
    proprio_msg_type: str
    proprio_joint_names: tuple[str, ...]
    proprio_timeout_s: float
    new_frames_only: bool
    ee_pose_topic: str
    ee_pose_timeout_s: float
    instruction_max_chars: int
    dry_run: bool
    autostart: bool
    status_rate_hz: float
    cpu_threads: int
    realtime_priority: int
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
        if self.mask_topics and len(self.mask_topics) != len(self.camera_names):
            problems.append(f"'mask_topics' has {len(self.mask_topics)} entries for {len(self.camera_names)} "
                            f"camera_names {list(self.camera_names)} (one mask topic per camera, same order)")
        if len(set(self.mask_topics)) != len(self.mask_topics) or set(self.mask_topics) & set(self.camera_topics):
            problems.append(f"'mask_topics' must be distinct topics, none of them a camera topic: {list(self.mask_topics)}")
        if not (math.isfinite(self.mask_stamp_tolerance_s) and self.mask_stamp_tolerance_s >= 0):
            problems.append(f"'mask_stamp_tolerance_s' must be a finite number >= 0, got {self.mask_stamp_tolerance_s}")
        problems += proprio_problems(self.proprio_topic, self.proprio_msg_type, self.proprio_joint_names)
        if self.transport not in ("raw", "compressed"):
            problems.append(f"'transport' is {self.transport!r}: must be 'raw' or 'compressed'")
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) <= 0):
            problems.append(f"'image_size' must be [] or [height, width] > 0, got {list(self.image_size)}")
        if self.max_image_pixels < 0:
            problems.append(f"'max_image_pixels' must be >= 0 (0: no limit), got {self.max_image_pixels}")
        elif len(self.image_size) == 2 and self.max_image_pixels and math.prod(self.image_size) > self.max_image_pixels:
            problems.append(f"'image_size' {list(self.image_size)} has more pixels than max_image_pixels="
                            f"{self.max_image_pixels}: every frame would be refused")
        for name in ("control_rate_hz", "image_timeout_s", "max_step_latency_s", "ee_pose_timeout_s",
                     "proprio_timeout_s", "status_rate_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"'{name}' must be a finite number > 0, got {value}")
        if self.instruction_max_chars < 1:
            problems.append(f"'instruction_max_chars' must be >= 1, got {self.instruction_max_chars}")
        if self.history_length < 0:
            problems.append(f"'history_length' must be >= 0 (0: half the context window), got {self.history_length}")
        if self.cpu_threads < 0:
            problems.append(f"'cpu_threads' must be >= 0 (0: $OMP_NUM_THREADS or 1), got {self.cpu_threads}")
        if not 0 <= self.realtime_priority <= 99:
            problems.append(f"'realtime_priority' must be 0 (normal scheduling) .. 99, got {self.realtime_priority}")
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

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "PolicyNodeParams":
        """From a name -> value mapping (a ros__parameters dict): missing names take their default
        (arrays: empty); unknown names raise ValueError listing the valid ones."""
        return cls(**resolve_values(PARAMETERS, values, [f.name for f in fields(cls)]))

    @property
    def image_hw(self) -> tuple[int, int] | None:
        return (self.image_size[0], self.image_size[1]) if self.image_size else None

    @property
    def step_limits(self) -> tuple[float, ...]:
        """max_step_change with 0 mapped to inf (no limit)."""
        return tuple(math.inf if v == 0 else v for v in self.max_step_change)

    @property
    def torch_threads(self) -> int:
        return resolve_torch_threads(self.cpu_threads)


def resolve_values(table: Mapping[str, tuple[Any, str]], values: Mapping[str, Any],
                   names: Sequence[str]) -> dict[str, Any]:
    """`values` completed from `table` for the fields `names`: missing names take their default,
    arrays become tuples (missing: empty); unknown names raise ValueError listing the valid ones."""
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; valid parameters: {sorted(table)}")
    resolved: dict[str, Any] = {}
    for name in names:
        default = table[name][0]
        value = values.get(name)
        if default in ARRAY_TYPES:
            resolved[name] = tuple(value) if value is not None else ()
        else:
            resolved[name] = default if value is None else value
    return resolved


def resolve_cameras(values: Mapping[str, Any], checkpoint_cameras: Sequence[str] | None) -> dict[str, Any]:
    """`values` with empty camera_names taken from the checkpoint and empty camera_topics from the
    naming convention. A camera list that is set is kept as it is: the node compares it with the
    checkpoint's and fails loudly on a mismatch."""
    out = dict(values)
    if not out.get("camera_names") and checkpoint_cameras:
        out["camera_names"] = list(checkpoint_cameras)
    if not out.get("camera_topics") and out.get("camera_names"):
        transport = out.get("transport") or PARAMETERS["transport"][0]
        out["camera_topics"] = [default_camera_topic(c, transport) for c in out["camera_names"]]
    return out


def coerce_value(name: str, value: Any) -> Any:
    """`value` in the exact type rcl will declare `name` with (10 -> 10.0 for a double, array
    items likewise), so a parameters file written from Python loads without a type error."""
    return coerce_table_value(PARAMETERS, name, value)


def coerce_table_value(table: Mapping[str, tuple[Any, str]], name: str, value: Any) -> Any:
    """coerce_value for the parameter table of any node."""
    if name not in table:
        raise ValueError(f"unknown parameter {name!r}; valid parameters: {sorted(table)}")
    default = table[name][0]
    item = {STRING_ARRAY: str, INTEGER_ARRAY: int, DOUBLE_ARRAY: float}.get(default) if isinstance(default, str) else None
    if item is not None:
        return [item(v) for v in value]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"parameter {name!r} must be true or false, got {value!r}")
        return value
    return type(default)(value)
