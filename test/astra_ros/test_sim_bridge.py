"""The simulator bridge in its own process over real DDS, on the built-in tabletop: what it
publishes for an episode (frames, masks, camera info: one stamp, the simulator's exact pixels),
an expert episode driven through its command topic, refused commands, services, clean exit."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from astra_ros.bridge_params import coerce_bridge_value, format_env_options  # noqa: E402
from astra_ros.checkpoint_params import write_params_file  # noqa: E402
from astra_ros.image_conversion import image_to_labels, image_to_rgb  # noqa: E402
from astra_ros.msg import EpisodeEvent, PickPlaceSE2, SE2Pose  # noqa: E402
from astra_ros.qos import COMMAND_QOS, EVENT_QOS, SENSOR_QOS  # noqa: E402
from astra_ros.ros_processes import RosProcess, loopback_environment  # noqa: E402
from astra_ros.sim_bridge import SUMMARY_PREFIX  # noqa: E402
from astra_ros.srv import GetOutcome, ResetEpisode  # noqa: E402
from astra_sim.env import make_env  # noqa: E402
from astra_sim.evaluate import DEFAULT_EVAL_SEED  # noqa: E402

from node_harness import RosPeer, stamp_seconds  # noqa: E402

ENV_OPTIONS = {"image_size": 64, "action_bins": 64}
CAMERAS = ("top", "front")


def start_bridge(tmp_path, domain_id: int, **params) -> RosProcess:
    values = {"env": "tabletop", "env_options": format_env_options(ENV_OPTIONS), "initial_seed": -1, **params}
    path = write_params_file(tmp_path / "bridge.yaml", {k: coerce_bridge_value(k, v) for k, v in values.items()})
    return RosProcess("astra_ros.sim_bridge", ["--params-file", str(path)], loopback_environment(domain_id),
                      tmp_path / "bridge.log")


@pytest.fixture
def bridge(tmp_path, ros_domain_id):
    process = start_bridge(tmp_path, ros_domain_id, publish_expert=True)
    peer = RosPeer(ros_domain_id)
    peer.events = peer.record(EpisodeEvent, "/episode_event", EVENT_QOS)
    peer.topics = {f"{cam}/{kind}": peer.record(msg_type, f"/camera/{cam}/{kind}", SENSOR_QOS)
                   for cam in CAMERAS for kind, msg_type in (("image_raw", Image), ("mask", Image),
                                                              ("camera_info", CameraInfo))}
    peer.commands = peer.node.create_publisher(PickPlaceSE2, "/pick_place", COMMAND_QOS)
    try:
        yield process, peer
    finally:
        peer.close()
        process.stop()


def reset(peer: RosPeer, seed: int, task: str) -> ResetEpisode.Response:
    return peer.call(ResetEpisode, "/reset_episode", ResetEpisode.Request(seed=seed, task=task), timeout_s=60)


def ended(peer: RosPeer, episode: int):
    return next((e for e in peer.events.messages() if e.episode == episode and e.event != EpisodeEvent.STARTED), None)


def test_an_episode_shows_the_simulators_exact_observation_and_an_expert_solves_it(bridge):
    process, peer = bridge
    seed, task = DEFAULT_EVAL_SEED + 3, "place_pair"
    response = reset(peer, seed, task)
    assert response.ok and response.episode == 1, response.message
    obs, instruction = make_env("tabletop", **ENV_OPTIONS, tasks=[task]).reset(seed)
    assert response.instruction == instruction

    t_obs = stamp_seconds(response.stamp)
    for key, recorder in peer.topics.items():  # re-sent while the episode waits for a command
        peer.wait_for(lambda r=recorder: any(stamp_seconds(m.header.stamp) == t_obs for m in r.messages()), 30,
                      f"{key} of the first observation")
    for cam in CAMERAS:
        image = next(m for m in peer.topics[f"{cam}/image_raw"].messages() if stamp_seconds(m.header.stamp) == t_obs)
        mask = next(m for m in peer.topics[f"{cam}/mask"].messages() if stamp_seconds(m.header.stamp) == t_obs)
        info = next(m for m in peer.topics[f"{cam}/camera_info"].messages() if stamp_seconds(m.header.stamp) == t_obs)
        assert image.encoding == "rgb8" and mask.encoding == "mono16" and image.header.frame_id == f"{cam}_optical_frame"
        assert np.array_equal(image_to_rgb(image), obs.images[cam]) and np.array_equal(image_to_labels(mask), obs.masks[cam])
        assert (info.height, info.width) == (64, 64) and info.header.frame_id == image.header.frame_id
    started = [e for e in peer.events.messages() if e.episode == 1]
    assert started and started[0].event == EpisodeEvent.STARTED and started[0].instruction == instruction

    # the scripted expert's commands, relayed through the command topic like a policy's
    peer.node.create_subscription(PickPlaceSE2, "/expert/pick_place", peer.commands.publish, COMMAND_QOS)
    peer.wait_for(lambda: ended(peer, 1) is not None, 30, "the expert episode to end")
    event = ended(peer, 1)
    assert event.event == EpisodeEvent.SUCCESS and event.steps == 2 and event.commands_refused == 0, event
    outcome = peer.call(GetOutcome, "/get_outcome", GetOutcome.Request())
    assert outcome.ok and outcome.done and outcome.success and outcome.seed == seed and outcome.task == task


def test_bad_commands_are_counted_and_refused_and_the_bridge_goes_on(bridge):
    process, peer = bridge
    assert not reset(peer, 1, "no_such_task").ok  # unknown task: refused, nothing started
    response = reset(peer, DEFAULT_EVAL_SEED, "place")
    t_obs = stamp_seconds(response.stamp)
    expert = make_env("tabletop", **ENV_OPTIONS, tasks=["place"])
    expert.reset(DEFAULT_EVAL_SEED)
    good = expert.expert_action()

    def command(values, frame="base_link", stamp=None) -> PickPlaceSE2:
        msg = PickPlaceSE2()
        msg.header.frame_id, msg.header.stamp = frame, stamp if stamp is not None else peer.now()
        msg.pick = SE2Pose(x=float(values[0]), y=float(values[1]), theta=float(values[2]))
        msg.place = SE2Pose(x=float(values[3]), y=float(values[4]), theta=float(values[5]))
        return msg

    old = response.stamp
    old.sec -= 1  # computed before the observation it claims to answer
    for msg in (command(good, frame="world"), command(good, stamp=old), command([np.nan, *good[1:]])):
        peer.commands.publish(msg)

    def refused() -> str:
        return peer.call(GetOutcome, "/get_outcome", GetOutcome.Request()).refused_by_reason

    peer.wait_for(lambda: refused() == "frame: 1, nonfinite: 1, outdated: 1", 30, "three refusals counted")
    outcome = peer.call(GetOutcome, "/get_outcome", GetOutcome.Request())
    assert outcome.steps == 0 and not outcome.done and process.alive()
    peer.commands.publish(command(good))
    peer.wait_for(lambda: ended(peer, response.episode) is not None, 30, "the episode to end")
    assert ended(peer, response.episode).event == EpisodeEvent.SUCCESS
    assert stamp_seconds(ended(peer, response.episode).header.stamp) > t_obs
    assert process.stop() == 0
    summary = process.summary(SUMMARY_PREFIX)
    assert summary["steps"] == 1 and summary["episodes"] == 1 and summary["problems"]["frame"] == 1, summary
    assert summary["problems"]["reset"] == 1  # the unknown task


def test_a_bridge_that_cannot_build_its_simulator_exits_1_naming_why(tmp_path, ros_domain_id):
    process = start_bridge(tmp_path, ros_domain_id, env_options=format_env_options({"image_sise": 64}))
    try:
        code = process.proc.wait(120)
    finally:
        process.stop()
    assert code == 1 and "cannot start" in process.log() and "image_sise" in process.log(), process.log()[-2000:]
