"""The SLURM engine: submitit's local executor for the quick checks, and a real single-node SLURM
(slurmctld, slurmd, slurmdbd on MariaDB, munge: tests/realclusters.py) for what only a scheduler
does. Faults come from outside, as on a shared cluster: an element SIGKILLed by PID, ``scontrol
requeue``, a job past its time limit, ``scancel`` of one element and of the whole array, the
submitting process killed and rerun while its elements run, two submitters on one results folder.
Every run ends with the single-process store and nothing running."""
import signal
import time

import pytest

from lr0fm.cli import main

from conftest import assert_same_store
from enginekit import (children_gone, descendants_of, fault_env, lr0fm,
                       record_bytes, records_in, start_lr0fm, write_config)

submitit = pytest.importorskip("submitit")
psutil = pytest.importorskip("psutil")


def faults(monkeypatch, tmp_path, **kinds):
    """Test faults for the elements this process submits (they inherit its environment)."""
    for key, value in fault_env(tmp_path, **kinds).items():
        if key.startswith("LR0FM_TEST_") or key == "PYTHONPATH":
            monkeypatch.setenv(key, value)


def local_args(cfg, out, *more):
    return ["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "local", "--out", str(out), *map(str, more)]


# -- submitit's local executor ------------------------------------------------------------------------
@pytest.mark.slow
def test_slurm_local_array_writes_the_single_process_store(grid, tmp_path, capsys):
    cfg, ref = grid
    out = tmp_path / "slurm"
    assert main(local_args(cfg, out)) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["engine"] for r in records} == {"slurm (local)"}
    assert not list((out / "units").glob("*.npz")) and not list((out / "leases").glob("*.json"))
    before = record_bytes(out)
    assert main(["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "debug", "--out", str(out)]) == 0
    assert record_bytes(out) == before


@pytest.mark.slow
def test_lost_element_is_resubmitted_from_its_resume_point(grid, tmp_path, monkeypatch, capsys):
    cfg, ref = grid
    out = tmp_path / "killed"
    faults(monkeypatch, tmp_path, KILL_AFTER_SAVES=2)  # each element's first run SIGKILLs itself mid-pass
    assert main(local_args(cfg, out)) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["attempts"] for r in records} == {2}
    assert {r["run"]["resumed_images"] for r in records} == {8}  # 2 resume points of 4 images each


@pytest.mark.slow
def test_element_killed_past_its_retries_is_one_line_and_the_rerun_resumes(grid, tmp_path, monkeypatch, capsys):
    cfg, ref = grid
    out = tmp_path / "killed"
    faults(monkeypatch, tmp_path, KILL_AFTER_SAVES=1)
    assert main(local_args(cfg, out, "--max-retries", "0")) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "ended without a result" in line]
    assert len(lines) == 4 and all(" on folder: its element ended" in line and "_log.err" in line for line in lines), lines
    assert main(local_args(cfg, out)) == 0  # the fault hit each element once (its marker is there)
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["resumed_images"] for r in records} == {4}  # from the resume point the killed element left


@pytest.mark.slow
def test_preempted_element_is_requeued_from_its_resume_point(grid, tmp_path, monkeypatch, capsys):
    """SIGUSR2 (SLURM's preemption and time-limit signal) mid-pass: submitit checkpoints and
    requeues the element, which continues from the resume point it left on the results folder."""
    cfg, ref = grid
    out = tmp_path / "preempted"
    faults(monkeypatch, tmp_path, KILL_AFTER_SAVES="2:USR2")
    assert main(local_args(cfg, out)) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["attempts"] for r in records} == {2}
    assert {r["run"]["resumed_images"] for r in records} == {8}
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*_log.err"))
    assert logs.count("INFO:submitit:Requeued job") == 4  # each element preempted once, requeued once


@pytest.mark.slow
def test_failing_unit_is_reported_once_and_the_rest_is_done(tiny_open_clip, folder, tmp_path, capsys):
    from lr0fm.store import ResultsStore

    bad = f"open_clip:{tiny_open_clip[1]}:{tmp_path / 'missing.pt'}"
    cfg = write_config(tmp_path / "sweep.yaml", [tiny_open_clip[0], bad], folder)
    assert main(local_args(cfg, tmp_path / "o")) == 2
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("  ")]
    assert "2 of 4 units failed" in err and len(failed) == 2
    assert all("missing.pt" in line and " on folder: ModelError: checkpoint " in line for line in failed), err
    assert len(ResultsStore(tmp_path / "o").records()) == 6


