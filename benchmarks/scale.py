"""How the Ray engine scales: 24 units of simulated work on 1, 2, 4, 8 (logical) GPUs, and the
per-unit overhead of Ray against the in-process run on one real tiny unit.

    python benchmarks/scale.py [--work 24] [--gpus 1,2,4,8] [--json]

Simulated work: 24 units whose durations follow the paper grid's estimated pass times
(lr0fm sweep --preset lr0fm: the spread of its (model, dataset) passes), scaled to ``--work``
seconds in all. They are scheduled exactly as the engine schedules units (lr0fm.engines.schedule:
long units cut into image shards, longest first) and each task sleeps its share on a Ray task
holding one logical GPU, so the figures measure scheduling and Ray's overhead, not compute.
Target: speedup >= 0.8 x N.

Real unit: a 2-layer open_clip ViT (random weights) on 24 generated images at 3 resolutions,
run by ``lr0fm.evaluate`` in this process and with the Ray engine (Ray already started); the
difference is what one unit costs on Ray beyond its pass (task start, model build in the
worker, shipping predictions back, the driver's writes).

Driver memory (``--driver-memory N``, default 945 units as in the paper grid): the driver's unit
lifecycle (lr0fm.engines.lifecycle) runs N units whose tasks report at once from a simulated
session, each with the predictions of ``--images`` images at 5 resolutions (a real task's result,
its arrays copied per unit); every unit is committed (records made, predictions serialised, the
writes themselves counted, not stored). The driver's RSS is printed every 10 % of the units: it
stays flat when each unit's predictions are let go once committed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def unit_durations(n: int, total: float) -> list[float]:
    """``n`` durations with the spread of the paper grid's estimated passes, summing to ``total``."""
    from lr0fm.sweep import load_config
    from lr0fm.sweep_plan import DEFAULT_TFLOPS, pass_estimates, plan_datasets, preset_path

    config = load_config(preset_path("lr0fm"))
    rows = pass_estimates(config, plan_datasets(config), set(), DEFAULT_TFLOPS["fp32"])
    seconds = sorted(r["seconds"] for r in rows if r["seconds"])
    picked = [seconds[int(i * (len(seconds) - 1) / (n - 1))] for i in range(n)]  # evenly spaced quantiles
    scale = total / sum(picked)
    return [p * scale for p in picked]


def simulated(durations: list[float], gpus: int) -> dict:
    import ray

    from lr0fm.engines import schedule

    ray.init(num_cpus=2, num_gpus=gpus, include_dashboard=False, logging_level="ERROR")
    try:
        @ray.remote(num_gpus=1, num_cpus=0, max_calls=0)  # as the engine's tasks
        def work(seconds: float) -> float:
            time.sleep(seconds)
            return seconds

        ray.get([work.remote(1.0) for _ in range(gpus)])  # all workers started: not part of the figure
        tasks = schedule.tasks(durations, [10_000] * len(durations), gpus)
        start = time.perf_counter()
        ray.get([work.remote(t.cost) for t in tasks])
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {"gpus": gpus, "tasks": len(tasks), "wall_s": round(wall, 2),
            "ideal_s": round(schedule.makespan(tasks, gpus), 2)}


def real_unit(rounds: int = 2) -> dict:
    import ray

    import lr0fm
    from lr0fm.engines.ray import RayEngine

    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-scale-"))
    model, data = _tiny_setup(tmp)
    options = dict(resolutions=[16, 32, "hr"], batch_size=8, workers=0, progress=False)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        lr0fm.evaluate(model, data, out=tmp / "warm", engine=RayEngine(), **options)  # worker and caches warm
        times = {"local": [], "ray": []}
        for r in range(rounds):
            for name, engine in (("local", None), ("ray", RayEngine())):
                start = time.perf_counter()
                lr0fm.evaluate(model, data, out=tmp / f"{name}{r}", engine=engine, **options)
                times[name].append(time.perf_counter() - start)
    finally:
        ray.shutdown()
    local, on_ray = min(times["local"]), min(times["ray"])
    return {"images": len(data), "resolutions": 3, "local_s": round(local, 2), "ray_s": round(on_ray, 2),
            "overhead_s": round(on_ray - local, 2)}


def _tiny_setup(tmp: Path):
    """A 2-layer open_clip ViT (random weights) and 3 x 8 generated images: (model name, dataset)."""
    import numpy as np
    import open_clip
    import torch
    from PIL import Image

    from lr0fm.datasets import get_dataset

    cfg = tmp / "lr0fm-scale-tiny.json"
    cfg.write_text(json.dumps({"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64,
                                                                 "patch_size": 16, "head_width": 32},
                               "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2,
                                            "layers": 2}}))
    open_clip.add_model_config(str(cfg))
    torch.manual_seed(0)
    torch.save(open_clip.create_model("lr0fm-scale-tiny", pretrained=None).state_dict(), tmp / "tiny.pt")
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp / "data" / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(tmp / "data" / c / f"{i}.png")
    return f"open_clip:{cfg}:{tmp / 'tiny.pt'}", get_dataset("imagefolder", root=str(tmp / "data"))


