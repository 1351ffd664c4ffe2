"""A parameters file that matches a checkpoint. Pure Python (yaml + json): no ROS, no torch.

    from astra_ros.checkpoint_params import params_for_checkpoint, write_params_file
    params = params_for_checkpoint("runs/demo/train/checkpoints/best", camera_topics=[...], dry_run=False)
    write_params_file("runs/demo/policy_params.yaml", params)
    # python -m astra_ros.policy_node --ros-args --params-file runs/demo/policy_params.yaml

The cameras (names and order) come from the checkpoint's config.yaml and the workspace limits of
absolute action spaces from its stats.json (the training data range), so the file is right for
that checkpoint by construction; overrides are checked against the same rules the node applies.
The node reads the same information when `camera_names` / limits are left unset
(`read_checkpoint_info`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from astra_ros.params import PolicyNodeParams, coerce_value, resolve_cameras

CONFIG_FILE, STATS_FILE = "config.yaml", "stats.json"  # names fixed by astra_core.checkpoint


@dataclass(frozen=True)
class CheckpointInfo:
    """What the node's parameters must agree with, read from the checkpoint's small files."""

    cameras: tuple[str, ...]
    action_kind: str  # discrete_se2 | discrete_pose6d | continuous_pose6d
    action_frame: str  # absolute | delta
    dim_names: tuple[str, ...]
    stats_min: tuple[float, ...]
    stats_max: tuple[float, ...]
    state_tokens: str = "pooled"  # pooled | patches | objects (objects: an instance mask per camera each step)
    proprio_names: tuple[str, ...] = ()  # proprioception the checkpoint takes each step, in order (empty: none)


def read_checkpoint_info(checkpoint_dir: str | os.PathLike) -> CheckpointInfo:
    """Cameras, action space and action range of a checkpoint; ValueError naming the file and the
    problem when they cannot be read (the full loader, astra_core.checkpoint, checks the rest)."""
    directory = Path(checkpoint_dir)
    config_path, stats_path = directory / CONFIG_FILE, directory / STATS_FILE
    try:
        config = yaml.safe_load(config_path.read_text())
        stats = json.loads(stats_path.read_text())
    except FileNotFoundError as err:
        raise ValueError(f"checkpoint {directory}: {Path(err.filename).name} is missing") from None
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {directory}: cannot read {type(err).__name__}: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cameras"), list) or not config["cameras"]:
        raise ValueError(f"checkpoint {directory}: {CONFIG_FILE} has no camera list")
    space = config.get("action_space") or {}
    if not isinstance(space, dict) or "kind" not in space:
        raise ValueError(f"checkpoint {directory}: {CONFIG_FILE} has no action_space.kind")
    # action statistics at the top level (older checkpoints) or under "action" (with proprioception)
    action_stats = stats.get("action", stats) if isinstance(stats, dict) else None
    try:
        names = list(action_stats["names"])
        low, high = [float(v) for v in action_stats["min"]], [float(v) for v in action_stats["max"]]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"checkpoint {directory}: {STATS_FILE} lacks the action names/min/max") from None
    if not len(names) == len(low) == len(high):
        raise ValueError(f"checkpoint {directory}: {STATS_FILE} names/min/max differ in length")
    proprio_names: tuple[str, ...] = ()
    if int(config.get("proprio_dim") or 0) > 0:
        proprio = stats.get("proprio") if isinstance(stats, dict) else None
        if not isinstance(proprio, dict) or len(proprio.get("names") or ()) != int(config["proprio_dim"]):
            raise ValueError(f"checkpoint {directory}: proprio_dim={config['proprio_dim']} but {STATS_FILE} has no "
                             "proprioception names of that length")
        proprio_names = tuple(str(n) for n in proprio["names"])
    return CheckpointInfo(tuple(str(c) for c in config["cameras"]), str(space["kind"]),
                          str(space.get("frame", "absolute")), tuple(names), tuple(low), tuple(high),
                          str(config.get("state_tokens", "pooled")), proprio_names)


def check_against_checkpoint(params: PolicyNodeParams, info: CheckpointInfo) -> None:
    """Fail loudly where set parameters contradict the checkpoint (cameras, limit lengths)."""
    if list(params.camera_names) != list(info.cameras):
        raise ValueError(
            f"camera_names {list(params.camera_names)} do not match the cameras the checkpoint "
            f"{params.checkpoint} was trained with: {list(info.cameras)} (same names, same order; "
            "leave camera_names unset to take the checkpoint's)")
    for name in ("workspace_lower", "workspace_upper", "max_step_change"):
        values = getattr(params, name)
        if values and len(values) != len(info.dim_names):
            raise ValueError(f"'{name}' has {len(values)} values, the checkpoint's action space {info.action_kind} "
                             f"has {len(info.dim_names)} dimensions: {list(info.dim_names)} (leave it unset: "
                             "the training data range for workspace limits, no limit for max_step_change)")
    check_model_inputs(params, info)


def check_model_inputs(params: PolicyNodeParams, info: CheckpointInfo) -> None:
    """Masks and proprioception: subscribed exactly when the checkpoint uses them, in a form it can take."""
    uses_masks = info.state_tokens == "objects"
    if uses_masks and not params.mask_topics:
        raise ValueError(f"the checkpoint {params.checkpoint} uses object tokens: every step needs an instance mask per "
                         f"camera; set 'mask_topics' (one sensor_msgs/Image mono16 or mono8 label topic per camera, "
                         f"in the order {list(params.camera_names)})")
    if params.mask_topics and not uses_masks:
        raise ValueError(f"'mask_topics' is set, but the checkpoint {params.checkpoint} uses {info.state_tokens!r} "
                         "state tokens, not object tokens: it takes no masks (leave mask_topics unset)")
    names = list(info.proprio_names)
    if names and not params.proprio_topic:
        raise ValueError(f"the checkpoint {params.checkpoint} takes proprioception {names} every step: set "
                         "'proprio_topic' (and 'proprio_msg_type': joint_state or pose)")
    if params.proprio_topic and not names:
        raise ValueError(f"'proprio_topic' is set, but the checkpoint {params.checkpoint} was trained without "
                         "proprioception (leave proprio_topic unset)")
    if params.proprio_topic and params.proprio_msg_type == "pose" and len(names) != 6:
        raise ValueError(f"proprio_msg_type 'pose' gives 6 values (x y z roll pitch yaw), the checkpoint's "
                         f"proprioception has {len(names)}: {names}; use proprio_msg_type 'joint_state'")
    if params.proprio_joint_names and len(params.proprio_joint_names) != len(names):
        raise ValueError(f"'proprio_joint_names' has {len(params.proprio_joint_names)} names, the checkpoint's "
                         f"proprioception has {len(names)}: {names}")


def params_for_checkpoint(checkpoint_dir: str, **overrides: Any) -> dict[str, Any]:
    """A ros__parameters dict for the policy node that matches `checkpoint_dir`.

    Contains the checkpoint (absolute path), its cameras, one topic per camera
    (camera/<name>/image_raw unless `camera_topics` is given) and, for absolute action spaces,
    the workspace limits from the training data range; every keyword overrides or adds a node
    parameter (unknown names, wrong types, a camera list or limit lengths that contradict the
    checkpoint raise ValueError). Values have the exact types rcl expects (floats for doubles).
    """
    info = read_checkpoint_info(checkpoint_dir)
    params: dict[str, Any] = {"checkpoint": str(Path(checkpoint_dir).resolve())}
    if info.action_frame == "absolute":
        # delta checkpoints' statistics describe offsets, not where the robot may go: those must be set
        params["workspace_lower"], params["workspace_upper"] = list(info.stats_min), list(info.stats_max)
    params.update({name: coerce_value(name, value) for name, value in overrides.items()})
    params = resolve_cameras(params, info.cameras)
    params = {name: coerce_value(name, value) for name, value in params.items()}
    check_against_checkpoint(PolicyNodeParams.from_values(params), info)
    return params


def write_params_file(path: str | os.PathLike, params: dict[str, Any], node_name: str = "/**") -> Path:
    """Write `params` as a ROS 2 parameters file (`{node_name: {ros__parameters: params}}`),
    atomically. The default key "/**" applies to the node under any name and namespace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ("# Policy node parameters written by astra_ros.checkpoint_params (every key: config/policy.yaml)\n"
            + yaml.safe_dump({node_name: {"ros__parameters": params}}, sort_keys=False))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
