"""Every bad value of every subcommand's options: exit 2 and one line on stderr, before any model
is built, any image read or anything written (issue 28). One table: the subcommand, its bad
argument(s) and what the line says."""
import re
import time

import pytest
import yaml

import lr0fm.models
from lr0fm.cli import main

# placeholders filled per test: a tiny open_clip ViT (64 px, fixed), a folder of images, the
# results folder, a sweep file of the two, a file that does not exist
TINY, DATA, OUT, SWEEP, MISSING, CAPTIONS = "{tiny}", "{data}", "{out}", "{sweep}", "{missing}", "{captions}"
EVAL = ["--out", OUT, "eval", "--model", TINY, "--dataset", "imagefolder", "--data-root", DATA, "--workers", "0",
        "--no-progress"]
SWEEP_RUN = ["--out", OUT, "sweep", SWEEP]
LAYERS = ["--out", OUT, "analyze", "layers", "--model", TINY, "--dataset", "imagefolder", "--data-root", DATA]
PREDICTIONS = ["--out", OUT, "analyze", "predictions", "--model", TINY, "--dataset", "imagefolder", "--data-root", DATA]
TRAIN = ["train-tokens", "--model", TINY, "--data", DATA, "--output", OUT + "/run", "--device", "cpu"]
SYNTH = ["synth", "--captions", CAPTIONS, "--output", OUT + "/synth", "--device", "cpu"]
FAMILIES = r"(?=.*CLIPA)(?=.*OpenCLIP)(?=.*SigLIP)"  # the line lists the paper's families

