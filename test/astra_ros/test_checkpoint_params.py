"""A parameters file that matches a checkpoint (issue 12, defect 7), without ROS or torch:
params_for_checkpoint / write_params_file, and `[]` overrides that rcl drops (ros_args)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from astra_ros.checkpoint_params import params_for_checkpoint, read_checkpoint_info, write_params_file
from astra_ros.params import PolicyNodeParams
from astra_ros.ros_args import emptied_array_parameters

SE2_NAMES = ["pick_x", "pick_y", "pick_theta", "place_x", "place_y", "place_theta"]


def fake_checkpoint(directory: Path, cameras=("top", "front"), kind="discrete_se2", frame="absolute") -> Path:
    """The two small files of a checkpoint that describe its interface (the weights are not read)."""
    directory.mkdir(parents=True)
    (directory / "config.yaml").write_text(yaml.safe_dump({"cameras": list(cameras), "n_embd": 64,
                                                           "action_space": {"kind": kind, "frame": frame}}))
    (directory / "stats.json").write_text(json.dumps({"names": SE2_NAMES, "min": [-0.4, -0.3, -3, 0, -0.3, -3],
                                                      "max": [0.4, 0.3, 3, 1, 0.3, 3], "mean": [0] * 6,
                                                      "std": [1] * 6, "count": 5}))
    return directory


def test_params_follow_the_checkpoint(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    params = params_for_checkpoint(str(ckpt), control_rate_hz=5, dry_run=False)
    assert params["checkpoint"] == str(ckpt.resolve())
    assert params["camera_names"] == ["top", "front"]
    assert params["camera_topics"] == ["camera/top/image_raw", "camera/front/image_raw"]
    assert params["workspace_lower"] == [-0.4, -0.3, -3.0, 0.0, -0.3, -3.0]
    assert all(isinstance(v, float) for v in params["workspace_upper"])  # rcl wants doubles, not ints
    assert params["control_rate_hz"] == 5.0 and isinstance(params["control_rate_hz"], float)
    assert "max_step_change" not in params  # unset: no step limit unless the caller sets one
    PolicyNodeParams.from_values(params)  # what the node will validate
    compressed = params_for_checkpoint(str(ckpt), transport="compressed")
    assert compressed["camera_topics"][0] == "camera/top/image_raw/compressed"


def test_written_file_is_a_ros_parameters_file(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    path = write_params_file(tmp_path / "out" / "policy.yaml", params_for_checkpoint(str(ckpt)))
    document = yaml.safe_load(path.read_text())
    assert list(document) == ["/**"] and document["/**"]["ros__parameters"]["camera_names"] == ["top", "front"]
    assert not list(path.parent.glob(".*")), "temporary file left behind"


@pytest.mark.parametrize("overrides, message", [
    ({"camera_names": ["front", "top"]}, "do not match the cameras the checkpoint"),
    ({"max_step_change": [0.1] * 7}, "'max_step_change' has 7 values, the checkpoint's action space"),
    ({"workspace_lower": [0.0] * 7, "workspace_upper": [1.0] * 7}, "has 6 dimensions"),
    ({"dryrun": False}, "unknown parameter"),
    ({"dry_run": "no"}, "must be true or false"),
    ({"control_rate_hz": -1.0}, "'control_rate_hz' must be"),
])
def test_contradictions_fail_loudly(tmp_path, overrides, message):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=message):
        params_for_checkpoint(str(ckpt), **overrides)


def test_statistics_with_proprioception_are_read(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    action = json.loads((ckpt / "stats.json").read_text())
    (ckpt / "stats.json").write_text(json.dumps({"action": action, "proprio": None}))
    assert read_checkpoint_info(ckpt).dim_names == tuple(SE2_NAMES)


def test_delta_checkpoints_get_no_workspace_from_their_offset_statistics(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ckpt", kind="continuous_pose6d", frame="delta")
    assert "workspace_lower" not in params_for_checkpoint(str(ckpt))
    assert read_checkpoint_info(ckpt).action_frame == "delta"


def test_unreadable_checkpoints_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="config.yaml is missing"):
        read_checkpoint_info(tmp_path)
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    (ckpt / "stats.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        read_checkpoint_info(ckpt)


def test_importable_without_ros_or_torch():
    code = ("import sys, astra_ros.checkpoint_params; "
            "bad = [m for m in ('rclpy', 'torch', 'sensor_msgs') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


ARRAYS = ["max_step_change", "camera_names", "workspace_lower"]


def test_empty_list_on_the_command_line_is_seen(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"max_step_change": [0.1, 0.2],
                                                                 "camera_names": ["a"]}}}))
    argv = ["prog", "--ros-args", "--params-file", str(first), "-p", "max_step_change:=[]"]
    assert emptied_array_parameters(argv, "/astra_policy", ARRAYS) == {"max_step_change"}
    # a -p rule wins over any file, whatever the order on the command line
    argv = ["prog", "--ros-args", "-p", "max_step_change:=[]", "--params-file", str(first)]
    assert emptied_array_parameters(argv, "/astra_policy", ARRAYS) == {"max_step_change"}
    # ...and a later, non-empty -p rule wins over an earlier empty one
    argv += ["-p", "max_step_change:=[0.3]"]
    assert emptied_array_parameters(argv, "/astra_policy", ARRAYS) == set()
    # node-specific rules only apply to that node
    argv = ["prog", "--ros-args", "-p", "other_node:max_step_change:=[]", "-p", "astra_policy:camera_names:=[]"]
    assert emptied_array_parameters(argv, "/astra_policy", ARRAYS) == {"camera_names"}


def test_empty_list_in_a_later_parameters_file_is_seen(tmp_path):
    first, second, elsewhere = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    first.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"workspace_lower": [0.0]}}}))
    second.write_text(yaml.safe_dump({"/robot1/astra_policy": {"ros__parameters": {"workspace_lower": []}}}))
    elsewhere.write_text(yaml.safe_dump({"/robot2/astra_policy": {"ros__parameters": {"workspace_lower": []}}}))
    argv = ["prog", "--ros-args", "--params-file", str(first), "--params-file", str(second)]
    assert emptied_array_parameters(argv, "/robot1/astra_policy", ARRAYS) == {"workspace_lower"}
    argv = ["prog", "--ros-args", "--params-file", str(first), "--params-file", str(elsewhere)]
    assert emptied_array_parameters(argv, "/robot1/astra_policy", ARRAYS) == set()
    assert emptied_array_parameters(["prog", "-p", "workspace_lower:=[]"], "/astra_policy", ARRAYS) == set()
