"""A store that heals and can be shared: damaged or foreign files are one warning and recomputed,
predictions are checked against their record, one process per pass, no temp files left."""
import json
import logging
import threading

import numpy as np
import pytest

from lr0fm.datasets import get_dataset
from lr0fm.errors import InputError, PassBusy, ViewError
from lr0fm.datasets.base import DatasetError
from lr0fm.evaluation import EvalConfig, evaluate, plan
from lr0fm.models import create_model
from lr0fm.report import text_report
from lr0fm.store import ResultsStore
from lr0fm.runner import Group, run_groups


@pytest.fixture(scope="module")
def tiny_model(tiny_open_clip):
    return create_model(tiny_open_clip[0])


CFG = dict(resolutions=(16, "hr"), workers=0, progress=False)


def run(model, data, store, **kw):
    return evaluate(model, data, EvalConfig(**{**CFG, **kw}), store)


def mtimes(store, records):
    return [store.record_path(r["cell"]).stat().st_mtime_ns for r in records]


def test_damaged_or_foreign_records_warn_once_and_are_recomputed(tiny_model, image_folder, tmp_path, caplog):
    store = ResultsStore(tmp_path)
    data = get_dataset("imagefolder", root=image_folder)
    first = run(tiny_model, data, store)
    truncated = store.record_path(first[0]["cell"])
    truncated.write_text(truncated.read_text()[:40])
    foreign = store.root / "records" / "notes.json"
    foreign.write_text(json.dumps({"hello": "world"}))  # no 'model' key
    (store.root / "records" / "list.json").write_text("[1, 2]")
    with caplog.at_level(logging.WARNING, logger="lr0fm"):
        records = store.records()
        report = text_report(records)
    assert [r["resolution"] for r in records] == ["hr"] and "folder" in report
    warnings = [m for m in caplog.messages if "ignoring" in m]
    assert len(warnings) == 3 and all("recomputes" in w for w in warnings)
    again = run(tiny_model, data, ResultsStore(tmp_path))
    assert again[0]["run"] != first[0]["run"]  # recomputed, to the same numbers
    assert {k: v for k, v in again[0].items() if k != "run"} == {k: v for k, v in first[0].items() if k != "run"}
    assert again[1] == first[1]  # the intact cell was not touched
    assert json.loads(truncated.read_text())["cell"] == first[0]["cell"]
    assert {r["cell"] for r in ResultsStore(tmp_path).records()} == {r["cell"] for r in first}


def test_missing_or_altered_predictions_make_the_cell_pending(tiny_model, image_folder, tmp_path):
    store = ResultsStore(tmp_path)
    data = get_dataset("imagefolder", root=image_folder)
    first = run(tiny_model, data, store)
    store.predictions_path(first[0]["cell"]).unlink()
    altered = store.predictions_path(first[1]["cell"])
    preds = store.load_predictions(first[1]["cell"])
    preds["topk"][:] = 0
    np.savez(altered, **preds)
    assert not store.complete(first[0]["cell"]) and not store.complete(first[1]["cell"])
    again = run(tiny_model, data, store)
    assert all(store.complete(r["cell"]) for r in again)
    for a, b in zip(first, again):
        assert a["top1"] == b["top1"] and a["predictions_sha256"] == b["predictions_sha256"]


def test_one_process_per_pass_and_others_take_other_work(tiny_model, tiny_open_clip, image_folder, tmp_path):
    store = ResultsStore(tmp_path)
    data = get_dataset("imagefolder", root=image_folder)
    p = plan(tiny_model, data, EvalConfig(**CFG))
    ev = p.evaluation
    with store.pass_lock(ev.id):
        with pytest.raises(PassBusy):
            evaluate(tiny_model, data, EvalConfig(**CFG), store, wait=False)
        # a sweep defers the busy group, runs the free one, then waits for the busy one
        other = get_dataset("imagefolder", root=image_folder, name="second", templates=["{}"])  # another evaluation
        order = []
        done = threading.Event()

        def sweep():
            order.extend(run_groups([Group(tiny_open_clip[0], data), Group(tiny_open_clip[0], other)], [16, "hr"],
                                    store, workers=0, progress=False))
            done.set()

        t = threading.Thread(target=sweep)
        t.start()
        for _ in range(600):  # the free group finishes while the busy one waits
            if len(store.records()) == 2:
                break
            done.wait(0.1)
        assert {r["dataset"] for r in store.records()} == {"second"} and not done.is_set()
    t.join(120)
    assert done.is_set() and [r["dataset"] for r in order] == ["folder", "folder", "second", "second"]


