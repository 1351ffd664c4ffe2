"""rosbag2 import: bags written here with rosbags (sqlite3 and MCAP), imported, checked value by value.

Covers raw (rgb8, bgr8) and compressed (JPEG, PNG) images, instance masks paired by stamp, PoseStamped / PickPlaceSE2 /
JointState actions, GripperCommand, JointState proprio, String instructions and episode markers;
gaps, bad quaternions, a truncated bag, a missing topic and a wrong type; the validator accepts
every imported dataset and one trains for a few steps.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from astra_core.configuration import ConfigError, from_dict
from astra_core.data import TrajectoryWindowDataset, load_dataset_info
from astra_core.data import format as fmt
from astra_core.data.import_mapping import load_mapping
from astra_core.data.import_rosbag import import_bags, main as import_main
from astra_core.data import ros_messages as rm
from astra_core.data.import_report import EpisodeReport
from astra_core.data.resample import MISSING, EpisodeTicks, NewestSampleResolver, TickClassifier, sample_stream, tick_grid
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_core.data.validate import validate_dataset
from astra_core.geometry import QuaternionError, normalize_quaternion, quaternion_to_rpy, rpy_to_quaternion
from astra_core.imaging import decode_compressed, encode_compressed, resize_rgb
from astra_core.objects import boxes_from_mask

import bag_factory as bf

REPO = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def mapping(**changes) -> RosbagMapping:
    raw = json.loads(json.dumps(bf.MAPPING))
    for key, value in changes.items():
        raw[key] = value
    return from_dict(RosbagMapping, raw)


def expected_choice(sample_s: list[float], tick_ns: int) -> int:
    """Index of the newest sample at a tick (the rule, recomputed on the bag's own nanoseconds)."""
    times = np.array([bf.ns(t) for t in sample_s])
    return int(np.searchsorted(times, tick_ns, side="right")) - 1


def episode_arrays(root: Path, episode: int):
    ds = TrajectoryWindowDataset(root, window=10_000, episodes=[episode])
    item = ds[0]
    n = int(item["step_mask"].sum())
    return {k: (v[:n].numpy() if hasattr(v, "numpy") else v) for k, v in item.items() if k != "instruction"} | {
        "instruction": item["instruction"]}


# ---------------------------------------------------------------------------------------------
# the pieces: pose math and the resampling rule


def test_pose_math_is_zyx_and_checks_quaternions():
    q = rpy_to_quaternion(0.0, 0.0, math.pi / 2)
    assert np.allclose(q, (0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)))
    rng = np.random.default_rng(0)
    for roll, pitch, yaw in rng.uniform([-3, -1.5, -3], [3, 1.5, 3], size=(50, 3)):
        x, y, z, w = rpy_to_quaternion(roll, pitch, yaw)
        assert np.allclose(quaternion_to_rpy(x, y, z, w), (roll, pitch, yaw))
        # ZYX: the quaternion's rotation matrix is Rz(yaw) @ Ry(pitch) @ Rx(roll)
        rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                             [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                             [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        c, s_ = np.cos, np.sin
        rz = np.array([[c(yaw), -s_(yaw), 0], [s_(yaw), c(yaw), 0], [0, 0, 1]])
        ry = np.array([[c(pitch), 0, s_(pitch)], [0, 1, 0], [-s_(pitch), 0, c(pitch)]])
        rx = np.array([[1, 0, 0], [0, c(roll), -s_(roll)], [0, s_(roll), c(roll)]])
        assert np.allclose(rotation, rz @ ry @ rx)
    assert np.allclose(normalize_quaternion(0, 0, 0, 1.005, tolerance=0.01), (0, 0, 0, 1))
    with pytest.raises(QuaternionError) as err:
        normalize_quaternion(0, 0, 0, 0, tolerance=0.01)
    assert err.value.kind == "norm"
    with pytest.raises(QuaternionError) as err:
        normalize_quaternion(0, float("nan"), 0, 1, tolerance=0.01)
    assert err.value.kind == "nonfinite"


def test_streaming_and_array_resampling_agree():
    rng = np.random.default_rng(1)
    times = np.sort(rng.integers(0, 10_000, 80))
    valid = rng.random(80) > 0.1
    ticks = tick_grid(500, 9_500, 1e9 / 250)  # a tick every 250 ns
    index, status = sample_stream(times, valid, ticks, tolerance_ns=200)
    resolver = NewestSampleResolver(ticks, tolerance_ns=200)
    streamed = {}
    for i, t in enumerate(times):
        streamed.update(resolver.push(int(t), i))
    streamed.update(resolver.finish())
    assert len(streamed) == len(ticks)
    for k in range(len(ticks)):
        assert (streamed[k] is None) == (status[k] == MISSING)
        if streamed[k] is not None:
            assert times[streamed[k]] == times[index[k]]  # equal times: same sample time chosen
            assert ticks[k] - times[index[k]] <= 200


def test_tick_classifier_trims_ends_and_reports_interior_gaps():
    c = TickClassifier()
    pattern = ["m", "m", "s", "s", "m", "m", "s", "b", "s", "m"]  # missing, step, bad
    verdicts = [c.on_tick(k, p == "m", p == "b") for k, p in enumerate(pattern)]
    assert [v for v, _ in verdicts] == ["trimmed", "trimmed", "step", "step", "pending", "pending", "step", "bad", "step", "pending"]
    assert verdicts[6][1] == [4, 5]
    assert c.finish() == 1 and (c.trimmed_start, c.gap_ticks, c.bad_ticks, c.steps) == (2, 2, 1, 4)


def test_episode_ticks_decode_only_possible_steps_and_report_them():
    """The one per-tick rule of the importer and the recorder (EpisodeTicks)."""
    report = EpisodeReport("test")
    ticks = EpisodeTicks(report, 0.1, "drop_step")
    decoded: list[int] = []

    def decode(k):
        def camera(name):
            decoded.append(k)
            if k == 5:
                raise rm.BadSample("decode", "corrupt JPEG")
            return np.full((2, 2, 3), k, np.uint8), (np.ones((2, 2), np.uint16) if name == "front" else None)
        return camera

    ns = lambda k: k * 100_000_000  # noqa: E731
    pattern = {0: (["front"], []), 3: (["action"], []), 4: ([], [("action", "norm", "norm 2")])}  # missing, bad
    steps = [ticks.judge(ns(k), *pattern.get(k, ([], [])), ["front", "wrist"], decode(k)) for k in range(8)]
    assert [s is not None for s in steps] == [False, True, True, False, False, False, True, True]
    assert sorted(set(decoded)) == [1, 2, 5, 6, 7]  # never at a tick with a missing or bad stream
    assert steps[1].images["wrist"][0, 0, 0] == 1 and list(steps[1].masks) == ["front"]
    ticks.finish()
    assert (report.trimmed_start, report.gap_steps, report.bad_steps, report.trimmed_end) == (1, 1, 2, 0)
    assert report.bad == {"action": {"norm": 1}, "front": {"decode": 1}, "wrist": {"decode": 1}}
    assert [(g.stream, g.ticks) for g in report.gaps] == [("action", 1)]
    strict = EpisodeTicks(EpisodeReport("strict"), 0.1, "drop_episode")
    assert [strict.judge(ns(k), *pattern.get(k, ([], [])), ["front"], decode(k)) is not None for k in range(5)] == \
        [False, True, True, False, False]
    assert strict.dropped.startswith("gap at 0.300 s: action stale")


# ---------------------------------------------------------------------------------------------
# bags -> datasets


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_one_bag_per_episode_values_exact(tmp_path, storage):
    bags = []
    for e, duration in enumerate((2.0, 1.5)):
        bags.append(tmp_path / f"ep{e}")
        with bf.BagWriter(bags[-1], storage) as bag:
            bf.record_episode(bag, 10.0 * e, duration, instruction=f"task {e}")
    report = import_bags(bags, mapping(), tmp_path / "ds", progress=False)
    assert report.ok, report.summary()
    assert validate_dataset(tmp_path / "ds")["ok"]
    info = load_dataset_info(tmp_path / "ds")
    assert info.cameras == ["front", "wrist"] and info.image_size == (24, 32)
    assert info.proprio_names == ["shoulder", "elbow", "wrist"]
    for e, duration in enumerate((2.0, 1.5)):
        t0 = 10.0 * e
        arrays = episode_arrays(tmp_path / "ds", e)
        ticks = tick_grid(bf.ns(t0), bf.ns(t0 + duration), 10.0)
        assert arrays["instruction"] == f"task {e}"
        assert len(arrays["actions"]) == len(ticks) == report.episodes[e].steps
        assert np.allclose(arrays["timestamps"], ticks / 1e9)
        cam_s = [t0 + i / 30 for i in range(int(duration * 30) + 1)]
        pose_s = [t0 + i / 20 for i in range(int(duration * 20) + 1)]
        joint_s = [t0 + i / 50 for i in range(int(duration * 50) + 1)]
        grip_s = [t0 + i / 10 for i in range(int(duration * 10) + 1)]
        for k, tick in enumerate(ticks):
            tp, tg = pose_s[expected_choice(pose_s, tick)], grip_s[expected_choice(grip_s, tick)]
            want = np.append(bf.pose_rpy(tp), 0.0 if tg - t0 < duration / 2 else 1.0)
            # float32 in the reader; the pose went through a quaternion and back
            assert np.allclose(arrays["actions"][k], want, atol=1e-6), (k, arrays["actions"][k], want)
            tj = joint_s[expected_choice(joint_s, tick)]
            assert np.allclose(arrays["proprio"][k], bf.joints(tj)[:3], atol=1e-6)
            tc = cam_s[expected_choice(cam_s, tick)]
            assert np.array_equal(arrays["images"][k, 0], bf.frame(tc, 0))  # raw rgb8: exact
            # JPEG is lossy: the stored frame is the decoded JPEG exactly, and close to the source
            source = bf.frame(tc, 1)
            assert np.array_equal(arrays["images"][k, 1], decode_compressed(encode_compressed(source, "jpeg", 95)))
            assert np.abs(arrays["images"][k, 1].astype(int) - source.astype(int)).mean() < 10
    saved = json.loads((tmp_path / "ds" / "import_report.json").read_text())
    assert saved["episodes_written"] == 2 and saved["episodes"][0]["streams"]["front"]["used"] == 21


def test_markers_se2_bgr8_png_and_action_ticks(tmp_path):
    """One MCAP bag, episodes delimited by markers; discrete_se2 from PickPlaceSE2, one step per command."""
    path = tmp_path / "session"
    with bf.BagWriter(path, "mcap") as bag:
        bag.string("/instruction", 0.0, "stack the blocks")
        t = 0.0
        for e, end_marker in enumerate(["success", "discard", "fail", "success"]):
            bag.string("/episode", t + 0.01, "start")
            for i in range(3):
                tc = t + 0.1 + i * 0.5
                bag.image("/front/image_raw", tc, bf.frame(tc, 0), "bgr8")
                bag.image("/wrist/image_raw/compressed", tc + 0.01, bf.frame(tc, 1), "png")
                bag.pick_place("/pick_place", tc + 0.05, bf.se2(10 * e + i))
            bag.string("/episode", t + 1.5, "banana" if e == 3 else end_marker)
            if e == 3:
                bag.string("/episode", t + 1.6, end_marker)
            t += 2.0
    m = mapping(action={"space": "discrete_se2", "num_bins": 16, "topic": "/pick_place"}, gripper={}, proprio=[],
                ticks="action", episodes={"mode": "markers", "topic": "/episode"})
    report = import_bags([path], m, tmp_path / "ds", progress=False)
    statuses = [(e.status, e.success, e.reason) for e in report.episodes]
    assert [s[0] for s in statuses] == ["written", "dropped", "written", "written"], report.summary()
    assert statuses[1][2] == "discarded by a marker"
    assert [e.success for e in report.written] == [True, False, True]
    assert "unknown values" in report.episodes[3].warnings[0]
    assert validate_dataset(tmp_path / "ds")["ok"]
    info = load_dataset_info(tmp_path / "ds")
    assert info.action_space.kind == "discrete_se2" and [e.success for e in info.episodes] == [True, False, True]
    for episode, e in zip(range(3), (0, 2, 3)):
        arrays = episode_arrays(tmp_path / "ds", episode)
        assert arrays["instruction"] == "stack the blocks"
        assert np.allclose(arrays["actions"], [bf.se2(10 * e + i) for i in range(3)], atol=1e-6)
        for i in range(3):
            tc = 2.0 * e + 0.1 + i * 0.5
            assert np.array_equal(arrays["images"][i, 0], bf.frame(tc, 0))  # bgr8 -> RGB exactly
            assert np.array_equal(arrays["images"][i, 1], bf.frame(tc, 1))  # PNG is lossless


def test_gaps_bad_quaternions_and_trimming_are_reported(tmp_path):
    path = tmp_path / "ep"
    with bf.BagWriter(path, "sqlite3") as bag:
        # the front camera drops out for 0.5 s, one pose has an all-zero quaternion
        bf.record_episode(bag, 0.0, 3.0, skip_camera=(1.0, 1.5), bad_quaternion_at=2.0)
    report = import_bags([path], mapping(), tmp_path / "ds", progress=False)
    (ep,) = report.episodes
    assert ep.status == "written"
    # ticks 1.1 .. 1.4 s: the newest front frame (0.967 s) is older than 0.1 s; at 1.5 s frames are back
    assert ep.gap_steps == 4 and [(g.stream, g.ticks) for g in ep.gaps] == [("front", 4)]
    assert ep.gaps[0].start_s == pytest.approx(1_700_000_001.1) and ep.gaps[0].end_s == pytest.approx(1_700_000_001.4)
    assert ep.streams["front"]["source_drops"] == 15 and ep.streams["wrist"]["source_drops"] == 0
    assert ep.bad_steps == 1 and ep.bad == {"action": {"norm": 1}} and "norm 0" in ep.examples["action:norm"]
    assert ep.streams["action"]["bad_messages"] == {"norm": 1}
    assert ep.steps == 31 - 4 - 1 == load_dataset_info(tmp_path / "ds").episodes[0].num_steps
    assert "gap: front 4 tick(s) at 1.100..1.400 s" in report.summary()
    # The strict policy drops such an episode instead.
    strict = import_bags([path], mapping(gap_policy="drop_episode"), tmp_path / "strict", progress=False)
    assert strict.episodes[0].status == "dropped" and "gap at" in strict.episodes[0].reason
    assert load_dataset_info(tmp_path / "strict").episodes == []  # the staged episode was discarded


def test_misaligned_and_repeated_frames_are_counted(tmp_path):
    """The wrist camera lags the front one by 60 ms (misaligned at 50 ms), and runs at 5 Hz (repeats)."""
    path = tmp_path / "ep"
    with bf.BagWriter(path, "mcap") as bag:
        for i in range(21):
            t = i * 0.1
            bag.image("/front/image_raw", t, bf.frame(t, 0), "rgb8")
            if i % 2 == 0:
                bag.image("/wrist/image_raw/compressed", t + 0.04, bf.frame(t, 1), "png")
            bag.pose("/target_pose", t, bf.pose_rpy(t))
    m = mapping(proprio=[], gripper={"constant": 1.0}, tolerance_s=0.25, sync_tolerance_s=0.05, instruction={"text": "x"})
    report = import_bags([path], m, tmp_path / "ds", progress=False)
    (ep,) = report.episodes
    assert ep.status == "written" and ep.trimmed_start == 1  # at 0 s no wrist frame yet
    assert ep.steps == 20 and ep.misaligned_steps == 20  # wrist frames are 60 or 160 ms older than front ones
    assert ep.streams["wrist"]["used"] == 10 and ep.streams["wrist"]["repeated"] == 10
    assert ep.streams["front"]["repeated"] == 0 and ep.streams["wrist"]["max_age_ms"] == pytest.approx(160.0)
    assert np.allclose(episode_arrays(tmp_path / "ds", 0)["actions"][:, 6], 1.0)  # gripper.constant


def test_masks_are_paired_with_the_frame_of_their_stamp(tmp_path):
    """Front masks arrive 20 ms after their frame, wrist masks 10 ms before it: each step holds the
    mask of its frame's stamp, sampled when the pair is complete (the recorder's rule)."""
    path = tmp_path / "ep"
    with bf.BagWriter(path, "mcap") as bag:
        bf.record_episode(bag, 0.0, 2.0, wrist="rgb8", mask_delays_s=(0.02, -0.01))
        bag.labels("/front/mask", 1.234, bf.labels(99, 0), stamp=1.2345)  # no frame has this stamp: never used
    m = mapping(cameras={"front": "/front/image_raw", "wrist": "/wrist/image_raw"}, mask_topics=bf.MASK_TOPICS)
    report = import_bags([path], m, tmp_path / "ds", progress=False)
    assert report.ok, report.summary()
    assert validate_dataset(tmp_path / "ds")["ok"] and load_dataset_info(tmp_path / "ds").has_masks
    (ep,) = report.episodes
    assert ep.streams["front"]["mask_topic"] == "/front/mask" and ep.streams["front"]["bad_masks"] == 0
    assert ep.trimmed_start == 1 and ep.steps == 20  # at 0 s the first front mask is not there yet
    frame_s = [i / 30 for i in range(61)]
    ticks = tick_grid(bf.ns(0.0), bf.ns(2.0), 10.0)[1:]
    item = TrajectoryWindowDataset(tmp_path / "ds", window=ep.steps, max_objects=4)[0]
    assert np.allclose(item["timestamps"].numpy(), ticks / 1e9)
    masks = dataset_masks(tmp_path / "ds", ep.steps)
    # a camera's sample time is when its pair was complete: the later of frame and mask
    for camera, (name, delay) in enumerate((("front", 0.02), ("wrist", -0.01))):
        sample_s = [t + max(0.0, delay) for t in frame_s]
        for k, tick in enumerate(ticks):
            i = expected_choice(sample_s, int(tick))
            assert np.array_equal(masks[name][k], bf.labels(i, camera)), (name, k, i)
            assert np.array_equal(item["images"][k, camera].numpy(), bf.frame(frame_s[i], camera))
            boxes, valid = boxes_from_mask(bf.labels(i, camera), 4)
            assert np.array_equal(item["object_boxes"][k, camera].numpy(), boxes.astype(np.float32))
            assert item["object_valid"][k, camera].tolist() == valid.tolist() and valid.sum() == 2


def test_unusable_masks_are_bad_steps_and_mask_mappings_are_checked(tmp_path):
    path = tmp_path / "ep"
    with bf.BagWriter(path, "sqlite3") as bag:
        for i in range(21):
            t = i * 0.1
            bag.image("/front/image_raw", t, bf.frame(t, 0), "rgb8")
            if i == 7:  # a mask of another size than its frame: the steps that use this pair are bad
                bag.labels("/front/mask", t, np.zeros((12, 16), np.uint16))
            elif i == 12:  # a mask that does not deserialise: its frame never has a pair
                bag.write_serialized("/front/mask", "sensor_msgs/msg/Image", bag.ns(t), b"\x00\x01")
            else:
                bag.labels("/front/mask", t, bf.labels(i, 0))
            bag.pose("/target_pose", t, bf.pose_rpy(t))
    m = mapping(cameras={"front": "/front/image_raw"}, mask_topics={"front": "/front/mask"}, proprio=[],
                gripper={"constant": 1.0}, instruction={"text": "x"}, tolerance_s=0.15)
    report = import_bags([path], m, tmp_path / "ds", progress=False)
    (ep,) = report.episodes
    assert ep.status == "written", report.summary()
    assert ep.bad == {"front": {"size": 1}} and ep.streams["front"]["bad_masks"] == 1
    assert ep.steps == 21 - 1 and ep.streams["front"]["repeated"] == 1  # tick 1.2 s reuses the pair of 1.1 s
    with pytest.raises(ConfigError, match="a mask topic for every camera"):
        mapping(mask_topics={"front": "/front/mask"})
    with pytest.raises(ConfigError, match="image_size to null"):
        mapping(mask_topics=bf.MASK_TOPICS, image_size=[12, 16])
    with pytest.raises(ConfigError, match="distinct topics"):
        mapping(mask_topics={"front": "/front/mask", "wrist": "/front/mask"})
    wrong = import_bags([path], mapping(cameras={"front": "/front/image_raw"}, mask_topics={"front": "/target_pose"},
                                        proprio=[], gripper={"constant": 1.0}, instruction={"text": "x"}),
                        tmp_path / "wrong", progress=False)
    assert "mask of camera 'front' topic has type geometry_msgs/msg/PoseStamped" in wrong.errors[0]["error"]


def dataset_masks(root: Path, steps: int) -> dict[str, list[np.ndarray]]:
    """Episode 0's stored masks per camera (the chunks of 16-bit labels)."""
    info = load_dataset_info(root)
    manifest = fmt.load_manifest(root, info, 0)
    out: dict[str, list[np.ndarray]] = {}
    for cam in info.cameras:
        out[cam] = []
        for chunk_index in range((steps + info.chunk_size - 1) // info.chunk_size):
            chunk = fmt.load_chunk(root, 0, manifest, cam, chunk_index, fmt.MASKS_DIR)
            count = min(info.chunk_size, steps - chunk_index * info.chunk_size)
            out[cam] += [chunk.decode_mask(t, tuple(info.image_size)) for t in range(count)]
    return out


@pytest.mark.parametrize("keep_metadata", [True, False])
def test_truncated_mcap_keeps_complete_episodes(tmp_path, keep_metadata):
    path = tmp_path / "session"
    with bf.BagWriter(path, "mcap") as bag:
        for e in range(3):  # 96x128 raw frames: the bag has many 1 MiB chunks
            bag.string("/episode", 2.0 * e, "start")
            bf.record_episode(bag, 2.0 * e + 0.01, 1.5, size=(96, 128), instruction=f"task {e}")
            bag.string("/episode", 2.0 * e + 1.6, "stop")
    storage = bf.truncate(path, 0.8)  # the third episode is cut off
    if not keep_metadata:
        (path / "metadata.yaml").unlink()  # `ros2 bag record` killed before writing it
    m = mapping(episodes={"mode": "markers", "topic": "/episode"})
    report = import_bags([path], m, tmp_path / "ds", progress=False)
    assert [e.status for e in report.episodes] == ["written", "written", "dropped"], report.summary()
    assert "incomplete" in report.episodes[2].reason and "truncated" in report.episodes[2].reason
    assert storage.name in report.episodes[2].reason
    info = load_dataset_info(tmp_path / "ds")
    assert [e.instruction for e in info.episodes] == ["task 0", "task 1"] and info.image_size == (96, 128)
    assert validate_dataset(tmp_path / "ds")["ok"]


def test_truncated_sqlite_bag_is_reported_and_the_others_imported(tmp_path, capsys):
    good, broken = tmp_path / "good", tmp_path / "broken"
    for path in (good, broken):
        with bf.BagWriter(path, "sqlite3") as bag:
            bf.record_episode(bag, 0.0, 1.0)
    bf.truncate(broken, 0.5)
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(yaml.safe_dump(bf.MAPPING))
    rc = import_main([str(broken), str(good), "--mapping", str(mapping_file), "--out", str(tmp_path / "ds"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1  # something failed; the good bag is still imported
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["episodes_written"] == 1 and summary["sources_failed"] == 1
    assert f"bag {broken}" in summary["errors"][0]["error"] and "cannot be read" in summary["errors"][0]["error"]
    assert validate_dataset(tmp_path / "ds")["ok"]


def test_missing_topic_and_unexpected_type_name_bag_and_topic(tmp_path):
    path = tmp_path / "ep"
    with bf.BagWriter(path, "mcap") as bag:
        bf.record_episode(bag, 0.0, 1.0)
        bag.string("/target_pose_str", 0.5, "not a pose")
    missing = mapping(cameras={"front": "/front/image_raw", "top": "/top/image_raw"})
    report = import_bags([path], missing, tmp_path / "a", progress=False)
    (err,) = report.errors
    assert err["error"].startswith(f"bag {path}, topic '/top/image_raw': camera 'top' topic is not in the bag")
    assert "/front/image_raw (sensor_msgs/msg/Image)" in err["error"]  # lists what the bag has
    wrong = mapping(action={"space": "continuous_pose6d", "topic": "/target_pose_str"})
    report = import_bags([path], wrong, tmp_path / "b", progress=False)
    assert "topic '/target_pose_str': action topic has type std_msgs/msg/String; expected geometry_msgs/msg/PoseStamped" \
        in report.errors[0]["error"]
    assert not report.episodes and not report.ok


def test_joint_state_action_float_gripper_resize_and_header_time(tmp_path):
    """JointState action mapped by name, a Float64 gripper, frames resized with resize_rgb, header stamps."""
    path = tmp_path / "ep"
    with bf.BagWriter(path, "sqlite3") as bag:
        for i in range(21):
            t = i * 0.05
            # camera frames are received 30 ms after their stamp: header time undoes that delay
            bag.image("/front/image_raw", t + 0.03, bf.frame(t, 0, (48, 64)), "rgb8", stamp=t)
            bag.joint_state("/arm/command", t, ["j0", "j1", "j2", "j3", "j4", "j5"], [t, 2 * t, 0.1, 0.2, 0.3, -t])
            bag.float64("/gripper", t, 0.5)
    m = mapping(cameras={"front": "/front/image_raw"}, proprio=[], instruction={"text": "wave"}, image_size=[24, 32],
                action={"space": "continuous_pose6d", "topic": "/arm/command",
                        "dims": {"x": "j0", "y": "j1", "z": "j2", "roll": "j3", "pitch": "j4", "yaw": "j5"}},
                gripper={"topic": "/gripper"}, time_source="header", tolerance_s=0.01)
    report = import_bags([path], m, tmp_path / "ds", progress=False)
    assert report.ok, report.summary()
    arrays = episode_arrays(tmp_path / "ds", 0)
    n = len(arrays["actions"])
    assert n == 11  # 0 .. 1.0 s at 10 Hz
    for k in range(n):
        t = k * 0.1
        assert np.allclose(arrays["actions"][k], [t, 2 * t, 0.1, 0.2, 0.3, -t, 0.5], atol=1e-6)
        assert np.array_equal(arrays["images"][k, 0], resize_rgb(bf.frame(t, 0, (48, 64)), (24, 32)))
    assert report.episodes[0].streams["front"]["max_age_ms"] == 0.0  # the header stamp, not the 30 ms delay


def test_mapping_errors_list_valid_keys(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({**bf.MAPPING, "tolerence_s": 0.1}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['tolerence_s'\]; valid keys: cameras, action"):
        load_mapping(RosbagMapping, path)
    with pytest.raises(ConfigError, match="gripper dimension"):
        mapping(gripper={})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['action.topc'\]"):
        mapping(action={"topc": "/x"})
    example = load_mapping(RosbagMapping, REPO / "config" / "import" / "rosbag_example.yaml")
    assert example.action.topic and example.cameras


def test_cli_import_validate_and_train(tmp_path):
    """The console path end to end: import with the CLI, validate with the CLI, train 3 steps."""
    bag = tmp_path / "ep"
    with bf.BagWriter(bag, "mcap") as writer:
        bf.record_episode(writer, 0.0, 2.0)
    mapping_file = tmp_path / "mapping.yaml"
    mapping_file.write_text(yaml.safe_dump(bf.MAPPING))
    out = tmp_path / "ds"
    run = lambda *cmd: subprocess.run([sys.executable, "-m", *cmd], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    imported = run("astra_core.data.import_rosbag", str(bag), "--mapping", str(mapping_file), "--out", str(out), "--no-progress")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert json.loads(imported.stdout.splitlines()[-1])["episodes_written"] == 1
    validated = run("astra_core.data.validate", str(out))
    assert validated.returncode == 0 and json.loads(validated.stdout.splitlines()[-1])["ok"], validated.stdout
    trained = run("astra_core.train", "--config", "config/train/tiny.yaml", f"data.root={out}", f"output_dir={tmp_path / 'run'}",
                  "total_steps=3", "optim.warmup_steps=1", "batch_size=2", "data.window=4", "data.val_fraction=0",
                  "model.overrides.vision.image_size=16", "cdl.num_negatives=2", "val_every=0", "log_every=1",
                  "checkpoint_every=1000", "device=cpu", "progress_bar=false")
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step_00000003" / "model.safetensors").is_file()
