"""Numbers a reader can verify: ``lr0fm verify`` derives every number and id of a record again
from its predictions and identity and names what differs; ``--fix`` moves such records aside and
``eval`` recomputes them; the store, ``report`` and ``load_results`` distrust an edited record by
its digests. And the effective resolution: the function on hand-made gamma curves, and the column
in every report (real runs of a tiny model for the store; fakes for chosen accuracies)."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import warnings

import numpy as np
import pytest

import lr0fm
from lr0fm.cli import main
from lr0fm.metrics import EffectiveResolution, effective_resolution, effective_resolution_of
from lr0fm.store import ResultsStore

from conftest import make_image
from fake_records import put_fake

RESOLUTIONS = "16,32,hr"


@pytest.fixture(scope="module")
def evaluated(tiny_open_clip, tmp_path_factory):
    """(results folder with the 3 cells of one real run, the eval argv that made it)."""
    root = tmp_path_factory.mktemp("verify")
    rng = np.random.default_rng(3)
    for c, color in zip(["cat", "dog", "red_car"], [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / "folder" / c).mkdir(parents=True)
        for i in range(4):
            make_image(rng, (40 + 7 * i, 30 + 5 * i), color).save(root / "folder" / c / f"{i}.png")
    out = root / "res"
    argv = ["eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root", str(root / "folder"),
            "-r", RESOLUTIONS, "--workers", "0", "--no-progress"]
    assert main(["--out", str(out), *argv]) == 0
    return out, argv


@pytest.fixture()
def store(evaluated, tmp_path):
    """A copy of the evaluated results folder, free to damage."""
    shutil.copytree(evaluated[0], tmp_path / "res")
    return ResultsStore(tmp_path / "res")


def verify(store, capsys, *extra) -> tuple[int, list[str]]:
    code = main(["--out", str(store.root), "verify", *extra])
    out = capsys.readouterr().out
    return code, out.splitlines()


def records_by_resolution(store) -> dict:
    return {str(r["resolution"]): r for r in store.records()}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_run(records) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "run"} for r in records), key=lambda r: r["cell"])


# -- damages: each returns the lines verify must print --------------------------------------
def edit_top1(store) -> list[str]:
    record = records_by_resolution(store)["16"]
    path = store.record_path(record["cell"])
    path.write_text(json.dumps({**json.loads(path.read_text()), "top1": 0.999}))
    return [f"{record['cell']}: top1 (recorded 0.999, derived {record['top1']})"]


def edit_predictions(store) -> list[str]:
    record = records_by_resolution(store)["32"]
    path = store.predictions_path(record["cell"])
    arrays = store.load_predictions(record["cell"])
    arrays["topk"][:, 0] = (arrays["topk"][:, 0] + 1) % 3
    np.savez(path, **arrays)
    return [f"{record['cell']}: predictions sha256 (recorded {record['predictions_sha256']}, derived {sha(path)})"]


def swap_predictions(store) -> list[str]:
    by_res = records_by_resolution(store)
    a, b = by_res["16"], by_res["hr"]
    assert a["predictions_sha256"] != b["predictions_sha256"]  # two different files
    pa, pb = store.predictions_path(a["cell"]), store.predictions_path(b["cell"])
    tmp = pa.with_suffix(".tmp")
    pa.rename(tmp)
    pb.rename(pa)
    tmp.rename(pb)
    return [f"{a['cell']}: predictions sha256: the file holds cell {b['cell']}'s predictions "
            f"(recorded {a['predictions_sha256']}, derived {b['predictions_sha256']})",
            f"{b['cell']}: predictions sha256: the file holds cell {a['cell']}'s predictions "
            f"(recorded {b['predictions_sha256']}, derived {a['predictions_sha256']})"]


def rename_record(store) -> list[str]:
    cell = records_by_resolution(store)["hr"]["cell"]
    other = "0" * len(cell)
    store.record_path(cell).rename(store.record_path(other))
    return [f"{other}: cell id against the file name (recorded {cell}, derived {other})"]


DAMAGES = [edit_top1, edit_predictions, swap_predictions, rename_record]


def test_a_clean_store_verifies(store, capsys):
    assert verify(store, capsys) == (0, ["3 records verified, all consistent"])
    assert all("numbers_digest" in r for r in store.records())


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_each_damage_is_one_line_and_fix_then_eval_recomputes(damage, store, evaluated, capsys):
    before = without_run(store.records())
    expected = damage(store)
    code, lines = verify(store, capsys)
    assert code == 1
    assert sorted(lines[:-1]) == sorted(expected)  # the right lines (in file order), and nothing else
    assert lines[-1].startswith(f"{len(expected)} of 3 records inconsistent")

    code, lines = verify(store, capsys, "--fix")
    assert code == 1 and sorted(lines[:-1]) == sorted(expected) and lines[-1].startswith(f"moved {len(expected)} record(s)")
    (folder,) = (store.root / "quarantine").iterdir()  # RESULTS/quarantine/<time>/, the store's layout
    assert sorted((folder / "verify.txt").read_text().splitlines()) == sorted(expected)
    names = sorted(line.split(":")[0] for line in expected)
    assert sorted(p.stem for p in (folder / "records").iterdir()) == names
    assert len(list((folder / "predictions").iterdir())) == len(expected)  # each with its predictions
    assert verify(store, capsys) == (0, [f"{3 - len(expected)} records verified, all consistent"])

    assert main(["--out", str(store.root), *evaluated[1]]) == 0
    capsys.readouterr()
    assert without_run(store.records()) == before  # recomputed, to the numbers of the first run
    assert verify(store, capsys) == (0, ["3 records verified, all consistent"])


def test_an_edited_record_is_recomputed_by_eval_without_fix(store, evaluated, capsys, caplog):
    edit_top1(store)
    cell = records_by_resolution(store)["16"]["cell"]
    assert store.get(cell)["top1"] == 0.999
    with caplog.at_level("WARNING", logger="lr0fm"):
        assert not store.complete(cell)
    assert any("its numbers differ from its predictions" in m for m in caplog.messages)
    assert main(["--out", str(store.root), *evaluated[1]]) == 0
    assert store.get(cell)["top1"] != 0.999 and store.complete(cell, warn=False)
    assert verify(store, capsys)[0] == 0


def test_report_and_load_results_warn_about_an_edited_record(store, capsys, caplog):
    edit_top1(store)
    cell = records_by_resolution(store)["16"]["cell"]
    with caplog.at_level("WARNING", logger="lr0fm"):
        assert main(["--out", str(store.root), "report"]) == 0
    warned = [m for m in caplog.messages if cell in m]
    assert len(warned) == 1 and "its numbers differ from its predictions" in warned[0] and "lr0fm verify" in warned[0]
    assert "99.9" in capsys.readouterr().out  # still reported, with the warning
    with pytest.warns(UserWarning, match=rf"1 record\(s\) in .* disagree .*first: {cell}.*run 'lr0fm verify"):
        frame = lr0fm.load_results(store.root)
    assert len(frame) == 3


def test_clean_results_load_without_a_warning(store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(lr0fm.load_results(store.root)) == 3


def test_ids_are_derived_from_the_identity(store, capsys):
    record = records_by_resolution(store)["32"]
    path = store.record_path(record["cell"])
    edited = json.loads(path.read_text())
    edited["identity"]["limit"] = 5  # the identity no longer gives the ids the record carries
    path.write_text(json.dumps(edited))
    lines = verify(store, capsys)[1]
    assert lines[0].startswith(f"{record['cell']}: evaluation id (recorded {record['evaluation']}, derived ")
    assert lines[1].startswith(f"{record['cell']}: cell id (recorded {record['cell']}, derived ")
    assert not store.complete(record["cell"], warn=False)


def test_a_record_without_numbers_digest_is_checked_against_its_predictions(store, capsys):
    """Records written before records carried a numbers digest: the store derives their numbers."""
    record = records_by_resolution(store)["16"]
    path = store.record_path(record["cell"])
    old = {k: v for k, v in json.loads(path.read_text()).items() if k != "numbers_digest"}
    path.write_text(json.dumps(old))
    assert store.complete(record["cell"], warn=False) and verify(store, capsys)[0] == 0
    path.write_text(json.dumps({**old, "n_images": old["n_images"] - 1}))
    assert not store.complete(record["cell"], warn=False)
    assert verify(store, capsys)[1][0] == f"{record['cell']}: n_images (recorded {old['n_images'] - 1}, " \
                                          f"derived {old['n_images']})"
    # a file that is no predictions file, named by the record: unreadable, not a crash
    store.predictions_path(record["cell"]).write_bytes(b"not an npz")
    path.write_text(json.dumps({**old, "predictions_sha256": hashlib.sha256(b"not an npz").hexdigest()}))
    assert not store.complete(record["cell"], warn=False)
    assert verify(store, capsys)[1][0].startswith(f"{record['cell']}: predictions file unreadable (")


def test_a_metric_the_record_lacks_is_not_compared_but_a_deleted_one_is_caught(store, capsys):
    """A record written before a per-cell metric existed lacks its key (and its digest never
    covered it): trusted and consistent. The same key deleted by hand breaks the digest."""
    from lr0fm.verify import numbers_digest

    record = records_by_resolution(store)["16"]
    path = store.record_path(record["cell"])
    deleted = {k: v for k, v in json.loads(path.read_text()).items() if k != "mean_per_class_recall"}
    path.write_text(json.dumps({**deleted, "numbers_digest": numbers_digest(deleted)}))
    assert store.complete(record["cell"], warn=False) and verify(store, capsys)[0] == 0
    path.write_text(json.dumps({**deleted, "numbers_digest": record["numbers_digest"]}))
    assert not store.complete(record["cell"], warn=False)
    assert verify(store, capsys)[1][0] == f"{record['cell']}: numbers digest (recorded {record['numbers_digest']}, " \
                                          f"derived {numbers_digest(deleted)})"


def test_a_foreign_file_is_listed_and_a_missing_folder_is_one_line(store, tmp_path, capsys):
    (store.root / "records" / "notes.json").write_text("[1, 2]")
    assert verify(store, capsys) == (1, ["notes: not a record this lr0fm reads (not a JSON object)",
                                         "1 of 4 records inconsistent; 'lr0fm verify --fix' moves them aside and "
                                         "'lr0fm eval' recomputes their cells"])
    assert main(["--out", str(tmp_path / "nowhere"), "verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "results folder" in err and "does not exist" in err


# -- effective resolution --------------------------------------------------------------------
def test_effective_resolution_interpolates_in_log2_where_gamma_last_crosses():
    # crossing between 64 and 128 half way: the geometric mean of the two
    found = effective_resolution({16: 0.3, 32: 0.6, 64: 0.85, 128: 0.95})
    assert found.bound == "" and math.isclose(found.px, math.sqrt(64 * 128)) and str(found) == "90.5"
    # exactly 0.9 at a measured resolution: that resolution
    assert effective_resolution({16: 0.5, 32: 0.9, 64: 0.95}) == EffectiveResolution(32.0)
    # a dip below 0.9 at 32 counts although 16 is above: walking down from the top stops there
    dip = effective_resolution({128: 0.97, 16: 0.95, 64: 0.92, 32: 0.8})
    assert math.isclose(dip.px, 2 ** (5 + (0.9 - 0.8) / (0.92 - 0.8)))
    # gamma above 1 (LR beats HR) is kept
    assert math.isclose(effective_resolution({16: 0.45, 32: 1.35}).px, 2 ** (4 + 0.45 / 0.9))


def test_effective_resolution_at_the_edges_of_the_grid():
    assert str(effective_resolution({16: 0.91, 32: 0.99, 64: 1.02})) == "<=16"
    assert effective_resolution({16: 0.91, 32: 0.99}) == EffectiveResolution(16.0, "<=")
    assert str(effective_resolution({16: 0.1, 64: 0.95, 128: 0.89})) == ">128"
    assert effective_resolution({}) == EffectiveResolution(None) and str(EffectiveResolution(None)) == "-"
    assert str(effective_resolution({16: math.nan, 32: math.nan})) == "-"
    assert str(effective_resolution({16: math.nan, 32: 0.95})) == "<=32"  # undefined points are left out
    # from accuracies: gamma against the HR one; none without HR
    assert math.isclose(effective_resolution_of({16: 0.4, 32: 0.8, "hr": 0.8}).px, 2 ** (4 + 0.4 / 0.5))
    assert effective_resolution_of({16: 0.4, 32: 0.8}).px is None


def test_effective_resolution_of_the_api():
    assert str(lr0fm.effective_resolution({16: 0.5, 32: 0.8, 64: 0.95})) == "50.8"
    assert str(lr0fm.effective_resolution({"16": 0.95, "hr": 1.0})) == "<=16"
    with pytest.raises(ValueError, match="keeps"):
        lr0fm.effective_resolution({16: 0.5}, keeps=1.5)
    with pytest.raises(TypeError, match="effective_resolution"):
        lr0fm.effective_resolution([0.5, 0.9])


# dtd: gamma 0.25, 0.625, 0.9375, 1 -> between 32 and 64; pets: 0.96 at 16 -> <=16; cars: > 32
CURVES = {"dtd": {16: 0.2, 32: 0.5, 64: 0.75, 128: 0.8, "hr": 0.8}, "pets": {16: 0.72, 32: 0.74, "hr": 0.75},
          "cars": {16: 0.1, 32: 0.3, "hr": 0.6}}
DTD = 2 ** (5 + (0.9 - 0.625) / (0.9375 - 0.625))
EXPECTED = {"dtd": f"{DTD:.1f}", "pets": "<=16", "cars": ">32"}


@pytest.fixture()
def curves_store(tmp_path):
    store = ResultsStore(tmp_path / "res")
    for dataset, accuracies in CURVES.items():
        for res, acc in accuracies.items():
            put_fake(store, "m", dataset, res, acc)
    return store


def test_reports_show_the_effective_resolution(curves_store, tmp_path, capsys):
    out = str(curves_store.root)
    assert EXPECTED["dtd"] == "58.9"
    assert main(["--out", out, "report", "--csv", str(tmp_path / "r.csv")]) == 0
    text = capsys.readouterr().out.split("effective resolution")[1].splitlines()
    shown = {line.split()[0]: line.split()[1] for line in text[1:] if line.strip() and not line.startswith("csv:")}
    # SAR: of the mean gamma over the datasets measured at each resolution
    sar = {16: (0.25 + 0.96 + 1 / 6) / 3, 32: (0.625 + 0.74 / 0.75 + 0.5) / 3, 64: 0.9375, 128: 1.0}
    assert shown == {**EXPECTED, "SAR": str(effective_resolution(sar))}
    assert shown["SAR"] == f"{2 ** (5 + (0.9 - sar[32]) / (sar[64] - sar[32])):.1f}"

    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["dataset"]: r["effective_resolution"] for r in rows} == EXPECTED and len(rows) == 11

    assert main(["--out", out, "report", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["dataset"]: r["effective_resolution"] for r in rows} == EXPECTED

    assert main(["--out", out, "report", "--html", str(tmp_path / "html")]) == 0
    page = (tmp_path / "html" / "index.html").read_text()
    summary = page.split("<table class=\"summary\">")[1].split("</table>")[0]
    assert ">effective resolution</th>" in summary
    assert f"dtd: {EXPECTED['dtd']}" in summary and f">{shown['SAR']}</td></tr>" in summary

    frame = lr0fm.load_results(out)
    assert dict(zip(frame["dataset"], frame["effective_resolution"])) == EXPECTED
    series = lr0fm.effective_resolution(frame)
    assert series.to_dict() == {("m", d): v for d, v in EXPECTED.items()}
    assert lr0fm.effective_resolution(frame[frame["resolution"] != "hr"]).isna().all()  # no HR: undefined
