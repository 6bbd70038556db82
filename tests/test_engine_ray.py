"""The Ray engine on a local Ray: the single-process store, one line for a failing unit, shards, a
worker SIGKILLed, a local Ray that stays local, the driver SIGKILLed and rerun. No process outlives
a test. The two-node cluster: tests/test_engine_ray_cluster.py."""
import os
import time

import pytest

from lr0fm.cli import main
from lr0fm.store import ResultsStore

from conftest import assert_same_store
from enginekit import (SRC, children_gone, descendants_of, fault_env, kill_driver_after, lr0fm, record_bytes,
                       write_config)

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def local_ray():
    """A Ray of the test process (2 CPUs, 4 logical GPUs): lr0fm uses a connected process's Ray as it is."""
    before = descendants_of(os.getpid())
    ray.init(address="local", num_cpus=2, num_gpus=4, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": SRC}})
    try:
        yield ray
    finally:
        started = [pid for pid in descendants_of(os.getpid()) if pid not in before]
        ray.shutdown()
        assert children_gone(started) == [], "Ray processes outlived the tests"


# -- a local Ray -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_sweep_writes_the_single_process_store(local_ray, grid, tmp_path, capsys):
    cfg, ref = grid
    out = tmp_path / "ray"
    assert main(["sweep", str(cfg), "--engine", "ray", "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["engine"] for r in records} == {"ray"} and {r["run"]["attempts"] for r in records} == {1}
    assert {r["run"].get("shards", 1) for r in records} == {1}  # 4 equal units on 4 GPUs: none split
    assert all(r["run"]["ran_on"][0].endswith(")") and "ray node " in r["run"]["ran_on"][0] for r in records)
    assert not list((out / "leases").glob("*.json"))  # every lease given back
    # a rerun computes nothing: every record stays as it was
    before = record_bytes(out)
    assert main(["sweep", str(cfg), "--engine", "ray", "--out", str(out)]) == 0
    assert record_bytes(out) == before


def test_a_dataset_s_models_in_one_task_pass(local_ray, grid, tmp_path, capsys):
    """--models-per-task 0: each dataset's two models run in one pass (one unit per dataset, each
    image decoded once for both), sharded over the 4 logical GPUs; the same store as one process."""
    cfg, ref = grid
    out = tmp_path / "ray"
    assert main(["sweep", str(cfg), "--engine", "ray", "--models-per-task", "0", "--out", str(out)]) == 0
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["models_in_pass"] for r in records} == {2} and {r["run"]["shards"] for r in records} == {2}


@pytest.mark.slow
def test_failing_unit_is_reported_once_and_the_rest_is_done(local_ray, tiny_open_clip, folder, tmp_path, capsys):
    bad = f"open_clip:{tiny_open_clip[1]}:{tmp_path / 'missing.pt'}"
    cfg = write_config(tmp_path / "sweep.yaml", [tiny_open_clip[0], bad], folder)
    assert main(["sweep", str(cfg), "--engine", "ray", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("  ")]
    assert "2 of 4 units failed" in err and len(failed) == 2
    assert all("missing.pt" in line and " on folder: ModelError: checkpoint " in line for line in failed), err
    good = ResultsStore(tmp_path / "o").records()
    assert len(good) == 6 and len({r["model"] for r in good}) == 1


@pytest.mark.slow
def test_long_unit_split_into_shards_gives_the_unsplit_records(local_ray, tiny_open_clip, folder, tmp_path, capsys):
    args = ["eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(folder),
            "--resolutions", "16,32,hr", "--batch-size", "4", "--workers", "0", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    assert main([*args, "--out", str(tmp_path / "shards"), "--engine", "ray"]) == 0
    records = assert_same_store(tmp_path / "single", tmp_path / "shards", 3)
    assert {r["run"]["shards"] for r in records} == {4}  # one unit, 4 GPUs: 4 shards of 6 images


def test_ray_cpu_tasks_sending_resume_points_do_not_oversubscribe_the_cpus(local_ray, tmp_path):
    """Ray lends the CPU of a task blocked in ray.get on its main thread to the next task; the
    coordinator's answers are awaited off it, so 2 CPUs run at most 2 units at once."""
    import numpy as np

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

    coordinator = ray.remote(num_cpus=0)(SlowCoordinator).remote(str(tmp_path))
    task = ray.remote(num_cpus=1, num_gpus=0)(busy_unit)
    spans = ray.get([task.remote(coordinator, f"k{i}") for i in range(5)])
    ray.kill(coordinator)
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2, spans


# -- lr0fm's own local Ray, as a user runs it ----------------------------------------------------
@pytest.mark.slow
def test_lost_worker_is_retried_from_its_resume_point(grid, tmp_path):
    """Each task's first worker SIGKILLs itself after its 2nd resume point (test fault): Ray retries
    it, and the retry continues from the resume point the coordinator wrote on the driver's node."""
    cfg, ref = grid
    out = tmp_path / "killed"
    run = lr0fm(["sweep", cfg, "--engine", "ray", "--out", out], env=fault_env(tmp_path, KILL_AFTER_SAVES=2))
    assert run.returncode == 0, run.stderr[-3000:]
    records = assert_same_store(ref, out, 12)
    assert {r["run"]["attempts"] for r in records} == {2}
    assert {r["run"]["resumed_images"] for r in records} == {8}  # 2 resume points of 4 images each


@pytest.mark.slow
def test_a_local_ray_is_local_whatever_ray_address_says(grid, tmp_path):
    """Without --address lr0fm starts its own Ray and stops it: RAY_ADDRESS pointing elsewhere, or a
    cluster this machine runs, is not joined (ray.init() would join it)."""
    cfg, ref = grid
    env = {**fault_env(tmp_path), "RAY_ADDRESS": "127.0.0.1:1"}  # nothing answers there
    run = lr0fm(["sweep", cfg, "--engine", "ray", "--out", tmp_path / "o"], env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_store(ref, tmp_path / "o", 12)


@pytest.mark.slow
def test_killed_driver_rerun_computes_only_the_rest(grid, tmp_path):
    cfg, ref = grid
    out = tmp_path / "o"
    env = fault_env(tmp_path, SLEEP_AFTER_UNIT=3)  # units end apart, so the kill falls between two
    descendants = kill_driver_after(["sweep", cfg, "--engine", "ray", "--out", out], out, 3, env)
    # Ray's head processes die with the driver, its agents notice it and end within about a minute
    assert children_gone(descendants, timeout=150) == [], "processes outlived the killed driver"
    first = record_bytes(out)
    assert 3 <= len(first) < 12
    run = lr0fm(["sweep", cfg, "--engine", "ray", "--out", out], env=fault_env(tmp_path))  # the same command again
    assert run.returncode == 0, run.stderr[-3000:]
    assert_same_store(ref, out, 12)
    assert all((out / "records" / name).read_bytes() == data for name, data in first.items())