CASES = {
    # -- eval: RunOptions (run, protocol, variant), the model, the data, the engine -------------
    "eval-protocol-unknown": (EVAL + ["--protocol", "foo"], r"--protocol 'foo' unknown; use native, paper or "
                                                            r"paper:FAMILY \(FAMILY one of " + FAMILIES),
    "eval-protocol-no-family": (EVAL + ["--protocol", "paper:"], r"--protocol 'paper:' unknown.*" + FAMILIES),
    "eval-protocol-bad-family": (EVAL + ["--protocol", "paper:NoSuchFamily"],
                                 r"paper:NoSuchFamily: no such family in the paper's catalog; use one of " + FAMILIES),
    "eval-protocol-paper-of-no-paper-backbone": (EVAL + ["--protocol", "paper"],
                                                 r"not one of the paper's backbones.*paper:FAMILY"),
    "eval-profile-trace-a-file": (EVAL + ["--profile-trace", CAPTIONS], r"--profile-trace .*: .* is a file; give a writable "
                                  r"folder for the trace"),
    "eval-hr-via-huge": (EVAL + ["--hr-via", "99999"], r"--hr-via 99999 px is above the largest lr0fm makes "
                                                       r"\(16384 px"),
    "eval-hr-via-negative": (EVAL + ["--hr-via", "-1"], r"--hr-via -1 must be a size in px, or 0"),
    "eval-hr-via-text": (EVAL + ["--hr-via", "big"], r"--hr-via must be a whole number of pixels, got 'big'"),
    "eval-input-size-fixed": (EVAL + ["--input-size", "128"], r"--input-size 128: lr0fm-tiny-vit takes 64 px only "
                                                              r"\(its positional embedding is fixed\); drop --input-size"),
    "eval-input-size-fixed-huge": (EVAL + ["--input-size", "4096"], r"--input-size 4096: lr0fm-tiny-vit takes 64 px"),
    "eval-input-size-zero": (EVAL + ["--input-size", "0"], r"input size 0 must be a positive number of pixels"),
    "eval-input-size-above": (EVAL + ["--input-size", "4097"], r"input size 4097 px is above the largest"),
    "eval-input-size-text": (EVAL + ["--input-size", "big"], r"--input-size must be a whole number of pixels"),
    "eval-resolutions-text": (EVAL + ["-r", "16,x"], r"resolution 'x' is not an integer number of pixels"),
    "eval-resolutions-zero": (EVAL + ["-r", "0"], r"resolution 0 must be a positive number of pixels"),
    "eval-resolutions-huge": (EVAL + ["-r", "99999"], r"resolution 99999 px is above the largest"),
    "eval-resolutions-none": (EVAL + ["-r", ","], r"no resolutions given"),
    "eval-batch-size-zero": (EVAL + ["--batch-size", "0"], r"--batch-size 0 must be at least 1"),
    "eval-batch-size-text": (EVAL + ["--batch-size", "x"], r"argument --batch-size: invalid int value: 'x'"),
    "eval-limit-zero": (EVAL + ["--limit", "0"], r"--limit 0 must be at least 1"),
    "eval-workers-negative": (EVAL + ["--workers", "-1"], r"--workers -1 must be at least 0"),
    "eval-checkpoint-every-zero": (EVAL + ["--checkpoint-every", "0"], r"--checkpoint-every 0 must be at least 1"),
    "eval-amp": (EVAL + ["--amp", "fp8"], r"argument --amp: invalid choice: 'fp8'"),
    "eval-views": (EVAL + ["--views", "gpu"], r"argument --views: invalid choice: 'gpu'"),
    "eval-decoder": (EVAL + ["--decoder", "nvjpeg"], r"argument --decoder: invalid choice"),
    "eval-resize-mode": (EVAL + ["--resize-mode", "crop"], r"argument --resize-mode: invalid choice"),
    "eval-interpolation": (EVAL + ["--interpolation", "cubic"], r"argument --interpolation: invalid choice"),
    "eval-rgb-order": (EVAL + ["--rgb-order", "middle"], r"argument --rgb-order: invalid choice"),
    "eval-device": (EVAL + ["--device", "tpu"], r"--device 'tpu' is not a device torch knows"),
    "eval-device-gpu-index": (EVAL + ["--device", "cuda:99"], r"--device cuda:99: "),
    "eval-lr-tokens-missing": (EVAL + ["--lr-tokens", MISSING], r"--lr-tokens .*missing.safetensors: no such file"),
    "eval-sr-missing": (EVAL + ["--sr", MISSING], r"--sr '.*missing.safetensors': neither 'bicubic' nor"),
    "eval-model-unknown": (["--out", OUT, "eval", "--model", "no-such-model", "--dataset", "imagefolder",
                            "--data-root", DATA], r"unknown model 'no-such-model'"),
    "eval-dataset-unknown": (EVAL[:5] + ["--dataset", "no-such-data"], r"no-such-data"),
    "eval-download": (EVAL + ["--download", "ftp"], r"argument --download: invalid choice"),
    "eval-engine": (EVAL + ["--engine", "spark"], r"argument --engine: invalid choice"),
    "eval-address-without-ray": (EVAL + ["--address", "auto"], r"--address applies to --engine ray"),
    "eval-gpus-per-task-without-ray": (EVAL + ["--gpus-per-task", "1"], r"--gpus-per-task applies to --engine ray"),
    "eval-models-per-task-local": (EVAL + ["--models-per-task", "2"], r"--models-per-task applies to --engine ray"),
    "eval-columns-not-hfds": (EVAL + ["--image-column", "img"], r"--image-column / --label-column apply to hfds"),
    # -- sweep: its command line (run options override the file's) -------------------------------
    "sweep-batch-size": (SWEEP_RUN + ["--batch-size", "0"], r"--batch-size 0 must be at least 1"),
    "sweep-limit": (SWEEP_RUN + ["--limit", "0"], r"--limit 0 must be at least 1"),
    "sweep-workers": (SWEEP_RUN + ["--workers", "-2"], r"--workers -2 must be at least 0"),
    "sweep-checkpoint-every": (SWEEP_RUN + ["--checkpoint-every", "0"], r"--checkpoint-every 0 must be at least 1"),
    "sweep-amp": (SWEEP_RUN + ["--amp", "fp8"], r"argument --amp: invalid choice"),
    "sweep-views": (SWEEP_RUN + ["--views", "gpu"], r"argument --views: invalid choice"),
    "sweep-device": (SWEEP_RUN + ["--device", "tpu"], r"--device 'tpu' is not a device torch knows"),
    "sweep-resolutions-text": (SWEEP_RUN + ["--resolutions", "16,x"], r"resolution 'x' is not an integer"),
    "sweep-resolutions-absent": (SWEEP_RUN + ["--resolutions", "48"], r"--resolutions 48: 48 not in the sweep"),
    "sweep-models-filter": (SWEEP_RUN + ["--models", "family=NoSuch"], r"--models family=NoSuch: no model"),
    "sweep-datasets-filter": (SWEEP_RUN + ["--datasets", "dtd"], r"--datasets dtd: dtd not in the sweep"),
    "sweep-preset-unknown": (["--out", OUT, "sweep", "--preset", "nosuch"], r"nosuch"),
    "sweep-file-and-preset": (SWEEP_RUN + ["--preset", "lr0fm"], r"give a sweep config file or --preset NAME"),
    "sweep-no-file": (["--out", OUT, "sweep"], r"give a sweep config file or --preset NAME"),
    "sweep-file-missing": (["--out", OUT, "sweep", MISSING], r"sweep config .*missing.safetensors does not exist"),
    "sweep-throughput-without-estimate": (SWEEP_RUN + ["--throughput", "50"], r"--throughput / --images-per-second"),
    "sweep-throughput-zero": (SWEEP_RUN + ["--estimate", "--throughput", "0"], r"--throughput 0.0 must be a positive number"),
    "sweep-gpus-zero": (SWEEP_RUN + ["--estimate", "--gpus", "0"], r"--gpus 0 must be at least 1"),
    "sweep-address-without-ray": (SWEEP_RUN + ["--address", "auto"], r"--address applies to --engine ray"),
    # -- analyze ----------------------------------------------------------------------------------
    "layers-resolutions-text": (LAYERS + ["-r", "16,x"], r"resolution 'x' is not an integer"),
    "layers-resolutions-huge": (LAYERS + ["-r", "99999"], r"resolution 99999 px is above the largest"),
    "layers-resolutions-hr-only": (LAYERS + ["-r", "hr"], r"--resolutions needs at least one LR size"),
    "layers-limit": (LAYERS + ["--limit", "1"], r"argument --limit: 1 must be at least 2"),
    "layers-batch-size": (LAYERS + ["--batch-size", "0"], r"argument --batch-size: 0 must be at least 1"),
    "layers-device": (LAYERS + ["--device", "tpu"], r"--device 'tpu' is not a device torch knows"),
    "layers-lr-tokens-missing": (LAYERS + ["--lr-tokens", MISSING], r"--lr-tokens .*: no such file"),
    "predictions-threshold": (PREDICTIONS + ["--threshold", "1.5"], r"argument --threshold: 1.5 must be at most 1"),
    "predictions-threshold-text": (PREDICTIONS + ["--threshold", "high"], r"argument --threshold: 'high' is not a"),
    "predictions-gallery": (PREDICTIONS + ["--gallery", "-1"], r"argument --gallery: -1 must be at least 0"),
    "predictions-where": (PREDICTIONS + ["--where", "limit"], r"--where 'limit': expected COLUMN=VALUE"),
    "predictions-lr-tokens-missing": (PREDICTIONS + ["--lr-tokens", MISSING], r"--lr-tokens .* does not exist"),
    "analyze-models-source": (["--out", OUT, "analyze", "models", "--source", "web"], r"argument --source: invalid"),
    "analyze-models-metric": (["--out", OUT, "analyze", "models", "--metric", "F1"], r"argument --metric: invalid"),
    # -- train-tokens -----------------------------------------------------------------------------
    "train-steps": (TRAIN + ["--steps", "0"], r"argument --steps: 0 must be at least 1"),
    "train-captions": (TRAIN + ["--captions", "0"], r"argument --captions: 0 must be at least 1"),
    "train-per-caption": (TRAIN + ["--per-caption", "0"], r"argument --per-caption: 0 must be at least 1"),
    "train-lr": (TRAIN + ["--lr", "0"], r"argument --lr: 0 must be above 0"),
    "train-lr-text": (TRAIN + ["--lr", "fast"], r"argument --lr: 'fast' is not a number"),
    "train-weight-decay": (TRAIN + ["--weight-decay", "-1"], r"argument --weight-decay: -1 must be at least 0"),
    "train-warmup": (TRAIN + ["--warmup", "-1"], r"argument --warmup: -1 must be at least 0"),
    "train-aux-weight": (TRAIN + ["--aux-weight", "-0.5"], r"argument --aux-weight: -0.5 must be at least 0"),
    "train-first": (TRAIN + ["--first", "0"], r"argument --first: 0 must be at least 1"),
    "train-last": (TRAIN + ["--last", "0"], r"argument --last: 0 must be at least 1"),
    "train-num-prompts": (TRAIN + ["--num-prompts", "0"], r"argument --num-prompts: 0 must be at least 1"),
    "train-grid": (TRAIN + ["--grid", "-1"], r"argument --grid: -1 must be at least 0"),
    "train-micro-batch": (TRAIN + ["--micro-batch", "0"], r"argument --micro-batch: 0 must be at least 1"),
    "train-val-fraction": (TRAIN + ["--val-fraction", "1"], r"argument --val-fraction: 1 must be below 1"),
    "train-val-every": (TRAIN + ["--val-every", "0"], r"argument --val-every: 0 must be at least 1"),
    "train-save-every": (TRAIN + ["--save-every", "0"], r"argument --save-every: 0 must be at least 1"),
    "train-buckets-text": (TRAIN + ["--buckets", "small"], r"--buckets 'small': give lo-hi pairs"),
    "train-buckets-empty": (TRAIN + ["--buckets", "32-16"], r"resolution bucket \[32, 16\) is empty"),
    "train-target": (TRAIN + ["--target", "tokens"], r"argument --target: invalid choice"),
    "train-aux": (TRAIN + ["--aux", "l2"], r"argument --aux: invalid choice"),
    "train-aux-kl-needs-logits": (TRAIN + ["--aux", "kl"], r"--aux kl compares class distributions"),
    "train-variant": (TRAIN + ["--variant", "deep"], r"argument --variant: invalid choice"),
    "train-amp": (TRAIN + ["--amp", "fp16"], r"argument --amp: invalid choice"),
    "train-device": (TRAIN[:-2] + ["--device", "tpu"], r"--device 'tpu' is not a device torch knows"),
    "train-data-missing": (["train-tokens", "--model", TINY, "--data", MISSING, "--output", OUT + "/run"],
                           r"no such folder or index file"),
    # -- synth --------------------------------------------------------------------------------------
    "synth-images-per-caption": (SYNTH + ["-n", "0"], r"argument --images-per-caption/-n: 0 must be at least 1"),
    "synth-batch-size": (SYNTH + ["--batch-size", "0"], r"argument --batch-size: 0 must be at least 1"),
    "synth-steps": (SYNTH + ["--steps", "0"], r"argument --steps: 0 must be at least 1"),
    "synth-size": (SYNTH + ["--size", "4"], r"argument --size: 4 must be at least 8"),
    "synth-shard-text": (SYNTH + ["--shard", "half"], r"--shard 'half': give i/n"),
    "synth-shard-range": (SYNTH + ["--shard", "4/4"], r"--shard '4/4': need 0 <= i < n"),
    "synth-dtype": (SYNTH + ["--dtype", "int8"], r"argument --dtype: invalid choice"),
    "synth-device": (SYNTH[:-2] + ["--device", "tpu"], r"--device 'tpu' is not a device torch knows"),
    "synth-captions-missing": (["synth", "--captions", MISSING, "--output", OUT + "/synth"], r"--captions .*: cannot"),
    # -- compare, report, metrics (read stored results) --------------------------------------------
    "compare-resolutions": (["--out", OUT, "compare", "-r", "16,x"], r"resolution 'x' is not an integer"),
    "compare-context": (["--out", OUT, "compare", "--context", "-1"], r"argument --context: -1 must be at least 0"),
    "compare-rank-by": (["--out", OUT, "compare", "--rank-by", "F1"], r"argument --rank-by: invalid choice"),
    "compare-where": (["--out", OUT, "compare", "--where", "nosuch=1"], r"--where 'nosuch=1': expected COLUMN=VALUE"),
    "report-where": (["--out", OUT, "report", "--where", "limit"], r"--where 'limit': expected COLUMN=VALUE"),
    "report-rank-by": (["--out", OUT, "report", "--rank-by", "F1"], r"argument --rank-by: invalid choice"),
    "metrics-rank-by": (["metrics", "--accuracies", MISSING, "--rank-by", "F1"], r"argument --rank-by: invalid"),
    "metrics-accuracies-missing": (["metrics", "--accuracies", MISSING], r"missing.safetensors"),
    # -- no such command or option ------------------------------------------------------------------
    "command-unknown": (["evaluate"], r"argument command: invalid choice: 'evaluate'"),
    "option-unknown": (EVAL + ["--batchsize", "8"], r"unrecognized arguments: --batchsize 8"),
}

