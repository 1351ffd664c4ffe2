"""The recorder's pure parts, without ROS: live resampling against the importer's rule, the
episode assembler (gaps, bad samples, trimming, the stale mark), frame/mask pairing, parameters,
and a whole session (inputs -> dataset + bag) whose bag imports into the same dataset."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from astra_core.configuration import ConfigError, from_dict, to_dict
from astra_core.data import format as fmt
from astra_core.data import ros_messages as rm
from astra_core.data.dataset import TrajectoryWindowDataset
from astra_core.data.errors import DatasetError
from astra_core.data.import_mapping import load_mapping
from astra_core.data.import_report import EpisodeReport
from astra_core.data.import_rosbag import import_bags
from astra_core.data.resample import BAD, MISSING, sample_stream, tick_grid
from astra_core.data.rosbag_mapping import RosbagMapping
from astra_core.data.rosbag_source import project_typestore
from astra_core.data.validate import validate_dataset
from astra_core.geometry import rpy_to_quaternion
from astra_core.imaging import encode_labels, encode_raw
from astra_ros.recorder_episode import EpisodeAssembler, episode_metadata, stale_streams
from astra_ros.recorder_outputs import MAPPING_FILE, BagOutput, DatasetOutput
from astra_ros.recorder_params import RECORDER_PARAMETERS, RecorderParams
from astra_ros.recorder_session import RecordingSession
from astra_core.data.mask_pairing import MaskPairer
from astra_ros.recorder_streams import RecorderInputs
from astra_ros.recorder_ticks import LiveResampler, Sample

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
TYPES = project_typestore()


# -- live resampling == the importer's rule ---------------------------------------------------------

def random_streams(rng, names, start_ns, end_ns):
    """Per stream: sorted receive times (some before the start) and which samples are bad."""
    out = {}
    for name in names:
        period = int(rng.uniform(0.02, 0.15) * NS)
        times = np.cumsum(rng.integers(period // 2, 2 * period, 400)) + start_ns - int(0.5 * NS)
        times = times[times <= end_ns]
        if name == "wrist":  # a stale stretch: no frames for 0.8 s
            times = times[(times < start_ns + 1 * NS) | (times > start_ns + int(1.8 * NS))]
        out[name] = (times, rng.random(len(times)) > 0.1)
    return out


def replay(resampler: LiveResampler, streams, start_ns, end_ns, rng):
    """Push samples in time order, resolving at random moments, then finish at end_ns."""
    events = sorted((int(t), name, i) for name, (times, _) in streams.items() for i, t in enumerate(times) if t >= start_ns)
    resolved = []
    for t, name, i in events:
        if rng.random() < 0.3:
            resolved += resampler.resolve(t)  # "now" = this sample's receive time: it is not added yet
        valid = streams[name][1][i]
        resampler.add(name, Sample(t, (name, i), None if valid else ("norm", "bad")))
    resolved += resampler.resolve(end_ns, final=True)
    return resolved


def seeds_of(streams, start_ns):
    seeds = {}
    for name, (times, valid) in streams.items():
        before = np.flatnonzero(times < start_ns)
        if len(before):
            i = before[-1]
            seeds[name] = Sample(int(times[i]), (name, int(i)), None if valid[i] else ("norm", "bad"))
    return seeds


@pytest.mark.parametrize("ticks", ["rate", "action"])
def test_live_resampling_chooses_what_the_importer_chooses(ticks):
    rng = np.random.default_rng(3)
    names = ["front", "wrist", "action"]
    start, end = T0 + 123_456_789, T0 + 123_456_789 + 3 * NS
    tolerance = int(0.2 * NS)
    streams = random_streams(rng, names, start, end)
    resampler = LiveResampler(names, start, tolerance, rate_hz=10.0 if ticks == "rate" else None,
                              tick_stream="action" if ticks == "action" else None, seeds=seeds_of(streams, start))
    resolved = replay(resampler, streams, start, end, rng)

    if ticks == "rate":
        expected_ticks = tick_grid(start, end, 10.0)
    else:
        action_times = streams["action"][0]
        expected_ticks = np.unique(action_times[(action_times >= start) & (action_times <= end)])
    assert [r.t_ns for r in resolved] == expected_ticks.tolist()
    assert [r.index for r in resolved] == list(range(len(expected_ticks)))
    for name, (times, valid) in streams.items():
        index, status = sample_stream(times, valid, expected_ticks, tolerance)
        got_status = [r.status[name] for r in resolved]
        assert got_status == status.tolist(), name
        got = [None if r.samples[name] is None else r.samples[name].value[1] for r in resolved]
        assert got == [None if i < 0 else int(i) for i in index], name
    assert any(r.status["wrist"] == MISSING for r in resolved)  # the stale stretch shows
    assert any(st == BAD for r in resolved for st in r.status.values())


def test_resampler_keeps_only_what_an_undecided_tick_may_use():
    resampler = LiveResampler(["cam"], T0, int(0.5 * NS), rate_hz=10.0)
    for k in range(3000):  # 100 s of a 30 Hz camera
        t = T0 + k * NS // 30
        resampler.add("cam", Sample(t, k))
        if k % 3 == 0:
            resampler.resolve(t)
        assert resampler.held_samples <= 8  # about one resolve period of frames, however long the episode
    assert resampler.ticks_resolved == 999


def test_resampler_refuses_samples_out_of_time_order():
    resampler = LiveResampler(["cam"], T0, NS, rate_hz=10.0)
    resampler.add("cam", Sample(T0 + 10, 0))
    with pytest.raises(ValueError, match="time order"):
        resampler.add("cam", Sample(T0 + 5, 1))
    with pytest.raises(ValueError, match="either rate_hz"):
        LiveResampler(["cam"], T0, NS)


def test_instruction_at_a_tick_is_the_newest_one_before_it():
    resampler = LiveResampler(["cam"], T0, NS, rate_hz=10.0, instruction=Sample(T0 - NS, "first"))
    resampler.add("cam", Sample(T0, 0))
    resampler.add_instruction(Sample(T0 + NS // 4, "second"))
    ticks = resampler.resolve(T0 + NS // 2, final=True)
    assert [t.instruction for t in ticks] == ["first", "first", "first", "second", "second", "second"]


# -- frame / mask pairing -----------------------------------------------------------------------------

def test_mask_pairer_pairs_by_stamp_in_either_order():
    pairer = MaskPairer()
    assert pairer.add_frame(100, "f100") is None
    assert pairer.add_mask(100, "m100") == ("f100", "m100")
    assert pairer.add_mask(200, "m200") is None  # mask first
    assert pairer.add_frame(200, "f200") == ("f200", "m200")
    assert pairer.add_mask(200, "m200 again") is None  # one pair per frame
    assert pairer.add_frame(150, "late frame") is None  # older than a frame already paired
    assert pairer.add_mask(150, "m150") is None
    tolerant = MaskPairer(tolerance_s=0.01)
    tolerant.add_frame(1_000_000_000, "f")
    assert tolerant.add_mask(1_005_000_000, "m") == ("f", "m")


def test_a_pairer_given_what_another_holds_pairs_the_next_messages_alike():
    """A bag starts with what the recorder's pairer holds (bag_seeds): the importer's pairer then
    has the same newest pair and pairs every later message as the recorder's did."""
    rng = np.random.default_rng(5)
    events = [(k + rng.uniform(0, 2.5), "mask", k) for k in range(40) if k % 7 != 3]  # some masks never come
    events += [(k + rng.uniform(0, 1.5), "frame", k) for k in range(40)]
    events.sort()

    def add(pairer: MaskPairer, part: str, k: int):
        return (pairer.add_frame if part == "frame" else pairer.add_mask)(k, (part, k))

    live, cut = MaskPairer(), 25
    live_pairs = [pair for _, part, k in events[:cut] if (pair := add(live, part, k)) is not None]
    replayed = MaskPairer()
    replayed_pairs = [pair for part, (_, k) in live.held() if (pair := add(replayed, part, k)) is not None]
    assert live_pairs and replayed_pairs[-1] == live_pairs[-1]  # the newest pair: the episode's first sample
    for _, part, k in events[cut:]:
        assert add(replayed, part, k) == add(live, part, k)


