"""Streaming inference equals a full recompute over the same history, and behaves on bad input."""

import numpy as np
import pytest
import torch

from astra_core.runtime import AstraPolicy, FullRecomputePolicy

KINDS = ["discrete_se2", "discrete_pose6d", "continuous_pose6d"]


def random_mask(rng, size, instances=4):
    """An instance mask with a few rectangles (labels 1..instances; some may be hidden by others)."""
    mask = np.zeros(size, np.uint16)
    for label in range(1, instances + 1):
        r, c = rng.integers(0, size[0] - 6), rng.integers(0, size[1] - 6)
        mask[r : r + rng.integers(3, 12), c : c + rng.integers(3, 12)] = label
    return mask


def drive(policies, cameras, steps, seed=0, size=(40, 48)):
    """Feed identical observations and executed actions to every policy; return outputs per step."""
    rng = np.random.default_rng(seed)
    outs = [[] for _ in policies]
    first = policies[0]
    for _ in range(steps):
        frames = {c: rng.integers(0, 256, (*size, 3), dtype=np.uint8) for c in cameras}
        masks = {c: random_mask(rng, size) for c in cameras} if first.needs_masks else None
        proprio = rng.normal(size=first.proprio_dim) if first.proprio_dim else None
        results = [p.step(frames, masks, proprio) for p in policies]
        for o, r in zip(outs, results):
            o.append(r)
        # executed != proposed, as after safety clipping
        executed = results[0].values + rng.normal(0, 0.05, results[0].values.shape)
        for p in policies:
            p.record_executed(executed)
    return outs


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attention", ["trajectory", "causal"])
def test_streaming_equals_full_recompute(tiny_model_factory, kind, attention):
    model = tiny_model_factory(action_space=kind, attention=attention, max_timesteps=5)
    stream, full = AstraPolicy(model, "cpu", keep_steps=2), FullRecomputePolicy(model, "cpu", keep_steps=2)
    for instruction in ["pick up the red cube", "now place it on the green plate"]:
        stream.reset(instruction)
        full.reset(instruction)
        # 12 steps with a 5-step window: crosses the context limit several times
        a, b = drive([stream, full], model.camera_names, steps=12)
        for s, f in zip(a, b):
            assert s.step == f.step
            assert np.abs(s.head_output - f.head_output).max() <= 1e-4
            np.testing.assert_allclose(s.model_values, f.model_values, atol=1e-4)
        assert stream.history_length <= model.cfg.max_timesteps


def test_a_one_step_context_sees_only_the_current_step(tiny_model_factory):
    """max_timesteps=1 (a model trained on one-step windows): every step starts a fresh context, so
    a step's output is what a freshly reset policy gives for that observation alone."""
    model = tiny_model_factory(action_space="continuous_pose6d", max_timesteps=1)
    rng = np.random.default_rng(0)
    frames = [{c: rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for c in model.camera_names} for _ in range(4)]
    stream, full = AstraPolicy(model, "cpu"), FullRecomputePolicy(model, "cpu")
    for policy in (stream, full):
        policy.reset("pick up the red cube")
    for obs in frames:
        s, f = stream.step(obs), full.step(obs)
        np.testing.assert_allclose(s.model_values, f.model_values, atol=1e-4)
        for policy in (stream, full):
            policy.record_executed(s.values + 0.1)
        assert stream.history_length == 1
        fresh = AstraPolicy(model, "cpu")
        fresh.reset("pick up the red cube")
        np.testing.assert_allclose(s.model_values, fresh.step(obs).model_values, atol=1e-5)
    assert s.step == 3  # steps keep counting for the episode; only the context restarts


STATE_KINDS = {
    "patches": {"state_tokens": "patches"},
    "objects": {"state_tokens": "objects", "max_objects": 3},
    "objects-pointer": {"state_tokens": "objects", "readout": "pointer"},
    "patches-pointer-proprio": {"state_tokens": "patches", "readout": "pointer", "proprio_dim": 2},
}


@pytest.mark.parametrize("decoding", ["queries", "autoregressive"])
@pytest.mark.parametrize("name", sorted(STATE_KINDS))
def test_streaming_equals_full_recompute_for_every_state_token_kind(tiny_model_factory, name, decoding):
    model = tiny_model_factory(action_space="discrete_se2", max_timesteps=4, action_decoding=decoding,
                               **STATE_KINDS[name])
    stream, full = AstraPolicy(model, "cpu", keep_steps=2), FullRecomputePolicy(model, "cpu", keep_steps=2)
    cached = FullRecomputePolicy(model, "cpu", keep_steps=2, reencode_images=False)
    for p in (stream, full, cached):
        p.reset("put the red block in the bowl")
    a, b, c = drive([stream, full, cached], model.camera_names, steps=7)
    for s, f, k in zip(a, b, c):
        assert np.abs(s.head_output - f.head_output).max() <= 1e-4
        assert np.abs(k.head_output - f.head_output).max() <= 1e-4
        np.testing.assert_allclose(s.values, f.values, atol=1e-4)
        np.testing.assert_array_equal(s.model_values, f.model_values)
        if s.pointer_choice is not None:
            np.testing.assert_array_equal(s.pointer_choice, f.pointer_choice)
    if name == "objects":  # 4 instances per mask, 3 slots: the smallest is dropped and counted
        assert all(s.dropped_objects >= 0 for s in a) and max(s.dropped_objects for s in a) >= 1


