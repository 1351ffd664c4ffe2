"""Writing rosbag2 recordings (sqlite3 or MCAP) from plain values, with ``rosbags`` (no ROS).

Each method serialises one message of the types the importer reads (camera images raw or
compressed, instance-label images, PoseStamped, JointState, the project's GripperCommand and PickPlaceSE2, String,
Float64) to CDR, exactly as ``ros2 bag record`` stores them, so tests and benchmarks can make
realistic recordings; ``write_serialized`` stores bytes a subscriber already has (an rclpy
subscription with ``raw=True``), which is how a recorder node can write bags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from astra_core.data.rosbag_source import project_typestore
from astra_core.geometry import rpy_to_quaternion
from astra_core.imaging import encode_compressed, encode_labels, encode_raw

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


class BagWriter:
    """Context manager: ``with BagWriter(path, "mcap") as bag: bag.image("/cam", 0.1, img)``.

    Times are seconds after ``t0_ns`` (receive time = header stamp unless ``stamp`` is given).
    """

    def __init__(self, path: str | os.PathLike, storage: str = "sqlite3", t0_ns: int = 0, typestore=None) -> None:
        self.path = Path(path)
        self.t0_ns = int(t0_ns)
        self.typestore = typestore if typestore is not None else project_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._connections: dict[str, object] = {}

    def ns(self, t: float) -> int:
        return self.t0_ns + int(round(t * 1e9))

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def write_serialized(self, topic: str, msgtype: str, receive_ns: int, data: bytes) -> None:
        """Store an already serialised (CDR) message at ``receive_ns`` (absolute)."""
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
        self._writer.write(self._connections[topic], receive_ns, data)

    def _write(self, topic: str, msgtype: str, t: float, msg) -> None:
        self.write_serialized(topic, msgtype, self.ns(t), self.typestore.serialize_cdr(msg, msgtype))

    def _header(self, stamp: float):
        stamp_ns = self.ns(stamp)
        time = self.typestore.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return self.typestore.types["std_msgs/msg/Header"](stamp=time, frame_id="world")

    def image(self, topic: str, t: float, rgb: np.ndarray, encoding: str = "rgb8", stamp: float | None = None) -> None:
        """Raw (rgb8, bgr8, ...) or compressed ("jpeg", "png") image, header stamp = t by default."""
        header = self._header(t if stamp is None else stamp)
        if encoding in ("jpeg", "png"):
            cls = self.typestore.types["sensor_msgs/msg/CompressedImage"]
            data = encode_compressed(rgb, encoding, jpeg_quality=95)
            self._write(topic, cls.__msgtype__, t, cls(header=header, format=encoding, data=data))
            return
        pixels, step = encode_raw(rgb, encoding)
        self._raw_image(topic, t, header, pixels, encoding, step)

    def labels(self, topic: str, t: float, labels: np.ndarray, stamp: float | None = None) -> None:
        """Instance labels as a segmenter publishes them: sensor_msgs/Image mono16 (mono8 for uint8
        labels), header stamp = t by default (give the stamp of the frame they belong to)."""
        pixels, encoding, step = encode_labels(labels)
        self._raw_image(topic, t, self._header(t if stamp is None else stamp), pixels, encoding, step)

    def _raw_image(self, topic: str, t: float, header, pixels: np.ndarray, encoding: str, step: int) -> None:
        cls = self.typestore.types["sensor_msgs/msg/Image"]
        msg = cls(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, is_bigendian=0,
                  step=step, data=np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))
        self._write(topic, cls.__msgtype__, t, msg)

    def pose(self, topic: str, t: float, rpy_pose: Sequence[float], quaternion: Sequence[float] | None = None) -> None:
        types = self.typestore.types
        x, y, z, roll, pitch, yaw = (float(v) for v in rpy_pose)
        qx, qy, qz, qw = quaternion if quaternion is not None else rpy_to_quaternion(roll, pitch, yaw)
        pose = types["geometry_msgs/msg/Pose"](position=types["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                              orientation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))
        cls = types["geometry_msgs/msg/PoseStamped"]
        self._write(topic, cls.__msgtype__, t, cls(header=self._header(t), pose=pose))

    def gripper(self, topic: str, t: float, position: float) -> None:
        cls = self.typestore.types["astra_ros/msg/GripperCommand"]
        self._write(topic, cls.__msgtype__, t, cls(header=self._header(t), position=float(position)))

    def float64(self, topic: str, t: float, value: float) -> None:
        cls = self.typestore.types["std_msgs/msg/Float64"]
        self._write(topic, cls.__msgtype__, t, cls(data=float(value)))

    def joint_state(self, topic: str, t: float, names: Sequence[str], positions: Sequence[float]) -> None:
        cls = self.typestore.types["sensor_msgs/msg/JointState"]
        msg = cls(header=self._header(t), name=list(names), position=np.asarray(positions, np.float64),
                  velocity=np.zeros(0), effort=np.zeros(0))
        self._write(topic, cls.__msgtype__, t, msg)

    def pick_place(self, topic: str, t: float, values: Sequence[float]) -> None:
        types = self.typestore.types
        se2_pose = types["astra_ros/msg/SE2Pose"]
        v = [float(x) for x in values]
        msg = types["astra_ros/msg/PickPlaceSE2"](header=self._header(t), pick=se2_pose(x=v[0], y=v[1], theta=v[2]),
                                                 place=se2_pose(x=v[3], y=v[4], theta=v[5]))
        self._write(topic, msg.__msgtype__, t, msg)

    def string(self, topic: str, t: float, text: str) -> None:
        cls = self.typestore.types["std_msgs/msg/String"]
        self._write(topic, cls.__msgtype__, t, cls(data=text))