# -- the assembler: steps, gaps, bad samples, trimming -----------------------------------------------

def assemble(samples: dict[str, list[tuple[float, object]]], end_s: float, gap_policy="drop_step", decode=None):
    """Samples (seconds after T0, value) per stream -> (report, steps written)."""
    streams = ["front", "action", "gripper"]
    resampler = LiveResampler(streams, T0, int(0.15 * NS), rate_hz=10.0)
    events = sorted((T0 + int(round(t * NS)), name, value) for name, items in samples.items() for t, value in items)
    for t, name, value in events:
        bad = isinstance(value, str)
        resampler.add(name, Sample(t, None if bad else value, ("norm", value) if bad else None))
    report = EpisodeReport("test", start_s=T0 / NS)
    steps = []

    class Sink:
        def add_step(self, step):
            steps.append(step)

    assembler = EpisodeAssembler(["front"], report, 0.1, gap_policy, 0.05,
                                 decode or (lambda cam, v: (np.full((2, 2, 3), v, np.uint8), None)),
                                 lambda instruction: Sink(), pose_actions=True, proprio=False)
    for tick in resampler.resolve(T0 + int(end_s * NS), final=True):
        assembler.on_tick(tick)
    return assembler.finish({s: len(samples.get(s, [])) for s in streams}), steps


