"""The recorder as a real process over loopback DDS: episodes into the dataset and into bags,
a camera going stale mid-episode (reported on the status topic and in the episode, never padded),
start / stop / discard and their refusals, instance masks and SE(2) commands, bad parameters.

Waits are event-driven (statuses, service answers), with generous timeouts for a loaded machine;
the checks rely on the recorder's own clock (its ticks and stamps), never on the test's timing."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from recorder_harness import (NAMESPACE, REPO_ROOT, DemoPeer, command_values, frame_pixels, joint_values, mask_labels,
                              se2_values, start_recorder)  # noqa: F401 (start_recorder: a fixture)

import torch

from astra_core.data import format as fmt
from astra_core.data.dataset import TrajectoryWindowDataset
from astra_core.data.import_mapping import load_mapping
from astra_core.data.import_rosbag import import_bags
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_core.data.validate import validate_dataset
from astra_ros.srv import StartRecording, StopRecording
from std_srvs.srv import Trigger

pytestmark = pytest.mark.timeout(240)

INSTRUCTION = "put the red cube in the bowl"


def base_params(tmp_path, **overrides) -> dict:
    params = dict(output="dataset", dataset_path=str(tmp_path / "dataset"), camera_names=["front", "wrist"],
                  camera_topics=["/camera/front/image_raw", "/camera/wrist/image_raw"], action_topic="/target_pose",
                  gripper_topic="/gripper_command", instruction_topic="/instruction", status_rate_hz=5.0)
    params.update(overrides)
    return params


@pytest.fixture
def peer(ros_domain_id):
    peer = DemoPeer(ros_domain_id)
    yield peer
    peer.close()


def ready(peer: DemoPeer, timeout_s: float = 60.0) -> None:
    """Wait until the recorder has the instruction and every stream is fresh (its own status says so)."""
    peer.wait_for_recorder(lambda s: s.instruction == INSTRUCTION and not s.stale, timeout_s,
                         "a recorder status with the instruction and no stale stream")


def record(peer: DemoPeer, seconds: float, success: bool = True, during=None):
    started = peer.call_recorder(StartRecording, "start_episode", StartRecording.Request(note="test"))
    assert started.ok, started.message
    if during is not None:
        during(started)
    else:
        time.sleep(seconds)
    stopped = peer.call_recorder(StopRecording, "stop_episode", StopRecording.Request(success=success), timeout_s=90)
    return started, stopped


def episode(root, index=0):
    info = fmt.load_dataset_info(root)
    manifest = fmt.load_manifest(root, info, index)
    steps = fmt.load_steps(root, info, index, manifest)
    return info, manifest, steps


def test_records_an_episode_with_proprio_into_the_dataset(tmp_path, peer, start_recorder):
    recorder = start_recorder(base_params(tmp_path, proprio_topic="/joint_states"))
    peer.add_camera("front", 15)
    peer.add_camera("wrist", 15, transport="raw")
    peer.add_pose_commands(20)
    peer.add_joint_states(25)
    peer.start()
    peer.instruct(INSTRUCTION)
    ready(peer)
    started, stopped = record(peer, 2.5, success=True)
    assert stopped.ok, stopped.message
    # a publisher stalled by a loaded machine for longer than tolerance_s is a gap, reported (never padded)
    assert stopped.dataset_episode == 0 and stopped.steps >= 15 and stopped.stale == (stopped.gap_steps > 0), \
        stopped.message
    assert recorder.stop() == 0, recorder.log()[-3000:]
    summary = recorder.summary()
    assert summary["saved"] == 1 and summary["problems"] == {}, summary

    report = validate_dataset(tmp_path / "dataset")
    assert report["ok"], report
    info, manifest, steps = episode(tmp_path / "dataset")
    assert info.cameras == ["front", "wrist"] and tuple(info.image_size) == (32, 40)
    assert info.proprio_names == ["shoulder", "elbow", "wrist", "finger"]
    assert manifest["instruction"] == INSTRUCTION and manifest["success"] is True
    assert manifest["metadata"]["stale"] is False and manifest["metadata"]["note"] == "test"
    start_s = started.stamp.sec + started.stamp.nanosec * 1e-9
    assert steps.timestamps[0] == pytest.approx(start_s, abs=1e-6)  # the first tick is the start
    ticks = np.diff(steps.timestamps) / 0.1  # 10 Hz ticks; only gaps (if any) skip ticks
    assert np.allclose(ticks, np.round(ticks), atol=1e-4) and int(np.round(ticks).sum()) == len(ticks) + stopped.gap_steps
    # every action is one of the published commands (PoseStamped -> ZYX rpy + gripper), as published
    commands = np.stack([command_values(k) for k in range(2000)])
    for action in steps.actions:
        k = int(np.argmin(np.abs(commands - action).sum(1)))
        assert np.allclose(action, commands[k], atol=1e-9), (action, commands[k])
    joints = np.stack([joint_values(k) for k in range(3000)])
    assert all(np.abs(joints - p).sum(1).min() == 0 for p in steps.proprio)
    # every frame is one of the published frames, pixel for pixel (raw rgb8, stored losslessly)
    item = TrajectoryWindowDataset(tmp_path / "dataset", window=len(steps.actions))[0]
    images = item["images"].numpy()
    for cam_index, cam in enumerate(info.cameras):
        published = {frame_pixels(cam, k, (32, 40)).tobytes() for k in range(600)}
        assert all(images[t, cam_index].tobytes() in published for t in range(len(images)))


def test_a_camera_going_stale_is_reported_and_the_episode_marked(tmp_path, peer, start_recorder):
    params = base_params(tmp_path, output="both", bag_path=str(tmp_path / "bags"), bag_storage="sqlite3",
                         tolerance_s=0.4)
    recorder = start_recorder(params)
    peer.add_camera("front", 15)
    peer.add_camera("wrist", 15)
    peer.add_pose_commands(20)
    peer.start()
    peer.instruct(INSTRUCTION)
    ready(peer)

    def stall_wrist(started) -> None:
        first = peer.wait_for_recorder(lambda s: s.state == "recording" and s.steps >= 5, 30, "5 recorded steps")
        peer.pause("wrist")
        seen = time.monotonic()
        stale = peer.wait_for_recorder(lambda s: s.stale and "wrist" in s.stale_reason, 30,
                                     "a status naming the stale wrist camera", after=seen)
        assert stale.stale_reason.startswith("stale camera(s): wrist: last frame") and "wrist" in stale.stale_streams
        time.sleep(0.5)
        peer.pause("wrist", False)
        peer.wait_for_recorder(lambda s: not s.stale and s.steps > first.steps + 5, 30, "fresh streams and new steps",
                             after=time.monotonic())

    _, stopped = record(peer, 0, during=stall_wrist)
    assert stopped.ok, stopped.message
    assert stopped.stale and "wrist" in stopped.stale_streams and stopped.gap_steps >= 3, stopped.message
    assert "wrist" in stopped.message and stopped.bag_path
    assert recorder.stop() == 0
    info, manifest, steps = episode(tmp_path / "dataset")
    meta = manifest["metadata"]
    assert meta["stale"] is True and "wrist" in meta["stale_streams"] and meta["gap_steps"] == stopped.gap_steps
    wrist = [g for g in meta["gaps"] if g["stream"] == "wrist"]
    assert max(g["ticks"] for g in wrist) >= 3
    # never padded: no step inside a gap; every tick is a step, a gap, a bad step or trimmed
    for gap in meta["gaps"]:
        assert not ((steps.timestamps >= gap["start_s"] - 1e-6) & (steps.timestamps <= gap["end_s"] + 1e-6)).any()
    assert len(steps.timestamps) + meta["gap_steps"] + meta["bad_steps"] + sum(meta["trimmed"]) == meta["ticks"]
    assert validate_dataset(tmp_path / "dataset")["ok"]


def test_start_stop_discard_and_refusals(tmp_path, peer, start_recorder):
    recorder = start_recorder(base_params(tmp_path))
    peer.add_camera("front", 15)
    peer.add_camera("wrist", 15)
    peer.add_pose_commands(20)
    peer.pause("wrist")  # a camera that is not publishing yet
    peer.start()
    peer.wait_for_recorder(lambda s: s.state == "idle", 60, "the recorder's first status")
    refused = peer.call_recorder(StartRecording, "start_episode", StartRecording.Request())
    assert not refused.ok and "no instruction" in refused.message
    peer.instruct(INSTRUCTION)
    peer.wait_for_recorder(lambda s: s.instruction == INSTRUCTION, 30, "the instruction in the status")
    refused = peer.call_recorder(StartRecording, "start_episode", StartRecording.Request())
    assert not refused.ok and "wrist: never received" in refused.message, refused.message
    assert not peer.call_recorder(StopRecording, "stop_episode", StopRecording.Request(success=True)).ok
    assert not peer.call_recorder(Trigger, "discard_episode", Trigger.Request()).success

    peer.pause("wrist", False)
    ready(peer)
    started = peer.call_recorder(StartRecording, "start_episode", StartRecording.Request())
    assert started.ok and started.episode == 1
    again = peer.call_recorder(StartRecording, "start_episode", StartRecording.Request())
    assert not again.ok and "still being recorded" in again.message
    peer.wait_for_recorder(lambda s: s.state == "recording" and s.steps >= 3, 30, "steps of episode 1")
    discarded = peer.call_recorder(Trigger, "discard_episode", Trigger.Request())
    assert discarded.success and "discarded" in discarded.message
    _, stopped = record(peer, 1.5, success=False)
    assert stopped.ok and stopped.dataset_episode == 1, stopped.message  # the writer never reuses the discarded id
    peer.wait_for_recorder(lambda s: s.episodes_saved == 1 and s.episodes_discarded == 1 and s.state == "idle", 30,
                         "the counters of one saved and one discarded episode")
    # a shutdown during an episode saves it, with success false and a warning
    assert peer.call_recorder(StartRecording, "start_episode", StartRecording.Request()).ok
    peer.wait_for_recorder(lambda s: s.state == "recording" and s.episode == 3 and s.steps >= 3, 30, "steps of episode 3")
    assert recorder.stop() == 0
    assert recorder.summary()["saved"] == 2
    info, manifest, _ = episode(tmp_path / "dataset", 1)
    assert [e.id for e in info.episodes] == [1, 2] and manifest["success"] is False
    assert manifest["metadata"]["recorder_episode"] == 2
    _, interrupted, _ = episode(tmp_path / "dataset", 2)
    assert interrupted["success"] is False and "shut down" in interrupted["metadata"]["warnings"][0]
    assert not list((tmp_path / "dataset" / ".staging").glob("*"))
    assert validate_dataset(tmp_path / "dataset")["ok"]


def test_masks_and_se2_commands_into_dataset_and_bag(tmp_path, peer, start_recorder):
    params = base_params(tmp_path, output="both", bag_path=str(tmp_path / "bags"), action_space="discrete_se2",
                         num_bins=64, action_topic="/pick_place", ticks="action", transport="compressed",
                         camera_topics=["/camera/front/image_raw/compressed", "/camera/wrist/image_raw/compressed"],
                         mask_topics=["/camera/front/mask", "/camera/wrist/mask"])
    recorder = start_recorder(params)
    peer.add_camera("front", 10, transport="compressed", masks=True)
    peer.add_camera("wrist", 10, transport="compressed", masks=True)
    peer.add_se2_commands(4)  # one step per command (ticks: action)
    peer.start()
    peer.instruct(INSTRUCTION)
    ready(peer)
    _, stopped = record(peer, 2.6)
    assert stopped.ok and stopped.steps >= 6, stopped.message
    assert recorder.stop() == 0
    info, manifest, steps = episode(tmp_path / "dataset")
    assert info.has_masks and info.action_space.kind == "discrete_se2"
    published = np.stack([se2_values(k) for k in range(500)])
    ks = [int(np.argmin(np.abs(published - a).sum(1))) for a in steps.actions]
    assert np.array_equal(steps.actions, published[ks]) and ks == sorted(set(ks))  # one step per command
    # each frame is stored with the mask of its own stamp: label k + 1 of frame k
    item = TrajectoryWindowDataset(tmp_path / "dataset", window=len(ks), max_objects=4)[0]
    dataset_masks = _masks(tmp_path / "dataset", len(ks))
    for t in range(len(ks)):
        for m, cam in enumerate(info.cameras):
            labels = dataset_masks[cam][t]
            k = int(labels.max()) - 1
            assert np.array_equal(labels, mask_labels(k, (32, 40)))
            assert item["object_valid"][t, m].sum() == 1
    # the bag (one step per command: ticks action) imports into the same steps, masks paired alike
    assert stopped.bag_path.endswith("episode_000000")
    mapping = load_mapping(RosbagMapping, tmp_path / "bags" / "import_mapping.yaml")
    assert mapping.mask_topics == {"front": "/camera/front/mask", "wrist": "/camera/wrist/mask"}
    report = import_bags([stopped.bag_path], mapping, tmp_path / "imported", progress=False)
    assert report.ok, report.summary()
    _, _, imported = episode(tmp_path / "imported")
    assert np.array_equal(imported.actions, steps.actions) and np.array_equal(imported.timestamps, steps.timestamps)
    imported_item = TrajectoryWindowDataset(tmp_path / "imported", window=len(ks), max_objects=4)[0]
    assert torch.equal(imported_item["images"], item["images"])  # JPEG decoded alike, stored losslessly
    imported_masks = _masks(tmp_path / "imported", len(ks))
    assert all(np.array_equal(imported_masks[c][t], dataset_masks[c][t]) for c in info.cameras for t in range(len(ks)))
    assert torch.equal(imported_item["object_boxes"], item["object_boxes"])


def _masks(root, steps):
    info, manifest, _ = episode(root)
    out = {}
    for cam in info.cameras:
        chunk = fmt.load_chunk(root, 0, manifest, cam, 0, fmt.MASKS_DIR)
        out[cam] = [chunk.decode_mask(t, tuple(info.image_size)) for t in range(steps)]
    return out


def test_bad_parameters_exit_1_with_the_reason(tmp_path, ros_domain_id):
    params_file = tmp_path / "p.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    camera_names: [front]\n    output: bags\n    dataset_pth: x\n")
    proc = subprocess.run([sys.executable, "-m", "astra_ros.recorder_node", "--ros-args", "--params-file",
                           str(params_file), "-r", f"__ns:={NAMESPACE}"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert "unknown parameter(s) ['dataset_pth']" in proc.stderr and "valid parameters" in proc.stderr
