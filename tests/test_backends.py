"""open_clip and HF backends with randomly initialised small models through the real loading path."""
import pytest
import torch

from lr0fm.models import ModelError, create_model


def test_open_clip_local_checkpoint(tiny_open_clip):
    spec, cfg, ckpt = tiny_open_clip
    model = create_model(spec)
    assert model.preprocess.input_size == 64 and model.preprocess.resize_mode == "shortest"
    assert model.info.weights_hash and len(model.info.weights_hash) == 64
    img = model.encode_image(torch.randn(2, 3, 64, 64))
    txt = model.encode_text(["a photo of a cat.", "a photo of a dog."])
    assert img.shape == (2, 32) and txt.shape == (2, 32)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)
    # the checkpoint really was loaded: equal to the saved weights, not a fresh random init
    saved = torch.load(ckpt, weights_only=True)
    assert torch.equal(model.model.state_dict()["visual.conv1.weight"], saved["visual.conv1.weight"])


def test_open_clip_missing_checkpoint_fails_fast(tiny_open_clip, tmp_path):
    _, cfg, _ = tiny_open_clip
    with pytest.raises(ModelError, match="does not exist"):
        create_model(f"open_clip:{cfg}:{tmp_path / 'nope.pt'}")


def test_open_clip_tag_offline_fails_fast():
    import time
    t = time.time()
    with pytest.raises(ModelError, match="not available here"):
        create_model("open_clip:ViT-B-32:openai")
    assert time.time() - t < 30


def test_hf_clip_local_dir(tiny_hf_clip):
    spec, d = tiny_hf_clip
    model = create_model(spec)
    assert model.preprocess.input_size == 64 and model.preprocess.resize_mode == "shortest"
    assert model.info.weights_hash
    img = model.encode_image(torch.randn(3, 3, 64, 64))
    txt = model.encode_text(["a photo of a cat.", "a dog"])
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_hf_missing_weights_offline():
    with pytest.raises(ModelError, match="not available here"):
        create_model("hf:openai/clip-vit-base-patch32")
