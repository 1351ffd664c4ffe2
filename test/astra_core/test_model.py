"""The Astra transformer: shapes, padding, encoding/decoding agreement, ablation switches, presets."""

import pytest
import torch

from astra_core.configuration import ConfigError
from astra_core.layout import TokenLayout
from astra_core.model import AstraConfig, Block
from astra_core.presets import load_preset, preset_names


def random_window(model, B=2, T=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    M, N = len(model.camera_names), model.action_space.dim
    images = torch.randint(0, 256, (B, T, M, 40, 40, 3), dtype=torch.uint8, generator=g)
    if model.action_space.is_discrete:
        actions = torch.randint(0, model.action_space.head_size, (B, T, N), generator=g)
    else:
        actions = torch.randn(B, T, N, generator=g)
    return images, actions


@pytest.mark.parametrize("kind", ["discrete_se2", "discrete_pose6d", "continuous_pose6d"])
def test_forward_shapes_for_every_action_space(tiny_model_factory, kind):
    model = tiny_model_factory(action_space=kind)
    images, actions = random_window(model)
    prompt, pmask = model.encode_prompt(["pick the red cube", "open the drawer slowly please"])
    out = model(prompt, pmask, model.encode_images(images), actions)
    assert out.shape == (2, 3, model.action_space.dim, model.action_space.head_size)
    emb = model.encode_trajectory(prompt, pmask, model.encode_images(images), actions, torch.ones(2, 3, dtype=torch.bool))
    assert emb.shape == (2, model.cfg.cdl_dim)


def test_prompt_padding_does_not_change_outputs(tiny_model_factory):
    model = tiny_model_factory()
    images, actions = random_window(model, B=1)
    tokens = model.encode_images(images)
    short = "push the cube"
    alone = model(*model.encode_prompt([short]), tokens, actions)
    prompt, pmask = model.encode_prompt([short, "a much longer instruction that forces padding of the short one"])
    padded = model(prompt[:1], pmask[:1], tokens, actions)
    assert pmask[0].sum() < pmask.shape[1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_right_padded_history_does_not_change_real_steps(tiny_model_factory):
    model = tiny_model_factory()
    images, actions = random_window(model, B=1, T=4)
    prompt, pmask = model.encode_prompt(["stack the blocks"])
    tokens = model.encode_images(images)
    full = model(prompt, pmask, tokens, actions)
    short = model(prompt, pmask, tokens[:, :2], actions[:, :2])
    torch.testing.assert_close(full[:, :2], short, atol=1e-5, rtol=1e-5)


def test_future_steps_do_not_leak_into_earlier_predictions(tiny_model_factory):
    model = tiny_model_factory()
    images, actions = random_window(model, B=1, T=3)
    prompt, pmask = model.encode_prompt(["stack the blocks"])
    base = model(prompt, pmask, model.encode_images(images), actions)
    images2, actions2 = images.clone(), actions.clone()
    images2[:, 2] = 255 - images2[:, 2]
    actions2[:, 1:] = (actions2[:, 1:] + 5) % model.action_space.head_size  # a_t itself is invisible to its queries
    changed = model(prompt, pmask, model.encode_images(images2), actions2)
    torch.testing.assert_close(base[:, :2], changed[:, :2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(base[:, 2], changed[:, 2])


def test_encoding_and_decoding_give_identical_embeddings_for_non_query_tokens(tiny_model_factory):
    model = tiny_model_factory()
    images, actions = random_window(model, B=1, T=3)
    prompt, pmask = model.encode_prompt(["put the red block in the bowl"])
    tokens = model.encode_images(images)
    dec_layout = TokenLayout(prompt.shape[1], 2, model.action_space.dim, 3, True)
    enc_layout = TokenLayout(prompt.shape[1], 2, model.action_space.dim, 3, False)
    x_dec, m_dec = model._embed_trajectory(dec_layout, prompt, pmask, tokens, actions)
    x_enc, m_enc = model._embed_trajectory(enc_layout, prompt, pmask, tokens, actions)
    h_dec = model.forward_tokens(x_dec, m_dec)
    h_enc = model.forward_tokens(x_enc, m_enc)
    keep = dec_layout.kind != 2
    torch.testing.assert_close(h_dec[:, keep], h_enc, atol=1e-5, rtol=1e-5)


def test_trajectory_and_causal_attention_differ_only_by_the_mask(tiny_model_factory):
    traj = tiny_model_factory(attention="trajectory")
    causal = tiny_model_factory(attention="causal")
    causal.load_state_dict(traj.state_dict())
    images, actions = random_window(traj, B=1)
    prompt, pmask = traj.encode_prompt(["open the drawer"])
    tokens = traj.encode_images(images)
    assert not torch.allclose(traj(prompt, pmask, tokens, actions), causal(prompt, pmask, tokens, actions))


def test_autoregressive_ablation_has_no_queries_and_reads_the_previous_token(tiny_model_factory):
    model = tiny_model_factory(action_decoding="autoregressive")
    assert model.query_emb is None
    images, actions = random_window(model, B=1, T=2)
    prompt, pmask = model.encode_prompt(["open the drawer"])
    tokens = model.encode_images(images)
    base = model(prompt, pmask, tokens, actions)
    changed_actions = actions.clone()
    changed_actions[0, 1, 3] = (changed_actions[0, 1, 3] + 7) % model.action_space.head_size
    out = model(prompt, pmask, tokens, changed_actions)
    # dims 0..3 of step 2 are predicted from tokens before a_{3}: unchanged; dim 4 reads a_{3}
    torch.testing.assert_close(base[0, 1, :4], out[0, 1, :4])
    assert not torch.allclose(base[0, 1, 4], out[0, 1, 4])


def test_window_longer_than_the_context_is_rejected(tiny_model_factory):
    model = tiny_model_factory(max_timesteps=2)
    images, actions = random_window(model, B=1, T=3)
    prompt, pmask = model.encode_prompt(["x"])
    with pytest.raises(ValueError, match="max_timesteps"):
        model(prompt, pmask, model.encode_images(images), actions)


def test_config_rejects_unknown_and_invalid_keys():
    with pytest.raises(ConfigError, match="valid keys"):
        AstraConfig.from_dict({"n_layers": 3})
    with pytest.raises(ConfigError, match="vision.*valid keys"):
        AstraConfig.from_dict({"vision": {"knd": "resnet"}})
    with pytest.raises(ConfigError, match="divisible"):
        AstraConfig.from_dict({"n_embd": 100, "n_head": 3})
    with pytest.raises(ConfigError, match="action_space.kind"):
        AstraConfig.from_dict({"action_space": {"kind": "joint_velocity"}})


# Paper sizes (section 4.2, appendix A.11): parameters of the transformer blocks.
PAPER_MILLIONS = {"19m": 19, "38m": 37.8, "43m": 43, "198m": 198}


@pytest.mark.parametrize("name", sorted(PAPER_MILLIONS))
def test_presets_have_the_papers_sizes(name):
    cfg = load_preset(name)
    blocks = cfg.n_layer * sum(p.numel() for p in Block(cfg).parameters())
    assert abs(blocks / 1e6 - PAPER_MILLIONS[name]) / PAPER_MILLIONS[name] < 0.02, blocks


def test_every_preset_loads():
    assert {"tiny", "19m", "38m", "43m", "198m"} <= set(preset_names())
    for name in preset_names():
        load_preset(name)
