"""open_clip and HF backends with randomly initialised small models through the real loading path."""
import json
import shutil

import pytest
import torch

from lr0fm.models import ModelError, create_model
from lr0fm.models.hub import save_pretrained_hash


def test_open_clip_local_checkpoint(tiny_open_clip):
    spec, cfg, ckpt = tiny_open_clip
    model = create_model(spec)
    assert model.preprocess.input_size == 64 and model.preprocess.mode == "shortest"
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
    assert model.preprocess.input_size == 64 and model.preprocess.mode == "shortest"
    assert model.info.weights_hash
    img = model.encode_image(torch.randn(3, 3, 64, 64))
    txt = model.encode_text(["a photo of a cat.", "a dog"])
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_hf_missing_weights_offline():
    with pytest.raises(ModelError, match="not available here"):
        create_model("hf:openai/clip-vit-base-patch32")


# -- weights are named: no silent random init, a digest for every way weights arrive ---------------
def test_open_clip_bare_arch_is_refused_with_its_tags(tiny_open_clip):
    with pytest.raises(ModelError) as err:
        create_model("open_clip:ViT-B-32")
    msg = str(err.value)
    assert "\n" not in msg and "openai" in msg and "laion2b_s34b_b79k" in msg and "open_clip:ViT-B-32:random" in msg
    with pytest.raises(ModelError) as err:  # an empty tag: the suggestions name the architecture alone
        create_model("open_clip:ViT-B-32:")
    msg = str(err.value)
    assert "open_clip:ViT-B-32:TAG" in msg and "open_clip:ViT-B-32:random" in msg and "::" not in msg
    _, cfg, _ = tiny_open_clip  # an architecture with no pretrained tags at all
    with pytest.raises(ModelError, match=f"no pretrained tags.*open_clip:{cfg}:random") as err:
        create_model(f"open_clip:{cfg}")
    assert "\n" not in str(err.value)


def test_open_clip_random_is_explicit_and_reproducible(tiny_open_clip, caplog):
    import logging

    from lr0fm.identity import model_part
    _, cfg, _ = tiny_open_clip
    torch.manual_seed(1)
    rng_before = torch.get_rng_state()
    with caplog.at_level(logging.WARNING):
        a = create_model(f"open_clip:{cfg}:random")
    assert torch.equal(torch.get_rng_state(), rng_before)  # the seeded init leaves the caller's RNG alone
    assert "initialized randomly" not in caplog.text  # asked for: open_clip's warning would be noise
    assert not logging.getLogger().filters  # dropped for that call only
    torch.manual_seed(2)
    b = create_model(f"open_clip:{cfg}:random")
    assert a.model_id == f"open_clip:{cfg}:random" and a.info.weights == "random"
    part = model_part(a)
    assert part["weights"].startswith("state:") and part == model_part(b)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert part["text"]["max_length"] == 16 and part["text"]["padding"] == "max_length"  # the context length


def test_open_clip_hf_hub_records_the_loaded_file(tiny_open_clip, tmp_path, monkeypatch):
    """hf-hub:ORG/NAME from a (fake, offline) Hugging Face cache: the weights digest is the sha256 of
    the file open_clip loaded, found without a download."""
    import huggingface_hub.constants
    from safetensors.torch import save_file

    from conftest import TINY_OPEN_CLIP_CFG
    from lr0fm.filedigest import sha256_file
    _, _, ckpt = tiny_open_clip
    repo = tmp_path / "models--lr0fm--tiny-oc"
    snapshot = repo / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("ab" * 20)
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP_CFG}))
    save_file(torch.load(ckpt, weights_only=True), snapshot / "open_clip_model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    model = create_model("hf-hub:lr0fm/tiny-oc")
    assert model.info.weights_hash == sha256_file(snapshot / "open_clip_model.safetensors")
    saved = torch.load(ckpt, weights_only=True)
    assert torch.equal(model.model.state_dict()["visual.conv1.weight"], saved["visual.conv1.weight"])
    with pytest.raises(ModelError, match="not available here"):
        create_model("hf-hub:lr0fm/not-cached")


def _resave_changed(folder):
    """Load the CLIPModel in ``folder``, change one weight, save it back in place."""
    from transformers import CLIPModel
    model = CLIPModel.from_pretrained(folder)
    with torch.no_grad():
        model.visual_projection.weight.add_(1.0)
    model.save_pretrained(folder)


def test_hf_local_folder_digest_follows_content_not_place(tiny_hf_clip, tmp_path):
    _, d = tiny_hf_clip
    folder = tmp_path / "a"
    shutil.copytree(d, folder)
    first = create_model(f"hf:{folder}").info.weights_hash
    assert first.startswith("sha256:")
    moved = tmp_path / "b"
    folder.rename(moved)
    assert create_model(f"hf:{moved}").info.weights_hash == first
    _resave_changed(moved)  # a fine-tune re-saved in the same folder is another model
    resaved = create_model(f"hf:{moved}").info.weights_hash
    assert resaved != first
    # the text side counts too (it is the model's); the image processor does not (the protocol has it)
    with open(moved / "tokenizer.json", "a") as f:
        f.write(" ")
    retokenized = save_pretrained_hash(moved)
    assert retokenized not in (first, resaved)
    (moved / "preprocessor_config.json").unlink()
    assert save_pretrained_hash(moved) == retokenized


def test_hf_sharded_folder_digest_covers_every_shard(tiny_hf_clip, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import CLIPModel
    _, d = tiny_hf_clip
    folder = tmp_path / "sharded"
    shutil.copytree(d, folder)
    (folder / "model.safetensors").unlink()
    CLIPModel.from_pretrained(d).save_pretrained(folder, max_shard_size="100KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and (folder / "model.safetensors.index.json").is_file()
    first = create_model(f"hf:{folder}").info.weights_hash
    assert first.startswith("sha256:")
    last = shards[-1]  # not the first file: every shard counts
    tensors = load_file(last)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, last, metadata={"format": "pt"})
    assert create_model(f"hf:{folder}").info.weights_hash != first


def test_hf_hub_id_records_the_resolved_commit(tiny_hf_clip, tmp_path, monkeypatch):
    """hf:ORG/NAME from a (fake, offline) Hugging Face cache: the weights digest is the commit the
    revision resolved to."""
    import huggingface_hub.constants
    _, d = tiny_hf_clip
    commit = "cd" * 20
    repo = tmp_path / "models--lr0fm--tiny-clip"
    shutil.copytree(d, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert create_model("hf:lr0fm/tiny-clip").info.weights_hash == f"hf-commit:{commit}"
