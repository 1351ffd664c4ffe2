"""The policy node's inputs for object-token and proprioception checkpoints, without ROS: masks
paired with frames by stamp (FrameBuffer), mono16/mono8 label images, proprioception messages,
new-frames-only stepping, and the configure checks against the checkpoint."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from astra_ros.checkpoint_params import params_for_checkpoint, read_checkpoint_info
from astra_ros.frame_buffer import FrameBuffer, FrameSet, Staleness
from astra_ros.proprio import JointStateSelector, fill_joint_state, proprio_from_pose
from astra_ros.pose_conversion import set_pose_from_xyzrpy

SE2_NAMES = ["pick_x", "pick_y", "pick_theta", "place_x", "place_y", "place_theta"]
PROPRIO = ["tcp_x", "tcp_y", "tcp_z", "tcp_roll", "tcp_pitch", "tcp_yaw", "gripper_opening"]


class FakeClock:
    """A settable clock (test input, not a mock of the code under test)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def img(value: int, size=(4, 4)) -> np.ndarray:
    return np.full((*size, 3), value, np.uint8)


def labels(value: int, size=(4, 4)) -> np.ndarray:
    return np.full(size, value, np.uint16)


# ---- masks paired with frames -----------------------------------------------------------------

def test_a_frame_is_used_only_with_the_mask_of_its_stamp_in_either_arrival_order():
    clock = FakeClock()
    buf = FrameBuffer(["top", "front"], timeout_s=0.5, clock=clock, with_masks=True)
    buf.put("top", img(1), 10.0)
    buf.put_mask("front", labels(21), 10.0)  # mask first
    buf.put("front", img(2), 10.0)
    stale = buf.take()
    assert isinstance(stale, Staleness) and not stale.ages and "top: never received" in stale.describe()
    buf.put_mask("top", labels(11), 10.0)
    buf.put("top", img(3), 10.1)  # a newer frame whose mask has not come yet: the matched pair is used
    frames = buf.take()
    assert isinstance(frames, FrameSet)
    assert frames.images["top"][0, 0, 0] == 1 and frames.masks["top"][0, 0] == 11
    assert frames.masks["front"][0, 0] == 21 and frames.stamps_s == {"top": 10.0, "front": 10.0}
    buf.put_mask("top", labels(12), 10.1)
    assert buf.take().images["top"][0, 0, 0] == 3


def test_stamp_tolerance_and_unmatched_masks_are_named():
    clock = FakeClock()
    exact = FrameBuffer(["top"], timeout_s=0.5, clock=clock, with_masks=True)
    loose = FrameBuffer(["top"], timeout_s=0.5, clock=clock, with_masks=True, stamp_tolerance_s=0.01)
    for buf in (exact, loose):
        buf.put("top", img(1), 10.000)
        buf.put_mask("top", labels(1), 10.004)
    assert isinstance(loose.take(), FrameSet)
    held = exact.take()
    assert isinstance(held, Staleness)
    assert "stale mask(s): top: no mask with the stamp of a recent frame" in held.describe()
    assert exact.stale_ticks == 1


def test_stale_refused_and_misshaped_masks_hold_like_stale_cameras():
    clock = FakeClock()
    buf = FrameBuffer(["top"], timeout_s=0.5, clock=clock, with_masks=True)
    buf.refuse_mask("top", "encoding")
    buf.put("top", img(1), 10.0)
    assert "top: never received (masks refused: encoding)" in buf.take().describe()
    buf.put_mask("top", labels(1), 10.0)
    clock.t += 0.6
    buf.put("top", img(2), 10.6)  # the camera is fresh, its masks are not
    assert "top: last mask 0.60s old" in buf.take().describe()
    buf.put_mask("top", labels(2, size=(2, 2)), 10.6)
    assert "differ in size" in buf.take().describe()


def test_new_frames_only_needs_a_later_stamp_and_arrival_after_the_instruction():
    clock = FakeClock()
    buf = FrameBuffer(["top"], timeout_s=0.5, clock=clock)
    buf.put("top", img(1), 10.0)
    instruction_at = clock.t + 0.05
    clock.t += 0.1
    frames = buf.take()
    assert frames.not_new({}, since_s=instruction_at) == ["top"]  # there before the instruction
    buf.put("top", img(1), 10.0)  # the same observation sent again, after the instruction
    frames = buf.take()
    assert frames.not_new({}, since_s=instruction_at) == []
    assert frames.not_new({"top": 10.0}, since_s=instruction_at) == ["top"]  # already stepped on
    buf.put("top", img(2), 11.0)
    assert buf.take().not_new({"top": 10.0}, since_s=instruction_at) == []


# ---- label images ------------------------------------------------------------------------------

