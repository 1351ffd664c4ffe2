"""Train/serve parity (issue 10, part 4): one live stream, three ways to the model, identical inputs.

A test participant publishes a demonstration stream over loopback DDS (two cameras, in one case
with an instance mask per camera carrying its frame's stamp, commanded end-effector poses + gripper
commands, proprioception, the instruction). Then:

* **recorder -> dataset A**: the recorder (a real process) writes the episode into the dataset
  format, and, at the same time, the same messages as received (raw subscriptions, receive times)
  into a rosbag2 folder;
* **bag -> importer -> dataset B**: that bag is imported with ``import_rosbag`` and the mapping the
  recorder wrote next to it;
* **policy node online -> N**: every frame, mask and proprioception message the test's own
  subscriptions (the policy node's QoS) receive goes through the policy node's conversions
  (``to_rgb`` / ``image_to_labels`` with the node's parameters, the node's proprio reader) into the
  node's ``FrameBuffer`` (masks paired with frames by stamp, as the node pairs them); at each of the
  recorder's ticks the buffer is asked what the node would step on (its staleness rule, the same
  timeout). Messages are fed in the recorder's receive order and times (from the bag), so the node
  and the recorder see the same arrivals; the node itself is not run because its ticks fall at
  other instants than the recorder's, and step-for-step needs the same instants.

Compared, step for step, with a tiny model: the frames and the images after the model's
preprocessing (``model.vision.preprocess``) and its state tokens (``Astra.encode_states``), the
actions in model form (``action_space.to_model``: training reads the recorded float64 values from
the dataset, the runtime records the commanded float64 values), proprioception, the object boxes of
the masks (``boxes_from_mask``: the data loader's and the runtime's function), and finally the decoder outputs of
a teacher-forced training forward on A against the streaming runtime (``AstraPolicy``) fed the
node's inputs and the commanded actions. The figures are printed as one JSON line per case.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

rclpy = pytest.importorskip("rclpy")

from rclpy.serialization import deserialize_message  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, JointState  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402

from recorder_harness import (REPO_ROOT, STREAM_T0_S, DemoPeer, command_values, stamp_index,  # noqa: E402, F401
                              start_recorder)

from astra_core.data.dataset import TrajectoryWindowDataset, collate_windows  # noqa: E402
from astra_core.data.import_rosbag import import_bags  # noqa: E402
from astra_core.data.import_mapping import load_mapping  # noqa: E402
from astra_core.data.resample import tick_grid  # noqa: E402
from astra_core.data.rosbag_mapping import RosbagMapping  # noqa: E402
from astra_core.data.rosbag_source import project_typestore  # noqa: E402
from astra_core.data.stats import load_stats  # noqa: E402
from astra_core.data.validate import validate_dataset  # noqa: E402
from astra_core.model import Astra, AstraConfig  # noqa: E402
from astra_core.runtime import AstraPolicy  # noqa: E402
from astra_ros.frame_buffer import FrameBuffer, FrameSet  # noqa: E402
from astra_core.objects import boxes_from_mask  # noqa: E402
from astra_ros.image_conversion import image_to_labels, to_rgb  # noqa: E402
from astra_ros.params import PARAMETERS  # noqa: E402
from astra_ros.proprio import JointStateSelector, proprio_from_pose  # noqa: E402
from astra_ros.qos import SENSOR_QOS  # noqa: E402
from astra_ros.srv import StartRecording, StopRecording  # noqa: E402

pytestmark = pytest.mark.timeout(300)

INSTRUCTION = "put the red cube in the bowl"
CAMERAS = ["front", "wrist"]
RATES = {"camera": 15.0, "command": 20.0, "proprio": 25.0}  # none a multiple of the 10 Hz ticks
TOLERANCE_S = 0.5  # the recorder's tolerance_s = the policy node's image_timeout_s / proprio_timeout_s
NODE_MAX_PIXELS = PARAMETERS["max_image_pixels"][0]  # the node's default frame-size limit
JOINTS = ["shoulder", "elbow", "wrist", "finger"]
MAX_OBJECTS = 4  # object slots per camera for the boxes of the masks

CASES = {  # transport, proprioception message, action space, instance masks
    "raw-masks-jointstate-continuous": ("raw", "joint_state", "continuous_pose6d", True),
    "jpeg-pose-discrete": ("compressed", "pose", "discrete_pose6d", False),
}


class PolicyNodeInputs:
    """The policy node's input conversions in live subscriptions of the test's node (the node's QoS),
    keyed by (topic, header stamp ns): frames through ``to_rgb`` and masks through
    ``image_to_labels`` with the node's parameters (image_size unset, the default max_image_pixels),
    proprioception through the node's reader."""

    def __init__(self, node, transport: str, proprio_type: str, masks: bool) -> None:
        self.values: dict[tuple[str, int], np.ndarray] = {}
        image_type = CompressedImage if transport == "compressed" else Image
        self.camera_topics = {cam: f"/camera/{cam}/image_raw" + ("/compressed" if transport == "compressed" else "")
                              for cam in CAMERAS}
        for topic in self.camera_topics.values():
            node.create_subscription(image_type, topic, self._keep(topic, self.convert_frame), SENSOR_QOS)
        self.mask_topics = {cam: f"/camera/{cam}/mask" for cam in CAMERAS} if masks else {}
        for topic in self.mask_topics.values():
            node.create_subscription(Image, topic, self._keep(topic, self.convert_mask), SENSOR_QOS)
        self.proprio_topic = "/ee_pose" if proprio_type == "pose" else "/joint_states"
        self.read_proprio = proprio_from_pose if proprio_type == "pose" else JointStateSelector(JOINTS)
        self.proprio_type = PoseStamped if proprio_type == "pose" else JointState
        self.image_type = image_type
        node.create_subscription(self.proprio_type, self.proprio_topic, self._keep(self.proprio_topic, self.read_proprio),
                                 SENSOR_QOS)

    @staticmethod
    def convert_frame(msg) -> np.ndarray:
        return to_rgb(msg, None, max_pixels=NODE_MAX_PIXELS)  # policy_node._make_image_callback

    @staticmethod
    def convert_mask(msg) -> np.ndarray:
        return image_to_labels(msg, None, max_pixels=NODE_MAX_PIXELS)  # policy_node._make_image_callback(masks=True)

    def _keep(self, topic: str, convert):
        def callback(msg) -> None:
            self.values[(topic, stamp_ns(msg.header.stamp))] = convert(msg)
        return callback


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def bag_messages(bag: Path) -> list[tuple[int, str, bytes]]:
    """(receive ns, topic, bytes) of every message, in receive order."""
    with Reader(bag) as reader:
        items = [(t, conn.topic, bytes(raw)) for conn, t, raw in reader.messages()]
    return sorted(items, key=lambda item: item[0])


def episode_window(messages, marker_topic: str) -> tuple[int, int]:
    store = project_typestore()
    markers = {store.deserialize_cdr(raw, "std_msgs/msg/String").data: t for t, topic, raw in messages if topic == marker_topic}
    return markers["start"], markers["stop"]


def replay_policy_node(messages, inputs: PolicyNodeInputs, ticks_ns: np.ndarray):
    """The node's view at each tick: FrameBuffer.take() and the newest fresh proprioception, with the
    messages arriving at the recorder's receive times. -> (per tick: FrameSet or None, proprio or
    None), and how many messages the live subscriptions had missed (converted from the bag bytes)."""
    clock = [0.0]
    frames = FrameBuffer(CAMERAS, TOLERANCE_S, clock=lambda: clock[0], with_masks=bool(inputs.mask_topics))
    topic_camera = {topic: cam for cam, topic in inputs.camera_topics.items()}
    topic_mask = {topic: cam for cam, topic in inputs.mask_topics.items()}
    events = [(t, 0, topic, raw) for t, topic, raw in messages
              if topic in topic_camera or topic in topic_mask or topic == inputs.proprio_topic]
    events += [(int(t), 1, k, None) for k, t in enumerate(ticks_ns)]
    events.sort(key=lambda e: (e[0], e[1]))  # a message received at a tick's instant counts for it (<= tick)
    proprio: tuple[np.ndarray, float] | None = None
    views: list[tuple[FrameSet | None, np.ndarray | None]] = []
    missed = 0
    for t, kind, what, raw in events:
        clock[0] = t / 1e9
        if kind == 1:
            taken = frames.take()
            fresh = proprio is not None and clock[0] - proprio[1] <= TOLERANCE_S  # policy_node._hold_reason_locked
            views.append((taken if isinstance(taken, FrameSet) else None, proprio[0] if fresh else None))
            continue
        is_camera, is_mask = what in topic_camera, what in topic_mask
        msg = deserialize_message(raw, inputs.image_type if is_camera else Image if is_mask else inputs.proprio_type)
        value = inputs.values.get((what, stamp_ns(msg.header.stamp)))
        if value is None:  # lost by the test's best-effort subscription: the same bytes, converted alike
            missed += 1
            convert = inputs.convert_frame if is_camera else inputs.convert_mask if is_mask else inputs.read_proprio
            value = convert(msg)
        if is_camera:
            frames.put(topic_camera[what], value, stamp_ns(msg.header.stamp) / 1e9)
        elif is_mask:
            frames.put_mask(topic_mask[what], value, stamp_ns(msg.header.stamp) / 1e9)
        else:
            proprio = (value, clock[0])
    return views, missed


def commanded_at(messages, ticks_ns: np.ndarray, topics: dict[str, str]) -> np.ndarray:
    """The command values (float64, before the node turned them into a PoseStamped) newest at each tick."""
    out = []
    for stream, msg_type in (("action", PoseStamped), ("gripper", None)):
        items = [(t, raw) for t, topic, raw in messages if topic == topics[stream]]
        times = np.array([t for t, _ in items], np.int64)
        index = np.searchsorted(times, ticks_ns, side="right") - 1
        from astra_ros.msg import GripperCommand

        ks = [stamp_index(deserialize_message(items[i][1], msg_type or GripperCommand).header.stamp, RATES["command"])
              for i in index]
        values = np.stack([command_values(k) for k in ks])
        out.append(values[:, :6] if stream == "action" else values[:, 6:])
    return np.concatenate(out, axis=1)


def tiny_model(dataset: Path, action_space: str, proprio_dim: int) -> Astra:
    cfg = yaml.safe_load((REPO_ROOT / "astra_core" / "presets" / "tiny.yaml").read_text())
    cfg.update(cameras=CAMERAS, proprio_dim=proprio_dim, action_space={"kind": action_space, "num_bins": 64})
    stats = load_stats(dataset)
    torch.manual_seed(0)
    return Astra(AstraConfig.from_dict(cfg), stats.action, stats.proprio).eval()


def training_inputs(model: Astra, root: Path, steps: int, masks: bool) -> dict:
    """What training feeds the model: the dataset reader's window (with the boxes of its masks), then
    the model's own transforms."""
    window = TrajectoryWindowDataset(root, window=steps, max_objects=MAX_OBJECTS if masks else None)[0]
    batch = collate_windows([window])
    with torch.no_grad():
        images = batch["images"]
        states = model.encode_states(images, proprio=batch["proprio"], step_mask=batch["step_mask"])
        actions = model.action_space.to_model(batch["actions"])
        prompt, prompt_mask = model.encode_prompt(batch["instruction"])
        head = model(prompt, prompt_mask, states, actions, batch["step_mask"]).head
    return {"frames": images[0], "preprocessed": [model.vision.preprocess(images[0, :, m]) for m in range(len(CAMERAS))],
            "features": states.features[0], "actions": actions[0], "physical": batch["actions"][0],
            "proprio": batch["proprio"][0], "head": head[0], "timestamps": batch["timestamps"][0].numpy(),
            "object_boxes": batch["object_boxes"][0] if masks else None,
            "object_valid": batch["object_valid"][0] if masks else None}


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


@pytest.mark.parametrize("case", list(CASES))
def test_recorder_importer_and_policy_node_give_identical_model_inputs(case, tmp_path, ros_domain_id, start_recorder):
    transport, proprio_type, action_space, masks = CASES[case]
    suffix = "/compressed" if transport == "compressed" else ""
    params = dict(output="both", dataset_path=str(tmp_path / "recorded"), bag_path=str(tmp_path / "bags"),
                  bag_storage="mcap", camera_names=CAMERAS, transport=transport,
                  camera_topics=[f"/camera/{c}/image_raw{suffix}" for c in CAMERAS], action_space=action_space,
                  num_bins=64, action_topic="/target_pose", gripper_topic="/gripper_command",
                  proprio_topic="/ee_pose" if proprio_type == "pose" else "/joint_states", proprio_msg_type=proprio_type,
                  instruction_topic="/instruction", tolerance_s=TOLERANCE_S, status_rate_hz=5.0)
    if proprio_type == "joint_state":
        params["proprio_joint_names"] = JOINTS
    if masks:
        params["mask_topics"] = [f"/camera/{c}/mask" for c in CAMERAS]
    recorder = start_recorder(params)
    peer = DemoPeer(ros_domain_id)
    try:
        node_inputs = PolicyNodeInputs(peer.node, transport, proprio_type, masks)
        for cam in CAMERAS:
            peer.add_camera(cam, RATES["camera"], size=(48, 64), transport=transport, masks=masks)
        peer.add_pose_commands(RATES["command"])
        peer.add_ee_pose(RATES["proprio"]) if proprio_type == "pose" else peer.add_joint_states(RATES["proprio"])
        peer.start()
        peer.instruct(INSTRUCTION)
        peer.wait_for_recorder(lambda s: s.instruction == INSTRUCTION and not s.stale, 60, "fresh streams at the recorder")
        started = peer.call_recorder(StartRecording, "start_episode", StartRecording.Request(note=case))
        assert started.ok, started.message
        time.sleep(2.6)
        stopped = peer.call_recorder(StopRecording, "stop_episode", StopRecording.Request(success=True), timeout_s=90)
        assert stopped.ok and stopped.bag_path, stopped.message
        time.sleep(0.3)  # the test's own subscriptions take the last messages
    finally:
        peer.close()
    assert recorder.stop() == 0, recorder.log()[-3000:]

    recorded, imported = tmp_path / "recorded", tmp_path / "imported"
    mapping = load_mapping(RosbagMapping, tmp_path / "bags" / "import_mapping.yaml")
    report = import_bags([stopped.bag_path], mapping, imported, progress=False)
    assert report.ok, report.summary()
    assert validate_dataset(recorded)["ok"] and validate_dataset(imported)["ok"]

    messages = bag_messages(Path(stopped.bag_path))
    start_ns, end_ns = episode_window(messages, mapping.episodes.topic)
    assert start_ns == started.stamp.sec * 1_000_000_000 + started.stamp.nanosec
    ticks = tick_grid(start_ns, end_ns, mapping.control_rate_hz)
    steps = stopped.steps
    assert steps >= 15 and stopped.gap_steps == 0, stopped.message

    model = tiny_model(recorded, action_space, proprio_dim=6 if proprio_type == "pose" else len(JOINTS))
    a, b = training_inputs(model, recorded, steps, masks), training_inputs(model, imported, steps, masks)
    step_ticks = np.array([int(np.argmin(np.abs(ticks / 1e9 - ts))) for ts in a["timestamps"]])  # each step's tick
    assert np.abs(ticks[step_ticks] / 1e9 - a["timestamps"]).max() < 1e-6 and len(set(step_ticks)) == steps
    assert np.array_equal(a["timestamps"], b["timestamps"])

    views, missed = replay_policy_node(messages, node_inputs, ticks)
    node_frames = [views[k][0] for k in step_ticks]
    assert all(f is not None for f in node_frames), "the node would have held at a recorded step"
    node_proprio = np.stack([views[k][1] for k in step_ticks])
    node_images = [torch.stack([torch.from_numpy(np.array(f.images[c])) for f in node_frames]) for c in CAMERAS]
    commanded = commanded_at(messages, ticks[step_ticks], mapping.stream_topics())

    with torch.no_grad():
        node_pre = [model.vision.preprocess(img) for img in node_images]
        node_features = model.encode_states([img[None] for img in node_images],
                                            proprio=torch.from_numpy(node_proprio).float()[None]).features[0]
        # the runtime (what the node runs, BatchNorm folded), fed the node's inputs; its action history is the
        # executed command as the node records it (float64), as the dataset reader hands it to training
        runtime_head = {"float64": run_runtime(model, node_frames, node_proprio, commanded)}
        runtime_actions = model.action_space.to_model(torch.from_numpy(commanded))

    frames_a = a["frames"]
    figures = {
        "case": case, "steps": steps, "ticks": len(ticks), "messages_missed_live": missed,
        "frames_equal": {"imported": bool(torch.equal(frames_a, b["frames"])),
                         "node": all(torch.equal(frames_a[:, m], node_images[m]) for m in range(len(CAMERAS)))},
        "preprocessed_max_abs": {"imported": max(max_abs(x, y) for x, y in zip(a["preprocessed"], b["preprocessed"])),
                                 "node": max(max_abs(x, y) for x, y in zip(a["preprocessed"], node_pre))},
        "state_tokens_max_abs": {"imported": max_abs(a["features"], b["features"]),
                                 "node": max_abs(a["features"], node_features)},
        "actions_physical_max_abs": {"imported": max_abs(a["physical"], b["physical"]),
                                     "commanded": float(np.abs(a["physical"].double().numpy() - commanded).max())},
        "actions_model_form": ({"imported_bins_differing": int((a["actions"] != b["actions"]).sum()),
                                "runtime_bins_differing": int((a["actions"] != runtime_actions).sum())}
                               if model.action_space.is_discrete else
                               {"imported_max_abs": max_abs(a["actions"], b["actions"]),
                                "runtime_max_abs": max_abs(a["actions"], runtime_actions)}),
        "proprio_max_abs": {"imported": max_abs(a["proprio"], b["proprio"]),
                            "node_float64": float(np.abs(a["proprio"].double().numpy() - node_proprio).max()),
                            "node_as_model_input": max_abs(a["proprio"], torch.from_numpy(node_proprio).float())},
        "head_output_runtime_vs_training_max_abs": {name: max_abs(a["head"], head) for name, head in runtime_head.items()},
    }
    if masks:  # object boxes: the data loader's from the stored masks, the runtime's from the node's masks
        node_boxes = [[boxes_from_mask(f.masks[c], MAX_OBJECTS) for c in CAMERAS] for f in node_frames]
        boxes = torch.from_numpy(np.array([[b for b, _ in step] for step in node_boxes]))
        valid = torch.from_numpy(np.array([[v for _, v in step] for step in node_boxes]))
        figures["object_boxes_equal"] = {
            "imported": bool(torch.equal(a["object_boxes"], b["object_boxes"]) and torch.equal(a["object_valid"], b["object_valid"])),
            "node": bool(torch.equal(a["object_boxes"], boxes) and torch.equal(a["object_valid"], valid))}
        figures["objects_per_step"] = int(a["object_valid"].sum()) / steps
        # the node's pairs are by stamp: frame k carries the mask labelled k + 1 (recorder_harness.mask_labels)
        assert all(int(f.masks[c].max()) == round((f.stamps_s[c] - STREAM_T0_S) * RATES["camera"]) + 1
                   for f in node_frames for c in CAMERAS)
    print("parity " + json.dumps(figures))

    assert figures["frames_equal"] == {"imported": True, "node": True}
    if masks:
        assert figures["object_boxes_equal"] == {"imported": True, "node": True}
        assert figures["objects_per_step"] == len(CAMERAS)  # one object per mask: the pairs hold real masks
    assert figures["preprocessed_max_abs"] == {"imported": 0.0, "node": 0.0}
    assert figures["state_tokens_max_abs"] == {"imported": 0.0, "node": 0.0}
    assert figures["actions_physical_max_abs"]["imported"] == 0.0
    assert figures["actions_physical_max_abs"]["commanded"] < 1e-9  # the ZYX round trip only (~1e-15)
    model_form = figures["actions_model_form"]
    if model.action_space.is_discrete:
        assert model_form["imported_bins_differing"] == 0 and model_form["runtime_bins_differing"] == 0
    else:
        assert model_form["imported_max_abs"] == 0.0 and model_form["runtime_max_abs"] < 1e-6
    assert figures["proprio_max_abs"]["imported"] == 0.0 and figures["proprio_max_abs"]["node_as_model_input"] == 0.0
    assert figures["proprio_max_abs"]["node_float64"] < 1e-6  # float32 rounding of the reader only
    assert figures["head_output_runtime_vs_training_max_abs"]["float64"] < 1e-4  # BatchNorm folding, float rounding


def run_runtime(model: Astra, frames: list[FrameSet], proprio: np.ndarray, history: np.ndarray) -> torch.Tensor:
    """Head outputs of the streaming runtime, step by step, recording `history` as the executed actions."""
    runtime = AstraPolicy(copy.deepcopy(model), device="cpu")
    runtime.reset(INSTRUCTION)
    heads = []
    for t, frame_set in enumerate(frames):
        out = runtime.step({c: np.asarray(frame_set.images[c]) for c in CAMERAS}, None, proprio[t])
        heads.append(torch.from_numpy(out.head_output))
        runtime.record_executed(history[t].astype(np.float64))
    return torch.stack(heads)


def test_training_and_the_runtime_turn_the_same_actions_into_the_same_model_form(tmp_path):
    """The reader hands actions over in float64, as the runtime records executed commands: on a
    dimension of (near) zero spread float32 rounding alone moved a value by a bin (a defect this
    test found)."""
    from astra_core.action_space import ActionSpaceSpec
    from astra_core.data.writer import DatasetWriter

    actions = np.array([[0.1 * t, 0.2, 0.3, 0.0, 0.1, 0.2, 1.0] for t in range(4)])  # z, gripper constant
    with DatasetWriter(tmp_path / "d", ["front"], ActionSpaceSpec("continuous_pose6d"), 10.0, (8, 8)) as writer:
        with writer.begin_episode("x") as ep:
            for a in actions:
                ep.add_step({"front": np.zeros((8, 8, 3), np.uint8)}, a)
            ep.end(True)
    from astra_core.action_space import ActionSpace

    space = ActionSpace(ActionSpaceSpec("continuous_pose6d"), load_stats(tmp_path / "d").action)
    training = space.to_model(TrajectoryWindowDataset(tmp_path / "d", window=4)[0]["actions"])
    serving = space.to_model(torch.from_numpy(actions))  # AstraPolicy.record_executed
    assert max_abs(training, serving) < 1e-5