def driver_memory(units: int, images: int) -> dict:
    """The driver's RSS while it commits ``units`` units of ``images`` images x 5 resolutions."""
    import dataclasses

    import numpy as np
    import psutil

    from lr0fm.engines.lifecycle import Lifecycle, Outcome, Unit
    from lr0fm.engines.units import TaskSpec, run_task
    from lr0fm.evaluation import ImageShard
    from lr0fm.groups import Group
    from lr0fm.store import ResultsStore

    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-scale-"))
    model, data = _tiny_setup(tmp)
    resolutions = [16, 32, 64, 128, "hr"]

    class Channel:
        def begin(self, key):
            return 1

        def resume_point(self, key):
            return None

        def save(self, key, arrays):
            pass

    spec = TaskSpec("t.0of1", [Group(model, data)], resolutions, "cpu", None, {"batch_size": 8, "workers": 0},
                    ImageShard(0, 1))
    template = run_task(spec, frozenset(), Channel(), tmp / "cache")
    shard = template.shards[0]
    classes = data.spec.num_classes
    rng = np.random.default_rng(0)
    ids = np.asarray([f"n{i:08d}/img_{i:08d}.JPEG" for i in range(images)])

    class CountingStore(ResultsStore):  # the commits' writes counted, not kept: memory is the driver's own
        written = 0

        def complete(self, cell, warn=True):
            return False

        def put(self, record, predictions):
            from lr0fm.store import npz_bytes
            CountingStore.written += len(npz_bytes(**predictions))

        def drop_partial(self, key):
            pass

        def drop_stale_partials(self, evaluation, finished):
            pass

        def get(self, cell):
            return None

    class Simulated:  # every task reports at once with its own copy of a unit's predictions
        interval = 0.0

        def __init__(self):
            self.queue = []

        def slots(self):
            return 64

        def submit(self, specs):
            self.queue.extend(specs)

        def poll(self):
            out = []
            for spec in self.queue[:8]:
                topk = rng.integers(0, classes, (len(resolutions), images, shard.topk.shape[2]), dtype=np.int32)
                result = dataclasses.replace(template, shards=[dataclasses.replace(
                    shard, lo=0, hi=images, topk=topk, valid=np.ones(images, bool),
                    labels=rng.integers(0, classes, images, dtype=np.int32), ids=ids.copy())])
                out.append(Outcome(spec.key, result=result))
            del self.queue[:8]
            samples.append(process.memory_info().rss)
            return out

        def running(self):
            return set()

        def close(self, cancel):
            pass

    process = psutil.Process()
    samples: list[int] = []
    store = CountingStore(tmp / "results")
    plan = [Unit(i, [Group(model, data)], 1.0, images, None, f"sim-{i}") for i in range(units)]
    start = time.perf_counter()
    Lifecycle("simulated", Simulated(), store, plan, resolutions, "cpu", None, {}, split=False, show=False).run()
    seconds = time.perf_counter() - start
    step = max(1, len(samples) // 10)
    series = [round(samples[i] / 2 ** 20) for i in range(0, len(samples), step)] + [round(samples[-1] / 2 ** 20)]
    return {"units": units, "images_per_unit": images, "predictions_mb_per_unit": round(
        (len(resolutions) * images * shard.topk.shape[2] * 4 + ids.nbytes) / 2 ** 20, 1),
        "written_mb": round(CountingStore.written / 2 ** 20),
        "rss_mb_series": series, "rss_growth_mb": series[-1] - series[1], "seconds": round(seconds, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=float, default=24.0, help="seconds of simulated work in all (default: %(default)s)")
    p.add_argument("--units", type=int, default=24)
    p.add_argument("--gpus", default="1,2,4,8")
    p.add_argument("--json", action="store_true")
    p.add_argument("--driver-memory", type=int, default=None, metavar="N",
                   help="only the driver's memory over N committed units (the paper grid: 945)")
    p.add_argument("--images", type=int, default=10_000, help="images per simulated unit (--driver-memory)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.driver_memory:
        m = driver_memory(args.driver_memory, args.images)
        if args.json:
            print(json.dumps(m))
        else:
            print(f"driver memory: {m['units']} units of {m['images_per_unit']} images x 5 resolutions "
                  f"({m['predictions_mb_per_unit']} MB of predictions each, {m['written_mb']} MB written in all) "
                  f"in {m['seconds']} s; RSS MB every 10 %: {m['rss_mb_series']}; growth after the first 10 %: "
                  f"{m['rss_growth_mb']} MB")
        return 0
    durations = unit_durations(args.units, args.work)
    rows = [simulated(durations, int(n)) for n in args.gpus.split(",")]
    base = rows[0]["wall_s"] * rows[0]["gpus"]
    for row in rows:
        row["speedup"] = round(base / row["wall_s"], 2)
        row["target"] = round(0.8 * row["gpus"], 2)
    unit = real_unit()
    result = {"cores": os.cpu_count(), "units": args.units, "work_s": args.work,
              "longest_unit_s": round(max(durations), 2), "simulated": rows, "real_unit": unit}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.units} simulated units, {args.work:g} s of work (longest {max(durations):.2f} s), "
          f"{os.cpu_count()} cores, logical GPUs")
    print(f"{'GPUs':>4} {'tasks':>5} {'wall s':>7} {'ideal s':>7} {'speedup':>7} {'target':>6}")
    for row in rows:
        print(f"{row['gpus']:>4} {row['tasks']:>5} {row['wall_s']:>7.2f} {row['ideal_s']:>7.2f} {row['speedup']:>7.2f} "
              f"{row['target']:>6.2f}")
    print(f"one real tiny unit ({unit['images']} images x 3 resolutions): local {unit['local_s']:.2f} s, "
          f"Ray {unit['ray_s']:.2f} s, overhead {unit['overhead_s']:.2f} s per unit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