# sweep file keys: the base file (the tiny model on the folder) with one key changed
SWEEP_FILE_CASES = {
    "protocol-unknown": ({"protocol": "foo"}, r"--protocol 'foo' unknown.*" + FAMILIES),
    "protocol-no-family": ({"protocol": "paper:"}, r"--protocol 'paper:' unknown.*" + FAMILIES),
    "protocol-bad-family": ({"protocol": "paper:NoSuchFamily"}, r"no such family in the paper's catalog.*" + FAMILIES),
    "protocol-paper-of-no-paper-backbone": ({"protocol": "paper"}, r"not one of the paper's backbones"),
    "hr-via-huge": ({"hr_via": 99999}, r"--hr-via 99999 px is above the largest"),
    "hr-via-negative": ({"hr_via": -1}, r"--hr-via -1 must be a size in px"),
    "hr-via-text": ({"hr_via": "big"}, r"--hr-via 'big' must be a whole number of pixels"),
    "input-size-fixed": ({"input_size": 128}, r"--input-size 128: lr0fm-tiny-vit takes 64 px only"),
    "input-size-zero": ({"input_size": 0}, r"input size 0 must be a positive number"),
    "resolutions": ({"resolutions": [16, "x"]}, r"resolution 'x' is not an integer"),
    "batch-size": ({"batch_size": 0}, r"--batch-size 0 must be at least 1"),
    "batch-size-text": ({"batch_size": "many"}, r"--batch-size 'many' must be a whole number"),
    "amp": ({"amp": "fp8"}, r"--amp 'fp8' unknown; use one of bf16, fp16"),
    "resize-mode": ({"resize_mode": "crop"}, r"--resize-mode 'crop' unknown; use one of shortest, squash"),
    "rgb-order": ({"rgb_order": "middle"}, r"--rgb-order 'middle' unknown; use one of first, last"),
    "unknown-key": ({"batchsize": 8}, r"unknown key\(s\) batchsize; known:"),
    "lr-tokens-missing": ({"lr_tokens": [None, MISSING]}, r"--lr-tokens .*: no such file"),
    "sr-missing": ({"sr": [None, MISSING]}, r"--sr '.*missing.safetensors': neither 'bicubic' nor"),
    "model-unknown": ({"models": ["no-such-model"]}, r"unknown model 'no-such-model'"),
}


