"""The Astra transformer: shapes, padding, encoding/decoding agreement, ablation switches, state
token kinds, the pointer readout, no leakage of the future (also in train mode), presets."""

import pytest
import torch

from astra_core.configuration import ConfigError
from astra_core.layout import TokenLayout
from astra_core.model import AstraConfig, Block
from astra_core.presets import preset_names, standalone_config


def random_window(model, B=2, T=3, seed=0, size=40):
    """Random images, object boxes (some slots empty), proprio and actions for a window."""
    g = torch.Generator().manual_seed(seed)
    C, N, K = len(model.camera_names), model.action_space.dim, model.cfg.max_objects
    images = torch.randint(0, 256, (B, T, C, size, size, 3), dtype=torch.uint8, generator=g)
    corner = torch.rand(B, T, C, K, 2, generator=g) * 0.7
    far = corner + 0.1 + 0.2 * torch.rand(B, T, C, K, 2, generator=g)
    boxes = torch.cat([corner, far, (corner + far) / 2], dim=-1)
    valid = torch.rand(B, T, C, K, generator=g) < 0.7
    valid[..., 0] = True
    proprio = torch.randn(B, T, model.cfg.proprio_dim, generator=g) if model.cfg.proprio_dim else None
    if model.action_space.is_discrete:
        actions = torch.randint(0, model.action_space.head_size, (B, T, N), generator=g)
    else:
        actions = torch.randn(B, T, N, generator=g)
    return {"images": images, "object_boxes": boxes, "object_valid": valid, "proprio": proprio}, actions


def states_of(model, obs, step_mask=None):
    return model.encode_states(obs["images"], obs["object_boxes"], obs["object_valid"], obs["proprio"], step_mask)


def run(model, prompt, pmask, obs, actions):
    return model(prompt, pmask, states_of(model, obs), actions)


STATE_KINDS = [
    {"state_tokens": "pooled"},
    {"state_tokens": "patches"},
    {"state_tokens": "objects"},
    {"state_tokens": "objects", "readout": "pointer"},
    {"state_tokens": "patches", "readout": "pointer", "proprio_dim": 3},
]


@pytest.mark.parametrize("kind", ["discrete_se2", "discrete_pose6d", "continuous_pose6d"])
def test_forward_shapes_for_every_action_space(tiny_model_factory, kind):
    model = tiny_model_factory(action_space=kind)
    obs, actions = random_window(model)
    prompt, pmask = model.encode_prompt(["pick the red cube", "open the drawer slowly please"])
    out = run(model, prompt, pmask, obs, actions)
    assert out.head.shape == (2, 3, model.action_space.dim, model.action_space.head_size)
    emb = model.encode_trajectory(prompt, pmask, states_of(model, obs), actions, torch.ones(2, 3, dtype=torch.bool))
    assert emb.shape == (2, model.cfg.cdl_dim)