def test_streaming_equals_full_recompute_for_autoregressive_decoding(tiny_model_factory):
    model = tiny_model_factory(action_decoding="autoregressive", max_timesteps=4)
    stream, full = AstraPolicy(model, "cpu", keep_steps=1), FullRecomputePolicy(model, "cpu", keep_steps=1)
    stream.reset("open the drawer")
    full.reset("open the drawer")
    a, b = drive([stream, full], model.camera_names, steps=7)
    for s, f in zip(a, b):
        assert np.abs(s.head_output - f.head_output).max() <= 1e-4


def test_object_tokens_need_masks_and_proprio_needs_values(tiny_model_factory):
    model = tiny_model_factory(state_tokens="objects", readout="pointer", proprio_dim=2)
    policy = AstraPolicy(model, "cpu")
    policy.reset("pick")
    frames = {c: np.zeros((32, 32, 3), np.uint8) for c in model.camera_names}
    masks = {c: np.zeros((32, 32), np.uint16) for c in model.camera_names}
    with pytest.raises(ValueError, match="needs an instance mask per camera"):
        policy.step(frames, None, np.zeros(2))
    with pytest.raises(ValueError, match="proprio: expected 2 finite values"):
        policy.step(frames, masks, np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="differ in size"):
        policy.step(frames, {c: np.zeros((16, 16), np.uint16) for c in model.camera_names}, np.zeros(2))
    with pytest.raises(ValueError, match="no state token with table coordinates"):
        policy.step(frames, masks, np.zeros(2))  # empty masks: nothing to point at
    masks[model.camera_names[0]][4:9, 4:9] = 7
    out = policy.step(frames, masks, np.zeros(2))
    assert np.isfinite(out.values).all() and out.pointer_choice is not None
    plain = AstraPolicy(tiny_model_factory(), "cpu")
    plain.reset("pick")
    with pytest.raises(ValueError, match="not object tokens"):
        plain.step(frames, masks)
    with pytest.raises(ValueError, match="without proprioception"):
        plain.step(frames, None, np.zeros(2))


def test_the_history_holds_the_executed_action_not_the_proposal(tiny_model_factory):
    model = tiny_model_factory(action_space="continuous_pose6d")
    p1, p2 = AstraPolicy(model, "cpu"), AstraPolicy(model, "cpu")
    rng = np.random.default_rng(1)
    frames = [{c: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for c in model.camera_names} for _ in range(2)]
    p1.reset("x")
    p2.reset("x")
    first = p1.step(frames[0])
    p2.step(frames[0])
    p1.record_executed(first.values)  # executed as proposed
    p2.record_executed(first.values + 0.5)  # clipped / changed by the safety layer
    assert not np.allclose(p1.step(frames[1]).head_output, p2.step(frames[1]).head_output)


def test_reset_clears_the_history(tiny_model_factory):
    model = tiny_model_factory()
    policy = AstraPolicy(model, "cpu")
    rng = np.random.default_rng(2)
    frames = {c: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for c in model.camera_names}
    policy.reset("pick")
    first = policy.step(frames)
    policy.step(frames)
    policy.reset("pick")
    again = policy.step(frames)
    assert again.step == 0 and policy.history_length == 1
    np.testing.assert_allclose(first.head_output, again.head_output, atol=1e-6)


def test_bad_input_is_rejected_with_a_clear_message(tiny_model_factory):
    model = tiny_model_factory()
    policy = AstraPolicy(model, "cpu")
    good = {c: np.zeros((32, 32, 3), np.uint8) for c in model.camera_names}
    with pytest.raises(RuntimeError, match="reset"):
        policy.step(good)
    with pytest.raises(ValueError, match="non-empty"):
        policy.reset("   ")
    policy.reset("pick the cube")
    with pytest.raises(ValueError, match="missing \\['wrist'\\]"):
        policy.step({"front": good["front"]})
    with pytest.raises(ValueError, match="unexpected \\['side'\\]"):
        policy.step({**good, "side": good["front"]})
    with pytest.raises(ValueError, match="camera 'front': expected uint8"):
        policy.step({**good, "front": good["front"].astype(np.float32)})
    with pytest.raises(RuntimeError, match="before step"):
        policy.record_executed(np.zeros(7))
    out = policy.step(good)  # still usable after the errors
    with pytest.raises(ValueError, match="non-finite"):
        policy.record_executed(np.full(7, np.nan))
    with pytest.raises(ValueError, match="shape"):
        policy.record_executed(np.zeros(3))
    policy.record_executed(out.values)
    assert policy.step(good).step == 1


def test_cameras_of_different_sizes_are_accepted(tiny_model_factory):
    model = tiny_model_factory()
    policy = AstraPolicy(model, "cpu")
    policy.reset("pick")
    out = policy.step({"front": np.zeros((48, 64, 3), np.uint8), "wrist": np.zeros((32, 32, 3), np.uint8)})
    assert out.values.shape == (7,) and np.isfinite(out.values).all()


def test_fused_encoder_gives_the_same_actions(tiny_model_factory):
    """BatchNorm folded into the convolutions (+ channels-last) is the same function, up to rounding."""
    import copy

    model = tiny_model_factory(vision={"norm": "frozen_batch"})
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a pretrained encoder has
        for m in model.vision.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    plain, fused = AstraPolicy(copy.deepcopy(model), "cpu", fuse=False), AstraPolicy(copy.deepcopy(model), "cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.model.modules())
    for p in (plain, fused):
        p.reset("stack the blocks")
    a, b = drive([plain, fused], model.camera_names, steps=4)
    for s, f in zip(a, b):
        assert np.abs(s.head_output - f.head_output).max() <= 1e-4