def pose(i):
    return np.array([i, 0, 0, 0, 0, 0], float)


def test_a_camera_that_goes_stale_is_a_gap_reported_and_marked_never_padded():
    frames = [(k / 30, k) for k in range(90) if not 1.0 < k / 30 < 1.6]  # front silent for 0.6 s
    commands = [(k / 20, pose(k)) for k in range(60)]
    grippers = [(k / 20, np.array([0.5])) for k in range(60)]
    report, steps = assemble({"front": frames, "action": commands, "gripper": grippers}, end_s=2.9)
    assert report.status == "written"
    assert report.gap_steps == 4  # ticks 1.2 .. 1.5: the newest frame (1.0 s) is older than 0.15 s
    assert [(g.stream, g.ticks) for g in report.gaps] == [("front", 4)]
    assert stale_streams(report) == ["front"]
    meta = episode_metadata(report)
    assert meta["stale"] is True and meta["stale_streams"] == ["front"] and meta["gaps"][0]["ticks"] == 4
    times = np.round([s.timestamp - T0 / NS for s in steps], 3)
    assert not any(1.15 < t < 1.55 for t in times)  # no step inside the gap
    assert report.steps == len(steps) == 30 - 4
    for step in steps:  # every step's frame is the newest one not newer than its tick
        k = int(step.images["front"][0, 0, 0])
        assert k / 30 <= step.timestamp - T0 / NS + 1e-6  # timestamps are float seconds since the epoch


def test_bad_samples_drop_their_steps_and_late_streams_are_trimmed():
    frames = [(k / 30, k) for k in range(90)]
    commands = [(0.5 + k / 20, "quaternion norm 0.5" if k == 10 else pose(k)) for k in range(40)]
    grippers = [(k / 20, np.array([1.0])) for k in range(60)]
    report, steps = assemble({"front": frames, "action": commands, "gripper": grippers}, end_s=2.9)
    assert report.trimmed_start == 5  # ticks 0.0 .. 0.4: no command yet
    assert report.bad_steps >= 1 and report.bad["action"]["norm"] == report.bad_steps
    assert report.trimmed_end > 0  # the commands stop at 2.45 s, the episode at 2.9 s
    assert report.gap_steps == 0


def test_undecodable_frames_are_bad_steps_and_drop_episode_policy_drops():
    def decode(cam, v):
        if v == 12:
            raise rm.BadSample("decode", "corrupt JPEG")
        return np.zeros((2, 2, 3), np.uint8), None

    frames = [(k / 10 + 0.001, k) for k in range(30)]
    streams = {"front": frames, "action": [(k / 10, pose(k)) for k in range(30)],
               "gripper": [(k / 10, np.array([0.0])) for k in range(30)]}
    report, _ = assemble(streams, end_s=2.9, decode=decode)
    assert report.bad == {"front": {"decode": 1}} and report.status == "written"
    report, steps = assemble(streams, end_s=2.9, gap_policy="drop_episode", decode=decode)
    assert report.status == "dropped" and "drop_episode" in report.reason


# -- parameters ----------------------------------------------------------------------------------------

def params(**overrides) -> RecorderParams:
    values = {"camera_names": ["front", "wrist"], "dataset_path": "/tmp/unused", **overrides}
    return RecorderParams.from_values(values)


