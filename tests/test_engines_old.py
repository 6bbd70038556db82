"""Engines (issue 18): Ray tasks and submitit arrays write the store of the single-process sweep;
lost workers are retried from their resume points, a killed driver resumes, a failing unit is
reported once, long units split into image shards, and the makespan of a sweep on N GPUs.

A local Ray with logical GPUs (2 CPUs, 4 GPUs) is shared by the module; no process may outlive a test."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lr0fm.cli import main
from lr0fm.engines import schedule
from lr0fm.evaluation import ImageShard
from lr0fm.store import ResultsStore

from conftest import assert_same_store, make_image

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def descendants_of(pid):
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def children_gone(pids, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive_now = [p for p in pids if alive(p)]
        if not alive_now:
            return []
        time.sleep(0.5)
    return alive_now


@pytest.fixture(scope="module")
def local_ray():
    before = descendants_of(os.getpid())
    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": SRC}})
    try:
        yield ray
    finally:
        started = [pid for pid in descendants_of(os.getpid()) if pid not in before]
        ray.shutdown()
        assert children_gone(started) == [], "Ray processes outlived the tests"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 8 images of varying size."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("engines") / "folder"
    for c, color in zip(["cat", "dog", "red_car"], [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / c).mkdir(parents=True)
        for i in range(8):
            make_image(rng, (40 + 5 * i, 30 + 3 * i), color).save(root / c / f"{i}.png")
    return root


def write_config(path, models, folder, datasets=2):
    (path.parent / "prompts.txt").write_text("a blurry photo of a {}.\na {}\n")
    entries = "\n".join(["  - imagefolder", "  - {key: imagefolder, templates: prompts.txt}"][:datasets])
    path.write_text(f"""
models: [{", ".join(f'"{m}"' for m in models)}]
datasets:
{entries}
data_root: {folder}
resolutions: [16, 32, hr]
batch_size: 4
workers: 0
checkpoint_every: 4
progress: false
""")
    return path


@pytest.fixture(scope="module")
def grid(tiny_open_clip, second_tiny_model, folder, tmp_path_factory):
    """2 models x 2 datasets x 3 resolutions = 12 cells, and the single-process sweep's store."""
    d = tmp_path_factory.mktemp("grid")
    cfg = write_config(d / "sweep.yaml", [tiny_open_clip[0], second_tiny_model], folder)
    assert main(["sweep", str(cfg), "--out", str(d / "ref")]) == 0
    return cfg, d / "ref"


# -- scheduling --------------------------------------------------------------------------------
def test_longest_first_and_shards():
    costs, images = [10.0, 1.0, 1.0, 1.0, 3.0], [100] * 5
    tasks = schedule.tasks(costs, images, slots=4)
    # average load 4 per slot: the 10-unit is cut into 3 shards of 3.33, the rest stay whole
    assert [(t.unit, t.shard) for t in tasks if t.unit == 0] == [(0, ImageShard(i, 3)) for i in range(3)]
    assert [t.cost for t in tasks] == sorted((t.cost for t in tasks), reverse=True)
    assert schedule.makespan(tasks, 4) == pytest.approx(max(10 / 3 + 1, 3 + 1))
    assert schedule.makespan(schedule.tasks(costs, images, 4, split=False), 4) == 10.0
    assert schedule.makespan(tasks, 1) == pytest.approx(16.0)
    assert schedule.shard_counts([50.0, 1.0], [2, 10], slots=8) == [2, 1]  # never more shards than images
    assert schedule.slots_for(4, 0.5) == 8 and schedule.slots_for(4, 1) == 4


