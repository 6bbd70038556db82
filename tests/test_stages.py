"""Stage times of a pass (run.stages, --profile, --profile-trace) and the prefetch thread that
prepares the next batch while the models score this one."""
import time

import numpy as np
import pytest
import torch

from lr0fm.cli import main
from lr0fm.evaluation.passes import _Prefetch
from lr0fm.evaluation.stages import StageClock, stage_table
from lr0fm.store import ResultsStore

CPU_STAGES = {"wall", "wait", "read", "views", "forward", "scoring", "topk_copy", "store"}


def _eval(out, spec, folder, *extra):
    return ["--out", str(out), "eval", "-m", spec, "-d", "imagefolder", "--data-root", str(folder), "-r", "16,hr",
            "--workers", "0", "--no-progress", "--batch-size", "4", "--checkpoint-every", "4", *extra]


def test_profile_prints_the_stages_and_records_stay_those_of_a_plain_run(tiny_open_clip, image_folder, tmp_path,
                                                                          capsys):
    spec = tiny_open_clip[0]
    trace = tmp_path / "trace"
    assert main(_eval(tmp_path / "a", spec, image_folder, "--profile", "--profile-trace", str(trace))) == 0
    out = capsys.readouterr().out
    table = out[out.index("stage times"):].splitlines()
    header, row = table[1].split(), table[2].split()
    assert header[:5] == ["model", "dataset", "images", "res", "dev"] and row[1:5] == ["folder", "12", "2", "cpu"]
    assert set(header[5:-1]) == CPU_STAGES  # every stage is timed on a CPU
    profiled = ResultsStore(tmp_path / "a").records()
    assert len(profiled) == 2
    stages = profiled[0]["run"]["stages"]
    assert set(stages) == CPU_STAGES and all(v >= 0 for v in stages.values())
    assert stages["forward"] > 0 and stages["forward"] + stages["scoring"] + stages["wait"] <= stages["wall"]
    assert float(row[5 + header[5:].index("wall")]) == pytest.approx(stages["wall"], abs=1e-3)
    assert list(trace.glob("*.pt.trace.json")), "no torch.profiler trace was written"

    assert main(_eval(tmp_path / "b", spec, image_folder)) == 0  # no --profile: stages recorded all the same
    assert "stage times" not in capsys.readouterr().out
    plain = ResultsStore(tmp_path / "b").records()
    strip = lambda r: {k: v for k, v in r.items() if k != "run"}  # noqa: E731
    assert [strip(r) for r in plain] == [strip(r) for r in profiled]
    assert set(plain[0]["run"]["stages"]) == CPU_STAGES
    for r in plain:
        a = ResultsStore(tmp_path / "a").load_predictions(r["cell"])
        b = ResultsStore(tmp_path / "b").load_predictions(r["cell"])
        assert all(np.array_equal(a[k], b[k]) for k in a)

    # a rerun has nothing to compute: the table says so instead of showing the earlier passes
    assert main(_eval(tmp_path / "a", spec, image_folder, "--profile")) == 0
    assert "no pass ran in this command" in capsys.readouterr().out


def test_unwritable_trace_folder_is_one_line_before_anything_is_written(tiny_open_clip, image_folder, tmp_path,
                                                                       capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = tmp_path / "r"
    assert main(_eval(out, tiny_open_clip[0], image_folder, "--profile-trace", str(blocker / "trace"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lr0fm: error: --profile-trace") and "writable folder" in err and len(err.splitlines()) == 1
    assert not list(out.rglob("*.json")) and not list(out.rglob("*.pt"))  # no record, no classifier cached


def test_sweep_profile_prints_the_stages(tiny_open_clip, image_folder, tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f'models: ["{tiny_open_clip[0]}"]\ndatasets: [imagefolder]\ndata_root: {image_folder}\n'
                   "resolutions: [16]\nworkers: 0\nprogress: false\n")
    assert main(["sweep", str(cfg), "--profile", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "stage times" in out and "forward" in out


def test_stage_clock_keeps_the_pass_and_each_model_apart():
    clock = StageClock(torch.device("cpu"))
    for model in (0, 1, 1):
        with clock.stage("forward", model):
            time.sleep(0.01)
    with clock.stage("wait", model=1):  # a stage of the pass: shared, whoever asks
        time.sleep(0.01)
    first, second = clock.seconds(0), clock.seconds(1)
    assert set(first) == set(second) == {"wait", "forward"}
    assert first["wait"] == second["wait"] >= 0.01
    assert second["forward"] >= 2 * 0.01 and first["forward"] < second["forward"]


def test_stage_table_counts_each_pass_once_and_only_this_commands():
    run = {"stages": {"wall": 2.0, "forward": 1.5}, "finished": 100.0, "resolutions_in_pass": [16, "hr"],
           "device": "cpu", "resumed_images": 2}
    records = [{"model": "m", "dataset": "d", "evaluation": "e1", "n_images": 10, "resolution": r, "run": run}
               for r in (16, "hr")]
    old = {**records[0], "evaluation": "e0", "run": {**run, "finished": 50.0}}
    lines = stage_table(records + [old], since=99.0).splitlines()
    assert len(lines) == 3  # title, header, one row: one pass of one model
    assert lines[2].split() == ["m", "d", "8", "2", "cpu", "2.000", "1.500", "8.0"]  # 8 images x 2 res / 2 s


def test_prefetch_hands_over_batches_in_order_and_raises_the_threads_error():
    clock = StageClock(torch.device("cpu"))

    def batches():
        yield from range(3)
        raise ValueError("batch 3 is broken")

    got = []
    with pytest.raises(ValueError, match="batch 3 is broken"):
        with _Prefetch(batches(), lambda b: b * 10, clock) as prepared:
            for item in prepared:
                got.append(item)
    assert got == [0, 10, 20]
    assert not prepared.thread.is_alive()


def test_prefetch_stops_its_thread_when_the_consumer_leaves_early():
    clock = StageClock(torch.device("cpu"))
    pulled = []

    def batches():
        for i in range(1000):
            pulled.append(i)
            yield i

    with _Prefetch(batches(), lambda b: b, clock) as prepared:
        for item in prepared:
            if item == 2:
                break
    assert not prepared.thread.is_alive()
    assert len(pulled) <= 5  # one batch ahead (and one in the hand-over), not the whole loader