@pytest.mark.parametrize("options", STATE_KINDS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_every_state_token_kind_gives_its_segment(tiny_model_factory, options):
    model = tiny_model_factory(action_space="discrete_se2", **options)
    obs, actions = random_window(model)
    states = states_of(model, obs)
    per_camera = {"pooled": 1, "objects": model.cfg.max_objects}.get(options["state_tokens"], model.tokens_per_camera)
    M = len(model.camera_names) * per_camera + (1 if options.get("proprio_dim") else 0)
    assert states.features.shape == (2, 3, M, model.cfg.n_embd) and model.state_len == M
    prompt, pmask = model.encode_prompt(["a", "b"])
    out = model(prompt, pmask, states, actions)
    physical, model_form = model.decode(out, states)
    assert physical.shape == model_form.shape == (2, 3, 6) and torch.isfinite(physical).all()
    if options.get("readout") == "pointer":
        assert out.pointer_logits.shape == (2, 3, 2, M)
        assert torch.isinf(out.pointer_logits[~states.has_coords[:, :, None].expand_as(out.pointer_logits)]).all()


def test_empty_object_slots_are_invisible(tiny_model_factory):
    model = tiny_model_factory(state_tokens="objects")
    obs, actions = random_window(model, B=1)
    prompt, pmask = model.encode_prompt(["put the red block in the bowl"])
    base = run(model, prompt, pmask, obs, actions).head
    moved = dict(obs, object_boxes=obs["object_boxes"].clone())
    moved["object_boxes"][~obs["object_valid"]] = torch.tensor([0.0, 0.0, 0.9, 0.9, 0.3, 0.4])
    torch.testing.assert_close(run(model, prompt, pmask, moved, actions).head, base)
    shown = dict(obs, object_valid=torch.ones_like(obs["object_valid"]))
    assert not torch.allclose(run(model, prompt, pmask, shown, actions).head, base)


def test_pointer_positions_are_token_coordinates_plus_offset(tiny_model_factory):
    model = tiny_model_factory(action_space="discrete_se2", state_tokens="objects", readout="pointer")
    obs, actions = random_window(model, B=1, T=1)
    states = states_of(model, obs)
    prompt, pmask = model.encode_prompt(["pick"])
    out = model(prompt, pmask, states, actions)
    with torch.no_grad():
        out.pointer_offset.zero_()
    physical, _ = model.decode(out, states)
    for g, (ix, iy) in enumerate(model.action_space.spec.position_pairs):
        k = out.pointer_logits[0, 0, g].argmax()
        assert out.pointer_choice[0, 0, g] == k  # at run time the choice is the argmax
        assert states.has_coords[0, 0, k]
        expected = states.coords[0, 0, k].double().clamp(-1, 1)  # unit stats: range [-1, 1]
        torch.testing.assert_close(physical[0, 0, [ix, iy]], expected)
    # camera 0 is calibrated with (x, y) = (v, u): coordinates are the box centres, swapped
    centroid = obs["object_boxes"][0, 0, 0, 0, 4:]
    torch.testing.assert_close(states.coords[0, 0, 0], centroid.flip(0))


def test_padding_frames_never_reach_the_encoder(tiny_model_factory):
    model = tiny_model_factory(state_tokens="objects")
    obs, actions = random_window(model, B=2, T=3)
    step_mask = torch.tensor([[True, True, True], [True, False, False]])
    seen = []
    handle = model.vision.backbone.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True)
    states = states_of(model, obs, step_mask)
    handle.remove()
    valid = obs["object_valid"][step_mask]  # (4 real steps, C, K)
    assert sum(seen) == int(valid.sum())  # one crop per real object, nothing for padding
    assert not states.valid[~step_mask].any()
    assert (states.features[~step_mask] == 0).all()