def test_label_images_round_trip_exactly():
    from astra_ros.image_conversion import image_to_labels, labels_to_image

    rng = np.random.default_rng(0)
    wide = rng.integers(0, 60000, (5, 7)).astype(np.uint16)
    msg = labels_to_image(wide, "top_optical_frame")
    assert (msg.encoding, msg.step, msg.is_bigendian) == ("mono16", 14, 0)
    out = image_to_labels(msg)
    assert out.dtype == np.uint16 and np.array_equal(out, wide)
    small = wide.astype(np.uint8)
    assert labels_to_image(small).encoding == "mono8" and np.array_equal(image_to_labels(labels_to_image(small)), small)
    msg.is_bigendian, msg.data = 1, wide.astype(">u2").tobytes()  # a big-endian sender
    assert np.array_equal(image_to_labels(msg), wide)


def test_label_images_with_row_padding_and_bad_ones():
    from astra_core.imaging import ImageDecodeError, decode_labels

    rows = np.arange(12, dtype="<u2").reshape(3, 4)
    padded = np.zeros((3, 6), "<u2")
    padded[:, :4] = rows
    assert np.array_equal(decode_labels(padded.tobytes(), "mono16", 3, 4, 12), rows)
    for args, kind in [(("rgb8", 3, 4, 12), "encoding"), (("mono16", 3, 4, 6), "step"), (("mono16", 0, 4, 8), "size")]:
        with pytest.raises(ImageDecodeError) as err:
            decode_labels(rows.tobytes(), *args)
        assert err.value.kind == kind
    with pytest.raises(ImageDecodeError) as err:
        decode_labels(rows.tobytes(), "mono16", 3, 4, 8, expected_size=(4, 4))
    assert err.value.kind == "size"


# ---- proprioception messages -------------------------------------------------------------------

def test_joint_state_values_are_picked_by_name_in_the_checkpoints_order():
    msg = SimpleNamespace()
    fill_joint_state(msg, ["gripper_opening", "extra", *PROPRIO[:6]], [0.5, 9.0, 1, 2, 3, 4, 5, 6])
    assert JointStateSelector(PROPRIO)(msg).tolist() == [1, 2, 3, 4, 5, 6, 0.5]
    with pytest.raises(ValueError, match="lacks"):
        JointStateSelector(PROPRIO + ["elbow"])(msg)
    msg.position[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        JointStateSelector(PROPRIO)(msg)


def test_pose_proprioception_is_x_y_z_roll_pitch_yaw():
    pose = SimpleNamespace(position=SimpleNamespace(), orientation=SimpleNamespace())
    set_pose_from_xyzrpy(pose, [0.1, 0.2, 0.3, 0.4, -0.5, 0.6])
    assert np.allclose(proprio_from_pose(SimpleNamespace(pose=pose)), [0.1, 0.2, 0.3, 0.4, -0.5, 0.6])


# ---- the checkpoint decides which inputs the node subscribes to --------------------------------

def input_checkpoint(directory: Path, state_tokens="pooled", proprio=()) -> Path:
    directory.mkdir(parents=True)
    config = {"cameras": ["top", "front"], "state_tokens": state_tokens, "proprio_dim": len(proprio),
              "action_space": {"kind": "discrete_se2"}}
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    action = {"names": SE2_NAMES, "min": [0] * 6, "max": [1] * 6, "mean": [0] * 6, "std": [1] * 6, "count": 5}
    stats = {"action": action, "proprio": {**action, "names": list(proprio)} if proprio else None}
    (directory / "stats.json").write_text(json.dumps(stats))
    return directory


MASKS = ["camera/top/mask", "camera/front/mask"]


@pytest.mark.parametrize("state_tokens, proprio, overrides, message", [
    ("objects", (), {}, "uses object tokens: every step needs an instance mask per camera; set 'mask_topics'"),
    ("pooled", (), {"mask_topics": MASKS}, "'mask_topics' is set, but .* uses 'pooled' state tokens"),
    ("objects", (), {"mask_topics": MASKS[:1]}, "'mask_topics' has 1 entries for 2 camera_names"),
    ("pooled", PROPRIO, {}, "takes proprioception .*tcp_x.*: set 'proprio_topic'"),
    ("pooled", (), {"proprio_topic": "proprio"}, "was trained without proprioception"),
    ("pooled", PROPRIO, {"proprio_topic": "p", "proprio_msg_type": "pose"}, "'pose' gives 6 values .* has 7"),
    ("pooled", PROPRIO, {"proprio_topic": "p", "proprio_joint_names": ["a", "b"]}, "has 2 names, .* has 7"),
])
def test_configure_fails_clearly_when_inputs_and_checkpoint_disagree(tmp_path, state_tokens, proprio, overrides,
                                                                     message):
    ckpt = input_checkpoint(tmp_path / "ckpt", state_tokens, proprio)
    with pytest.raises(ValueError, match=message):
        params_for_checkpoint(str(ckpt), **overrides)


def test_matching_inputs_pass_and_are_read_from_the_checkpoint(tmp_path):
    ckpt = input_checkpoint(tmp_path / "ckpt", "objects", PROPRIO)
    info = read_checkpoint_info(ckpt)
    assert info.state_tokens == "objects" and info.proprio_names == tuple(PROPRIO)
    params = params_for_checkpoint(str(ckpt), mask_topics=MASKS, proprio_topic="proprio")
    assert params["mask_topics"] == MASKS and params["proprio_topic"] == "proprio"
