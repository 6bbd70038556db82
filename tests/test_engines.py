"""Engines without a cluster: scheduling, the sweep's plan on N GPUs, one line for what cannot run,
request keys, leases, result files read without unpickling, the progress line.

The engines on real clusters: tests/test_engine_ray.py (a local Ray and a two-node Ray) and
tests/test_engine_slurm.py (submitit's local executor and a real single-node SLURM)."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lr0fm.cli import main
from lr0fm.engines import schedule
from lr0fm.evaluation import ImageShard

from enginekit import NoResumeChannel

pytest.importorskip("ray")
pytest.importorskip("submitit")


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


def test_models_per_task_needs_an_engine(grid, tmp_path, capsys):
    assert main(["sweep", str(grid[0]), "--models-per-task", "0", "--out", str(tmp_path / "o")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["lr0fm: error: --models-per-task applies to --engine ray or --engine slurm; add that or drop it"]


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



# -- leases ----------------------------------------------------------------------------------------
def test_a_lease_is_held_by_one_process_at_a_time(tmp_path):
    from lr0fm.engines.lease import Leases

    a, b = Leases(tmp_path), Leases(tmp_path)
    assert a.acquire("u1.0of1") and a.acquire("u1.0of1")  # its own lease again: still held
    assert not b.acquire("u1.0of1") and b.held_by_others() == {"u1.0of1"} and not a.held_by_others()
    assert b.holder("u1.0of1")["token"] == a.token
    a.release("u1.0of1")
    assert b.acquire("u1.0of1") and a.held_by_others() == {"u1.0of1"}
    b.release_all()
    assert not list((tmp_path / "leases").glob("*.json"))


def test_a_lease_goes_stale_without_heartbeat_or_holder(tmp_path):
    from lr0fm.engines.lease import Leases

    holder = Leases(tmp_path, heartbeat=0.2, stale_after=1.0)
    assert holder.acquire("k.0of1")
    time.sleep(1.5)  # the heartbeat keeps it fresh
    assert not Leases(tmp_path, stale_after=1.0).acquire("k.0of1")
    holder._stop.set()  # its holder stops beating (a process frozen or on a lost machine)
    time.sleep(1.5)
    taker = Leases(tmp_path, stale_after=1.0)
    assert taker.acquire("k.0of1") and taker.holder("k.0of1")["token"] == taker.token
    # a holder process of this host that is gone: stale at once
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "leases" / "j.0of1.json"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout), "token": "x"}))
    assert Leases(tmp_path).acquire("j.0of1")


def test_a_requeued_slurm_job_takes_over_its_own_lease(tmp_path):
    from lr0fm.engines.lease import Leases

    first = Leases(tmp_path, tag="123_4")
    assert first.acquire("k.0of1")
    assert not Leases(tmp_path, tag="123_5").acquire("k.0of1")
    assert Leases(tmp_path, tag="123_4").acquire("k.0of1")  # the same job, run again by SLURM


# -- result files ------------------------------------------------------------------------------------
def _task(tiny_open_clip, folder, key: str = "r.0of1", shard: ImageShard = ImageShard(0, 1)):
    """(the folder's data, a task of the tiny model on it at 16 px and HR, in batches of 4, no workers)."""
    from lr0fm.datasets import get_dataset
    from lr0fm.engines.units import TaskSpec
    from lr0fm.groups import Group

    data = get_dataset("imagefolder", root=str(folder))
    return data, TaskSpec(key, [Group(tiny_open_clip[0], data)], [16, "hr"], "cpu", None,
                          {"batch_size": 4, "workers": 0}, shard)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_a_task_result_file_is_read_without_unpickling(tiny_open_clip, folder, tmp_path, monkeypatch):
    """What an element leaves on the shared results folder reads back as the result written, and
    a file holding a pickle is refused without running it."""
    from lr0fm.engines.units import TaskResult, run_task

    data, spec = _task(tiny_open_clip, folder, "r.1of3", ImageShard(1, 3))
    written = run_task(spec, frozenset(), NoResumeChannel(), tmp_path / "cache", where="slurm job 1_2")
    assert written.ran_on == f"{socket.gethostname()} (slurm job 1_2)" and len(written.shards) == 1
    path = tmp_path / "r.npz"
    path.write_bytes(written.to_bytes())
    again = TaskResult.from_file(path)
    assert (written.attempt, written.host, written.cells, written.ran_on) == \
           (again.attempt, again.host, again.cells, again.ran_on)
    x, y = written.shards[0], again.shards[0]
    assert (x.ev.id, x.model_info, x.protocol, x.cfg, x.cells, x.pending, x.run, x.lo, x.hi) == \
           (y.ev.id, y.model_info, y.protocol, y.cfg, y.cells, y.pending, y.run, y.lo, y.hi)
    for name in ("topk", "valid", "labels", "ids"):
        np.testing.assert_array_equal(getattr(x, name), getattr(y, name))
    assert not (tmp_path / "records").exists()
    monkeypatch.chdir(tmp_path)
    np.savez(path, meta=np.array([_RunsCode()], dtype=object))
    with pytest.raises(ValueError):
        TaskResult.from_file(path)
    assert not (tmp_path / "ran-code").exists()


def test_an_attempt_that_reports_late_changes_no_finished_record(tiny_open_clip, folder, tmp_path):
    """Two attempts of one task both report (a slow element the scheduler thought lost, and its
    resubmission): the first commit writes the cells, the late one changes no byte of them."""
    from lr0fm.engines.units import commit, run_task
    from lr0fm.store import ResultsStore

    data, spec = _task(tiny_open_clip, folder)
    store = ResultsStore(tmp_path / "o")
    first, late = (run_task(spec, frozenset(), NoResumeChannel(a), tmp_path / "cache") for a in (1, 2))
    assert len(commit(store, data, [first], "slurm", request="r")) == 2
    written = {p.name: p.read_bytes() for p in (tmp_path / "o").rglob("*") if p.is_file()}
    time.sleep(0.01)
    assert commit(store, data, [late], "slurm", request="r") == []
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").rglob("*") if p.is_file()} == written


def test_two_commits_at_once_write_each_record_once(tiny_open_clip, folder, tmp_path, monkeypatch):
    """Two processes finish the same cells at the same moment (two drivers, two submitters): the
    check that a cell is complete and its writing are one step, so each record is written once,
    by one of them, and its predictions are the ones it names."""
    import threading

    from lr0fm.engines.units import commit, run_task
    from lr0fm.store import ResultsStore
    from lr0fm.verify import quick_problem

    data, spec = _task(tiny_open_clip, folder)
    attempts = [run_task(spec, frozenset(), NoResumeChannel(a), tmp_path / "cache") for a in (1, 2)]
    puts: list[str] = []
    put = ResultsStore.put

    def slow_put(self, record, predictions):  # widens the window between the check and the write
        puts.append(record["cell"])
        time.sleep(0.3)
        put(self, record, predictions)

    monkeypatch.setattr(ResultsStore, "put", slow_put)
    wrote: dict = {}
    threads = [threading.Thread(target=lambda a=a: wrote.update({a.attempt: commit(
        ResultsStore(tmp_path / "o"), data, [a], "slurm", request="r")})) for a in attempts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    store = ResultsStore(tmp_path / "o")
    assert sorted(puts) == sorted(set(puts)) and len(puts) == 2, puts  # each of the 2 cells written once
    assert sorted(len(cells) for cells in wrote.values()) == [0, 2], wrote
    for record in store.records():
        assert quick_problem(record, store.predictions_path(record["cell"]).read_bytes()) is None


def test_records_are_written_where_the_file_system_has_no_locks(tiny_open_clip, folder, tmp_path, monkeypatch):
    """A results folder on a file system without locks (ENOLCK) still gets its records: the commit
    lock is skipped there, not turned into an error."""
    import errno

    import filelock

    from lr0fm.engines.units import commit, run_task
    from lr0fm.store import ResultsStore

    data, spec = _task(tiny_open_clip, folder)
    result = run_task(spec, frozenset(), NoResumeChannel(), tmp_path / "cache")

    def no_locks(self, *args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(filelock.FileLock, "acquire", no_locks)
    store = ResultsStore(tmp_path / "o")
    assert len(commit(store, data, [result], "slurm", request="r")) == 2
    assert len(store.records()) == 2
