"""Chaos runs: a small grid on a two-node Ray and on a real single-node SLURM (both started here as
tests/realclusters.py starts them), with random faults injected from outside, by PID or by SLURM's
own commands, and every run compared with the single-process store.

    python benchmarks/chaos.py [--engine ray|slurm|both] [--faults 20] [--runs 5] [--seed 0]

The grid: two tiny open_clip models (2-layer ViTs, random weights) x one generated image folder
(3 classes x 8 images) with two prompt sets x 3 resolutions = 12 cells in 4 units, every pass
slowed to ~2 s per resume point (a test fault: tests/faults/sitecustomize.py) so a fault lands
mid-pass. Each run draws its
share of ``--faults`` from the engine's list (seeded) and fires them one after another while the
driver runs, each once a resume point is on disk:

* ray:   worker-sigkill (a task's worker process), node-loss (every process of the node that is not
         the driver's; brought back after the run), driver-sigkill (then the same command again),
         second-driver (the same command started beside the first);
* slurm: element-sigkill, requeue (``scontrol requeue``), scancel-one (then the same command again),
         submitter-sigkill (then the same command again), second-submitter.

A run counts as identical when its results folder holds the single-process store (records minus
``run``, predictions byte-equal) after the command (and its reruns) ended with rc 0; "processes
left" counts the cluster, driver and worker processes alive after everything was stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

FAULTS = {"ray": ["worker-sigkill", "node-loss", "driver-sigkill", "second-driver"],
          "slurm": ["element-sigkill", "requeue", "scancel-one", "submitter-sigkill", "second-submitter"]}


def make_grid(tmp: Path) -> tuple[Path, Path]:
    """The sweep config and the single-process store it gives."""
    import numpy as np
    import open_clip
    import torch
    from PIL import Image

    from conftest import TINY_OPEN_CLIP_CFG

    cfg = tmp / "lr0fm-tiny-vit.json"
    cfg.write_text(json.dumps(TINY_OPEN_CLIP_CFG))
    open_clip.add_model_config(str(cfg))
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(open_clip.create_model("lr0fm-tiny-vit", pretrained=None).state_dict(), tmp / f"m{seed}.pt")
        models.append(f"open_clip:{cfg}:{tmp / f'm{seed}.pt'}")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "car"):
        (tmp / "data" / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (40 + 5 * i, 30 + 3 * i, 3), dtype=np.uint8)).save(
                tmp / "data" / c / f"{i}.png")
    sweep = tmp / "sweep.yaml"
    (tmp / "prompts.txt").write_text("a blurry photo of a {}.\na {}\n")
    sweep.write_text(f"models: [{', '.join(repr(m) for m in models)}]\n"
                     "datasets: [imagefolder, {key: imagefolder, templates: prompts.txt}]\n"
                     f"data_root: {tmp / 'data'}\nresolutions: [16, 32, hr]\nbatch_size: 4\nworkers: 0\n"
                     "checkpoint_every: 4\nprogress: true\n")
    ref = tmp / "ref"
    done = subprocess.run([sys.executable, "-m", "lr0fm", "sweep", str(sweep), "--out", str(ref), "--no-progress"],
                          env=base_env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the single-process sweep failed: {done.stderr[-2000:]}")
    return sweep, ref


def base_env(**extra) -> dict:
    from enginekit import FAULTS as FAULT_PATH
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([FAULT_PATH, str(ROOT / "src")]), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def identical(ref: Path, out: Path) -> bool:
    from lr0fm.store import ResultsStore
    import numpy as np

    a, b = ResultsStore(ref), ResultsStore(out)
    strip = lambda r: {k: v for k, v in r.items() if k != "run"}  # noqa: E731
    ra, rb = a.records(), b.records()
    if [strip(r) for r in ra] != [strip(r) for r in rb] or not ra:
        return False
    for r in ra:
        pa, pb = a.load_predictions(r["cell"]), b.load_predictions(r["cell"])
        if pa.keys() != pb.keys() or not all(np.array_equal(pa[k], pb[k]) for k in pa):
            return False
    return True


class Run:
    """One command of one run: its driver process(es) and what a fault needs to find its target."""

    def __init__(self, engine: str, cluster, sweep: Path, out: Path, tmp: Path):
        self.engine, self.cluster, self.sweep, self.out, self.tmp = engine, cluster, sweep, out, tmp
        self.env = base_env(LR0FM_TEST_SAVE_DELAY="2", LR0FM_TEST_FAULT_DIR=str(tmp), **cluster.env)
        where = ["--address", cluster.address] if engine == "ray" else []
        self.args = [sys.executable, "-m", "lr0fm", "sweep", str(sweep), "--engine", engine, *where,
                     "--out", str(out)]
        self.drivers: list[subprocess.Popen] = []
        self.reruns = 0

    def start(self) -> subprocess.Popen:
        p = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        self.drivers.append(p)
        return p

    def mid_pass(self, timeout: float = 300) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if list((self.out / "partial").glob("*.npz")) and any(d.poll() is None for d in self.drivers):
                return True
            if all(d.poll() is not None for d in self.drivers):
                return False
            time.sleep(0.2)
        return False

    def finish(self) -> int:
        codes = []
        for d in self.drivers:
            try:
                d.communicate(timeout=900)
            except subprocess.TimeoutExpired:
                d.kill()
                d.communicate()
            codes.append(d.returncode)
        return max(codes)


def workers_of(out: Path, engine: str):
    import psutil
    found = []
    for p in psutil.process_iter(["cmdline", "name"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if engine == "ray" and cmd.startswith("ray::_task"):
            found.append(p)
        if engine == "slurm" and "submitit.core._submit" in cmd and str(out) in cmd:
            found.append(p)
    return found


def fire(fault: str, run: Run) -> str | None:
    """Inject ``fault`` now; None when there was nothing to hit (the pass had ended)."""
    cluster = run.cluster
    if fault in ("worker-sigkill", "element-sigkill"):
        targets = workers_of(run.out, run.engine)
        if not targets:
            return None
        random.choice(targets).kill()
    elif fault == "node-loss":
        cluster.kill_node(1)
        cluster.wait_node_dead(1)
        cluster.restart_node(1)
    elif fault in ("driver-sigkill", "submitter-sigkill"):
        live = [d for d in run.drivers if d.poll() is None]
        if not live:
            return None
        live[0].send_signal(signal.SIGKILL)
        live[0].wait()
        run.drivers.remove(live[0])
        run.start()  # the same command again
    elif fault in ("second-driver", "second-submitter"):
        run.start()
    elif fault in ("requeue", "scancel-one"):
        text = cluster.run("squeue", "-h", "-o", "%i %T").stdout
        running = [line.split()[0] for line in text.splitlines() if line.split()[1:] == ["RUNNING"]]
        if not running:
            return None
        cluster.run("scontrol", "requeue", running[0]) if fault == "requeue" else cluster.run("scancel", running[0])
    return fault


def one_run(engine: str, cluster, sweep: Path, ref: Path, tmp: Path, faults: list[str]) -> dict:
    out = tmp / "out"
    run = Run(engine, cluster, sweep, out, tmp)
    run.start()
    fired = []
    for fault in faults:
        if not run.mid_pass():
            break
        if fire(fault, run):
            fired.append(fault)
        time.sleep(1.0)
    rc = run.finish()
    while rc == 2 and "scancel-one" in fired and run.reruns < 2:  # a cancelled unit: the user reruns
        run.reruns += 1
        run.drivers = []
        run.start()
        rc = run.finish()
    return {"faults": fired, "rc": rc, "identical": rc == 0 and identical(ref, out), "reruns": run.reruns}


def left_processes() -> list[str]:
    import psutil
    names = ("raylet", "gcs_server", "slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["name"] in names or cmd.startswith("ray::") or "submitit.core._submit" in cmd:
            out.append(f"{p.pid}:{p.info['name']}")
    return out


def chaos(engine: str, faults: int, runs: int, seed: int) -> dict:
    from realclusters import RayCluster, SlurmCluster

    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f"lr0fm-chaos-{engine}-"))
    sweep, ref = make_grid(tmp)
    per_run = [faults // runs + (1 if i < faults % runs else 0) for i in range(runs)]
    results = []
    cluster_cls = RayCluster if engine == "ray" else SlurmCluster
    kwargs = {"nodes": 2, "cpus_per_node": 1} if engine == "ray" else {}
    with cluster_cls(tmp / "cluster", **kwargs) as cluster:
        for k, n in enumerate(per_run):
            drawn = [rng.choice(FAULTS[engine]) for _ in range(n)]
            run_dir = tmp / f"run{k}"
            run_dir.mkdir()
            results.append(one_run(engine, cluster, sweep, ref, run_dir, drawn))
            print(f"{engine} run {k + 1}/{runs}: faults {results[-1]['faults']}, rc {results[-1]['rc']}, "
                  f"identical {results[-1]['identical']}", file=sys.stderr, flush=True)
    time.sleep(2)
    return {"engine": engine, "runs": runs, "faults_drawn": faults,
            "faults_injected": sum(len(r["faults"]) for r in results),
            "identical_runs": sum(r["identical"] for r in results), "processes_left": left_processes(),
            "per_run": results}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", choices=["ray", "slurm", "both"], default="both")
    p.add_argument("--faults", type=int, default=20, help="faults drawn per engine, over all runs")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clusters stopped by their context managers
    engines = ["ray", "slurm"] if args.engine == "both" else [args.engine]
    summary = [chaos(e, args.faults, args.runs, args.seed) for e in engines]
    if args.json:
        print(json.dumps(summary))
        return 0
    for s in summary:
        print(f"{s['engine']}: faults injected {s['faults_injected']} (of {s['faults_drawn']} drawn), runs identical "
              f"to the single-process store {s['identical_runs']}/{s['runs']}, processes left "
              f"{len(s['processes_left'])}")
    return 0 if all(s["identical_runs"] == s["runs"] and not s["processes_left"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