def test_parameters_defaults_topics_and_errors():
    p = params()
    assert p.outputs == ("dataset",) and p.pose_actions and p.sync_tolerance == 0.05
    assert p.topics() == {"front": "camera/front/image_raw", "wrist": "camera/wrist/image_raw", "action": "target_pose",
                          "gripper": "gripper_command", "instruction": "instruction"}
    se2 = params(action_space="discrete_se2", transport="compressed", mask_topics=["m/front", "m/wrist"])
    assert se2.topics()["action"] == "pick_place" and "gripper" not in se2.topics()
    assert se2.topics()["mask:wrist"] == "m/wrist" and se2.topics()["front"].endswith("/compressed")
    with pytest.raises(ValueError) as err:
        params(output="bags", camera_names=["front", "front"], tolerance_s=0.0, mask_topics=["only_one"],
               action_space="discrete_se2", action_frame="delta")
    text = str(err.value)
    for expected in ("'output'", "duplicate", "'tolerance_s'", "'mask_topics'", "delta"):
        assert expected in text
    with pytest.raises(ValueError, match="'bag_path' is empty"):
        params(output="both")
    with pytest.raises(ValueError, match="unknown parameter"):
        params(dataset_pth="x")
    assert set(RECORDER_PARAMETERS) == set(RecorderParams.__dataclass_fields__)


def test_import_mapping_carries_the_recorders_rule():
    p = params(output="both", bag_path="/tmp/bags", proprio_topic="/joint_states", tolerance_s=0.3, ticks="rate",
               gap_policy="drop_episode", control_rate_hz=15.0)
    topics = {"front": "/a", "wrist": "/b", "action": "/cmd", "gripper": "/grip", "proprio": "/joint_states",
              "instruction": "/instruction"}
    mapping = p.import_mapping(topics, "/rec/episode_marker", ["j1", "j2"])
    assert isinstance(mapping, RosbagMapping)
    assert (mapping.tolerance_s, mapping.control_rate_hz, mapping.gap_policy, mapping.time_source) == (0.3, 15.0, "drop_episode", "receive")
    assert mapping.sync_tolerance == pytest.approx(0.5 / 15) and mapping.episodes.mode == "markers"
    assert mapping.proprio[0].joints == ["j1", "j2"] and mapping.image_size is None
    assert to_dict(from_dict(RosbagMapping, to_dict(mapping))) == to_dict(mapping)  # what the YAML file holds loads back
    with pytest.raises(ConfigError):
        from_dict(RosbagMapping, {**to_dict(mapping), "unknown": 1})


# -- a whole session without ROS: inputs -> dataset + bag; the bag imports to the same dataset ------

def image_msg(k: int, t_ns: int, camera: int):
    pixels = np.random.default_rng(k * 7 + camera).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    data, step = encode_raw(pixels, "rgb8")
    return TYPES.types["sensor_msgs/msg/Image"](header=header(t_ns), height=12, width=16, encoding="rgb8",
                                                is_bigendian=0, step=step, data=data.reshape(-1))


def header(t_ns: int):
    types = TYPES.types
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=t_ns // NS, nanosec=t_ns % NS),
                                        frame_id="world")


def pose_msg(k: int, t_ns: int):
    types = TYPES.types
    x, y, z, roll, pitch, yaw = 0.1 * k, 0.2, 0.3, 0.1, 0.2 * math.sin(k), 0.3
    qx, qy, qz, qw = rpy_to_quaternion(roll, pitch, yaw)
    scale = 1.004 if k % 3 == 0 else 1.0  # slightly off unit length: normalised by both
    p = types["geometry_msgs/msg/Pose"](position=types["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                        orientation=types["geometry_msgs/msg/Quaternion"](x=qx * scale, y=qy * scale,
                                                                                          z=qz * scale, w=qw * scale))
    return types["geometry_msgs/msg/PoseStamped"](header=header(t_ns), pose=p)


def gripper_msg(k: int, t_ns: int):
    return TYPES.types["astra_ros/msg/GripperCommand"](header=header(t_ns), position=0.5 + 0.01 * k)


def string_msg(text: str):
    return TYPES.types["std_msgs/msg/String"](data=text)


TOPICS = {"front": "/front", "wrist": "/wrist", "action": "/target_pose", "gripper": "/gripper", "instruction": "/instruction"}
MSGTYPES = {"front": rm.RAW_IMAGE, "wrist": rm.RAW_IMAGE, "action": rm.POSE_STAMPED, "gripper": rm.GRIPPER_COMMAND,
            "instruction": rm.STRING}


