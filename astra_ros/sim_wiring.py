"""How a policy node is wired to the simulator bridge: which of the bridge's topics feed which of
the node's inputs for a given checkpoint. Pure Python (reads the checkpoint's small files), no ROS.

Used by the ROS evaluation (astra_ros.evaluate_ros) and by launch/sim.launch.py, so both start
the same configuration: cameras from camera/<name>/image_raw, instance masks from
camera/<name>/mask for object-token checkpoints, proprioception from `proprio` (the bridge's
JointState named by the env's proprio_names) for checkpoints trained with it, and, for SE(2)
pick-and-place checkpoints (the bridge steps once per command), one step per new observation
with latency limits that fit a simulated world that waits for the policy; for 6-D pose
checkpoints (the bridge steps at a fixed rate) staleness limits that fit a simulator slower
than real time.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from astra_ros.checkpoint_params import params_for_checkpoint, read_checkpoint_info

# The simulated world waits for each command, so a slow model step is not late (seconds).
WAITING_WORLD_TIMEOUT_S = 30.0
WAITING_WORLD_CONTROL_HZ = 20.0
# Fixed-rate simulators rendered on a CPU run slower than real time (ManiSkill ~3-7 steps/s for
# 10 Hz): the node's staleness, judged on the wall clock at arrival, gets this much slack (seconds).
SLOW_WORLD_TIMEOUT_S = 2.0


def steps_per_command(checkpoint: str) -> bool:
    """True for checkpoints whose actions are whole pick-and-places (the bridge steps per command)."""
    return read_checkpoint_info(checkpoint).action_kind == "discrete_se2"


def policy_params_for_bridge(checkpoint: str, action_bounds: Optional[Sequence[Sequence[float]]] = None,
                             **overrides: Any) -> dict[str, Any]:
    """Policy node parameters for `checkpoint` driving the bridge (checked like the node checks
    them). `action_bounds` = (low, high) of the env makes them the workspace limits, which is
    how astra_sim.evaluate clips; `overrides` are further node parameters."""
    info = read_checkpoint_info(checkpoint)
    wiring: dict[str, Any] = {"camera_topics": [f"camera/{c}/image_raw" for c in info.cameras]}
    if info.state_tokens == "objects":
        wiring["mask_topics"] = [f"camera/{c}/mask" for c in info.cameras]
    if info.proprio_names:
        wiring["proprio_topic"] = "proprio"
    if info.action_kind == "discrete_se2":
        # the tick only looks for a new observation: a faster one answers it sooner, at no cost
        wiring.update(new_frames_only=True, image_timeout_s=WAITING_WORLD_TIMEOUT_S,
                      max_step_latency_s=WAITING_WORLD_TIMEOUT_S, control_rate_hz=WAITING_WORLD_CONTROL_HZ)
    else:
        wiring.update(image_timeout_s=SLOW_WORLD_TIMEOUT_S, proprio_timeout_s=SLOW_WORLD_TIMEOUT_S)
    if action_bounds is not None:
        wiring["workspace_lower"], wiring["workspace_upper"] = ([float(v) for v in b] for b in action_bounds)
    wiring.update(overrides)
    return params_for_checkpoint(checkpoint, **wiring)