@pytest.fixture()
def nothing_built(places, monkeypatch):
    """Building a model or opening an image fails the test."""
    import PIL.Image

    def built(*args, **kwargs):
        raise AssertionError(f"a model was built: {args}")

    def read(*args, **kwargs):
        raise AssertionError(f"an image was read: {args}")

    monkeypatch.setattr(lr0fm.models, "create_model", built)
    monkeypatch.setattr(PIL.Image, "open", read)


@pytest.fixture()
def places(tiny_open_clip, image_folder, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"models": [tiny_open_clip[0]],
                                     "datasets": [{"key": "imagefolder", "data_root": str(image_folder)}],
                                     "resolutions": [16, "hr"], "workers": 0, "progress": False}))
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\na dog\n")
    return {"tiny": tiny_open_clip[0], "data": str(image_folder), "out": str(tmp_path / "out"), "sweep": str(sweep),
            "missing": str(tmp_path / "missing.safetensors"), "captions": str(captions)}


def run_cli(argv, capsys) -> tuple[int, str]:
    """``lr0fm ARGV`` in this process: (exit code, stderr); nothing may go to stdout."""
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    captured = capsys.readouterr()
    assert captured.out == "", captured.out
    assert time.perf_counter() - start < 10, "a bad option took long to refuse"
    return code, captured.err


