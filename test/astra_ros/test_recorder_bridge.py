"""A bag recorded from the running tabletop simulator bridge imports into a dataset that trains
(issue 10, "done when"): bridge process -> expert commands relayed like a teleoperator's ->
recorder process (bag output) -> astra-import-rosbag -> validator -> 3 training steps.

All real: three processes (bridge, recorder, training) and the test's participant, DDS over
loopback in the test's own domain."""

from __future__ import annotations

import subprocess
import sys
import threading
from contextlib import ExitStack

import pytest

pytest.importorskip("astra_ros.sim_bridge")

from recorder_harness import REPO_ROOT, DemoPeer, start_recorder  # noqa: E402, F401 (start_recorder: a fixture)

from astra_core.data.import_mapping import load_mapping  # noqa: E402
from astra_core.data.import_rosbag import import_bags  # noqa: E402
from astra_core.data.rosbag_mapping import RosbagMapping  # noqa: E402
from astra_core.data.validate import validate_dataset  # noqa: E402
from astra_ros.msg import EpisodeEvent, PickPlaceSE2  # noqa: E402
from astra_ros.qos import COMMAND_QOS, EVENT_QOS  # noqa: E402
from astra_ros.ros_processes import RosProcess, loopback_environment  # noqa: E402
from astra_ros.srv import ResetEpisode, StartRecording, StopRecording  # noqa: E402

pytestmark = pytest.mark.timeout(420)

SIM = "/sim"
SEEDS = (0, 1, 2)


class ExpertRelay:
    """Forwards each new expert action of the bridge to its command topic after a pause, as a
    teleoperator would send a command after seeing the scene (each observation stamp once)."""

    def __init__(self, peer: DemoPeer, pause_s: float = 0.3) -> None:
        self.pause_s = pause_s
        self.enabled = threading.Event()
        self.sent = 0
        self._seen: set[tuple[int, int]] = set()
        self._publisher = peer.node.create_publisher(PickPlaceSE2, f"{SIM}/pick_place", COMMAND_QOS)
        peer.node.create_subscription(PickPlaceSE2, f"{SIM}/expert/pick_place", self._on_expert, COMMAND_QOS)
        self.events: list[EpisodeEvent] = []
        peer.node.create_subscription(EpisodeEvent, f"{SIM}/episode_event", self.events.append, EVENT_QOS)

    def _on_expert(self, msg: PickPlaceSE2) -> None:
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if not self.enabled.is_set() or key in self._seen:
            return  # republished observation: the same expert action
        self._seen.add(key)
        threading.Timer(self.pause_s, self._send, args=(msg,)).start()

    def _send(self, msg: PickPlaceSE2) -> None:
        if self.enabled.is_set():
            self._publisher.publish(msg)
            self.sent += 1


def test_bag_recorded_from_the_tabletop_bridge_imports_and_trains(tmp_path, ros_domain_id, start_recorder):
    env = loopback_environment(ros_domain_id)
    params = dict(output="rosbag", bag_path=str(tmp_path / "bags"), bag_storage="mcap", camera_names=["top", "front"],
                  camera_topics=[f"{SIM}/camera/top/image_raw", f"{SIM}/camera/front/image_raw"],
                  action_space="discrete_se2", num_bins=64, action_topic=f"{SIM}/pick_place", ticks="action",
                  instruction_topic="/instruction", status_rate_hz=5.0)
    stopped = []
    with ExitStack() as stack:  # every process and the participant end with the test, whatever happens
        bridge = RosProcess("astra_ros.sim_bridge", ["-p", "env:=tabletop", "-p", "env_options:=[image_size=64]",
                                                     "-p", "publish_expert:=true", "-p", "initial_seed:=-1",
                                                     "-r", f"__ns:={SIM}"], env, tmp_path / "bridge.log")
        stack.callback(bridge.stop)
        recorder = start_recorder(params)
        peer = DemoPeer(ros_domain_id)
        stack.callback(peer.close)
        relay = ExpertRelay(peer)
        for seed in SEEDS:
            reset = peer.call(ResetEpisode, f"{SIM}/reset_episode", ResetEpisode.Request(seed=seed), timeout_s=120)
            assert reset.ok, reset.message
            peer.instruct(reset.instruction)
            # (the command stream is stale until the first command: SE(2) commands come one per step)
            peer.wait_for_recorder(lambda s: s.instruction == reset.instruction and "camera" not in s.stale_reason, 60,
                                   f"the recorder with the instruction of seed {seed} and fresh cameras")
            started = peer.call_recorder(StartRecording, "start_episode", StartRecording.Request(note=f"tabletop seed {seed}"))
            assert started.ok, started.message
            relay.enabled.set()
            peer.wait_for(lambda: any(e.episode == reset.episode and e.event != EpisodeEvent.STARTED
                                      for e in list(relay.events)), 120, f"the end of episode {reset.episode}")
            relay.enabled.clear()
            outcome = next(e for e in relay.events if e.episode == reset.episode and e.event != EpisodeEvent.STARTED)
            done = peer.call_recorder(StopRecording, "stop_episode",
                                      StopRecording.Request(success=outcome.event == EpisodeEvent.SUCCESS), timeout_s=90)
            assert done.ok and done.bag_path and done.steps >= 1, done.message
            stopped.append(done)
        assert recorder.stop() == 0, recorder.log()[-3000:]

    mapping = load_mapping(RosbagMapping, tmp_path / "bags" / "import_mapping.yaml")
    report = import_bags([d.bag_path for d in stopped], mapping, tmp_path / "dataset", progress=False)
    assert report.ok, report.summary()
    print(report.summary())
    assert [e.steps for e in report.written] == [d.steps for d in stopped]  # the bag holds what the recorder counted
    assert validate_dataset(tmp_path / "dataset")["ok"]

    train = subprocess.run(
        [sys.executable, "-m", "astra_core.train", "--config", "config/train/tiny.yaml", f"data.root={tmp_path / 'dataset'}",
         "data.window=4", "data.val_fraction=0", "total_steps=3", "batch_size=2", "log_every=1", "val_every=0",
         "checkpoint_every=3", "device=cpu", f"output_dir={tmp_path / 'train'}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert list((tmp_path / "train").rglob("model.safetensors")), train.stdout[-2000:]
