"""No process outlives lr0fm: the main process of an eval is killed (SIGKILL, SIGTERM) while its
data-loading workers run, and no worker is alive a few seconds later; SIGTERM ends as Ctrl-C does
(one line, exit 143, the resume point kept) and a rerun finishes with the records of an
uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from lr0fm.evaluation.loading import EndWithParent
from lr0fm.store import ResultsStore

from conftest import make_image

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")

TERMINATED = "lr0fm: terminated; finished cells are saved, rerun the same command to resume"


def _folder(root, n=240):
    rng = np.random.default_rng(3)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    for i in range(n):
        make_image(rng, (120 + i % 13, 96), (255 * (i % 2), 0, 0)).save(root / ("a", "b")[i % 2] / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def eval_args(tiny_open_clip, tmp_path_factory):
    root = _folder(tmp_path_factory.mktemp("processes") / "imgs")
    return ["eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(root),
            "--resolutions", "16,32,hr", "--batch-size", "4", "--workers", "2", "--no-progress",
            "--checkpoint-every", "8"]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _start_and_wait_for_workers(out, args, workers=2):
    """The eval running with its data workers; returns (process, the workers' psutil handles).
    Its output goes to files (out.stdout, out.stderr): a worker left alive would hold a pipe open."""
    out.mkdir(parents=True)
    with open(out / "stdout", "w") as stdout, open(out / "stderr", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "lr0fm", "--out", str(out)] + args, env=_env(),
                                stdout=stdout, stderr=stderr)
    main = psutil.Process(proc.pid)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            children = main.children()
        except psutil.NoSuchProcess:
            break
        if len(children) >= workers and list((out / "partial").glob("*.npz")):  # the pass is under way
            return proc, children
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    pytest.fail(f"the eval ended (rc {proc.returncode}) before its workers were seen: "
                f"{(out / 'stderr').read_text()[-2000:]}")


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _workers_gone(workers, within=10.0) -> list:
    deadline = time.time() + within
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.05)
    left = [w for w in workers if _alive(w)]
    for w in left:  # leave nothing behind, then fail
        w.kill()
    return left


def test_sigkill_of_the_main_process_ends_its_workers(eval_args, tmp_path):
    proc, workers = _start_and_wait_for_workers(tmp_path / "out", eval_args)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the eval finished before it could be killed"
    left = _workers_gone(workers)
    assert not left, f"data workers outlived their killed parent: {[w.pid for w in left]}"


def test_sigterm_ends_like_ctrl_c_and_a_rerun_gives_the_uninterrupted_records(eval_args, tmp_path):
    out = tmp_path / "out"
    proc, workers = _start_and_wait_for_workers(out, eval_args)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    stderr = (out / "stderr").read_text()
    assert proc.returncode == 143, stderr
    assert stderr.strip() == TERMINATED and (out / "stdout").read_text() == ""
    assert not _workers_gone(workers)
    assert list((out / "partial").glob("*.npz")), "the resume point was not kept"
    assert not list((out / "records").glob("*.json"))

    resumed = subprocess.run([sys.executable, "-m", "lr0fm", "--out", str(out), "-v"] + eval_args, env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    ref = subprocess.run([sys.executable, "-m", "lr0fm", "--out", str(tmp_path / "ref")] + eval_args, env=_env(),
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    a, b = ResultsStore(tmp_path / "ref"), ResultsStore(out)
    strip = lambda r: {k: v for k, v in r.items() if k != "run"}  # noqa: E731
    assert len(a.records()) == 3
    assert [strip(r) for r in a.records()] == [strip(r) for r in b.records()]
    for r in a.records():
        pa, pb = a.load_predictions(r["cell"]), b.load_predictions(r["cell"])
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert not list((out / "partial").glob("*.npz"))


def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    """The race EndWithParent closes: a parent that died before the worker set its death signal."""
    code = ("import os, sys; sys.path[:0] = %r\n"
            "from lr0fm.evaluation.loading import EndWithParent\n"
            "EndWithParent(parent=os.getppid() + 1)(0)\n"
            "print('survived')\n") % (sys.path,)
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert done.returncode == 1 and "survived" not in done.stdout


def test_end_with_parent_keeps_a_worker_of_a_living_parent():
    code = ("import os, sys; sys.path[:0] = %r\n"
            "from lr0fm.evaluation.loading import EndWithParent\n"
            "EndWithParent(parent=os.getppid())(0)\n"
            "print('running')\n") % (sys.path,)
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "running", done.stderr
    assert EndWithParent().parent == os.getpid()