def test_prompt_padding_does_not_change_outputs(tiny_model_factory):
    model = tiny_model_factory()
    obs, actions = random_window(model, B=1)
    states = states_of(model, obs)
    short = "push the cube"
    alone = model(*model.encode_prompt([short]), states, actions).head
    prompt, pmask = model.encode_prompt([short, "a much longer instruction that forces padding of the short one"])
    padded = model(prompt[:1], pmask[:1], states, actions).head
    assert pmask[0].sum() < pmask.shape[1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_right_padded_history_does_not_change_real_steps(tiny_model_factory):
    model = tiny_model_factory()
    obs, actions = random_window(model, B=1, T=4)
    prompt, pmask = model.encode_prompt(["stack the blocks"])
    states = states_of(model, obs)
    full = model(prompt, pmask, states, actions).head
    short = model(prompt, pmask, states.map(lambda x: x[:, :2]), actions[:, :2]).head
    torch.testing.assert_close(full[:, :2], short, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options", [
    {},  # resnet with GroupNorm (built from scratch)
    {"vision": {"norm": "frozen_batch"}},  # resnet BatchNorm kept in eval mode
    {"state_tokens": "objects", "readout": "pointer", "action_space": "discrete_se2",
     "vision": {"kind": "convnet", "hidden_sizes": [8, 16]}},
], ids=["group", "frozen_batch", "objects-convnet"])
def test_future_steps_do_not_leak_into_earlier_predictions_in_train_mode(tiny_model_factory, options):
    """pi(a_t | p, s_<=t, a_<t): nothing about later steps may reach earlier predictions, also
    through statistics of the batch (BatchNorm in train mode mixes every image of the batch)."""
    model = tiny_model_factory(**options).train()
    obs, actions = random_window(model, B=2, T=3)
    prompt, pmask = model.encode_prompt(["stack the blocks", "open the drawer"])
    torch.manual_seed(0)
    base = run(model, prompt, pmask, obs, actions).head
    changed = dict(obs, images=obs["images"].clone())
    changed["images"][:, 2] = 255 - changed["images"][:, 2]
    actions2 = actions.clone()
    actions2[:, 1:] = (actions2[:, 1:] + 5) % model.action_space.head_size  # a_t itself is invisible to its queries
    torch.manual_seed(0)
    out = run(model, prompt, pmask, changed, actions2).head
    torch.testing.assert_close(base[:, :2], out[:, :2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base[:, 2], out[:, 2])


def test_train_mode_batchnorm_would_leak_the_future():
    """The leak the norm choice prevents: a ResNet with BatchNorm in train mode mixes timesteps."""
    from astra_core.encoders import VisionConfig, VisionEncoder

    leaky = VisionEncoder(VisionConfig(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8,
                                       norm="frozen_batch", pretrained_path=None))
    leaky.train()
    for m in leaky.backbone.modules():  # what the encoder did before: BatchNorm left in train mode
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    later = images.clone()
    later[1] = 255 - later[1]
    assert not torch.allclose(leaky(images)[0], leaky(later)[0])
    leaky.train()  # the encoder's own train(): BatchNorm stays in eval mode
    torch.testing.assert_close(leaky(images)[0], leaky(later)[0])


def test_encoding_and_decoding_give_identical_embeddings_for_non_query_tokens(tiny_model_factory):
    model = tiny_model_factory()
    obs, actions = random_window(model, B=1, T=3)
    prompt, pmask = model.encode_prompt(["put the red block in the bowl"])
    states = states_of(model, obs)
    M = model.state_len
    dec_layout = TokenLayout(prompt.shape[1], M, model.action_space.dim, 3, True)
    enc_layout = TokenLayout(prompt.shape[1], M, model.action_space.dim, 3, False)
    x_dec, m_dec = model._embed_trajectory(dec_layout, prompt, pmask, states, actions)
    x_enc, m_enc = model._embed_trajectory(enc_layout, prompt, pmask, states, actions)
    h_dec = model.forward_tokens(x_dec, m_dec)
    h_enc = model.forward_tokens(x_enc, m_enc)
    keep = dec_layout.kind != 2
    torch.testing.assert_close(h_dec[:, keep], h_enc, atol=1e-5, rtol=1e-5)


def test_trajectory_and_causal_attention_differ_only_by_the_mask(tiny_model_factory):
    traj = tiny_model_factory(attention="trajectory")
    causal = tiny_model_factory(attention="causal")
    causal.load_state_dict(traj.state_dict())
    obs, actions = random_window(traj, B=1)
    prompt, pmask = traj.encode_prompt(["open the drawer"])
    assert not torch.allclose(run(traj, prompt, pmask, obs, actions).head, run(causal, prompt, pmask, obs, actions).head)


@pytest.mark.parametrize("readout", ["heads", "pointer"])
def test_autoregressive_ablation_has_no_queries_and_reads_the_previous_token(tiny_model_factory, readout):
    extra = {"state_tokens": "objects", "readout": "pointer"} if readout == "pointer" else {}
    model = tiny_model_factory(action_decoding="autoregressive", **extra)
    assert model.query_emb is None
    obs, actions = random_window(model, B=1, T=2)
    prompt, pmask = model.encode_prompt(["open the drawer"])
    states = states_of(model, obs)
    base = model(prompt, pmask, states, actions)
    changed_actions = actions.clone()
    changed_actions[0, 1, 3] = (changed_actions[0, 1, 3] + 7) % model.action_space.head_size
    out = model(prompt, pmask, states, changed_actions)
    # dims 0..3 of step 2 are predicted from tokens before a_{3}: unchanged; dim 4 reads a_{3}
    torch.testing.assert_close(base.head[0, 1, :4], out.head[0, 1, :4])
    assert not torch.allclose(base.head[0, 1, 4], out.head[0, 1, 4])
    if readout == "pointer":  # pose6d: the one pair (x, y) is asked by dimension 0
        torch.testing.assert_close(base.pointer_logits, out.pointer_logits)


def test_window_longer_than_the_context_is_rejected(tiny_model_factory):
    model = tiny_model_factory(max_timesteps=2)
    obs, actions = random_window(model, B=1, T=3)
    prompt, pmask = model.encode_prompt(["x"])
    with pytest.raises(ValueError, match="max_timesteps"):
        run(model, prompt, pmask, obs, actions)


def test_missing_inputs_of_the_state_tokens_are_named(tiny_model_factory):
    model = tiny_model_factory(state_tokens="objects", proprio_dim=2)
    obs, _ = random_window(model, B=1)
    with pytest.raises(ValueError, match="object tokens"):
        model.encode_states(obs["images"], None, None, obs["proprio"])
    with pytest.raises(ValueError, match="proprioception of 2"):
        model.encode_states(obs["images"], obs["object_boxes"], obs["object_valid"], None)


def test_config_rejects_unknown_and_invalid_keys():
    with pytest.raises(ConfigError, match="valid keys"):
        AstraConfig.from_dict({"n_layers": 3})
    with pytest.raises(ConfigError, match="vision.*valid keys"):
        AstraConfig.from_dict({"vision": {"knd": "resnet"}})
    with pytest.raises(ConfigError, match="divisible"):
        AstraConfig.from_dict({"n_embd": 100, "n_head": 3})
    with pytest.raises(ConfigError, match="action_space.kind"):
        AstraConfig.from_dict({"action_space": {"kind": "joint_velocity"}})
    with pytest.raises(ConfigError, match="readout=pointer points at state tokens"):
        AstraConfig.from_dict({"readout": "pointer"})
    with pytest.raises(ConfigError, match="calibrated camera"):
        AstraConfig.from_dict({"readout": "pointer", "state_tokens": "objects"})
    with pytest.raises(ConfigError, match="singular"):
        AstraConfig.from_dict({"calibration": {"front": [[0, 0, 0], [0, 0, 0], [0, 0, 1]]}})
    with pytest.raises(ConfigError, match="unknown camera"):
        AstraConfig.from_dict({"calibration": {"side": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}})


# Paper sizes (section 4.2, appendix A.11): parameters of the transformer blocks.
PAPER_MILLIONS = {"19m": 19, "38m": 37.8, "43m": 43, "198m": 198}


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_presets_have_the_papers_sizes(name):
    cfg = standalone_config(name)
    blocks = cfg.n_layer * sum(p.numel() for p in Block(cfg).parameters())
    assert abs(blocks / 1e6 - PAPER_MILLIONS[name]) / PAPER_MILLIONS[name] < 0.02, blocks


def test_every_preset_loads():
    assert {"tiny", "19m", "38m", "43m", "198m", "tabletop_objects"} <= set(preset_names())
    for name in preset_names():
        standalone_config(name)


def test_se2_place_angle_is_the_pick_angle_plus_the_predicted_rotation(tiny_model_factory):
    import math

    model = tiny_model_factory(action_space="discrete_se2", state_tokens="objects", readout="pointer")
    assert model.relative_rotation == (2, 5)
    obs, actions = random_window(model, B=1, T=1)
    states = states_of(model, obs)
    K = model.action_space.head_size
    head = torch.zeros(1, 1, 6, K)
    head[0, 0, 2, K // 2 + 5] = 10.0  # pick angle: a bin above the middle of its range
    rotation = 0.5
    head[0, 0, 5, model.rotation_bins(torch.tensor(rotation))] = 10.0
    out = model(*model.encode_prompt(["rotate it"]), states, actions)
    out.head = head
    physical, _ = model.decode(out, states)
    pick = model.action_space.from_model(torch.full((6,), K // 2 + 5))[2]
    assert abs(float(physical[0, 0, 5]) - (float(pick) + rotation)) <= math.pi / K + 1e-9
    # bins cover the circle: -pi and pi are the same bin, every rotation maps into [0, K)
    assert model.rotation_bins(torch.tensor([-math.pi, math.pi])).tolist() == [0, 0]


def test_training_reads_the_recorded_token_and_run_time_the_argmax(tiny_model_factory):
    model = tiny_model_factory(action_space="discrete_se2", state_tokens="objects", readout="pointer")
    obs, actions = random_window(model, B=1, T=2)
    obs["object_valid"][:] = True
    states = states_of(model, obs)
    prompt, pmask = model.encode_prompt(["put the red block in the bowl"])
    physical = torch.zeros(1, 2, 6)
    physical[..., [0, 1]] = states.coords[0, :, 3].float()  # pick exactly at token 3's position
    physical[..., [3, 4]] = states.coords[0, :, 0].float()
    teacher = model.nearest_tokens(states, physical)
    assert teacher[..., 0].tolist() == [[3, 3]] and teacher[..., 1].tolist() == [[0, 0]]
    forced = model(prompt, pmask, states, actions, pointer_target=teacher)
    free = model(prompt, pmask, states, actions)
    assert torch.equal(forced.pointer_choice, teacher)
    assert torch.equal(free.pointer_choice, free.pointer_logits.argmax(-1))
    torch.testing.assert_close(forced.pointer_logits, free.pointer_logits)  # the pointer itself is not forced