def assert_refused(code: int, err: str, match: str, out) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert re.search(r"^lr0fm( [a-z-]+)*: error: ", lines[0]) and re.search(match, lines[0]), lines[0]
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))  # nothing written


@pytest.mark.parametrize("argv,match", list(CASES.values()), ids=list(CASES))
def test_bad_option_is_one_line_exit_2_nothing_built_or_written(argv, match, places, nothing_built, capsys, tmp_path):
    code, err = run_cli([a.format(**places) for a in argv], capsys)
    assert_refused(code, err, match, tmp_path / "out")


@pytest.mark.parametrize("key", list(SWEEP_FILE_CASES))
def test_bad_sweep_file_key_is_one_line_exit_2_nothing_built_or_written(key, places, nothing_built, capsys, tmp_path):
    change, match = SWEEP_FILE_CASES[key]
    config = yaml.safe_load(open(places["sweep"]))
    config.update({k: [v.format(**places) if isinstance(v, str) else v for v in value] if isinstance(value, list)
                   else value for k, value in change.items()})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    for dry_run in ([], ["--dry-run"]):  # a run and a dry run (which builds each model) check the same
        code, err = run_cli(["--out", places["out"], "sweep", str(tmp_path / "bad.yaml"), *dry_run], capsys)
        assert_refused(code, err, match, tmp_path / "out")


