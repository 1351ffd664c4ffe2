"""The recorder's parameters: one table, one validated dataclass, and the import mapping they
imply. Pure Python, no ROS.

config/recorder.yaml documents each parameter for users; declaring and reading them on the node is
astra_ros.ros_parameters with this table (as for the policy node and the simulator bridge).

Parameter names follow the policy node's where they mean the same thing (camera_names,
camera_topics, transport, image_size, max_image_pixels, mask_topics, proprio_*), so one set of
topic settings serves the robot's recorder and its policy. The resampling settings (control rate,
tolerance, ticks, gap policy, quaternion tolerance) are those of the rosbag importer:
:meth:`RecorderParams.import_mapping` turns them into the importer's mapping, which the recorder
writes next to its bags, so a recorded bag imports with exactly the rule the recorder applied live.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from astra_core.action_space import ActionSpaceSpec
from astra_core.configuration import from_dict
from astra_core.data.format import check_camera_names
from astra_core.data.resample import GAP_POLICIES
from astra_core.geometry import QUATERNION_TOLERANCE
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_ros.params import (INTEGER_ARRAY, STRING_ARRAY, coerce_table_value, default_camera_topic, proprio_problems,
                              resolve_values)

OUTPUTS = {"dataset": ("dataset",), "rosbag": ("rosbag",), "both": ("dataset", "rosbag")}
BAG_STORAGES = ("mcap", "sqlite3")
ACTION_SPACES = ("continuous_pose6d", "discrete_pose6d", "discrete_se2")
TICK_MODES = ("rate", "action")
# The action topics a policy node publishes (relative names), used when action_topic is "".
DEFAULT_ACTION_TOPICS = {"discrete_se2": "pick_place", "pose6d": "target_pose"}

# name -> (default, or an array type tag, description)
RECORDER_PARAMETERS: dict[str, tuple[Any, str]] = {
    "output": ("dataset", "'dataset' (Astra dataset at dataset_path), 'rosbag' (one rosbag2 folder per episode "
                          "under bag_path) or 'both' (the same episode into both)."),
    "dataset_path": ("", "Dataset directory (created, or appended to when it exists: same schema). "
                         "Required for output dataset / both."),
    "bag_path": ("", "Folder of the episode bags (episode_NNNNNN/) and their import_mapping.yaml. "
                     "Required for output rosbag / both."),
    "bag_storage": ("mcap", "rosbag2 storage of the episode bags: 'mcap' or 'sqlite3'."),
    "camera_names": (STRING_ARRAY, "Dataset camera names (directory names), in the order a checkpoint will use. "
                                   "Required."),
    "camera_topics": (STRING_ARRAY, "Image topic of each camera, same order; empty: camera/<name>/image_raw "
                                    "(camera/<name>/image_raw/compressed), as the policy node."),
    "transport": ("raw", "'raw' (sensor_msgs/Image) or 'compressed' (sensor_msgs/CompressedImage, JPEG/PNG)."),
    "mask_topics": (STRING_ARRAY, "Instance-mask topic of each camera (sensor_msgs/Image mono16/mono8 labels), same "
                                  "order as camera_names; empty: no masks. A frame is recorded with the mask of "
                                  "its header stamp (the policy node's pairing rule)."),
    "mask_stamp_tolerance_s": (0.0, "A mask belongs to the frame whose header stamp is within this of its own; "
                                    "0: identical stamps."),
    "image_size": (INTEGER_ARRAY, "[height, width] every frame must have (others are bad samples); empty: the "
                                  "native size of the first frame (or of the existing dataset)."),
    "max_image_pixels": (2_073_600, "Frames with more pixels are bad samples (kind 'too_large'), as in the policy "
                                    "node. 0: no limit."),
    "action_space": ("continuous_pose6d", "Action space of the dataset: continuous_pose6d | discrete_pose6d "
                                          "(PoseStamped + gripper) | discrete_se2 (PickPlaceSE2)."),
    "num_bins": (256, "Bins per dimension of the discrete action spaces (stored in the dataset schema)."),
    "action_frame": ("absolute", "'absolute' or 'delta': a label of the dataset's actions; the commands are "
                                 "recorded as they are (the importer does the same)."),
    "action_topic": ("", "Commanded action: PoseStamped for pose6d, astra_ros/PickPlaceSE2 for discrete_se2; "
                         "'': target_pose / pick_place, the policy node's output topics."),
    "gripper_topic": ("gripper_command", "astra_ros/GripperCommand (.position) giving the gripper dimension of "
                                         "pose6d actions; unused for discrete_se2."),
    "proprio_topic": ("", "Proprioception (sensor_msgs/JointState or geometry_msgs/PoseStamped); '': none."),
    "proprio_msg_type": ("joint_state", "'joint_state' or 'pose' (x y z roll pitch yaw), as the policy node."),
    "proprio_joint_names": (STRING_ARRAY, "JointState joints recorded, in order; empty: every joint, in the order "
                                          "of the first message."),
    "instruction_topic": ("instruction", "std_msgs/String instruction topic (reliable + transient local, as the "
                                         "policy node's)."),
    "instruction_max_chars": (1000, "Longer instructions are refused, as in the policy node."),
    "control_rate_hz": (10.0, "Steps per second (ticks: rate)."),
    "ticks": ("rate", "'rate': a step every 1/control_rate_hz; 'action': one step per action message "
                      "(SE(2) pick-and-place commands)."),
    "tolerance_s": (0.5, "At each tick every stream gives its newest sample not newer than the tick; one older "
                         "than this is no sample (the stream is stale: a gap, reported, never padded). The "
                         "policy node's image_timeout_s rule: keep them equal."),
    "sync_tolerance_s": (0.0, "Camera frames of one step further apart than this count as misaligned (reported); "
                              "0: half a control period."),
    "quaternion_tolerance": (QUATERNION_TOLERANCE, "| |q| - 1 | beyond this makes a pose a bad sample (its steps are "
                                                   "dropped); the policy node refuses poses beyond the default."),
    "gap_policy": ("drop_step", "'drop_step': a tick with a stale stream is dropped and reported, the episode "
                                "kept and marked; 'drop_episode': the episode is dropped."),
    "chunk_size": (32, "Frames per image chunk of the dataset."),
    "max_queued_steps": (100, "Ticks waiting for the writer thread beyond this are dropped as 'overrun' bad steps "
                              "(reported) instead of growing memory without bound."),
    "stop_timeout_s": (60.0, "How long stop / discard wait for the writer thread to finish the episode."),
    "status_rate_hz": (2.0, "Rate of the status message (also sent at every start / stop / discard)."),
}


def coerce_recorder_value(name: str, value: Any) -> Any:
    """`value` in the exact type rcl declares `name` with (for parameters files written from Python)."""
    return coerce_table_value(RECORDER_PARAMETERS, name, value)


@dataclass(frozen=True)
class RecorderParams:
    output: str
    dataset_path: str
    bag_path: str
    bag_storage: str
    camera_names: tuple[str, ...]
    camera_topics: tuple[str, ...]
    transport: str
    mask_topics: tuple[str, ...]
    mask_stamp_tolerance_s: float
    image_size: tuple[int, ...]
    max_image_pixels: int
    action_space: str
    num_bins: int
    action_frame: str
    action_topic: str
    gripper_topic: str
    proprio_topic: str
    proprio_msg_type: str
    proprio_joint_names: tuple[str, ...]
    instruction_topic: str
    instruction_max_chars: int
    control_rate_hz: float
    ticks: str
    tolerance_s: float
    sync_tolerance_s: float
    quaternion_tolerance: float
    gap_policy: str
    chunk_size: int
    max_queued_steps: int
    stop_timeout_s: float
    status_rate_hz: float

    def __post_init__(self) -> None:
        problems = []
        if self.output not in OUTPUTS:
            problems.append(f"'output' is {self.output!r}: must be one of {list(OUTPUTS)}")
        else:
            if "dataset" in self.outputs and not self.dataset_path:
                problems.append(f"'dataset_path' is empty: output {self.output!r} writes a dataset")
            if "rosbag" in self.outputs and not self.bag_path:
                problems.append(f"'bag_path' is empty: output {self.output!r} writes rosbag2 folders")
        if self.bag_storage not in BAG_STORAGES:
            problems.append(f"'bag_storage' is {self.bag_storage!r}: must be one of {list(BAG_STORAGES)}")
        try:
            check_camera_names(list(self.camera_names))
        except ValueError as err:
            problems.append(f"'camera_names': {err}")
        if self.camera_topics and len(self.camera_topics) != len(self.camera_names):
            problems.append(f"'camera_topics' has {len(self.camera_topics)} entries for {len(self.camera_names)} "
                            "camera_names")
        if self.transport not in ("raw", "compressed"):
            problems.append(f"'transport' is {self.transport!r}: must be 'raw' or 'compressed'")
        if self.mask_topics and len(self.mask_topics) != len(self.camera_names):
            problems.append(f"'mask_topics' has {len(self.mask_topics)} entries for {len(self.camera_names)} "
                            "camera_names (one mask topic per camera, same order)")
        if not (math.isfinite(self.mask_stamp_tolerance_s) and self.mask_stamp_tolerance_s >= 0):
            problems.append(f"'mask_stamp_tolerance_s' must be >= 0, got {self.mask_stamp_tolerance_s}")
        if self.image_size and (len(self.image_size) != 2 or min(self.image_size) <= 0):
            problems.append(f"'image_size' must be [] or [height, width] > 0, got {list(self.image_size)}")
        if self.max_image_pixels < 0:
            problems.append(f"'max_image_pixels' must be >= 0 (0: no limit), got {self.max_image_pixels}")
        if self.action_space not in ACTION_SPACES:
            problems.append(f"'action_space' is {self.action_space!r}: must be one of {list(ACTION_SPACES)}")
        else:
            try:
                self.action_spec
            except ValueError as err:
                problems.append(f"'action_space' / 'num_bins' / 'action_frame': {err}")
            if self.action_space == "discrete_se2" and self.action_frame == "delta":
                problems.append("'action_frame' delta is not supported for discrete_se2 (as in the policy node)")
            if self.action_space != "discrete_se2" and not self.gripper_topic:
                problems.append(f"'gripper_topic' is empty: {self.action_space} actions have a gripper dimension")
        problems += proprio_problems(self.proprio_topic, self.proprio_msg_type, self.proprio_joint_names)
        if not self.instruction_topic:
            problems.append("'instruction_topic' is empty")
        if self.instruction_max_chars < 1:
            problems.append(f"'instruction_max_chars' must be >= 1, got {self.instruction_max_chars}")
        if self.ticks not in TICK_MODES:
            problems.append(f"'ticks' is {self.ticks!r}: must be one of {list(TICK_MODES)}")
        if self.gap_policy not in GAP_POLICIES:
            problems.append(f"'gap_policy' is {self.gap_policy!r}: must be one of {list(GAP_POLICIES)}")
        for name in ("control_rate_hz", "tolerance_s", "quaternion_tolerance", "stop_timeout_s", "status_rate_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"'{name}' must be a finite number > 0, got {value}")
        if not (math.isfinite(self.sync_tolerance_s) and self.sync_tolerance_s >= 0):
            problems.append(f"'sync_tolerance_s' must be >= 0 (0: half a control period), got {self.sync_tolerance_s}")
        if not 1 <= self.chunk_size <= 4096:
            problems.append(f"'chunk_size' must be in [1, 4096], got {self.chunk_size}")
        if self.max_queued_steps < 1:
            problems.append(f"'max_queued_steps' must be >= 1, got {self.max_queued_steps}")
        if problems:
            raise ValueError("invalid recorder parameters:\n  - " + "\n  - ".join(problems))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "RecorderParams":
        """From a name -> value mapping (a ros__parameters dict): missing names take their default;
        unknown names raise ValueError listing the valid ones."""
        return cls(**resolve_values(RECORDER_PARAMETERS, values, [f.name for f in fields(cls)]))

    # -- derived settings ---------------------------------------------------------------------------

    @property
    def outputs(self) -> tuple[str, ...]:
        return OUTPUTS.get(self.output, ())

    @property
    def action_spec(self) -> ActionSpaceSpec:
        return ActionSpaceSpec(self.action_space, num_bins=self.num_bins, frame=self.action_frame)  # type: ignore[arg-type]

    @property
    def pose_actions(self) -> bool:
        return self.action_space != "discrete_se2"

    @property
    def image_hw(self) -> tuple[int, int] | None:
        return (self.image_size[0], self.image_size[1]) if self.image_size else None

    @property
    def sync_tolerance(self) -> float:
        return self.sync_tolerance_s or 0.5 / self.control_rate_hz

    def topics(self) -> dict[str, str]:
        """Stream name -> topic as configured (relative names resolve in the node's namespace).

        Streams: one per camera (its name), ``mask:<camera>`` per masked camera, ``action``,
        ``gripper`` (pose6d), ``proprio`` (if any) and ``instruction``."""
        camera_topics = self.camera_topics or tuple(default_camera_topic(c, self.transport) for c in self.camera_names)
        out = dict(zip(self.camera_names, camera_topics))
        out.update({mask_stream(c): t for c, t in zip(self.camera_names, self.mask_topics)})
        out["action"] = self.action_topic or DEFAULT_ACTION_TOPICS["pose6d" if self.pose_actions else "discrete_se2"]
        if self.pose_actions:
            out["gripper"] = self.gripper_topic
        if self.proprio_topic:
            out["proprio"] = self.proprio_topic
        out["instruction"] = self.instruction_topic
        return out

    def import_mapping(self, topics: Mapping[str, str], marker_topic: str,
                       proprio_joints: Sequence[str] | None) -> RosbagMapping:
        """The rosbag importer's mapping for this recorder's bags: the same topics (resolved names),
        instance masks paired alike (mask topics, stamp tolerance), resampling rule and tolerances,
        episodes delimited by the markers the recorder writes."""
        proprio = []
        if self.proprio_topic:
            entry: dict[str, Any] = {"topic": topics["proprio"]}
            if self.proprio_msg_type == "joint_state" and proprio_joints:
                entry["joints"] = list(proprio_joints)
            proprio.append(entry)
        mapping = {
            "cameras": {c: topics[c] for c in self.camera_names},
            "mask_topics": {c: topics[mask_stream(c)] for c in self.camera_names} if self.mask_topics else {},
            "mask_stamp_tolerance_s": self.mask_stamp_tolerance_s,
            "action": {"space": self.action_space, "num_bins": self.num_bins, "frame": self.action_frame,
                       "topic": topics["action"]},
            "gripper": {"topic": topics["gripper"]} if self.pose_actions else {},
            "proprio": proprio,
            "instruction": {"topic": topics["instruction"]},
            "episodes": {"mode": "markers", "topic": marker_topic, "start": [MARKER_START], "stop": [MARKER_STOP],
                         "fail": [MARKER_FAIL], "discard": [MARKER_DISCARD]},
            "control_rate_hz": self.control_rate_hz, "ticks": self.ticks, "tolerance_s": self.tolerance_s,
            "time_source": "receive", "sync_tolerance_s": self.sync_tolerance, "gap_policy": self.gap_policy,
            "quaternion_tolerance": self.quaternion_tolerance, "image_size": None, "chunk_size": self.chunk_size,
            "metadata": {"source": "astra_recorder"},
        }
        return from_dict(RosbagMapping, mapping)


# Episode markers the recorder writes into its bags (std_msgs/String), read by the importer.
MARKER_START, MARKER_STOP, MARKER_FAIL, MARKER_DISCARD = "start", "stop", "fail", "discard"


def mask_stream(camera: str) -> str:
    """Stream name of a camera's instance masks."""
    return f"mask:{camera}"