def slurm_eval_args(model, folder, cluster, parallelism):
    return ["eval", "--model", model, "--dataset", "imagefolder", "--data-root", str(folder), "--resolutions",
            "16,32,hr", "--batch-size", "4", "--workers", "0", "--no-progress", "--engine", "slurm",
            "--slurm-cluster", cluster, "--slurm-array-parallelism", str(parallelism)]


@pytest.mark.slow
def test_long_unit_split_into_shards_gives_the_unsplit_records(tiny_open_clip, folder, tmp_path, capsys):
    args = slurm_eval_args(tiny_open_clip[0], folder, "local", 3)
    assert main([*args[:-6], "--out", str(tmp_path / "single")]) == 0
    assert main([*args, "--out", str(tmp_path / "shards")]) == 0
    records = assert_same_store(tmp_path / "single", tmp_path / "shards", 3)
    assert {r["run"]["shards"] for r in records} == {3}
    assert not list((tmp_path / "shards" / "units").glob("*.npz"))  # merged, then removed
    assert len(list((tmp_path / "shards" / "slurm").glob("*_result.pkl"))) == 3  # one element per shard


def test_results_left_by_a_gone_submitter_are_taken_by_the_rerun(tiny_open_clip, folder, tmp_path, monkeypatch,
                                                                 capsys):
    """The submitting process dies after its shard elements finished: the same command merges
    what they left without sending any element again; a missing one is sent alone."""
    from lr0fm.engines import lifecycle, slurm

    args = [*slurm_eval_args(tiny_open_clip[0], folder, "debug", 3), "--out", str(tmp_path / "o")]
    assert main([*args[:-8], "--out", str(tmp_path / "single")]) == 0

    def gone(*_args, **_kwargs):
        raise KeyboardInterrupt  # the submitter is stopped just before it merges
    monkeypatch.setattr(lifecycle, "commit", gone)
    assert main(args) == 130
    left = sorted((tmp_path / "o" / "units").glob("*of3.npz"))
    assert len(left) == 3 and not records_in(tmp_path / "o")
    monkeypatch.undo()
    ran = []
    real = slurm._Element.__call__
    monkeypatch.setattr(slurm._Element, "__call__", lambda self: ran.append(self.spec.shard) or real(self))
    assert main(args) == 0 and ran == []
    assert_same_store(tmp_path / "single", tmp_path / "o", 3)
    for p in records_in(tmp_path / "o"):
        p.unlink()
    monkeypatch.setattr(lifecycle, "commit", gone)
    assert main(args) == 130 and len(ran) == 3
    sorted((tmp_path / "o" / "units").glob("*of3.npz"))[1].unlink()
    monkeypatch.undo()
    monkeypatch.setattr(slurm._Element, "__call__", lambda self: ran.append(self.spec.shard) or real(self))
    ran.clear()
    assert main(args) == 0 and [s.index for s in ran] == [1]
    assert_same_store(tmp_path / "single", tmp_path / "o", 3)


def test_rerun_submits_only_the_units_with_missing_cells(grid, tmp_path, monkeypatch):
    from lr0fm.engines import slurm

    cfg, ref = grid
    out = tmp_path / "slurm"
    args = ["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "debug", "--out", str(out)]
    assert main(args) == 0
    ran = []
    real = slurm._Element.__call__
    monkeypatch.setattr(slurm._Element, "__call__", lambda self: ran.append(self.spec.groups) or real(self))
    assert main(args) == 0 and ran == []
    records_in(out)[0].unlink()
    assert main(args) == 0 and len(ran) == 1
    assert_same_store(ref, out, 12)


@pytest.mark.slow
def test_killed_submitter_rerun_computes_only_the_rest(grid, tmp_path):
    """--slurm-cluster local: the elements end with their submitter; the rerun resumes them."""
    cfg, ref = grid
    out = tmp_path / "o"
    env = fault_env(tmp_path, SLEEP_AFTER_UNIT=3)
    driver = start_lr0fm(local_args(cfg, out), env=env)
    descendants = set()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(records_in(out)) < 3:
            descendants |= descendants_of(driver.pid)
            assert driver.poll() is None, driver.stderr.read()[-2000:]
            time.sleep(0.1)
        descendants |= descendants_of(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    assert children_gone(descendants, timeout=60) == []
    first = record_bytes(out)
    assert 3 <= len(first) < 12
    run = lr0fm(local_args(cfg, out), env=fault_env(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_store(ref, out, 12)
    assert all((out / "records" / name).read_bytes() == data for name, data in first.items())