def feed(inputs: RecorderInputs, stream: str, t_ns: int, msg, msgtypes=MSGTYPES) -> None:
    data = bytes(TYPES.serialize_cdr(msg, msgtypes[stream]))
    inputs.on_message(stream, t_ns, data, msg)


def labels_msg(k: int, stamp_ns: int, camera: int):
    """The mask of frame k of a camera (header stamp: the frame's): one object labelled k + 1."""
    labels = np.zeros((12, 16), np.uint16)
    labels[2:8, (k + camera) % 8: (k + camera) % 8 + 6] = k + 1
    pixels, encoding, step = encode_labels(labels)
    return TYPES.types["sensor_msgs/msg/Image"](header=header(stamp_ns), height=12, width=16, encoding=encoding,
                                                is_bigendian=0, step=step, data=pixels.reshape(-1).view(np.uint8))


def decode(camera, value):
    if isinstance(value, tuple):  # a frame with the mask of its stamp
        return rm.image_to_rgb(value[0]), rm.image_to_labels(value[1])
    return rm.image_to_rgb(value), None


MASK_DELAYS_NS = {"front": 4_000_000, "wrist": -2_000_000}  # after / before their frame


@pytest.mark.parametrize("masks", [False, True])
def test_session_writes_the_dataset_its_bag_imports_to(tmp_path, masks):
    mask_topics = {f"mask:{c}": f"/{c}/mask" for c in ("front", "wrist")} if masks else {}
    p = params(output="both", dataset_path=str(tmp_path / "ds"), bag_path=str(tmp_path / "bags"), tolerance_s=0.2,
               mask_topics=list(mask_topics.values()))
    topics, msgtypes = {**TOPICS, **mask_topics}, {**MSGTYPES, **dict.fromkeys(mask_topics, rm.RAW_IMAGE)}
    problems = []
    inputs = RecorderInputs(p, topics, msgtypes, lambda kind, text: problems.append(kind))
    dataset = DatasetOutput(p.dataset_path, p.camera_names, p.action_spec, p.control_rate_hz, p.chunk_size,
                            has_masks=masks, has_proprio=False, image_size=None)
    bags = BagOutput(p.bag_path, "mcap")
    schedule = [(T0 + k * NS // 30, cam, k) for cam in ("front", "wrist") for k in range(120)]
    if masks:
        schedule += [(T0 + k * NS // 30 + MASK_DELAYS_NS[cam], f"mask:{cam}", k) for cam in ("front", "wrist")
                     for k in range(120)]
    schedule += [(T0 + k * NS // 20 + 3_000_000, "action", k) for k in range(80)]
    schedule += [(T0 + k * NS // 20 + 3_000_001, "gripper", k) for k in range(80)]
    schedule.sort()
    feed(inputs, "instruction", T0 - NS, string_msg("stack the blocks"))
    start, end = T0 + NS + 17, T0 + int(3.5 * NS)
    session = None
    for t, stream, k in schedule:
        if t > end:
            break
        if session is None and t >= start:
            bags.write_mapping(p.import_mapping(topics, "/marker", None))
            session = inputs.session = RecordingSession(
                1, p, start, inputs.instruction, inputs.seeds(), decode, dataset, bags.begin(bags.next_name()),
                "/marker", {"source": "test"}, inputs.converters.proprio_names, seed_messages=inputs.bag_seeds())
        if session is not None and k % 4 == 0:
            session.advance(t)  # "now": ticks before this message's receive time are decided
        frame_ns = T0 + k * NS // 30  # a mask carries its frame's stamp
        msg = {"front": lambda: image_msg(k, t, 0), "wrist": lambda: image_msg(k, t, 1),
               "mask:front": lambda: labels_msg(k, frame_ns, 0), "mask:wrist": lambda: labels_msg(k, frame_ns, 1),
               "action": lambda: pose_msg(k, t), "gripper": lambda: gripper_msg(k, t)}[stream]()
        feed(inputs, stream, t, msg, msgtypes)
    result = session.stop(end, True, timeout_s=30)
    dataset.close()
    assert result.ok, result.message
    assert result.report.steps == 25 and result.dataset_episode == 0 and not result.stale_streams
    assert validate_dataset(tmp_path / "ds")["ok"]

    mapping = load_mapping(RosbagMapping, tmp_path / "bags" / MAPPING_FILE)  # the file the recorder wrote
    report = import_bags([result.bag_path], mapping, tmp_path / "imported", progress=False)
    assert report.ok, report.summary()
    a, b = (LoadedEpisode(tmp_path / name) for name in ("ds", "imported"))
    assert np.array_equal(a.timestamps, b.timestamps) and np.array_equal(a.actions, b.actions)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    if masks:  # the same pairs: identical masks, so identical object boxes
        assert all(a.masks[c] and all(np.array_equal(x, y) for x, y in zip(a.masks[c], b.masks[c])) for c in a.masks)
        assert np.array_equal(a.object_boxes, b.object_boxes) and a.object_valid.sum() == 2 * len(a.actions)
    assert not problems


class LoadedEpisode:
    """Episode 0 of a dataset: its step arrays and its frames as the training reader gives them."""

    def __init__(self, root) -> None:
        info = fmt.load_dataset_info(root)
        manifest = fmt.load_manifest(root, info, 0)
        steps = fmt.load_steps(root, info, 0, manifest)
        self.actions, self.timestamps = steps.actions, steps.timestamps
        n = manifest["num_steps"]
        item = TrajectoryWindowDataset(root, window=n, max_objects=4 if info.has_masks else None)[0]
        self.frames = list(item["images"].numpy())
        self.masks: dict[str, list[np.ndarray]] = {}
        if info.has_masks:
            self.object_boxes, self.object_valid = item["object_boxes"].numpy(), item["object_valid"].numpy()
            for cam in info.cameras:
                chunks = [fmt.load_chunk(root, 0, manifest, cam, c, fmt.MASKS_DIR) for c in range(-(-n // info.chunk_size))]
                self.masks[cam] = [chunks[t // info.chunk_size].decode_mask(t % info.chunk_size, info.image_size)
                                   for t in range(n)]


def test_discard_writes_nothing_and_a_dataset_of_another_schema_is_refused(tmp_path):
    p = params(output="both", dataset_path=str(tmp_path / "ds"), bag_path=str(tmp_path / "bags"))
    inputs = RecorderInputs(p, TOPICS, MSGTYPES, lambda kind, text: None)
    dataset = DatasetOutput(p.dataset_path, p.camera_names, p.action_spec, 10.0, 32, False, False, None)
    bags = BagOutput(p.bag_path, "sqlite3")
    feed(inputs, "instruction", T0, string_msg("x"))
    session = RecordingSession(1, p, T0, inputs.instruction, {}, decode, dataset, bags.begin("episode_000000"), "/m",
                               {}, lambda: None)
    for k in range(20):
        t = T0 + k * NS // 10
        for stream, msg in (("front", image_msg(k, t, 0)), ("wrist", image_msg(k, t, 1)), ("action", pose_msg(k, t)),
                            ("gripper", gripper_msg(k, t))):
            session.add_sample(stream, inputs.converters.sample(stream, t, msg) if stream in ("action", "gripper")
                               else Sample(t, msg))
        session.advance(t)
    time.sleep(0.2)
    result = session.discard(timeout_s=30)
    assert result.ok and "discarded" in result.message
    dataset.close()
    assert not (tmp_path / "ds" / fmt.DATASET_FILE).exists() or not fmt.load_dataset_info(tmp_path / "ds").episodes
    assert not list((tmp_path / "bags").glob("episode_*")) and not list((tmp_path / "bags" / ".staging").iterdir())

    # a dataset with other cameras: refused when the recorder starts, naming the key
    other = params(camera_names=["top"], dataset_path=str(tmp_path / "other"))
    from astra_core.data.writer import DatasetWriter

    with DatasetWriter(tmp_path / "other", ["top"], other.action_spec, 5.0, (12, 16)) as writer:
        with writer.begin_episode("x") as ep:
            ep.add_step({"top": np.zeros((12, 16, 3), np.uint8)}, np.zeros(7))
            ep.end(True)
    with pytest.raises(DatasetError, match="control_rate_hz"):
        DatasetOutput(other.dataset_path, ["top"], other.action_spec, 10.0, 32, False, False, None)
    with pytest.raises(DatasetError, match="proprioception"):
        DatasetOutput(other.dataset_path, ["top"], other.action_spec, 5.0, 32, False, True, None)
