"""The semantic network C(x, t) over a tiny random open_clip model registered by pbw."""

import json

import open_clip
import pytest
import torch

from pbw.semantic import MissingWeightsError, PromptSet, SemanticNet, parse_clip_spec, register_model_configs


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return SemanticNet("pbw-tiny-clip", None, crops=5)


def test_registration_is_idempotent():
    names = register_model_configs()
    assert "pbw-tiny-clip" in names and "pbw-tiny-clip" in open_clip.list_models()
    n = len(open_clip.list_models())
    register_model_configs()
    assert len(open_clip.list_models()) == n


def test_views_shapes_range_and_gradients(clip):
    x = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_()
    v = clip.views(x, None, crops=5)
    assert v.shape == (10, 3, clip.image_size, clip.image_size)
    # undo CLIP's normalization: back in [0, 1]
    raw = v * clip.std + clip.mean
    assert raw.min() >= -1e-4 and raw.max() <= 1 + 1e-4
    t, w = clip.targets([PromptSet.parse("a bird"), PromptSet.parse("a cat")])
    loss = clip.loss_from_cos(clip.similarity(x, None, (t, w)), w).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_paste_onto_blank_hides_outside(clip):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    m = torch.zeros(1, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    y = x.clone()
    y[..., :4, :] = -x[..., :4, :]  # change only outside the mask
    assert torch.allclose(clip.views(x, m, crops=0), clip.views(y, m, crops=0))


def test_zoom_view_looks_only_inside_the_mask_box():
    c = SemanticNet("pbw-tiny-clip", None, crops=4, view="zoom")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    m = torch.zeros(1, 1, 64, 64)
    m[..., 10:30, 20:40] = 1
    box = c._base_boxes(x, m)[0]
    assert box[0] >= 20 - 1e-4 and box[2] <= 40 + 1e-4 and box[1] <= 10 and box[3] >= 30 - 1e-4
    y = x.clone()
    y[..., 40:, :] = 0.123  # far outside the box
    assert torch.allclose(c.views(x, m, crops=0), c.views(y, m, crops=0))


def test_crops_are_70_to_98_percent_and_inside():
    c = SemanticNet("pbw-tiny-clip", None, crops=500)
    base = torch.tensor([[0.0, 0.0, 100.0, 100.0], [20.0, 30.0, 60.0, 70.0]])
    boxes = c.crop_boxes(base, torch.rand(2, 500, 3))
    side = boxes[..., 2] - boxes[..., 0]
    assert torch.allclose(side, boxes[..., 3] - boxes[..., 1])
    assert side[0].min() >= 70 and side[0].max() <= 98 and side[0].max() - side[0].min() > 20
    assert side[1].min() >= 28 and side[1].max() <= 39.2
    assert (boxes[1, :, 0] >= 20).all() and (boxes[1, :, 2] <= 60 + 1e-4).all()
    assert (boxes[1, :, 1] >= 30).all() and (boxes[1, :, 3] <= 70 + 1e-4).all()


def test_text_embeddings_are_cached(clip, monkeypatch):
    clip.encode_texts(["a bird with a red head"])
    calls = []
    orig = clip.model.encode_text
    monkeypatch.setattr(clip.model, "encode_text", lambda t: calls.append(t) or orig(t))
    e = clip.encode_texts(["a bird with a red head", "a bird with a red head"])
    assert not calls and e.shape[0] == 2 and torch.allclose(e.norm(dim=-1), torch.ones(2))
    clip.encode_texts(["something new"])
    assert len(calls) == 1


def test_prompt_weights_and_negatives(clip):
    p = PromptSet.parse("a red head::2 | a crown", negative="blurry")
    assert p.texts == ["a red head", "a crown", "blurry"] and p.weights == [2.0, 1.0, -1.0]
    cos = torch.tensor([[[0.5, 0.2, 0.4]]])
    w = torch.tensor([p.weights])
    expected = 100 * ((2 * 0.5 + 1 * 0.8) + 1 * 0.4) / 3
    assert torch.allclose(clip.loss_from_cos(cos, w), torch.tensor([expected]))
    assert torch.allclose(clip.score_from_cos(cos, w), torch.tensor([(2 * 0.5 + 0.2) / 3]))
    with pytest.raises(ValueError, match="no positive prompt"):
        PromptSet.parse("", negative="x")
    with pytest.raises(ValueError, match="not a number"):
        PromptSet.parse("a::b")


def test_long_prompt_is_truncated_with_a_warning(clip):
    with pytest.warns(UserWarning, match="longer than CLIP's context"):
        e = clip.encode_texts(["bird " * 100])
    assert e.shape == (1, 32)


def test_local_checkpoint_file_loads(tmp_path, clip):
    path = tmp_path / "tiny.pt"
    torch.save(clip.model.state_dict(), path)
    c2 = SemanticNet.from_spec(f"pbw-tiny-clip:{path}")
    for a, b in zip(clip.model.state_dict().values(), c2.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": open_clip.get_model_config("pbw-tiny-clip")})
    )
    torch.save(clip.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    c3 = SemanticNet.from_spec(f"local-dir:{folder}")
    assert torch.equal(c3.model.text_projection, clip.model.text_projection)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        SemanticNet("pbw-tiny-clip", str(tmp_path / "missing.pt"))


def test_missing_weights_offline_says_which_file_and_how(monkeypatch):
    def offline(*a, **k):
        raise RuntimeError("Failed to download weights for tag 'openai': no internet")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(MissingWeightsError) as e:
        SemanticNet("ViT-B-32", "openai")
    msg = str(e.value)
    assert "open_clip_pytorch_model.bin" in msg and "timm/vit_base_patch32_clip_224.openai" in msg
    assert "--clip ViT-B-32-quickgelu:/path/to/file" in msg


def test_spec_parsing_and_unknown_tag():
    assert parse_clip_spec("ViT-B-32") == ("ViT-B-32", "openai")
    assert parse_clip_spec("ViT-B-32:laion2b_s34b_b79k") == ("ViT-B-32", "laion2b_s34b_b79k")
    assert parse_clip_spec("pbw-tiny-clip:random") == ("pbw-tiny-clip", None)
    assert parse_clip_spec("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    assert parse_clip_spec("local-dir:/a/b") == ("local-dir:/a/b", None)
    with pytest.raises(ValueError, match="not an open_clip tag"):
        SemanticNet("pbw-tiny-clip", "no-such-tag")
