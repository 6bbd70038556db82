"""Reports never mix evaluations: a --limit run and a full run of one (model, dataset), or two
folders of other images under one name, are separate rows in the text, JSON, CSV and HTML reports
and in ``compare``, each gamma dividing numbers of its own evaluation (real runs of a tiny model)."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest

from lr0fm.cli import main
from lr0fm.records import limit_of

from conftest import make_image

RESOLUTIONS = "16,32,hr"


def run(argv, capsys) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def top1_from_predictions(out, cell) -> float:
    with np.load(out / "predictions" / f"{cell}.npz") as z:
        return float((z["topk"][z["valid"], 0] == z["labels"][z["valid"]]).mean())


def evaluations(out) -> dict[str, dict]:
    """evaluation id -> {resolution: top-1 from the predictions file}, and the record's limit."""
    found: dict[str, dict] = {}
    for path in (out / "records").glob("*.json"):
        r = json.loads(path.read_text())
        found.setdefault(r["evaluation"], {"limit": limit_of(r), "top1": {}})["top1"][str(r["resolution"])] = \
            top1_from_predictions(out, r["cell"])
    return found


def test_limit_run_and_full_run_are_separate_rows_everywhere(tiny_open_clip, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    # named like a paper dataset, so that compare ranks it (flagged as read from your own folder)
    eval_args = ["--out", str(out), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root",
                 str(image_folder), "--name", "dtd", "--workers", "0", "--no-progress", "-r", RESOLUTIONS]
    run(eval_args + ["--limit", "6"], capsys)
    run(eval_args, capsys)
    evs = evaluations(out)
    assert sorted(str(e["limit"]) for e in evs.values()) == ["6", "None"]
    by_label = {f"limit={e['limit'] or 'all'}": e["top1"] for e in evs.values()}
    # the two evaluations differ at HR, so a gamma across them would differ from one within
    assert by_label["limit=6"]["hr"] != by_label["limit=all"]["hr"]
    gammas = {label: {r: top1[r] / top1["hr"] for r in ("16", "32")} for label, top1 in by_label.items()}

    # text: one row per evaluation, labelled; gamma within each
    text = run(["--out", str(out), "report"], capsys)
    for label, top1 in by_label.items():
        acc = re.search(rf"^dtd \[{label}\]\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)
        assert [float(a) for a in acc.groups()] == [round(100 * top1[r], 1) for r in ("16", "32", "hr")]
        gamma_block = text.split("gamma (relative robustness)")[1]
        g = re.search(rf"^dtd \[{label}\]\s+(\S+)\s+(\S+)$", gamma_block, re.M)
        assert [float(x) for x in g.groups()] == [round(gammas[label][r], 3) for r in ("16", "32")]
    assert "SAR/WAR use dtd [limit=all]" in text

    # JSON and CSV: each record carries its evaluation's label
    rows = json.loads(run(["--out", str(out), "report", "--json"], capsys))
    csv_path = tmp_path / "r.csv"
    run(["--out", str(out), "report", "--csv", str(csv_path)], capsys)
    csv_rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == len(csv_rows) == 6
    for row in rows + csv_rows:
        label = row["dataset_label"].removeprefix("dtd [").removesuffix("]")
        assert label == f"limit={row['limit'] or 'all'}"
        assert float(row["top1"]) == pytest.approx(by_label[label][str(row["resolution"])])
        assert row["model_label"] == tiny_open_clip[0]
    limited = json.loads(run(["--out", str(out), "report", "--json", "--where", "limit=6"], capsys))
    assert {r["dataset_label"] for r in limited} == {"dtd"} and {r["limit"] for r in limited} == {6}

    # HTML: provenance rows of both evaluations, each under its label
    from lr0fm.report.html import per_evaluation_robustness
    from lr0fm.store import ResultsStore
    page = run(["--out", str(out), "report", "--html", str(tmp_path / "html")], capsys).strip().removeprefix("html: ")
    html = open(page).read()
    for ev in evs:
        assert len(re.findall(rf'<tr data-evaluation="{ev}">', html)) == 3
    assert html.count("<td class=\"model\">dtd [limit=6]</td>") == 3
    assert "SAR/WAR use dtd [limit=all]" in html
    heat = {(x.resolution, d): g for x in per_evaluation_robustness(ResultsStore(out).records()) for d, g in x.gamma.items()}
    assert heat == {(int(r), f"dtd [{label}]"): pytest.approx(g[r]) for label, g in gammas.items() for r in g}

    # compare: two rows of yours, each gamma within its evaluation; the limited row flagged
    cmp = json.loads(run(["--out", str(out), "compare", "--json", "-r", "16,32"], capsys))
    for res in ("16", "32"):
        yours = {r["model"]: r for r in cmp["resolutions"][res] if r["source"] == "yours"}
        assert set(yours) == {f"{tiny_open_clip[0]} [{label}]" for label in by_label}
        for label in by_label:
            row = yours[f"{tiny_open_clip[0]} [{label}]"]
            assert row["gamma"] == {"dtd": pytest.approx(gammas[label][res])}
            assert set(row["evaluations"].values()) < set(evs)
    messages = [d["message"] for d in cmp["differences"]]
    assert any("[limit=6]: only the first 6 images of dtd" in m for m in messages)
    assert not any("[limit=all]: only the first" in m for m in messages)
    assert any("dtd evaluated 2 ways" in m for m in messages)
    assert any("read as your own data (imagefolder)" in m for m in messages)
    one = json.loads(run(["--out", str(out), "compare", "--json", "-r", "16", "--where", "limit=none"], capsys))
    assert [r["model"] for r in one["resolutions"]["16"] if r["source"] == "yours"] == [tiny_open_clip[0]]


def test_two_folders_of_one_name_with_other_images_are_two_rows(tiny_open_clip, image_folder, tmp_path, capsys):
    other = tmp_path / "elsewhere" / image_folder.name
    shutil.copytree(image_folder, other)
    make_image(np.random.default_rng(1), (44, 36), (0, 255, 0)).save(other / "cat" / "0.png")  # one other image
    out = tmp_path / "out"
    for root in (image_folder, other):
        run(["--out", str(out), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root",
             str(root), "--workers", "0", "--no-progress", "-r", "16,hr"], capsys)
    evs = evaluations(out)
    assert len(evs) == 2  # the second folder was evaluated, not taken for the first
    rows = json.loads(run(["--out", str(out), "report", "--json"], capsys))
    labels = {r["dataset_label"] for r in rows}
    # each label names the folder its images were read from, shortened to the part that differs
    from lr0fm.store import ResultsStore
    root_of = {r["evaluation"]: r["data_root"] for r in ResultsStore(out).records()}
    tails = {str(image_folder): f"{image_folder.parent.name}/{image_folder.name}",
             str(other): f"elsewhere/{image_folder.name}"}
    assert sorted(root_of.values()) == sorted(tails)
    for r in rows:
        root = root_of[r["evaluation"]]
        shown = r["dataset_label"].removeprefix(f"{image_folder.name} [folder=").removesuffix("]")
        shown = os.path.expanduser(shown).removeprefix("...")
        assert root.endswith(shown) and shown.endswith(tails[root]), (r["dataset_label"], root)
    assert len(labels) == 2
    assert {r["dataset"] for r in rows} == {image_folder.name}
    for label in labels:
        mine = [r for r in rows if r["dataset_label"] == label]
        assert len(mine) == 2 and len({r["evaluation"] for r in mine}) == 1
        assert {r["top1"] for r in mine} <= {top1 for top1 in evs[mine[0]["evaluation"]]["top1"].values()}
    text = run(["--out", str(out), "report"], capsys)
    assert all(re.search(rf"^{re.escape(label)}\s", text, re.M) for label in labels)


def test_labels_tell_apart_folders_cut_to_the_same_limit():
    """limit=6 of folder A, limit=6 of folder B and all of A: three labels, not two 'limit=6'."""
    from lr0fm.records import label_records

    from fake_records import fake_record
    records = [fake_record("m", "flowers", "hr", 0.5, limit=limit, samples=samples, n_images=n)
               for limit, samples, n in ((6, "a" * 32, 6), (6, "b" * 32, 6), (None, "c" * 32, 12))]
    labels = [r["dataset_label"] for r in label_records(records)]
    assert len(set(labels)) == 3 and all(label.startswith("flowers [") for label in labels)
    assert labels[2].startswith("flowers [") and "limit=all" in labels[2]


def test_report_model_filter_takes_a_name_or_a_variant_label(tiny_open_clip, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    eval_args = ["--out", str(out), "eval", "--model", tiny_open_clip[0], "--dataset", "imagefolder", "--data-root",
                 str(image_folder), "--workers", "0", "--no-progress", "-r", "16,hr", "--limit", "4"]
    run(eval_args, capsys)
    run(eval_args + ["--sr", "bicubic"], capsys)
    everything = json.loads(run(["--out", str(out), "report", "--json"], capsys))
    names = {r["model_label"] for r in everything}  # NAME, NAME+sr=...
    assert len(everything) == 4 and len(names) == 2 and tiny_open_clip[0] in names
    (with_sr,) = names - {tiny_open_clip[0]}
    by_name = json.loads(run(["--out", str(out), "report", "--json", "--model", tiny_open_clip[0]], capsys))
    assert len(by_name) == 4  # a plain name keeps all its variants
    only_sr = json.loads(run(["--out", str(out), "report", "--json", "--model", with_sr], capsys))
    assert len(only_sr) == 2 and {r["model_label"] for r in only_sr} == {with_sr}
    text = run(["--out", str(out), "report", "--model", with_sr], capsys)
    assert with_sr in text
