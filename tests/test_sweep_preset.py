"""lr0fm sweep --preset: the paper's grid shipped as data, filters, and the plan (cells, missing
datasets, estimated device time) made without weights, datasets or building any model."""
import re
import tomllib
from pathlib import Path

import pytest

from lr0fm.catalog import dataset_cards, dataset_sources, model_catalog
from lr0fm.cli import main
from lr0fm.datasets import get_dataset
from lr0fm.datasets.base import load_classnames_templates
from lr0fm.sweep import load_config
from lr0fm.sweep_plan import estimate, plan_datasets, preset_path, select

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_data(tmp_path, monkeypatch):
    """An empty $LR0FM_DATA, and any model build fails the test: a plan must not build one."""
    monkeypatch.setenv("LR0FM_DATA", str(tmp_path / "data"))

    def no_build(*args, **kwargs):
        raise AssertionError("the plan built a model")
    monkeypatch.setattr("lr0fm.models.create_model", no_build)
    return tmp_path


def sweep(capsys, *args, out=None):
    rc = main(["--out", str(out), "sweep", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def model_rows(text: str) -> dict[str, list[str]]:
    """The estimate table: model -> [cells, pending, images x res, GFLOPs/img, est. seconds, note...]."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.split()[:2] == ["model", "cells"]) + 1
    end = next(i for i, l in enumerate(lines) if l.startswith("total:"))
    return {l.split()[0]: l.split()[1:] for l in lines[start:end]}


def test_preset_is_the_paper_grid_and_is_packaged():
    config = load_config(preset_path("lr0fm"))
    assert config.models == list(model_catalog())  # all 66, in the catalog's order
    assert [d["key"] for d in config.datasets] == list(dataset_cards())
    assert config.resolutions == (16, 32, 64, 128, "hr")
    assert config.run.protocol_options() == {"protocol": "paper"}
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["lr0fm"]
    package = ROOT / "src" / "lr0fm"  # setuptools globs package-data patterns: '*' stays in one folder
    assert any(preset_path("lr0fm") in package.glob(p) for p in patterns)


def test_dry_run_of_the_preset_needs_no_weights_and_no_datasets(no_data, capsys):
    out = no_data / "results"
    rc, text, _ = sweep(capsys, "--preset", "lr0fm", "--dry-run", out=out)
    assert rc == 0
    assert "66 models x 15 datasets x 5 resolutions = 4950 cells (protocol paper)" in text.splitlines()[0]
    assert "0 done, 4950 pending" in text
    assert "0 of 15 found" in text
    missing = re.findall(r"^  missing (\S+) \(([\d,]+) images in the paper\)", text, re.M)
    assert [k for k, _ in missing] == list(dataset_cards())
    assert all(int(n.replace(",", "")) == dataset_sources()[k]["paper_images"] for k, n in missing)
    assert "hub copy: wds:clip-benchmark/wds_vtab-dtd split test" in text
    rows = model_rows(text)
    assert list(rows) == list(model_catalog())
    assert all(r[0] == "75" and r[1] == "75" for r in rows.values())
    assert "cannot run in lr0fm" in " ".join(rows["m2-encoder-1b"]) and rows["m2-encoder-1b"][4] == "?"
    assert re.search(r"^total: 4950 cells, ", text, re.M)
    assert not out.exists()  # a plan writes nothing


@pytest.mark.parametrize("filters,models,datasets,resolutions", [
    (["--models", "family=OpenCLIP"], lambda e: e["family"] == "OpenCLIP", 15, 5),
    (["--models", "family=openclip"], lambda e: e["family"] == "OpenCLIP", 15, 5),
    (["--models", "backend=open_clip", "--models", "family=CLIP,SigLIP", "--datasets", "dtd,pets",
      "--resolutions", "16,hr"], lambda e: e["backend"] == "open_clip" and e["family"] in ("CLIP", "SigLIP"), 2, 2),
    (["--models", "clip-rn50,siglip-vit-b-16", "--datasets", "eurosat"],
     lambda e: e["name"] in ("clip-rn50", "siglip-vit-b-16"), 1, 5),
])
def test_filters_cut_the_grid(no_data, capsys, filters, models, datasets, resolutions):
    rc, text, _ = sweep(capsys, "--preset", "lr0fm", "--dry-run", *filters, out=no_data / "results")
    assert rc == 0
    names = [n for n, e in model_catalog().items() if models(e)]
    cells = len(names) * datasets * resolutions
    assert f"{len(names)} models x {datasets} datasets x {resolutions} resolutions = {cells} cells" in text
    assert list(model_rows(text)) == names
    if filters[:2] == ["--models", "family=OpenCLIP"]:
        assert len(names) == 8 and cells == 8 * 15 * 5


def expected_seconds(model: str, keys: list[str], resolutions: int, tflops: float) -> float:
    """The estimate's definition, from the catalog's GFLOPs and the datasets' paper counts."""
    e = model_catalog()[model]
    total = 0.0
    for key in keys:
        names, templates = load_classnames_templates(key)
        images = dataset_sources()[key]["paper_images"]
        total += images * resolutions * e["image_gflops"] + len(names) * len(templates) * e["text_gflops"]
    return total / (tflops * 1e3)


def test_estimate_scales_with_gflops_and_throughput(no_data):
    config = select(load_config(preset_path("lr0fm")), models=["clip-vit-b-32,eva02-clip-e-14,blip-vit-b-16-14m"],
                    datasets="dtd,imagenet1k", resolutions="16,32,hr")
    datasets = plan_datasets(config)
    assert [(d.key, d.found, d.images) for d in datasets] == [("imagenet1k", False, 50000), ("dtd", False, 1880)]
    at = {t: {p.model: p for p in estimate(config, datasets, set(), tflops=t)} for t in (10.0, 20.0)}
    for model, plan in at[10.0].items():
        assert plan.cells == plan.pending == 6 and plan.image_views == 3 * (1880 + 50000)
        assert plan.seconds == pytest.approx(expected_seconds(model, ["dtd", "imagenet1k"], 3, 10.0))
        assert at[20.0][model].seconds == pytest.approx(plan.seconds / 2)
    big, small = at[10.0]["eva02-clip-e-14"].seconds, at[10.0]["clip-vit-b-32"].seconds
    assert big / small > 100  # 2264 vs 8.82 image GFLOPs
    # a slow input pipeline is the floor of every pass
    slow = {p.model: p for p in estimate(config, datasets, set(), tflops=1e6, images_per_second=100)}
    assert all(p.seconds == pytest.approx((1880 + 50000) / 100) for p in slow.values())


def test_estimate_is_printed_per_model_and_follows_throughput(no_data, capsys):
    args = ["--preset", "lr0fm", "--dry-run", "--models", "clip-vit-b-32,clip-vit-l-14", "--datasets", "dtd"]
    printed = {}
    for tflops in ("5", "10"):
        rc, text, _ = sweep(capsys, *args, "--throughput", tflops, out=no_data / "results")
        assert rc == 0 and f"at {tflops} TFLOPS (given)" in text
        printed[tflops] = {m: float(r[4].replace(",", "")) for m, r in model_rows(text).items()}
    for model in ("clip-vit-b-32", "clip-vit-l-14"):
        assert printed["5"][model] == pytest.approx(expected_seconds(model, ["dtd"], 5, 5.0), abs=0.06)
        assert printed["10"][model] == pytest.approx(printed["5"][model] / 2, abs=0.06)


def test_stored_records_count_as_done_when_they_match(no_data):
    config = select(load_config(preset_path("lr0fm")), models=["clip-vit-b-32"], datasets="dtd")
    datasets = plan_datasets(config)

    from fake_records import fake_record

    def record(resolution=16, **changes):
        return fake_record("clip-vit-b-32", "dtd", resolution, 0.5, **{"split": "test", "source": "paper", **changes})

    class Store:
        root = no_data

        def records(self):
            return [record(), record("hr"),
                    record(32, source="native"),  # another protocol
                    record(32, source="paper:CLIP"),  # the family's protocol is not the backbone's own
                    record(64, amp="bf16"), record(128, limit=10)]

    from lr0fm.sweep_plan import recorded_cells
    done = recorded_cells(config, datasets, Store())
    assert done == {("clip-vit-b-32", "dtd", 16), ("clip-vit-b-32", "dtd", "hr")}
    plan, = estimate(config, datasets, done, tflops=10.0)
    assert (plan.cells, plan.pending, plan.image_views) == (5, 3, 3 * 1880)


def test_estimate_of_a_config_with_found_data_and_a_non_catalog_model(tiny_open_clip, image_folder, tmp_path,
                                                                      capsys, monkeypatch):
    monkeypatch.setattr("lr0fm.models.create_model", lambda *a, **k: pytest.fail("--estimate built a model"))
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f'models: ["{tiny_open_clip[0]}", clip-rn50]\ndatasets: [imagefolder]\n'
                   f"data_root: {image_folder}\nresolutions: [16, hr]\nlimit: 10\n")
    rc, text, _ = sweep(capsys, str(cfg), "--estimate", out=tmp_path / "results")
    assert rc == 0 and "1 of 1 found" in text and "at 40 TFLOPS (default for fp32" in text
    rows = model_rows(text)
    assert rows[tiny_open_clip[0]][2:5] == ["20", "-", "?"]  # 10 images (limit) x 2 resolutions; no GFLOPs
    assert "not a catalog model" in " ".join(rows[tiny_open_clip[0]])
    data = get_dataset("imagefolder", root=image_folder)
    rn50 = model_catalog()["clip-rn50"]
    flops = 10 * 2 * rn50["image_gflops"] + len(data.spec.classnames) * len(data.spec.templates) * rn50["text_gflops"]
    assert float(rows["clip-rn50"][4]) == pytest.approx(flops / 40e3, rel=0.01)


def test_a_run_skips_models_lr0fm_cannot_run(tiny_open_clip, image_folder, tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f'models: ["{tiny_open_clip[0]}", m2-encoder-1b]\ndatasets: [imagefolder]\n'
                   f"data_root: {image_folder}\nresolutions: [16]\nworkers: 0\nprogress: false\n")
    rc, text, err = sweep(capsys, str(cfg), "--dry-run", out=tmp_path / "results")
    assert rc == 0 and "skipping m2-encoder-1b" in err
    assert text.splitlines()[-1].startswith("1 cells: 0 done, 1 pending")
    cfg.write_text("models: [m2-encoder-1b]\ndatasets: [tuxpaint]\n")
    rc, _, err = sweep(capsys, str(cfg), out=tmp_path / "results")
    assert rc == 2 and "none of the sweep's models can run" in err


@pytest.mark.parametrize("args,match", [
    (["--preset", "nope", "--dry-run"], r"unknown sweep preset 'nope'; presets: lr0fm"),
    (["--preset", "lr0fm", "--dry-run", "--models", "famly=CLIP"], r"unknown field 'famly'"),
    (["--preset", "lr0fm", "--dry-run", "--models", "family=Foo"], r"no model of the sweep has family 'Foo'.*OpenCLIP"),
    (["--preset", "lr0fm", "--dry-run", "--models", "clip-vit-b-3"], r"did you mean clip-vit-b-32"),
    (["--preset", "lr0fm", "--dry-run", "--models", "family=CLIP", "--models", "backend=hf"],
     r"no model of the sweep matches all of them"),
    (["--preset", "lr0fm", "--dry-run", "--datasets", "dtd,imagenet"], r"imagenet not in the sweep"),
    (["--preset", "lr0fm", "--dry-run", "--resolutions", "16,48"], r"48 not in the sweep"),
    (["--preset", "lr0fm", "--dry-run", "--throughput", "0"], r"--throughput 0.0 must be a positive"),
    (["--preset", "lr0fm", "--throughput", "5"], r"add --estimate"),
    (["sweep.yaml", "--preset", "lr0fm"], r"config file or --preset NAME"),
    ([], r"config file or --preset NAME"),
])
def test_bad_preset_or_filter_is_one_line_exit_2(no_data, capsys, args, match):
    rc, _, err = sweep(capsys, *args, out=no_data / "results")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and re.search(match, err), err
    assert not (no_data / "results").exists()


def test_a_paper_family_sweep_counts_only_records_of_that_family_protocol(no_data):
    from fake_records import fake_record
    from lr0fm.sweep_plan import recorded_cells

    config = select(load_config(preset_path("lr0fm")), models=["clip-vit-b-32"], datasets="dtd")
    config = config.with_run(protocol="paper:clip")  # the family in any case
    datasets = plan_datasets(config)

    class Store:
        root = no_data

        def records(self):
            return [fake_record("clip-vit-b-32", "dtd", r, 0.5, split="test", source=source)
                    for r, source in ((16, "paper:CLIP"), ("hr", "paper"), (32, "paper:CLIP+override"))]

    assert recorded_cells(config, datasets, Store()) == {("clip-vit-b-32", "dtd", 16)}
