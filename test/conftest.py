"""Top-level pytest configuration for Astra for ROS 2.

Sets the process environment BEFORE any test module imports rclpy or transformers:
  * DDS stays on this machine (loopback UDP + shared memory, config/fastdds_loopback.xml);
  * no Hugging Face hub lookups (none is reachable; a lookup hangs ~30 s before failing).
Provides the ``ros_domain_id`` fixture: a distinct ROS_DOMAIN_ID per test, exported to the
test's environment so that subprocesses it starts share it.

Puts the folders that hold shared test helpers (plain modules with unique names such as
node_harness.py and dataset_factory.py) on sys.path. Tests import them by name, never from
conftest and never by relative import: launch_testing's pytest plugin (loaded automatically by
`colcon test` on a ROS 2 install) imports each test module outside any package, where
`from .conftest import ...` fails.
"""
import itertools
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FASTDDS_PROFILE = REPO_ROOT / "config" / "fastdds_loopback.xml"
HELPER_DIRS = (REPO_ROOT / "test" / "astra_ros", REPO_ROOT / "test" / "astra_core" / "data")

for _helper_dir in HELPER_DIRS:
    if str(_helper_dir) not in sys.path:
        sys.path.append(str(_helper_dir))  # appended: never shadows an installed package

# Forced, not defaulted: leaking DDS discovery onto the network is never wanted in tests.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ["HF_HUB_OFFLINE"] = "1"
# MuJoCo picks its GL backend when it is first imported, possibly by another simulator's test
# module (ManiSkill imports it): headless EGL, chosen before any test module loads.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Domain ids 1..101 (0 is everyone's default). Start at an offset derived from this
# process id so that concurrent pytest processes (xdist workers, parallel CI jobs on one
# machine) are unlikely to pick the same ids, then walk through them.
_DOMAIN_SPAN = 101
_domain_counter = itertools.count((os.getpid() * 37) % _DOMAIN_SPAN)


def next_ros_domain_id() -> int:
    return 1 + next(_domain_counter) % _DOMAIN_SPAN


@pytest.fixture
def ros_domain_id(monkeypatch) -> int:
    """A ROS_DOMAIN_ID of this test's own, set in os.environ (so subprocesses inherit it)
    for the duration of the test. Pass it also to ``rclpy.init(domain_id=...)`` when
    initialising rclpy in-process."""
    domain_id = next_ros_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    return domain_id


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
