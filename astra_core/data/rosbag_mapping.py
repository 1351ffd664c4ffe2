"""The mapping YAML of the rosbag2 importer: which topic is which stream, and how to resample.

Loaded with :func:`astra_core.data.import_mapping.load_mapping` (unknown keys -> error listing
the valid ones). Example: ``config/import/rosbag_example.yaml``; reference: docs/DATASET.md,
"Importing recordings".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from astra_core.configuration import ConfigError, from_dict
from astra_core.data.import_mapping import ActionMapping, check_cameras, check_image_size
from astra_core.data.ros_messages import JOINT_FIELDS
from astra_core.geometry import QUATERNION_TOLERANCE


@dataclass
class RosbagActionMapping(ActionMapping):
    # PoseStamped -> pose6d (x y z roll pitch yaw; gripper from `gripper`), astra_ros/PickPlaceSE2 ->
    # discrete_se2, JointState -> its positions mapped with `dims` (action dimension -> joint name).
    topic: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.topic:
            raise ConfigError("action.topic is required (PoseStamped, astra_ros/PickPlaceSE2 or JointState)")


@dataclass
class GripperMapping:
    topic: str = ""  # astra_ros/GripperCommand (.position) or std_msgs/Float64 / Float32 (.data)
    constant: float | None = None  # a fixed gripper value instead of a topic (say so explicitly)

    def __post_init__(self) -> None:
        if self.topic and self.constant is not None:
            raise ConfigError("gripper: give topic or constant, not both")
        if self.constant is not None and (isinstance(self.constant, bool) or not isinstance(self.constant, (int, float))
                                          or not math.isfinite(self.constant)):
            raise ConfigError(f"gripper.constant={self.constant!r}: must be a finite number")

    @property
    def configured(self) -> bool:
        return bool(self.topic) or self.constant is not None


@dataclass
class ProprioMapping:
    topic: str = ""  # sensor_msgs/JointState or geometry_msgs/PoseStamped
    joints: list[str] | None = None  # JointState: joints to take, in order (default: all, first message's order)
    field: Literal["position", "velocity", "effort"] = "position"  # JointState field
    prefix: str = ""  # prepended to the proprio names (PoseStamped: x y z roll pitch yaw)

    def __post_init__(self) -> None:
        if not self.topic:
            raise ConfigError("proprio[].topic is required")
        if self.field not in JOINT_FIELDS:
            raise ConfigError(f"proprio[].field={self.field!r}: must be one of {list(JOINT_FIELDS)}")


@dataclass
class InstructionMapping:
    topic: str = ""  # std_msgs/String: the newest one at or before the episode start, else the first in it
    text: str = ""  # used when there is no topic; `--instruction` on the command line overrides it


@dataclass
class EpisodeMapping:
    mode: Literal["bag", "markers"] = "bag"  # one episode per bag, or start/stop markers on `topic`
    topic: str = ""  # markers: std_msgs/String (values below) or std_msgs/Bool (true = start, false = stop)
    start: list[str] = field(default_factory=lambda: ["start"])
    stop: list[str] = field(default_factory=lambda: ["stop", "success"])  # ends a successful episode
    fail: list[str] = field(default_factory=lambda: ["fail", "failure"])  # ends an unsuccessful one
    discard: list[str] = field(default_factory=lambda: ["discard"])  # drops the open episode
    success: bool = True  # mode bag: the success flag of every episode

    def __post_init__(self) -> None:
        if self.mode == "markers" and not self.topic:
            raise ConfigError("episodes.topic is required with episodes.mode: markers")
        values = [*self.start, *self.stop, *self.fail, *self.discard]
        if len(set(values)) != len(values):
            raise ConfigError(f"episodes: a marker value is listed twice in start/stop/fail/discard: {values}")


@dataclass
class RosbagMapping:
    cameras: dict[str, str] = field(default_factory=dict)  # camera name -> Image or CompressedImage topic
    action: RosbagActionMapping = field(default_factory=RosbagActionMapping)
    gripper: GripperMapping = field(default_factory=GripperMapping)
    proprio: list[Any] = field(default_factory=list)  # ProprioMapping entries, concatenated in order
    instruction: InstructionMapping = field(default_factory=InstructionMapping)
    episodes: EpisodeMapping = field(default_factory=EpisodeMapping)
    # camera name -> sensor_msgs/Image mono16 / mono8 instance labels, every camera or none (the dataset
    # has a mask per camera or none); a frame takes the mask of its header stamp (mask_pairing.MaskPairer)
    mask_topics: dict[str, str] = field(default_factory=dict)
    mask_stamp_tolerance_s: float = 0.0  # a mask belongs to the frame whose header stamp is within this

    control_rate_hz: float = 10.0
    ticks: Literal["rate", "action"] = "rate"  # rate: every 1/control_rate; action: one step per action message
    tolerance_s: float = 0.1  # a sample older than this at a tick is no sample (a gap)
    time_source: Literal["receive", "header"] = "receive"  # bag receive time, or header.stamp where there is one
    reorder_window_s: float = 0.5  # time_source header: how late a stamp may arrive and still be ordered
    sync_tolerance_s: float | None = None  # cameras further apart count as misaligned (default: half a period)
    quaternion_tolerance: float = QUATERNION_TOLERANCE  # | |q| - 1 | above this: the pose is bad (the step is dropped)
    gap_policy: Literal["drop_step", "drop_episode"] = "drop_step"
    image_size: list[int] | None = None  # null: native size (what the node feeds the model); [H, W]: resize_rgb
    chunk_size: int = 32
    msg_dir: str = ""  # folder of the project's .msg files (default: msg/ of this checkout, then share/astra_ros/msg)
    metadata: dict[str, Any] = field(default_factory=dict)  # copied into dataset.json metadata

    def __post_init__(self) -> None:
        check_cameras(self.cameras, "an image topic")
        if {"action", "gripper"} & set(self.cameras):  # the report names streams by these too
            raise ConfigError("cameras: 'action' and 'gripper' name streams of the report; call the camera otherwise")
        self.proprio = [p if isinstance(p, ProprioMapping) else from_dict(ProprioMapping, p, f"proprio[{i}]")
                        for i, p in enumerate(self.proprio)]
        for key in ("control_rate_hz", "tolerance_s", "quaternion_tolerance"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key}={getattr(self, key)}: must be > 0")
        if self.reorder_window_s < 0:
            raise ConfigError(f"reorder_window_s={self.reorder_window_s}: must be >= 0")
        if self.sync_tolerance_s is not None and not (isinstance(self.sync_tolerance_s, (int, float)) and self.sync_tolerance_s > 0):
            raise ConfigError(f"sync_tolerance_s={self.sync_tolerance_s!r}: must be null or > 0")
        self.image_size = check_image_size(self.image_size)
        self._check_masks()
        if not 1 <= self.chunk_size <= 4096:
            raise ConfigError(f"chunk_size={self.chunk_size}: must be in [1, 4096]")
        pose_space = self.action.space != "discrete_se2"
        if pose_space and not self.gripper.configured and not self.action.uses_vector_mapping:
            raise ConfigError(f"{self.action.space} has a gripper dimension: set gripper.topic or gripper.constant")
        if not pose_space and self.gripper.configured:
            raise ConfigError("discrete_se2 has no gripper dimension: remove the gripper section")

    def _check_masks(self) -> None:
        if not self.mask_topics:
            return
        if set(self.mask_topics) != set(self.cameras):
            raise ConfigError(f"mask_topics names cameras {sorted(self.mask_topics)}, cameras are {sorted(self.cameras)}: "
                              "give a mask topic for every camera (the dataset has a mask per camera) or none")
        topics = list(self.mask_topics.values())
        if any(not isinstance(t, str) or not t for t in topics):
            raise ConfigError(f"mask_topics: every camera's mask topic must be a topic name, got {self.mask_topics}")
        if len(set(topics)) != len(topics) or set(topics) & set(self.cameras.values()):
            raise ConfigError(f"mask_topics must be distinct topics, none of them a camera topic: {self.mask_topics}")
        if self.image_size is not None:
            # labels cannot be resized like frames, and the policy node feeds native-size masks
            raise ConfigError("mask_topics need native-size frames: set image_size to null")
        if not (isinstance(self.mask_stamp_tolerance_s, (int, float)) and math.isfinite(self.mask_stamp_tolerance_s)
                and self.mask_stamp_tolerance_s >= 0):
            raise ConfigError(f"mask_stamp_tolerance_s={self.mask_stamp_tolerance_s!r}: must be >= 0")

    @property
    def sync_tolerance(self) -> float:
        return self.sync_tolerance_s if self.sync_tolerance_s is not None else 0.5 / self.control_rate_hz

    def stream_topics(self) -> dict[str, str]:
        """Non-camera stream name -> topic (the names used in the report)."""
        streams = {"action": self.action.topic}
        if self.gripper.topic:
            streams["gripper"] = self.gripper.topic
        for i, p in enumerate(self.proprio):
            streams[f"proprio[{i}]"] = p.topic
        return streams
