"""lr0fm sweep: grid expansion, --dry-run status, resume after interruptions, bad configs."""
import numpy as np
import pytest

from lr0fm.cli import main
from lr0fm.store import ResultsStore


def strip_run(record):
    return {k: v for k, v in record.items() if k != "run"}


@pytest.fixture()
def sweep_config(tiny_open_clip, image_folder, tmp_path):
    """1 model x 2 datasets (same images, different prompts) x 3 resolutions = 6 cells in 2 groups."""
    (tmp_path / "prompts.txt").write_text("a blurry photo of a {}.\na {}\n")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"""
models: ["{tiny_open_clip[0]}"]
datasets:
  - imagefolder
  - {{key: imagefolder, templates: prompts.txt}}
data_root: {image_folder}
resolutions: [16, 32, hr]
batch_size: 3
workers: 0
checkpoint_every: 3
progress: false
""")
    return cfg


def dry_run(cfg, out, capsys):
    assert main(["sweep", str(cfg), "--dry-run", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return [l.split()[0] for l in lines[:-1]], lines[-1]


def test_interrupted_sweep_resumes_to_identical_records(sweep_config, tmp_path, monkeypatch, capsys):
    ref, out = tmp_path / "ref", tmp_path / "out"
    status, summary = dry_run(sweep_config, out, capsys)
    assert status == ["pending"] * 6 and summary.startswith("6 cells: 0 done, 6 pending")
    assert not (out / "records").exists()  # a dry run writes nothing

    assert main(["sweep", str(sweep_config), "--out", str(ref)]) == 0
    capsys.readouterr()

    # 1st interruption: mid-pass of the first group, right after its first resume point is saved
    real_save, real_put = ResultsStore.save_partial, ResultsStore.put

    def save_then_stop(self, group, **arrays):
        real_save(self, group, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultsStore, "save_partial", save_then_stop)
    assert main(["sweep", str(sweep_config), "--out", str(out)]) == 130
    monkeypatch.setattr(ResultsStore, "save_partial", real_save)
    assert list((out / "partial").glob("*.npz")) and not (out / "records").exists()

    # 2nd interruption: after the 4th record is written (the second group half finished)
    puts = []

    def put_then_stop(self, record, predictions=None):
        real_put(self, record, predictions)
        puts.append(record["cell"])
        if len(puts) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(ResultsStore, "put", put_then_stop)
    assert main(["sweep", str(sweep_config), "--out", str(out)]) == 130
    monkeypatch.setattr(ResultsStore, "put", real_put)
    capsys.readouterr()

    status, summary = dry_run(sweep_config, out, capsys)
    assert sorted(status) == ["done"] * 4 + ["pending"] * 2 and summary.startswith("6 cells: 4 done, 2 pending")

    assert main(["sweep", str(sweep_config), "--out", str(out)]) == 0
    capsys.readouterr()
    status, summary = dry_run(sweep_config, out, capsys)
    assert status == ["done"] * 6 and summary.startswith("6 cells: 6 done, 0 pending")

    a, b = ResultsStore(ref), ResultsStore(out)
    assert len(a.records()) == 6 and [strip_run(r) for r in a.records()] == [strip_run(r) for r in b.records()]
    for r in a.records():
        pa, pb = a.load_predictions(r["cell"]), b.load_predictions(r["cell"])
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not list((out / "partial").glob("*.npz"))
    # the two datasets differ only in prompts: both were run, as separate cells
    assert len({r["identity"]["data"]["templates"] for r in a.records()}) == 2

    # a finished sweep recomputes nothing
    mtimes = sorted(p.stat().st_mtime_ns for p in (out / "records").glob("*.json"))
    assert main(["sweep", str(sweep_config), "--out", str(out)]) == 0
    assert mtimes == sorted(p.stat().st_mtime_ns for p in (out / "records").glob("*.json"))


@pytest.mark.parametrize("text,match", [
    ("models: [x]\n", "non-empty 'datasets'"),
    ("models: [x]\ndatasets: [tuxpaint]\nbatchsize: 3\n", "unknown key.*batchsize"),
    ("models: [x]\ndatasets: [{key: imagefolder, root: d}]\n", "dataset entry"),
    ("models: [x\n", "not valid YAML"),
    ("models: [x]\ndatasets: [tuxpain]\n", "unknown dataset.*tuxpaint"),
    ("models: [x]\ndatasets: [imagefolder]\nsplit: 2017\n", r"dataset split 2017 must be text; quote it"),
    ("models: [x]\ndatasets: [{key: 7}]\n", r"dataset key 7 must be text"),
])
def test_bad_config_is_one_line_error(text, match, tmp_path, capsys):
    import re
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(match, err), err
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_options_on_the_command_line_override_the_config(sweep_config, tmp_path, capsys):
    """lr0fm sweep takes the run options lr0fm eval takes (one declaration): --limit on the command
    line wins over the file, and a bad value is one line before anything is written."""
    from lr0fm.records import limit_of
    from lr0fm.store import ResultsStore

    out = tmp_path / "out"
    assert main(["sweep", str(sweep_config), "--out", str(out), "--limit", "2", "--no-progress"]) == 0
    records = ResultsStore(out).records()
    assert records and {limit_of(r) for r in records} == {2} and {r["n_images"] for r in records} == {2}
    capsys.readouterr()
    assert main(["sweep", str(sweep_config), "--out", str(tmp_path / "bad"), "--batch-size", "0"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["lr0fm: error: --batch-size 0 must be at least 1"] and not (tmp_path / "bad").exists()


def test_model_files_beside_the_config_are_found_from_anywhere(tmp_path, monkeypatch):
    """Relative paths in a sweep config are the config folder's: model files too."""
    from lr0fm.sweep import load_config

    d = tmp_path / "exp"
    d.mkdir()
    (d / "arch.json").write_text("{}")
    (d / "ckpt.pt").write_bytes(b"")
    (d / "finetune").mkdir()
    (d / "sweep.yaml").write_text('models: ["open_clip:arch.json:ckpt.pt", "hf:finetune", "hf:org/name", '
                                  '"open_clip:ViT-B-32:openai"]\ndatasets: [tuxpaint]\n')
    monkeypatch.chdir(tmp_path)
    models = load_config("exp/sweep.yaml").models
    assert models == [f"open_clip:{d / 'arch.json'}:{d / 'ckpt.pt'}", f"hf:{d / 'finetune'}", "hf:org/name",
                      "open_clip:ViT-B-32:openai"]