def test_passes_over_other_resolutions_keep_their_resume_points(tiny_model, image_folder, tmp_path):
    store = ResultsStore(tmp_path)
    data = get_dataset("imagefolder", root=image_folder)
    p = plan(tiny_model, data, EvalConfig(**CFG))
    ev, cells = p.evaluation, p.cells
    # a resume point of another pass (resolution 64 only) of the same evaluation
    p = plan(tiny_model, data, EvalConfig(**{**CFG, "resolutions": (64,)}))
    ev64, cells64 = p.evaluation, p.cells
    assert ev64.id == ev.id
    other = ev.resume_key([64])
    store.save_partial(other, topk=np.zeros((1, 12, 3), np.int32), valid=np.zeros(12, bool), done=np.int64(4),
                       cells=np.asarray([cells64[64]]))
    stale = ev.resume_key([16, 32])  # covers a cell that will be finished: stale after the run
    store.save_partial(stale, topk=np.zeros((2, 12, 3), np.int32), valid=np.zeros(12, bool), done=np.int64(4),
                       cells=np.asarray([cells[16], "x" * 32]))
    run(tiny_model, data, store)
    assert store.partial_path(other).is_file()
    run(tiny_model, data, store, resolutions=(16, "hr", 128))  # finds cell 16 done: the stale one goes
    assert not store.partial_path(stale).exists() and store.partial_path(other).is_file()


def test_no_readable_image_is_an_error_not_a_record(tiny_model, tmp_path):
    root = tmp_path / "bad"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "x.png").write_bytes(b"not a png")
    store = ResultsStore(tmp_path / "res")
    with pytest.raises(DatasetError, match="none of the 2 images"):
        run(tiny_model, get_dataset("imagefolder", root=root), store)
    assert not list(store.root.rglob("*.json")) and not list(store.root.rglob("partial/*.npz"))


def test_a_broken_view_maker_is_an_error_not_unreadable_images(tiny_model, image_folder, tmp_path):
    store = ResultsStore(tmp_path)

    def broken(image):
        raise ValueError("the SR network produced NaN")

    with pytest.raises(ViewError, match="SR network produced NaN"):
        evaluate(tiny_model, get_dataset("imagefolder", root=image_folder), EvalConfig(**CFG), store, view_fn=broken)
    assert not list(store.root.rglob("*.json"))


def test_failed_writes_leave_no_temp_files(tiny_model, image_folder, tmp_path, monkeypatch):
    import errno
    import os

    store = ResultsStore(tmp_path / "res")
    real_replace = os.replace

    def full_disk(src, dst):
        if "records" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(InputError, match="No space left on device"):
        run(tiny_model, get_dataset("imagefolder", root=image_folder), store)
    assert not [p for p in store.root.rglob("*") if ".tmp" in p.name]
    assert not list(store.root.rglob("records/*.json"))
    assert not list(store.root.rglob("predictions/*.npz"))  # written first, removed with the failed record


def test_out_naming_a_file_is_one_line(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        ResultsStore(f)


@pytest.mark.slow
def test_two_cli_processes_on_one_folder_never_run_the_same_pass(tiny_open_clip, image_folder, tmp_path):
    """Two real `lr0fm eval` processes on one results folder while the pass is busy: both wait;
    then exactly one computes and the other finds every cell done."""
    import os
    import subprocess
    import sys
    import time

    from filelock import FileLock

    out = tmp_path / "res"
    data = get_dataset("imagefolder", root=image_folder)
    ev = plan(create_model(tiny_open_clip[0]), data, EvalConfig(resolutions=(16, 32, "hr"))).evaluation
    (out / "locks").mkdir(parents=True)
    args = [sys.executable, "-m", "lr0fm", "-v", "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder",
            "--data-root", str(image_folder), "--resolutions", "16,32,hr", "--workers", "0", "--no-progress",
            "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    logs = [tmp_path / f"err{i}.txt" for i in range(2)]
    with FileLock(str(out / "locks" / f"{ev.id}.lock")):  # the pass is busy, as if a third process ran it
        procs = [subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w")) for log in logs]
        deadline = time.time() + 300
        while time.time() < deadline and not all("waiting for it" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), "a process finished while the pass was busy"
            time.sleep(0.2)
    for p in procs:
        assert p.wait(timeout=600) == 0
    errs = [log.read_text() for log in logs]
    assert all("waiting for it" in e for e in errs), errs
    assert sum("evaluating folder" in e for e in errs) == 1, errs  # one computed, the other found it done
    assert len(list((out / "records").glob("*.json"))) == 3
