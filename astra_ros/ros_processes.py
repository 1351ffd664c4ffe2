"""Starting the project's ROS nodes as separate processes, with DDS kept on this machine.

Every process gets the same environment: its own ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=
LOCALHOST and the project's Fast DDS profile (config/fastdds_loopback.xml: UDP on 127.0.0.1
only, plus a 16 MB shared-memory segment for camera frames), no model-hub lookups, and one
OpenMP thread unless the caller says otherwise. Used by the ROS evaluation and the main job
(astra_ros.evaluate_ros, astra_ros.demo_ros); no rclpy import here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILE_NAME = "fastdds_loopback.xml"


def fastdds_profile() -> Path:
    """The project's loopback profile: the checkout's config/, else an installed share/astra_ros/config/."""
    candidates = [REPO_ROOT / "config" / PROFILE_NAME]
    candidates += [Path(prefix) / "share" / "astra_ros" / "config" / PROFILE_NAME
                   for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if prefix]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {PROFILE_NAME} found in {[str(p) for p in candidates]}")


def loopback_environment(domain_id: int, base: Mapping[str, str] = os.environ, threads: int = 1) -> dict[str, str]:
    """The environment of one ROS process of this project (see the module docstring)."""
    if not 0 <= domain_id <= 232:
        raise ValueError(f"ROS_DOMAIN_ID {domain_id}: must be in 0..232")
    env = dict(base)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               FASTDDS_DEFAULT_PROFILES_FILE=str(fastdds_profile()), RMW_IMPLEMENTATION="rmw_fastrtps_cpp",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("MUJOCO_GL", "egl")  # Meta-World renders headless
    return env


class RosProcess:
    """`python -m MODULE --ros-args ...` in its own process, output to a log file."""

    def __init__(self, module: str, ros_args: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.module = module
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args], cwd=REPO_ROOT,
                                     env=dict(env), stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGINT (the nodes print their summary and exit 0), then SIGKILL if it hangs."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def summary(self, prefix: str) -> Optional[dict]:
        """The node's strict-JSON exit summary (`prefix{...}`), or None when it printed none."""
        lines = [line for line in self.log().splitlines() if line.startswith(prefix)]
        return json.loads(lines[-1][len(prefix):]) if lines else None
