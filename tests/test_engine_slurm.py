"""The SLURM engine: submitit's local executor for the quick checks, and a real single-node SLURM
(slurmctld, slurmd, slurmdbd on MariaDB, munge: tests/realclusters.py) for what only a scheduler
does. Faults come from outside, as on a shared cluster: an element SIGKILLed by PID, ``scontrol
requeue``, a job past its time limit, ``scancel`` of one element and of the whole array, the
submitting process killed and rerun while its elements run, two submitters on one results folder.
Every run ends with the single-process store and nothing running."""
import re
import signal
import time

import pytest

from lr0fm.cli import main

from conftest import assert_same_store
from enginekit import (SRC, children_gone, fault_env, kill_driver_after, lr0fm, partials, record_bytes, records_in,
                       start_lr0fm, task_runs, wait_for, with_progress, write_config)

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
    descendants = kill_driver_after(local_args(cfg, out), out, 3, fault_env(tmp_path, SLEEP_AFTER_UNIT=3))
    assert children_gone(descendants, timeout=60) == []
    first = record_bytes(out)
    assert 3 <= len(first) < 12
    run = lr0fm(local_args(cfg, out), env=fault_env(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_store(ref, out, 12)
    assert all((out / "records" / name).read_bytes() == data for name, data in first.items())


# -- a real single-node SLURM (tests/realclusters.py) ------------------------------------------------
def slurm_driver(slurm_cluster, cfg, out, tmp_path, *more, **test_faults):
    """``lr0fm sweep --engine slurm`` as a user runs it on the login node, progress on stderr."""
    env = {**fault_env(tmp_path, **test_faults), **slurm_cluster.env}
    return start_lr0fm(["sweep", with_progress(cfg, tmp_path), "--engine", "slurm", "--out", out, *more], env=env)



def queue(slurm_cluster):
    """{job id: state} of the cluster's queue (array elements as ARRAY_INDEX)."""
    text = slurm_cluster.run("squeue", "-h", "-o", "%i %T").stdout
    return dict(line.split()[:2] for line in text.splitlines() if line.strip())


def element_processes(out):
    """The Python processes of a run's array elements (submitit's runner, by its job folder)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "submitit.core._submit" in cmd and str(out) in cmd:
            found.append(p)
    return found


def finish(driver, timeout=600):
    try:
        _, err = driver.communicate(timeout=timeout)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, err


def no_element_left(slurm_cluster, out):
    wait_for(lambda: not queue(slurm_cluster) and not element_processes(out), 120, what="an empty queue")


@pytest.mark.slow
def test_real_slurm_writes_the_single_process_store(slurm_cluster, grid, tmp_path, monkeypatch, capsys):
    """sbatch/sacct/scancel of a real SLURM (CPU node: no --gpus-per-task; slots from sinfo)."""
    from lr0fm.engines.slurm import partition_slots

    cfg, ref = grid
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYTHONPATH", SRC)
    assert partition_slots(None, 0) == 2 and partition_slots(slurm_cluster.partition, 0) == 2  # its 2 CPUs
    out = tmp_path / "o"
    assert main(["sweep", str(cfg), "--engine", "slurm", "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["engine"] for r in records} == {"slurm (slurm)"}
    assert all(re.fullmatch(r".+ \(slurm job \d+_\d+\)", r["run"]["ran_on"][0]) for r in records)
    assert not list((out / "units").glob("*.npz")) and not list((out / "leases").glob("*.json"))
    sbatch = next((out / "slurm").glob("*_submission.sh")).read_text()
    assert "--gpus-per-task" not in sbatch and "#SBATCH --array=0-3%2" in sbatch
    no_element_left(slurm_cluster, out)


@pytest.mark.slow
def test_element_sigkilled_is_resubmitted_once_from_its_resume_point(slurm_cluster, grid, tmp_path):
    cfg, ref = grid
    out, log = tmp_path / "o", tmp_path / "tasks"
    driver = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
    # both running elements mid-pass, each with a resume point, so the one killed has one
    wait_for(lambda: len(partials(out)) >= 2 and element_processes(out), 300, what="two elements mid-pass")
    victim = element_processes(out)[0]
    victim.kill()  # SIGKILL by PID, from outside
    rc, err = finish(driver)
    assert rc == 0, err[-3000:]
    records = assert_same_store(ref, out, 12)
    runs = task_runs(log)
    assert sorted(runs.values()) == [1, 1, 1, 2], runs  # the killed task once more, nothing else
    assert sorted({r["run"]["attempts"] for r in records}) == [1, 2]
    assert any(r["run"]["attempts"] == 2 and r["run"]["resumed_images"] > 0 for r in records)
    no_element_left(slurm_cluster, out)


@pytest.mark.slow
def test_scontrol_requeue_runs_the_element_exactly_once_more(slurm_cluster, grid, tmp_path):
    cfg, ref = grid
    out, log = tmp_path / "o", tmp_path / "tasks"
    driver = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
    wait_for(lambda: partials(out) and "RUNNING" in queue(slurm_cluster).values(), 300, what="an element mid-pass")
    job = next(j for j, state in queue(slurm_cluster).items() if state == "RUNNING")
    slurm_cluster.run("scontrol", "requeue", job)
    rc, err = finish(driver)
    assert rc == 0, err[-3000:]
    assert "memory" not in err and "killed by signal" not in err
    records = assert_same_store(ref, out, 12)
    runs = task_runs(log)
    assert sorted(runs.values()) == [1, 1, 1, 2], runs  # SLURM ran it again; the submitter did not
    requeued = [r for r in records if r["run"]["attempts"] == 2]
    assert requeued and all(r["run"]["resumed_images"] > 0 for r in requeued)
    assert all(job in r["run"]["ran_on"][0] for r in requeued)  # the same job, run again
    no_element_left(slurm_cluster, out)


@pytest.mark.slow
def test_element_past_its_time_limit_is_checkpointed_and_requeued(slurm_cluster, tiny_open_clip, folder, tmp_path):
    """--slurm-time 1: SIGUSR2 15 s before the limit (SLURM may send it up to a minute early);
    submitit checkpoints and requeues the element, which continues from its resume point."""
    args = ["eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", folder,
            "--resolutions", "16,32,hr", "--batch-size", "4", "--workers", "0", "--checkpoint-every", "4"]
    single = lr0fm([*args, "--no-progress", "--out", tmp_path / "single"])
    assert single.returncode == 0, single.stderr[-2000:]
    # the first run: 6 resume points of 20 s each, past the 60 s limit; the requeued run at full speed
    env = {**fault_env(tmp_path, SAVE_DELAY=20, SLOW_UNTIL_REQUEUED=1), **slurm_cluster.env}
    run = lr0fm([*args, "--out", tmp_path / "o", "--engine", "slurm", "--slurm-time", "1"], env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    records = assert_same_store(tmp_path / "single", tmp_path / "o", 3)
    assert {r["run"]["attempts"] for r in records} == {2} and records[0]["run"]["resumed_images"] > 0
    logs = "".join(p.read_text() for p in (tmp_path / "o" / "slurm").glob("*_log.err"))
    assert "Requeued job" in logs
    no_element_left(slurm_cluster, tmp_path / "o")


@pytest.mark.slow
def test_scancel_of_one_element_is_listed_and_not_resubmitted(slurm_cluster, grid, tmp_path):
    cfg, ref = grid
    out, log = tmp_path / "o", tmp_path / "tasks"
    driver = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
    wait_for(lambda: partials(out) and "RUNNING" in queue(slurm_cluster).values(), 300, what="an element mid-pass")
    job = next(j for j, state in queue(slurm_cluster).items() if state == "RUNNING")
    slurm_cluster.run("scancel", job)
    rc, err = finish(driver)
    assert rc == 2, err[-3000:]
    failed = [line for line in err.splitlines() if line.startswith("  ")]
    assert "1 of 4 units failed" in err and len(failed) == 1 and f"{job} was cancelled" in failed[0], err[-2000:]
    assert len(records_in(out)) == 9
    assert set(task_runs(log).values()) == {1}  # not resubmitted
    no_element_left(slurm_cluster, out)


@pytest.mark.slow
def test_scancel_of_the_array_ends_the_submitter_within_a_minute(slurm_cluster, grid, tmp_path):
    cfg, _ = grid
    out = tmp_path / "o"
    driver = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1)
    wait_for(lambda: partials(out), 300, what="an element mid-pass")
    array = next(iter(queue(slurm_cluster))).split("_")[0]
    slurm_cluster.run("scancel", array)
    cancelled = time.time()
    rc, err = finish(driver, timeout=120)
    assert time.time() - cancelled < 60 and rc == 2
    lines = [line for line in err.splitlines() if not line.startswith("lr0fm slurm")]  # progress lines aside
    assert len(lines) == 1 and "all 4 units were cancelled" in lines[0], err[-2000:]
    no_element_left(slurm_cluster, out)


@pytest.mark.slow
def test_submitter_killed_and_rerun_while_elements_run(slurm_cluster, grid, tmp_path):
    """The elements outlive their submitter; the same command again waits for them (their leases),
    takes what they leave and submits nothing they run: no unit computed twice."""
    cfg, ref = grid
    out, log = tmp_path / "o", tmp_path / "tasks"
    driver = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
    wait_for(lambda: partials(out) and len(task_runs(log)) >= 2, 300, what="two elements mid-pass")
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert element_processes(out)  # still running under SLURM
    rerun = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
    rc, err = finish(rerun)
    assert rc == 0, err[-3000:]
    assert_same_store(ref, out, 12)
    runs = task_runs(log)
    assert len(runs) == 4 and set(runs.values()) == {1}, runs
    no_element_left(slurm_cluster, out)


@pytest.mark.slow
def test_two_submitters_on_one_results_folder_compute_each_unit_once(slurm_cluster, grid, tmp_path):
    cfg, ref = grid
    out, log = tmp_path / "o", tmp_path / "tasks"
    first = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
    wait_for(lambda: log.exists(), 300, what="the first submitter's first element")
    second = slurm_driver(slurm_cluster, cfg, out, tmp_path, SAVE_DELAY=1, TASK_LOG=log)
    (rc2, err2), (rc1, err1) = finish(second), finish(first)
    assert rc1 == 0 and rc2 == 0, (err1[-2000:], err2[-2000:])
    assert_same_store(ref, out, 12)
    runs = task_runs(log)
    assert len(runs) == 4 and set(runs.values()) == {1}, runs
    no_element_left(slurm_cluster, out)
