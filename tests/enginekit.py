"""What the engine tests share (their fixtures ``folder`` and ``grid`` are in conftest.py): a sweep
config, running lr0fm as a user would (a subprocess), process bookkeeping, and test-only faults
(tests/faults/sitecustomize.py, active in the processes that get ``fault_env``)."""
import os
import subprocess
import sys
import time

import psutil

TESTS = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(TESTS), "src")
FAULTS = os.path.join(TESTS, "faults")


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
    return [p for p in pids if alive(p)]


def fault_env(tmp_path, **faults):
    """The environment of a driver whose workers get ``faults`` (LR0FM_TEST_* without the prefix,
    e.g. KILL_AFTER_SAVES="2")."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([FAULTS, SRC]), "LR0FM_TEST_FAULT_DIR": str(tmp_path)}
    env.update({f"LR0FM_TEST_{k}": str(v) for k, v in faults.items()})
    return env


def lr0fm(args, env=None, timeout=600, **kwargs):
    """Run ``python -m lr0fm ARGS`` as a user would; the CompletedProcess (text)."""
    env = env or {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-m", "lr0fm", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def start_lr0fm(args, env=None, **kwargs):
    env = env or {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-m", "lr0fm", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


def wait_for(predicate, timeout=120.0, every=0.2, what="the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def partials(out):
    return list((out / "partial").glob("*.npz"))


def records_in(out):
    return sorted((out / "records").glob("*.json"))


def record_bytes(out):
    return {p.name: p.read_bytes() for p in records_in(out)}


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




def with_progress(cfg, folder):
    """A copy of sweep config ``cfg`` in ``folder`` that shows the driver's progress lines."""
    import shutil
    shutil.copy(cfg.parent / "prompts.txt", folder / "prompts.txt")
    copy = folder / "sweep-progress.yaml"
    copy.write_text(cfg.read_text().replace("progress: false", "progress: true"))
    return copy


def kill_driver_after(args, out, cells, env):
    """Start ``lr0fm ARGS`` in a subprocess, SIGKILL it once ``cells`` records are in ``out``; the
    processes it started (to check none outlives it)."""
    import signal
    driver = start_lr0fm(args, env=env)
    descendants = set()
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(records_in(out)) < cells:
            descendants |= descendants_of(driver.pid)
            assert driver.poll() is None, "the driver ended before it was killed: " + driver.stderr.read()[-2000:]
            time.sleep(0.1)
        descendants |= descendants_of(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    return descendants


class NoResumeChannel:
    """A worker's channel to a driver that keeps no resume points (a task run in a test as is)."""

    def __init__(self, attempt: int = 1):
        self.attempt = attempt

    def begin(self, key):
        return self.attempt

    def resume_point(self, key):
        return None

    def save(self, key, arrays):
        pass


def task_runs(log):
    """How many times each task started computing (the LR0FM_TEST_TASK_LOG file of tests/faults)."""
    from collections import Counter
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else Counter()
