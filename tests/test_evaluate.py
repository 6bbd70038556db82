"""Evaluator + results store: single pass, skipped files, resume after a kill, bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lr0fm.cli import main
from lr0fm.classifier import build_zero_shot_classifier, cached_classifier
from lr0fm.datasets import get_dataset
from lr0fm.evaluation import EvalConfig, evaluate
from lr0fm.identity import digest
from lr0fm.models import create_model
from lr0fm.records import protocol_of
from lr0fm.store import ResultsStore

from conftest import make_image


def strip_run(record):
    return {k: v for k, v in record.items() if k != "run"}


@pytest.fixture(scope="module")
def tiny_model(tiny_open_clip):
    return create_model(tiny_open_clip[0])


def test_classifier_is_mean_of_normalised_prompt_embeddings(tiny_model, tmp_path):
    names, temps = ["cat", "dog"], ["a photo of a {}.", "a {}"]
    W = build_zero_shot_classifier(tiny_model, names, temps, batch_size=3)
    for j, c in enumerate(names):
        e = tiny_model.encode_text([t.format(c) for t in temps]).mean(0)
        assert torch.allclose(W[:, j], e / e.norm(), atol=1e-5)
    W2, key = cached_classifier(tiny_model, names, temps, tmp_path)
    W3, key3 = cached_classifier(tiny_model, names, temps, tmp_path)
    assert key == key3 and (tmp_path / f"{key}.pt").is_file() and torch.equal(W2, W3)
    assert cached_classifier(tiny_model, names, ["{}"], tmp_path)[1] != key


def test_single_pass_matches_direct_computation(tiny_model, tmp_path):
    # 7 classes, so top-5 can miss; every number is recomputed here from the model directly
    rng = np.random.default_rng(3)
    root = tmp_path / "seven"
    for c in range(7):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(3):
            make_image(rng, (36 + 5 * i + c, 30 + 3 * c)).save(root / f"class_{c}" / f"{i}.png")
    data = get_dataset("imagefolder", root=root)
    store = ResultsStore(tmp_path / "res")
    cfg = EvalConfig(resolutions=(16, 32, "hr"), batch_size=5, workers=0, progress=False)
    records = evaluate(tiny_model, data, cfg, store)
    assert [r["resolution"] for r in records] == [16, 32, "hr"]
    W = build_zero_shot_classifier(tiny_model, data.spec.classnames, data.spec.templates)
    protocol = tiny_model.protocol((16, 32, "hr"))
    labels = np.array([data.label(i) for i in range(len(data))])
    top5_seen = []
    for j, r in enumerate(records):
        views = torch.stack([torch.from_numpy(protocol.views(data.load_image(i)))[j] for i in range(len(data))])
        scores = tiny_model.encode_image(views) @ W
        pred = scores.argmax(-1).numpy()
        top5 = scores.topk(5, dim=-1).indices.numpy()
        assert r["top1"] == pytest.approx((pred == labels).mean())
        assert r["top5"] == pytest.approx((top5 == labels[:, None]).any(1).mean())
        recall = np.mean([(pred[labels == c] == c).mean() for c in range(7)])
        assert r["mean_per_class_recall"] == pytest.approx(recall)
        assert r["n_images"] == 21 and r["n_skipped"] == 0 and r["num_classes"] == 7
        assert protocol_of(r)["input_size"] == 64  # the resolution is the cell's: evaluation + resolution
        assert r["cell"] == digest({"evaluation": r["evaluation"], "resolution": r["resolution"]})
        assert r["dataset"] == "seven" and r["dataset_key"] == "imagefolder"
        assert r["identity"]["model"]["weights"] == tiny_model.info.weights_hash
        preds = store.load_predictions(r["cell"])
        assert (preds["topk"][:, 0] == pred).all() and (preds["topk"] == top5).all()
        top5_seen.append(r["top5"])
    assert min(top5_seen) < 1.0  # the assertion above is not vacuous
    # rerun: every cell is finished, nothing recomputed
    mtimes = [store.record_path(r["cell"]).stat().st_mtime_ns for r in records]
    evaluate(tiny_model, data, cfg, store)
    assert mtimes == [store.record_path(r["cell"]).stat().st_mtime_ns for r in records]


def test_unreadable_and_truncated_images_are_skipped_and_counted(tiny_model, image_folder, tmp_path):
    (image_folder / "cat" / "broken.jpg").write_bytes(b"this is not an image")
    good = (image_folder / "dog" / "0.png").read_bytes()
    (image_folder / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    data = get_dataset("imagefolder", root=image_folder)
    records = evaluate(tiny_model, data, EvalConfig(resolutions=(16, "hr"), workers=0, progress=False),
                       ResultsStore(tmp_path))
    for r in records:
        assert r["n_images"] == 12 and r["n_skipped"] == 2
        assert sorted(r["skipped_ids"]) == ["cat/broken.jpg", "dog/truncated.png"]


def _many_images(root, n=160):
    rng = np.random.default_rng(0)
    for c in ["a", "b"]:
        (root / c).mkdir(parents=True)
    for i in range(n):
        make_image(rng, (40 + i % 9, 36), (255 * (i % 2), 0, 0)).save(root / ("a", "b")[i % 2] / f"{i:03d}.png")
    return root


def test_resume_after_kill_gives_identical_records(tiny_open_clip, tmp_path):
    spec = tiny_open_clip[0]
    root = _many_images(tmp_path / "imgs")
    args = ["-m", "lr0fm", "eval", "--model", spec, "--dataset", "imagefolder", "--data-root", str(root),
            "--resolutions", "16,32,hr", "--batch-size", "4", "--workers", "0", "--no-progress",
            "--checkpoint-every", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ref = subprocess.run([sys.executable, "-m", "lr0fm", "--out", str(tmp_path / "ref")] + args[2:],
                         env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    # killed run: SIGKILL as soon as a resume point exists, before any record is written
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "lr0fm", "--out", str(out)] + args[2:], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list((out / "partial").glob("*.npz")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not list((out / "records").glob("*.json"))
    resumed = subprocess.run([sys.executable, "-m", "lr0fm", "--out", str(out), "-v"] + args[2:], env=env,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    a, b = ResultsStore(tmp_path / "ref").records(), ResultsStore(out).records()
    assert len(a) == 3 and [strip_run(r) for r in a] == [strip_run(r) for r in b]
    for r in a:
        pa, pb = ResultsStore(tmp_path / "ref").load_predictions(r["cell"]), ResultsStore(out).load_predictions(r["cell"])
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not list((out / "partial").glob("*.npz"))


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.mark.parametrize("argv,match", [
    (["eval", "--model", "conse-effnet-lite", "--dataset", "tuxpaint"], "unknown model.*conse-effnet-lite0"),
    (["eval", "--model", "open_clip:ViT-B-32:random", "--dataset", "tuxpain"], "unknown dataset.*tuxpaint"),
    (["eval", "--dataset", "tuxpaint", "--resolutions", "0,16"], "positive"),
    (["eval", "--dataset", "tuxpaint", "--resolutions", "-32"], "positive"),
    (["eval", "--model", "open_clip:ViT-B-32:laion2b_s34b_b79k", "--dataset", "tuxpaint"], "not available here"),
    (["eval", "--model", "hf:google/siglip-base-patch16-224", "--dataset", "tuxpaint"], "not available here"),
    (["eval", "--dataset", "imagefolder", "--data-root", "/nonexistent/dir"], "does not exist"),
    (["eval", "--dataset", "tuxpaint", "--limit", "0"], "--limit 0 must be at least 1"),
    (["eval", "--dataset", "tuxpaint", "--batch-size", "0"], "--batch-size 0 must be at least 1"),
])
def test_bad_input_one_line_nonzero_nothing_written(argv, match, tmp_path, capsys):
    import re
    out = tmp_path / "out"
    code, _, err = run_cli(["--out", str(out)] + argv, capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("lr0fm: error:") and re.search(match, err), err
    assert not out.exists() or not any(out.rglob("*.json"))


def test_missing_debian_dataset_package_names_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LR0FM_TUXPAINT_ROOT", str(tmp_path / "none"))
    monkeypatch.setenv("LR0FM_FASHION_MNIST_ROOT", str(tmp_path / "none"))
    code, _, err = run_cli(["--out", str(tmp_path / "o"), "eval", "--dataset", "tuxpaint"], capsys)
    assert code == 2 and "tuxpaint-stamps-default" in err and "apt-get install" in err
    code, _, err = run_cli(["--out", str(tmp_path / "o"), "eval", "--dataset", "fashion_mnist"], capsys)
    assert code == 2 and "dataset-fashion-mnist" in err


def test_report_json_csv_and_plot(tiny_open_clip, image_folder, tmp_path, capsys):
    import csv
    import hashlib

    from lr0fm.records import COLUMN_NAMES
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["--out", str(out), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder",
                               "--data-root", str(image_folder), "--workers", "0", "--no-progress",
                               "--resolutions", "16,hr"], capsys)
    assert code == 0 and "SAR" in stdout and "WAR" in stdout
    # top-1 of every cell from its predictions file, read with numpy; labels from the folder names
    classes = sorted(p.name for p in image_folder.iterdir())
    expected = {}
    for path in (out / "records").glob("*.json"):
        record = json.loads(path.read_text())
        raw = (out / "predictions" / f"{path.stem}.npz").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == record["predictions_sha256"]
        with np.load(out / "predictions" / f"{path.stem}.npz") as z:
            assert [classes.index(i.split("/")[0]) for i in z["ids"]] == z["labels"].tolist()
            hit = z["topk"][z["valid"], 0] == z["labels"][z["valid"]]
            expected[str(record["resolution"])] = (path.stem, hit.mean(), int(z["valid"].sum()))
    assert set(expected) == {"16", "hr"} and all(n == 12 for _, _, n in expected.values())

    columns = [*COLUMN_NAMES, "model_label", "dataset_label", "effective_resolution"]
    code, stdout, _ = run_cli(["--out", str(out), "report", "--json"], capsys)
    data = json.loads(stdout)
    assert code == 0 and len(data) == 2 and all(list(d) == columns for d in data)
    csv_path = tmp_path / "r.csv"
    code, stdout, _ = run_cli(["--out", str(out), "report", "--csv", str(csv_path)], capsys)
    rows = list(csv.DictReader(csv_path.open()))
    assert code == 0 and list(rows[0]) == columns and len(rows) == 2
    for d in data:
        cell, top1, n = expected[str(d["resolution"])]
        assert (d["cell"], d["top1"], d["n_images"], d["n_skipped"]) == (cell, pytest.approx(top1), n, 0)
        assert d["model_label"] == d["model"] and d["dataset_label"] == d["dataset"] == image_folder.name
        assert d["dataset_key"] == "imagefolder" and d["limit"] is None and d["amp"] == "fp32"
        row = next(r for r in rows if r["cell"] == cell)
        assert float(row["top1"]) == pytest.approx(top1) and int(row["n_images"]) == n
        # the CSV says what the JSON says, column by column
        assert row == {k: "" if v is None else str(v) for k, v in d.items()}
    assert "plot:" not in stdout and not (out / "report").exists()  # a plot only when asked for
    png = tmp_path / "plots" / "accuracy_vs_resolution.png"
    code, stdout, _ = run_cli(["--out", str(out), "report", "--plot", str(png)], capsys)
    assert code == 0 and f"plot: {png}" in stdout
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 100

def test_a_view_out_of_memory_is_one_line_naming_the_image_and_resolution(tiny_model, image_folder, tmp_path):
    from lr0fm.errors import ViewError
    from lr0fm.evaluation.loading import _Work

    def greedy(image, resolutions):
        raise MemoryError()

    data = get_dataset("imagefolder", root=image_folder)
    with pytest.raises(ViewError) as e:
        _Work([(0, greedy, [16, 200, "hr"], [16, 200, "hr"])], False, False)(data, 0)
    assert str(e.value) == ("not enough memory to make the views of 'cat/0.png' (40x30 px) up to 200 px; give "
                            "smaller --resolutions, fewer --workers or a smaller --batch-size")

    class OutOfMemoryViews:  # a view function (as --sr makes) that runs out of memory, in the pass
        def __call__(self, image):
            raise MemoryError()

    with pytest.raises(ViewError, match=r"^not enough memory to make the views of 'cat/0.png' \(40x30 px\) up to 32 px"):
        evaluate(tiny_model, data, EvalConfig(resolutions=(16, 32, "hr"), workers=0, progress=False),
                 ResultsStore(tmp_path), view_fn=OutOfMemoryViews())


def test_a_killed_worker_is_one_line():
    from lr0fm.evaluation.loading import worker_died

    killed = worker_died(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "))
    assert str(killed).startswith("a data worker (pid 4242) was killed by signal Killed; when memory ran out")
    gone = worker_died(RuntimeError("DataLoader worker (pid(s) 7, 8) exited unexpectedly"))
    assert str(gone).startswith("a data worker (pid 7, 8) exited unexpectedly;")
    assert worker_died(RuntimeError("CUDA out of memory")) is None and worker_died(ValueError("x")) is None


def test_device_decoder_on_data_without_jpeg_is_recorded_as_pil(tiny_model, image_folder, tmp_path):
    """PNG-only data: the device decoder would decode nothing, so the run is a PIL run (same cells);
    one JPEG among the files makes it a device-decoder run."""
    from lr0fm.evaluation import plan
    from lr0fm.evaluation.plan import holds_jpeg

    data = get_dataset("imagefolder", root=image_folder)
    base = dict(resolutions=(16, "hr"), workers=0, progress=False, views="device")
    store = ResultsStore(tmp_path / "res")
    pil = evaluate(tiny_model, data, EvalConfig(**base, decoder="pil"), store)
    dev = evaluate(tiny_model, data, EvalConfig(**base, decoder="device"), store)
    assert not holds_jpeg(data)
    assert [r["cell"] for r in dev] == [r["cell"] for r in pil]
    assert dev[0]["identity"]["protocol"]["decoder"] == "pil"
    assert len(store.records()) == 2  # one evaluation, not two report rows

    # a JPEG named .png is found by its bytes
    make_image(np.random.default_rng(1), (44, 40)).save(image_folder / "dog" / "photo.png", format="JPEG")
    data = get_dataset("imagefolder", root=image_folder)
    assert holds_jpeg(data)
    assert plan(tiny_model, data, EvalConfig(**base, decoder="device")).decoder == "device"
    assert plan(tiny_model, data, EvalConfig(**base, decoder="device", limit=3)).decoder == "pil"  # cat/ only