def test_dry_run_gpus_json(capsys, tmp_path):
    args = ["sweep", "--preset", "lr0fm", "--dry-run", "--out", str(tmp_path / "r"), "--json"]
    plans = {}
    for n in (1, 8, 64):
        assert main([*args, "--gpus", str(n)]) == 0
        plans[n] = json.loads(capsys.readouterr().out)
    assert plans[1]["makespan_s"] == pytest.approx(plans[1]["total_s"], rel=1e-6)
    for n in (8, 64):
        p = plans[n]
        assert {"cells", "gpus", "total_s", "makespan_s"} <= set(p) and p["gpus"] == n
        assert p["total_s"] / n <= p["makespan_s"] + 1 and p["makespan_s"] < p["total_s"]
        assert p["total_s"] == pytest.approx(plans[1]["total_s"]) and p["cells"] == plans[1]["cells"] == 4950
    assert plans[64]["split_units"] > 0  # the longest units no longer set the makespan
    assert plans[64]["makespan_s"] < plans[64]["longest_unit_s"]
    assert main(["sweep", "--preset", "lr0fm", "--dry-run", "--gpus", "8", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "cells" in out and "on 8 GPUs" in out and "makespan" in out
    # the plan forms the engines' units: all of a dataset's models in one task, or none split
    assert main([*args, "--gpus", "64", "--models-per-task", "0"]) == 0
    whole = json.loads(capsys.readouterr().out)
    assert whole["units"] == 15 and whole["total_s"] == pytest.approx(plans[64]["total_s"], rel=1e-6)
    assert whole["makespan_s"] > plans[64]["makespan_s"]  # 15 big units fill 64 GPUs worse than 945 small ones
    assert main([*args, "--gpus", "64", "--no-shards"]) == 0
    unsplit = json.loads(capsys.readouterr().out)
    assert unsplit["split_units"] == 0 and unsplit["makespan_s"] == pytest.approx(unsplit["longest_unit_s"], abs=0.2)


# -- one line for what cannot run ----------------------------------------------------------------
@pytest.mark.parametrize("engine,module,extra", [("ray", "ray", "lr0fm[ray]"), ("slurm", "submitit", "lr0fm[slurm]")])
def test_missing_extra_is_one_line(engine, module, extra, grid, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert main(["sweep", str(grid[0]), "--engine", engine, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"pip install '{extra}'" in err[0]
    assert not (tmp_path / "o").exists()


def test_bad_address_is_one_line(grid, capsys, tmp_path):
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"):
        assert main(["sweep", str(grid[0]), "--engine", "ray", "--address", address, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--address" in err[0], err
    assert not (tmp_path / "o" / "records").exists()


# -- Ray --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_sweep_writes_the_single_process_store(local_ray, grid, tmp_path, capsys):
    cfg, ref = grid
    out = tmp_path / "ray"
    assert main(["sweep", str(cfg), "--engine", "ray", "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["engine"] for r in records} == {"ray"} and {r["run"]["attempts"] for r in records} == {1}
    assert {r["run"]["shards"] for r in records} == {1}  # 4 equal units on 4 GPUs: none split
    # a rerun computes nothing: every record stays as it was
    before = {p.name: p.read_bytes() for p in (out / "records").iterdir()}
    assert main(["sweep", str(cfg), "--engine", "ray", "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in (out / "records").iterdir()} == before


def test_a_dataset_s_models_in_one_task_pass(local_ray, grid, tmp_path, capsys):
    """--models-per-task 0: each dataset's two models run in one pass (one unit per dataset, each
    image decoded once for both), sharded over the 4 logical GPUs; the same store as one process."""
    cfg, ref = grid
    out = tmp_path / "ray"
    assert main(["sweep", str(cfg), "--engine", "ray", "--models-per-task", "0", "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["models_in_pass"] for r in records} == {2} and {r["run"]["shards"] for r in records} == {2}


def test_models_per_task_needs_an_engine(grid, tmp_path, capsys):
    assert main(["sweep", str(grid[0]), "--models-per-task", "0", "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["lr0fm: error: --models-per-task applies to --engine ray or --engine slurm; add that or drop it"]


@pytest.mark.slow
@pytest.mark.parametrize("engine_args", [["--engine", "ray"], ["--engine", "slurm", "--slurm-cluster", "local"]],
                         ids=["ray", "slurm-local"])
def test_lost_worker_is_retried_from_its_resume_point(local_ray, grid, tmp_path, monkeypatch, capsys, engine_args):
    """Ray retries the task; the SLURM submitter resubmits an element that ended without a result."""
    cfg, ref = grid
    out = tmp_path / "killed"
    monkeypatch.setenv("LR0FM_FAULT", "kill-after-saves:2")  # SIGKILL each task's first worker mid-pass
    assert main(["sweep", str(cfg), *engine_args, "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["attempts"] for r in records} == {2}
    assert {r["run"]["resumed_images"] for r in records} == {8}  # 2 resume points of 4 images each


@pytest.mark.slow
def test_slurm_element_killed_past_its_retries_is_one_line_and_the_rerun_resumes(grid, tmp_path, monkeypatch,
                                                                                   capsys):
    cfg, ref = grid
    out = tmp_path / "killed"
    monkeypatch.setenv("LR0FM_FAULT", "kill-after-saves:1")
    args = ["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "local", "--out", str(out)]
    assert main([*args, "--max-retries", "0"]) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "ended without a result" in line]
    assert len(lines) == 4 and all(" on folder: its element ended" in line and "_log.err" in line for line in lines), lines
    monkeypatch.delenv("LR0FM_FAULT")
    assert main(args) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["resumed_images"] for r in records} == {4}  # from the resume point the killed element left


@pytest.mark.slow
@pytest.mark.parametrize("engine_args", [["--engine", "ray"], ["--engine", "slurm", "--slurm-cluster", "local"]],
                         ids=["ray", "slurm-local"])
def test_failing_unit_is_reported_once_and_the_rest_is_done(local_ray, tiny_open_clip, folder, tmp_path, capsys,
                                                            engine_args):
    bad = f"open_clip:{tiny_open_clip[1]}:{tmp_path / 'missing.pt'}"
    cfg = write_config(tmp_path / "sweep.yaml", [tiny_open_clip[0], bad], folder)
    assert main(["sweep", str(cfg), *engine_args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("  ")]
    assert "2 of 4 units failed" in err and len(failed) == 2
    assert all("missing.pt" in line and " on folder: ModelError: checkpoint " in line for line in failed), err
    good = ResultsStore(tmp_path / "o").records()
    assert len(good) == 6 and {r["model"] for r in good} == {ResultsStore(tmp_path / "o").records()[0]["model"]}


@pytest.mark.slow
def test_long_unit_split_into_shards_gives_the_unsplit_records(local_ray, tiny_open_clip, folder, tmp_path, capsys):
    args = ["eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(folder),
            "--resolutions", "16,32,hr", "--batch-size", "4", "--workers", "0", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    assert main([*args, "--out", str(tmp_path / "shards"), "--engine", "ray"]) == 0
    records = assert_same_store(tmp_path / "single", tmp_path / "shards", 3)
    assert {r["run"]["shards"] for r in records} == {4}  # one unit, 4 GPUs: 4 shards of 6 images


def kill_driver_after(cfg, out, engine_args, cells):
    """Start ``lr0fm sweep`` in a subprocess, SIGKILL it once ``cells`` records are written; the
    processes it started (to check none outlives it)."""
    env = {**os.environ, "PYTHONPATH": SRC, "LR0FM_FAULT": "sleep-after-unit:3"}
    driver = subprocess.Popen([sys.executable, "-m", "lr0fm", "sweep", str(cfg), *engine_args, "--out", str(out)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    descendants = set()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(list((out / "records").glob("*.json"))) < cells:
            descendants |= descendants_of(driver.pid)
            assert driver.poll() is None, "the driver ended before it was killed"
            time.sleep(0.1)
        descendants |= descendants_of(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    return descendants


@pytest.mark.slow
@pytest.mark.parametrize("engine_args", [["--engine", "ray"], ["--engine", "slurm", "--slurm-cluster", "local"]],
                         ids=["ray", "slurm-local"])
def test_killed_driver_rerun_computes_only_the_rest(local_ray, grid, tmp_path, capsys, engine_args):
    cfg, ref = grid
    out = tmp_path / "o"
    descendants = kill_driver_after(cfg, out, engine_args, 3)
    # Ray's head processes die with the driver, its agents notice it and end within about a minute;
    # submitit's local elements end within a second of it
    assert children_gone(descendants, timeout=150) == [], "processes outlived the killed driver"
    first = {p.name: p.read_bytes() for p in (out / "records").glob("*.json")}
    assert 3 <= len(first) < 12
    assert main(["sweep", str(cfg), *engine_args, "--out", str(out)]) == 0  # the same command again
    assert_same_store(ref, out, 12)
    assert all((out / "records" / name).read_bytes() == data for name, data in first.items())


# -- SLURM through submitit ---------------------------------------------------------------------------
@pytest.mark.slow
def test_slurm_local_array_writes_the_single_process_store(grid, tmp_path, capsys):
    cfg, ref = grid
    out = tmp_path / "slurm"
    assert main(["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "local", "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["engine"] for r in records} == {"slurm"}
    before = {p.name: p.read_bytes() for p in (out / "records").iterdir()}
    assert main(["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "debug", "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in (out / "records").iterdir()} == before


@pytest.mark.slow
def test_slurm_preempted_element_is_requeued_from_its_resume_point(grid, tmp_path, monkeypatch, capsys):
    """SIGUSR2 (SLURM's preemption signal) mid-pass: submitit checkpoints and requeues the element,
    which continues from the resume point it left on the results folder."""
    cfg, ref = grid
    out = tmp_path / "preempted"
    monkeypatch.setenv("LR0FM_FAULT", "preempt-after-saves:2")
    assert main(["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "local", "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["attempts"] for r in records} == {2}
    assert {r["run"]["resumed_images"] for r in records} == {8}  # 2 resume points of 4 images each
    logs = "".join(p.read_text() for p in (out / "slurm").glob("*_log.err"))
    assert logs.count("INFO:submitit:Requeued job") == 4  # each element preempted once, requeued once


def slurm_eval_args(model, folder, cluster, parallelism):
    return ["eval", "--model", model, "--dataset", "imagefolder", "--data-root", str(folder), "--resolutions",
            "16,32,hr", "--batch-size", "4", "--workers", "0", "--no-progress", "--engine", "slurm",
            "--slurm-cluster", cluster, "--slurm-array-parallelism", str(parallelism)]


@pytest.mark.slow
def test_slurm_long_unit_split_into_shards_gives_the_unsplit_records(tiny_open_clip, folder, tmp_path, capsys):
    args = slurm_eval_args(tiny_open_clip[0], folder, "local", 3)
    assert main([*args[:-6], "--out", str(tmp_path / "single")]) == 0
    assert main([*args, "--out", str(tmp_path / "shards")]) == 0
    records = assert_same_store(tmp_path / "single", tmp_path / "shards", 3)
    assert {r["run"]["shards"] for r in records} == {3} and {r["run"]["engine"] for r in records} == {"slurm"}
    assert not list((tmp_path / "shards" / "units").glob("*.shards"))  # merged, then removed
    assert len(list((tmp_path / "shards" / "slurm").glob("*_result.pkl"))) == 3  # one element per shard


def test_slurm_shards_left_by_a_gone_submitter_are_merged_by_the_rerun(tiny_open_clip, folder, tmp_path,
                                                                      monkeypatch, capsys):
    """The submitting process dies after the shard elements finished: the same command merges
    their shards without sending any element again."""
    from lr0fm.engines import slurm
    from lr0fm.engines.units import commit as real_commit

    args = [*slurm_eval_args(tiny_open_clip[0], folder, "debug", 3), "--out", str(tmp_path / "o")]
    assert main([*args[:-8], "--out", str(tmp_path / "single")]) == 0

    def gone(*_args, **_kwargs):
        raise KeyboardInterrupt  # the submitter is stopped just before it merges
    monkeypatch.setattr(slurm, "commit", gone)
    assert main(args) == 130
    assert len(list((tmp_path / "o" / "units").glob("*.shards/*of3.npz"))) == 3
    assert not list((tmp_path / "o" / "records").glob("*.json"))
    monkeypatch.undo()
    ran = []
    real = slurm._Element.__call__
    monkeypatch.setattr(slurm._Element, "__call__", lambda self: ran.append(self.spec.shard) or real(self))
    assert main(args) == 0 and ran == []
    records = assert_same_store(tmp_path / "single", tmp_path / "o", 3)
    assert {r["run"]["shards"] for r in records} == {3}
    # one shard file gone: the rerun sends that shard alone
    for p in (tmp_path / "o" / "records").glob("*.json"):
        p.unlink()
    monkeypatch.setattr(slurm, "commit", gone)
    ran.clear()
    assert main(args) == 130 and len(ran) == 3
    sorted((tmp_path / "o" / "units").glob("*.shards/*.npz"))[1].unlink()
    monkeypatch.setattr(slurm, "commit", real_commit)
    ran.clear()
    assert main(args) == 0 and [s.index for s in ran] == [1]
    assert_same_store(tmp_path / "single", tmp_path / "o", 3)



class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_a_shard_file_is_read_without_unpickling(tiny_open_clip, folder, tmp_path, monkeypatch):
    """A shard on the shared results folder reads back as the result written, and a file holding
    a pickle is refused without running it."""
    from lr0fm.engines import slurm
    from lr0fm.engines.units import TaskResult

    args = [*slurm_eval_args(tiny_open_clip[0], folder, "debug", 3), "--out", str(tmp_path / "o")]
    written = []
    real = slurm.commit
    monkeypatch.setattr(slurm, "commit", lambda store, data, results, *a, **k: written.extend(results) or
                        real(store, data, results, *a, **k))
    monkeypatch.setattr(slurm._ShardFolder, "remove", lambda self: None)  # keep the files to read again
    assert main(args) == 0 and len(written) == 3
    files = sorted((tmp_path / "o" / "units").glob("*.shards/*.npz"))
    again = [TaskResult.from_file(f) for f in files]
    for a, b in zip(written, again):
        assert (a.attempt, a.host, a.cells) == (b.attempt, b.host, b.cells)
        for x, y in zip(a.shards, b.shards):
            assert (x.ev.id, x.model_info, x.protocol, x.cfg, x.cells, x.pending, x.run, x.lo, x.hi) == \
                   (y.ev.id, y.model_info, y.protocol, y.cfg, y.cells, y.pending, y.run, y.lo, y.hi)
            for name in ("topk", "valid", "labels", "ids"):
                np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    monkeypatch.chdir(tmp_path)
    np.savez(files[0], meta=np.array([_RunsCode()], dtype=object))
    with pytest.raises(ValueError):
        TaskResult.from_file(files[0])
    assert not (tmp_path / "ran-code").exists()


def test_slurm_rerun_submits_only_the_units_with_missing_cells(grid, tmp_path, monkeypatch):
    """A finished sweep sends no element again; with one cell's record gone, only its unit runs."""
    from lr0fm.engines import slurm

    cfg, ref = grid
    out = tmp_path / "slurm"
    args = ["sweep", str(cfg), "--engine", "slurm", "--slurm-cluster", "debug", "--out", str(out)]
    assert main(args) == 0
    ran = []
    real = slurm._Element.__call__
    monkeypatch.setattr(slurm._Element, "__call__", lambda self: ran.append(self.spec.groups) or real(self))
    assert main(args) == 0 and ran == []
    records = sorted((out / "records").glob("*.json"))
    records[0].unlink()
    assert main(args) == 0 and len(ran) == 1
    assert_same_store(ref, out, 12)


def test_a_hub_repository_updated_under_its_name_is_a_new_request(folder, tmp_path, monkeypatch):
    """The unit marker (RESULTS/units) keys a hub model by the commit the hub cache holds, so a
    rerun after the repository changed under the same name computes its cells again."""
    import huggingface_hub.constants

    from lr0fm.datasets import get_dataset
    from lr0fm.engines.units import TaskSpec, request_key
    from lr0fm.groups import Group

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    refs = tmp_path / "models--org--clip" / "refs"
    spec = TaskSpec("u0", [Group("hf-hub:org/clip", get_dataset("imagefolder", root=str(folder)))], [16, "hr"],
                    "cpu", None, {}, ImageShard(0, 1))
    keys = [request_key(spec)]  # not in the cache
    for commit in ("a" * 40, "b" * 40):
        refs.mkdir(parents=True, exist_ok=True)
        (refs / "main").write_text(commit)
        keys.append(request_key(spec))
    assert len(set(keys)) == 3 and request_key(spec) == keys[-1]


def test_slurm_without_sbatch_is_one_line(grid, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    assert main(["sweep", str(grid[0]), "--engine", "slurm", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sbatch" in err[0] and "--slurm-cluster local" in err[0]


def test_a_worker_that_cannot_read_the_data_fails_its_unit_in_one_line(folder, tmp_path):
    """No shared data root: the data the driver opened is not on the worker's disk."""
    import shutil
    import socket

    from lr0fm.datasets import get_dataset
    from lr0fm.engines.units import check_visible
    from lr0fm.errors import DatasetError

    copy = shutil.copytree(folder, tmp_path / "only_on_the_driver")
    data = get_dataset("imagefolder", root=copy)
    check_visible(data)  # readable: nothing to say
    shutil.rmtree(copy)
    with pytest.raises(DatasetError) as e:
        check_visible(data)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"worker {socket.gethostname()} cannot read ")
    assert str(copy) in line and "same data root" in line


def test_progress_line_counts_units_and_their_cells(capsys):
    from lr0fm.engines.progress import Progress
    running = {1}
    progress = Progress("ray", {0: 30.0, 1: 10.0, 2: 10.0, 3: 50.0}, {0: 3, 1: 6, 2: 3, 3: 3}, every=0,
                        running=lambda: running)
    progress.finish(0, 3)
    progress.finish(2, failed=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("lr0fm ray: units 1 done, 1 running, 1 failed, 1 waiting (4 in all); "
                                "cells 3 written, 6 running, 3 failed (15 in all); ETA ")
    running.add(0)  # a finished unit is not running
    assert "units 1 done, 1 running" in progress.line()



def test_ray_cpu_tasks_sending_resume_points_do_not_oversubscribe_the_cpus(local_ray):
    """Ray lends the CPU of a task blocked in ray.get on its main thread to the next task; the
    coordinator's answers are awaited off it, so 2 CPUs run at most 2 units at once."""
    from lr0fm.engines.ray import _Coordinator

    def busy_unit(actor, key):  # a CPU task that sends resume points as a pass does (pickled by value)
        from lr0fm.engines.ray import _ActorChannel
        channel = _ActorChannel(actor)
        start = time.time()
        channel.begin(key)
        for _ in range(6):
            time.sleep(0.25)
            channel.save(key, {"x": np.zeros(3)})
        return start, time.time()

    class SlowCoordinator(_Coordinator):  # answers as a busy driver's coordinator does, slowly
        def begin(self, key):
            time.sleep(0.5)
            return super().begin(key)

    coordinator = ray.remote(num_cpus=0)(SlowCoordinator).remote({})
    task = ray.remote(num_cpus=1, num_gpus=0)(busy_unit)
    spans = ray.get([task.remote(coordinator, f"k{i}") for i in range(5)])
    ray.kill(coordinator)
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2, spans
