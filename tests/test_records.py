"""One record type: one builder, identity parts only under ``identity`` (older records read the
same), one column list with its flags, one registry of aggregates; reading records needs neither
torch nor matplotlib; reports warn about missing predictions and write only what was asked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lr0fm.cli import main
from lr0fm.metrics import AGGREGATE_NAMES, CELL_METRICS, robustness_table
from lr0fm.records import (COLUMNS, FORMAT, LEGACY_COPIES, TABLE_COLUMNS, amp_of, current, flat, label_records,
                           limit_of, parse_where, protocol_of, select, split_of, variant_of, weights_of)
from lr0fm.report import text_report
from lr0fm.store import ResultsStore

from fake_records import fake_record, put_fake

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent


def format2(record: dict) -> dict:
    """``record`` as lr0fm wrote it in format lr0fm-record/2: identity parts copied to the top level."""
    return {**record, "format": "lr0fm-record/2", "amp": amp_of(record), "limit": limit_of(record),
            "split": split_of(record), "variant": variant_of(record), "weights_hash": weights_of(record),
            "protocol": {**{k: v for k, v in protocol_of(record).items() if k not in ("decoder", "pillow", "views")},
                         "resolution": record["resolution"]}}


# -- the record ------------------------------------------------------------------------------
def test_an_evaluated_record_has_the_fakes_fields_and_no_identity_copies(tiny_open_clip, image_folder, tmp_path):
    assert main(["--out", str(tmp_path), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder",
                 "--data-root", str(image_folder), "-r", "16,hr", "--workers", "0", "--no-progress"]) == 0
    records = ResultsStore(tmp_path).records()
    fake = fake_record("m", "d", 16, 0.5)
    for r in records:
        assert r["format"] == FORMAT and not set(LEGACY_COPIES) & set(r)
        assert set(r) == set(fake) | {"predictions_sha256", "numbers_digest"}  # one builder: the fakes cannot drift
        assert set(CELL_METRICS) <= set(r) and r["data_root"] == str(image_folder)
        assert protocol_of(r)["input_size"] == 64 and amp_of(r) == "fp32"
        assert limit_of(r) is None and variant_of(r) == {} and split_of(r) == r["identity"]["data"]["split"]
        assert weights_of(r) == r["identity"]["model"]["weights"]
    on_disk = json.loads((tmp_path / "records" / f"{records[0]['cell']}.json").read_text())
    assert on_disk == records[0]


def test_format_2_records_still_read_report_and_select_alike(tmp_path, capsys):
    new, old = ResultsStore(tmp_path / "new"), ResultsStore(tmp_path / "old")
    for r, acc in ((16, 0.4), (32, 0.6), ("hr", 0.8)):
        kwargs = dict(num_classes=47, limit=30, amp="bf16", variant={"sr": "bicubic"}, split="val")
        put_fake(new, "m", "dtd", r, acc, **kwargs)
        record = put_fake(old, "m", "dtd", r, acc, **kwargs)
        # the same cell written in the older format (a store from an earlier lr0fm)
        path = old.record_path(record["cell"])
        written = format2(json.loads(path.read_text()))
        path.write_text(json.dumps(written))
        assert written["amp"] == "bf16" and written["protocol"]["input_size"] == 224
    a, b = new.records(), old.records()
    assert [r["cell"] for r in a] == [r["cell"] for r in b]  # cell ids unchanged
    assert all(r["format"] == "lr0fm-record/2" and not set(LEGACY_COPIES) & set(r) for r in b)
    assert [flat(r) for r in a] == [flat(r) for r in b]
    assert flat(b[0])["amp"] == "bf16" and flat(b[0])["limit"] == 30 and flat(b[0])["split"] == "val"
    assert text_report(a) == text_report(b) and "SAR" in text_report(b)
    where = parse_where(["amp=bf16", "limit=30", "split=val", "mode=shortest"])
    assert len(select(b, where)) == len(select(a, where)) == 3
    assert main(["--out", str(old.root), "report", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["cell"] for row in rows] == [r["cell"] for r in a] and {row["amp"] for row in rows} == {"bf16"}
    # records handed over directly (the API) are read through the same accessors
    assert current(format2(a[0])) == {**a[0], "format": "lr0fm-record/2"}


def test_column_flags_drive_select_and_the_integer_columns():
    digests = {c.name for c in COLUMNS if c.digest}
    assert digests == {"weights_digest", "samples_digest", "classnames_digest", "templates_digest", "evaluation",
                       "cell"}
    assert [c.name for c in TABLE_COLUMNS if c.label] == ["model_label", "dataset_label"]
    records = [fake_record("m", "dtd", 16, 0.5), fake_record("m", "dtd", 16, 0.5, input_size=64)]
    for name in digests:  # every id column selects by a prefix of it
        prefix = flat(records[1])[name][:8]
        expected = [r for r in records if flat(r)[name].startswith(prefix)]
        assert records[1] in expected and select(records, parse_where([f"{name}={prefix}"])) == expected
    assert select(records, parse_where(["input_size=64"])) == [records[1]]
    import lr0fm
    frame = lr0fm.load_results(records)
    assert {c.name for c in TABLE_COLUMNS if c.integer} == \
        {c for c in frame.columns if str(frame[c].dtype) == "Int64"} == \
        {"n_images", "n_skipped", "num_classes", "limit", "input_size"}


def test_every_aggregate_reaches_reports_and_json():
    rows = [{"model": "m", "dataset": "dtd", "resolution": r, "top1": a, "num_classes": 47}
            for r, a in ((16, 0.2), ("hr", 0.8))]
    (x,) = robustness_table(rows, {}, {})
    assert list(x.scores) == list(AGGREGATE_NAMES) and x.SAR == x.scores["SAR"] == pytest.approx(0.25)
    assert set(AGGREGATE_NAMES) <= set(x.as_dict())
    with pytest.raises(AttributeError):
        x.NOPE
    records = [fake_record("m", "dtd", r, a, num_classes=47) for r, a in ((16, 0.2), ("hr", 0.8))]
    text = text_report(records)
    assert all(any(line.startswith(name) for line in text.splitlines()) for name in AGGREGATE_NAMES)


# -- labels ----------------------------------------------------------------------------------
def test_data_labels_name_the_folder_the_images_came_from():
    records = [fake_record("m", "twin", r, 0.5, samples=samples, data_root=root)
               for samples, root in (("a" * 32, "/data/one/twin"), ("b" * 32, "/data/two/twin")) for r in (16, "hr")]
    labels = {r["data_root"]: r["dataset_label"] for r in label_records(records)}
    assert labels == {"/data/one/twin": "twin [folder=/data/one/twin]", "/data/two/twin": "twin [folder=/data/two/twin]"}
    # long paths: the home folder as ~ and only the tail that tells them apart
    deep = [os.path.join(os.path.expanduser("~"), "datasets", "experiments", "2024", x, "twin") for x in ("p", "q")]
    records = [fake_record("m", "twin", 16, 0.5, samples=s * 32, data_root=root) for s, root in zip("ab", deep)]
    assert sorted(r["dataset_label"] for r in label_records(records)) == \
        [f"twin [folder={p}]" for p in ("~/datasets/experiments/2024/p/twin", "~/datasets/experiments/2024/q/twin")]
    longer = ["/mnt/storage/a-rather-long-folder-name/of-many-datasets/" + x + "/twin" for x in ("p", "q")]
    records = [fake_record("m", "twin", 16, 0.5, samples=s * 32, data_root=root) for s, root in zip("ab", longer)]
    assert sorted(r["dataset_label"] for r in label_records(records)) == ["twin [folder=.../p/twin]",
                                                                          "twin [folder=.../q/twin]"]
    # one folder whose images changed between two runs: the folder cannot tell them apart, the digest does
    records = [fake_record("m", "twin", 16, 0.5, samples=s * 32, data_root="/data/twin") for s in "ab"]
    assert sorted(r["dataset_label"] for r in label_records(records)) == ["twin [data=aaaaaaaa]", "twin [data=bbbbbbbb]"]


# -- reading needs no deep-learning stack --------------------------------------------------
@pytest.mark.parametrize("argv", [["report"], ["report", "--json"], ["report", "--csv", "{tmp}/r.csv"],
                                  ["compare", "--no-datasets-only-common"], ["report", "--html", "{tmp}/html"],
                                  ["metrics", "--accuracies", "{tmp}/acc.csv"]])
def test_reading_records_imports_no_torch_and_no_matplotlib_unless_plotting(tmp_path, argv):
    store = ResultsStore(tmp_path / "res")
    for r, acc in ((16, 0.3), (32, 0.5), ("hr", 0.8)):
        put_fake(store, "m", "dtd", r, acc, num_classes=47)
    (tmp_path / "acc.csv").write_text("model,dataset,resolution,top1\nm,dtd,16,0.3\nm,dtd,hr,0.8\n")
    argv = ["--out", str(store.root), *(a.format(tmp=tmp_path) for a in argv)]
    code = ("import sys\nfrom lr0fm.cli import main\nrc = main(sys.argv[1:])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torchvision', 'matplotlib', 'open_clip',"
            " 'transformers', 'scipy'}), file=sys.stderr)\nsys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)])}
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = out.stderr.strip().splitlines()[-1]
    assert loaded == ("['matplotlib']" if "--html" in argv else "[]"), out.stderr


# -- what a report writes and says -----------------------------------------------------------
def _store(tmp_path) -> ResultsStore:
    store = ResultsStore(tmp_path / "res")
    for model in ("a", "b"):
        for r, acc in ((16, 0.3), (32, 0.5), ("hr", 0.8)):
            put_fake(store, model, "dtd", r, acc, num_classes=47)
    return store


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


def test_text_report_writes_nothing_unless_asked(tmp_path, capsys):
    store = _store(tmp_path)
    before = _files(store.root)
    assert main(["--out", str(store.root), "report"]) == 0
    out = capsys.readouterr().out
    assert "== a" in out and "plot:" not in out
    assert _files(store.root) == before  # a read-only results folder reports the same way
    plot = tmp_path / "plots" / "acc.png"
    assert main(["--out", str(store.root), "report", "--plot", str(plot)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"plot: {plot}") and plot.read_bytes()[:4] == b"\x89PNG"


def test_unwritable_plot_or_csv_is_one_line_before_any_output(tmp_path, capsys):
    store = _store(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for option in ("--plot", "--csv"):
        assert main(["--out", str(store.root), "report", option, str(blocker / "out")]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and f"cannot write {blocker / 'out'}" in err
        assert f"choose another {option} file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "res"]


def test_report_warns_about_a_cell_without_its_predictions(tmp_path, capsys, caplog):
    store = _store(tmp_path)
    cell = next(r["cell"] for r in store.records() if r["model"] == "a" and r["resolution"] == 16)
    store.predictions_path(cell).unlink()
    for argv in (["report"], ["report", "--json"]):
        with caplog.at_level("WARNING", logger="lr0fm"):
            assert main(["--out", str(store.root), *argv]) == 0
        warned = [m for m in caplog.messages if cell in m]
        assert len(warned) == 1 and "predictions file missing or changed" in warned[0]
        assert "'lr0fm eval' recomputes its cell" in warned[0] and "reporting" in warned[0]
        out = capsys.readouterr().out  # its numbers are still reported
        if "--json" in argv:
            assert cell in {row["cell"] for row in json.loads(out)}
        else:
            assert "dtd                 30.0    50.0    80.0" in out.split("== a")[1]
        caplog.clear()


def test_plots_leak_no_library_warning():
    from lr0fm.plotting import figure_png, pyplot

    def crowded():  # three panels whose titles and labels cannot fit the figure's height
        fig, axes = pyplot().subplots(3, 1, figsize=(2, 1.5))
        for ax in axes:
            ax.set_title("title", fontsize=20)
            ax.set_xlabel("x", fontsize=20)
        return fig

    fig = crowded()
    with pytest.warns(UserWarning, match="Tight layout not applied"):  # what matplotlib says about it
        fig.tight_layout()
    pyplot().close(fig)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = figure_png(crowded())
    assert png[:4] == b"\x89PNG" and caught == []


def test_report_plot_passes_on_no_matplotlib_warning(tmp_path, monkeypatch, capsys):
    import matplotlib.figure

    def tight_layout(self, *args, **kwargs):  # what matplotlib does on a crowded figure
        warnings.warn("Tight layout not applied. tight_layout cannot make Axes height small enough", UserWarning)

    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", tight_layout)
    store = _store(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["--out", str(store.root), "report", "--plot", str(tmp_path / "p.png")]) == 0
        assert main(["--out", str(store.root), "report", "--html", str(tmp_path / "html")]) == 0
    assert caught == [] and (tmp_path / "p.png").is_file() and "Tight" not in capsys.readouterr().err
