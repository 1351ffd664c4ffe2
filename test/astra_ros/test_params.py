"""Parameters: config/policy.yaml documents exactly the declared parameters; validation messages;
the launch file declares its arguments and starts the installed executable (static checks that
run without the launch packages; the launch_testing test runs it for real on a ROS 2 install)."""

import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

from astra_ros.params import ARRAY_TYPES, PARAMETERS, PolicyNodeParams, resolve_torch_threads

REPO_ROOT = Path(__file__).resolve().parents[2]


def valid(**changes) -> PolicyNodeParams:
    """Valid parameters (the table's defaults plus cameras) with `changes`, built field by field."""
    base = {name: (() if default in ARRAY_TYPES else default)
            for name, (default, _) in PARAMETERS.items()}
    base.update(checkpoint="/ckpt", camera_names=("front", "wrist"), camera_topics=("/a", "/b"))
    base.update(changes)
    return PolicyNodeParams(**base)


def test_shipped_yaml_documents_every_parameter_and_nothing_else():
    text = (REPO_ROOT / "config" / "policy.yaml").read_text()
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS) == {f.name for f in dataclasses.fields(PolicyNodeParams)}
    lines = text.splitlines()
    for name in params:  # each key is preceded by a comment line
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[index - 1].strip().startswith("#"), f"'{name}' in config/policy.yaml is undocumented"
    assert params["dry_run"] is True and PARAMETERS["dry_run"][0] is True


def test_validation_lists_every_problem():
    with pytest.raises(ValueError) as info:
        valid(checkpoint="", camera_topics=("/a",), transport="h264", control_rate_hz=0.0, device="tpu",
              max_step_change=(0.1, -1.0), image_size=(64,))
    text = str(info.value)
    for fragment in ("'checkpoint' is empty", "'camera_topics' has 1 entries for 2", "'transport' is 'h264'",
                     "'control_rate_hz' must be", "'device' is 'tpu'", "'max_step_change' entries", "'image_size'"):
        assert fragment in text
    assert valid(max_step_change=(0.0, 0.5)).step_limits == (float("inf"), 0.5)
    assert valid(image_size=(48, 64)).image_hw == (48, 64)
    with pytest.raises(ValueError, match="'realtime_priority' must be"):
        valid(realtime_priority=100)
    with pytest.raises(ValueError, match="every frame would be refused"):
        valid(image_size=(100, 100), max_image_pixels=9999)


def test_from_values_fills_defaults_and_rejects_unknown_names():
    params = PolicyNodeParams.from_values({"checkpoint": "/c", "camera_names": ["a"], "camera_topics": ["/a"]})
    assert params.max_step_change == () and params.dry_run is True and params.control_rate_hz == 10.0
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['dryrun'\]"):
        PolicyNodeParams.from_values({"checkpoint": "/c", "dryrun": False})


def test_torch_threads_default_to_one_unless_chosen():
    assert resolve_torch_threads(0, {}) == 1
    assert resolve_torch_threads(0, {"OMP_NUM_THREADS": "3"}) == 3
    assert resolve_torch_threads(0, {"OMP_NUM_THREADS": "junk"}) == 1
    assert resolve_torch_threads(2, {"OMP_NUM_THREADS": "3"}) == 2
    assert PARAMETERS["cpu_threads"][0] == 0


def test_launch_file_declares_its_arguments_and_runs_the_installed_executable():
    tree = ast.parse((REPO_ROOT / "launch" / "policy.launch.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    declared = {c.args[0].value for c in calls if c.func.id == "DeclareLaunchArgument"}
    assert {"checkpoint", "params_file", "namespace", "use_sim_time"} <= declared
    node = next(c for c in calls if c.func.id == "LifecycleNode")
    keywords = {k.arg: k.value for k in node.keywords}
    assert keywords["package"].value == "astra_ros" and keywords["executable"].value == "policy_node"
    assert (REPO_ROOT / "scripts" / "policy_node").is_file()  # installed to lib/astra_ros by CMake