def test_every_run_option_has_a_bad_value_in_the_table():
    """The table covers each option of lr0fm eval that RunOptions declares (a new option adds its
    bad values here)."""
    from dataclasses import fields

    from lr0fm.options import RunOptions, flag

    flags = {a for argv, _ in CASES.values() for a in argv if a.startswith("-")}
    for f in fields(RunOptions):
        if f.metadata["cli"] and not isinstance(f.default, bool):
            assert set(f.metadata["flags"] or (flag(f.name),)) & flags, f.name


def test_input_size_of_a_model_known_once_built_is_one_line_before_the_pass(tiny_hf_clip, image_folder, tmp_path,
                                                                             monkeypatch, capsys):
    """A transformers model's input size is known once it is built: the check is right after it,
    still one line; the pass (which reads the images) never starts."""
    import lr0fm.evaluation

    def pass_started(*args, **kwargs):
        raise AssertionError("the pass started")

    monkeypatch.setattr(lr0fm.evaluation, "evaluate_many", pass_started)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # transformers' own "Loading weights" bar is not lr0fm's output
    out = tmp_path / "out"
    try:
        code, err = run_cli(["--out", str(out), "eval", "--model", tiny_hf_clip[0], "--dataset", "imagefolder",
                             "--data-root", str(image_folder), "--input-size", "128", "--workers", "0"], capsys)
    finally:
        hf_logging.enable_progress_bar()
    assert_refused(code, err, rf"--input-size 128: hf:{re.escape(str(tiny_hf_clip[1]))} takes 64 px only \(its "
                              r"positional embedding is fixed\); drop --input-size", out)


def test_the_input_size_of_a_model_that_takes_any_is_kept(tiny_open_clip):
    """A tower without a learned positional embedding (a CNN) takes any input size; the override
    is applied and recorded; and the model's own size is always allowed."""
    from torch import nn

    from lr0fm.models import choose_protocol, create_model
    from lr0fm.models.towers import input_size_fixed

    model = create_model(tiny_open_clip[0])
    assert input_size_fixed(model.tower)
    assert choose_protocol(model, input_size=64).preprocess.input_size == 64
    assert not input_size_fixed(nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1)))
