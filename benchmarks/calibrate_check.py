"""The sweep plan's pass time from measured speeds against the pass itself.

    python benchmarks/calibrate_check.py --device cuda --amp bf16 --batch-size 256 --images 8192 \\
        --models open_clip:ViT-B-32:random,open_clip:ViT-L-14:random,open_clip:RN50:random
    python benchmarks/calibrate_check.py --models open_clip:A.json:random --images 240 --batch-size 16 --seconds 5

1. ``lr0fm calibrate`` measures each model on this machine (generated 500x375 JPEGs, its default);
2. a sweep over a folder of ``--images`` other generated JPEGs (an imagefolder of 2 classes) is
   planned: ``lr0fm sweep --estimate`` (lr0fm.sweep_plan, the measured speeds);
3. each model's pass runs alone (``lr0fm sweep --models NAME``: one pass per model, as the plan
   counts them), and its records' ``run.seconds`` is the measured pass time;
4. estimated / measured - 1 per model, and the checked passes' stage times (what ``--profile``
   prints); ``RESULT calibrate`` gives the largest error (target <= 15%).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import RESULT, generate_jpegs, model_label  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated model names (each calibrated and run alone)")
    ap.add_argument("--images", type=int, default=2048, help="images of the checked pass")
    ap.add_argument("--jpeg-dir", type=Path, default=None, help="folder for the generated JPEGs, kept and reused")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=10.0, help="lr0fm calibrate --seconds")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    from lr0fm.cli import main as lr0fm
    from lr0fm.evaluation.stages import stage_table
    from lr0fm.store import ResultsStore
    from lr0fm.sweep import load_config
    from lr0fm.sweep_plan import DEFAULT_TFLOPS, measured_speeds, pass_estimates, plan_datasets

    tmp = Path(tempfile.mkdtemp(prefix="lr0fm-calcheck-"))
    out = args.out or tmp / "results"
    # the checked images: generated like calibrate's, but others (another seed), as an imagefolder
    root = tmp / "imagefolder"
    for i, path in enumerate(generate_jpegs(args.jpeg_dir or tmp / "jpegs", args.images, seed=1)):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        (root / f"c{i % 2}" / path.name).symlink_to(path.resolve())
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    options = {"batch_size": args.batch_size, "device": args.device, "progress": False}
    if args.amp:
        options["amp"] = args.amp
    if args.workers is not None:
        options["workers"] = args.workers
    config_path = tmp / "sweep.yaml"
    config_path.write_text(json.dumps({"models": models, "datasets": ["imagefolder"], "data_root": str(root),
                                       **options}))  # JSON is YAML

    t = time.perf_counter()
    if lr0fm(["--out", str(out), "-v", "calibrate", str(config_path), "--seconds", str(args.seconds)]) != 0:
        print(f"{RESULT} calibrate FAILED: lr0fm calibrate did not finish")
        return 1
    print(f"(calibrated {len(models)} models in {time.perf_counter() - t:.0f} s)", flush=True)
    lr0fm(["sweep", str(config_path), "--estimate", "--out", str(out)])
    config = load_config(config_path)
    measured = measured_speeds(config.models, config.options, out)
    rows = pass_estimates(config, plan_datasets(config), set(), DEFAULT_TFLOPS[args.amp or "fp32"], measured=measured)
    estimated = {r["model"]: r["seconds"] for r in rows}

    errors, checked = {}, []
    print(f"\n{'model':<45} {'estimated s':>12} {'measured s':>11} {'error':>8}")
    for model in models:
        before = {r["cell"] for r in ResultsStore(out).records()}
        with contextlib.redirect_stdout(io.StringIO()):  # its accuracy report: not what is checked here
            code = lr0fm(["sweep", str(config_path), "--models", model, "--out", str(out)])
        if code != 0:
            print(f"{RESULT} calibrate FAILED: the pass of {model} did not finish")
            return 1
        record = next(r for r in ResultsStore(out).records() if r["cell"] not in before and r["model"] == model)
        checked.append(record)
        seconds = record["run"]["seconds"]
        if not measured.get(model) or estimated.get(model) is None:
            print(f"{model:<45} {'-':>12} {seconds:>11.2f}  (no measured speed)")
            continue
        errors[model] = estimated[model] / seconds - 1
        print(f"{model:<45} {estimated[model]:>12.2f} {seconds:>11.2f} {100 * errors[model]:>+7.1f}%", flush=True)
    # where a miss comes from: the checked passes' stages, beside those calibrate printed for its own
    print("\n" + stage_table(checked), flush=True)
    if len(errors) != len(models):
        print(f"{RESULT} calibrate FAILED: {len(models) - len(errors)} models without an estimate")
        return 1
    worst = max(errors.values(), key=abs)
    print(f"{RESULT} calibrate: estimated vs measured pass time, {args.images} JPEGs x 5 res, largest error "
          f"{100 * worst:+.1f}% (target within 15%): "
          + ", ".join(f"{model_label(m)} {100 * e:+.1f}%" for m, e in errors.items())
          + f"  {args.device} {args.amp or 'fp32'} batch {args.batch_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
