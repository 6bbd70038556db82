"""Fault injection for the engine tests, in every Python process that has tests/faults on its path
(the tests put it on PYTHONPATH of the drivers, Ray workers and SLURM elements they start).

Nothing here runs unless one of these is set:
* LR0FM_TEST_KILL_AFTER_SAVES=N[:SIGNAL]  a task's first attempt sends itself SIGNAL (default
  KILL; USR2 is SLURM's preemption signal) right after its N-th resume point (a marker file in
  LR0FM_TEST_FAULT_DIR says a task was already hit, so its retry runs on);
* LR0FM_TEST_SAVE_DELAY=S                 every resume point is followed by S seconds of sleep (a
                                          slow pass that a test can hit from outside, by PID);
* LR0FM_TEST_SLOW_UNTIL_REQUEUED=1        ... only in a SLURM job's first run (SLURM_RESTART_COUNT
                                          unset or 0): a requeued run goes at full speed;
* LR0FM_TEST_SLEEP_AFTER_UNIT=S           unit i's tasks sleep S*(i+1) s before they return
                                          (units that end apart, so a driver can be stopped between);
* LR0FM_TEST_TASK_LOG=FILE                each task that starts computing appends "KEY PID" to FILE
                                          (how many times each task ran).
lr0fm.engines.units is patched when it is first imported (no import of torch before that).
"""
import importlib.abc
import importlib.machinery
import os
import sys

_TARGET = "lr0fm.engines.units"
_ACTIVE = any(os.environ.get(k) for k in ("LR0FM_TEST_KILL_AFTER_SAVES", "LR0FM_TEST_SAVE_DELAY",
                                          "LR0FM_TEST_SLEEP_AFTER_UNIT", "LR0FM_TEST_TASK_LOG"))


def _patch(units):
    import signal
    import time

    kill = os.environ.get("LR0FM_TEST_KILL_AFTER_SAVES")
    delay = float(os.environ.get("LR0FM_TEST_SAVE_DELAY") or 0)
    if os.environ.get("LR0FM_TEST_SLOW_UNTIL_REQUEUED") and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
        delay = 0.0
    sleep_after = float(os.environ.get("LR0FM_TEST_SLEEP_AFTER_UNIT") or 0)
    marks = os.environ.get("LR0FM_TEST_FAULT_DIR", "/tmp")
    saves = {}
    save_partial = units.WorkerStore.save_partial

    def patched_save(self, key, **arrays):
        save_partial(self, key, **arrays)
        saves[key] = saves.get(key, 0) + 1
        if kill:
            n, _, sig = kill.partition(":")
            marker = os.path.join(marks, f"hit-{key}")
            if saves[key] == int(n) and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))
        if delay:
            time.sleep(delay)

    units.WorkerStore.save_partial = patched_save
    log = os.environ.get("LR0FM_TEST_TASK_LOG")
    if sleep_after or log:
        run_task = units.run_task

        def patched_run_task(spec, *args, **kwargs):
            if log:
                with open(log, "a") as f:
                    f.write(f"{spec.key} {os.getpid()}\n")
            result = run_task(spec, *args, **kwargs)
            time.sleep(sleep_after * (spec.unit + 1))
            return result

        units.run_task = patched_run_task  # before the engines bind it: they import it from units


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        loader.exec_module = exec_and_patch
        return spec


if _ACTIVE:
    sys.meta_path.insert(0, _Finder())
