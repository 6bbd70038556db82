"""``lr0fm report --html``: a self-contained page, rendered in headless Chromium."""
import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lr0fm.cli import main
from lr0fm.records import COLUMN_NAMES
from lr0fm.store import ResultsStore

from fake_records import put_fake

CHROMIUM = "/usr/bin/chromium"
ACCURACY = {"hr": 0.8, 128: 0.76, 64: 0.6, 32: 0.35, 16: 0.12}
MODELS = {"beta & co": 0.8, "alpha-<clip>": 1.0}  # LR accuracy scale; names that must be escaped


def _records(store: ResultsStore) -> None:
    for model, scale in MODELS.items():
        for dataset in ("cifar10", "tuxpaint"):
            for res, acc in ACCURACY.items():
                put_fake(store, model, dataset, res, acc if res == "hr" else acc * scale, top5=0.95,
                         num_classes=10, n_images=200, n_skipped=1, variant={"sr": "bicubic"} if scale < 1 else {})


def _analysis_png(store: ResultsStore) -> Path:
    path = store.root / "analysis" / "demo" / "attention_shift.png"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


def test_html_page_is_self_contained(tmp_path, capsys):
    store = ResultsStore(tmp_path / "res")
    _records(store)
    png = _analysis_png(store)
    assert main(["--out", str(store.root), "report", "--html", str(tmp_path / "html")]) == 0
    page = Path(capsys.readouterr().out.strip().removeprefix("html: "))
    assert page.parent == tmp_path / "html" and page.is_file()
    text = page.read_text()
    assert not list(page.parent.glob(".*tmp*"))  # atomic write left nothing behind
    # nothing fetched from anywhere: no scripts, no external links or sources
    assert "<script" not in text and not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "alpha-&lt;clip&gt;" in text and "alpha-<clip>" not in text and "beta &amp; co" in text
    # the analysis PNG is embedded byte for byte, captioned with its path
    assert base64.b64encode(png.read_bytes()).decode() in text and "demo/attention_shift.png" in text
    assert len(re.findall(r'<img src="data:image/png;base64,', text)) == 3  # curves, Gamma map, analysis
    # provenance: the row labels, then the tidy columns of lr0fm.records and the evaluation's
    # effective resolution, one row per record
    table = text.split('<table class="provenance">')[1].split("</table>")[0]
    head = ["model_label", "dataset_label", *COLUMN_NAMES, "effective_resolution"]
    assert re.findall(r"<th(?: [^>]*)?>(.*?)</th>", table) == head
    rows = re.findall(r"<tr data-evaluation=.*?</tr>", table)
    assert len(rows) == len(store.records()) == 2 * 2 * len(ACCURACY)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", next(r for r in rows if ">cifar10<" in r and ">16<" in r
                                                      and "alpha" in r))
    row = dict(zip(head, cells))
    assert row["top1"] == f"{ACCURACY[16]:.4f}" and row["n_images"] == "200" and row["n_skipped"] == "1"
    # gamma 0.75 at 64 px, 0.95 at 128 px: 0.9 is crossed three quarters of the way in log2
    assert row["effective_resolution"] == f"{2 ** (6 + 0.75):.1f}"


def test_html_empty_store(tmp_path):
    from lr0fm.report.html import write_html
    page = write_html([], tmp_path / "html", store=ResultsStore(tmp_path / "empty"))
    assert "No results yet" in page.read_text()


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} absent (Debian package 'chromium', make deb)")
def test_html_renders_in_chromium(tmp_path):
    from lr0fm.report.html import write_html
    store = ResultsStore(tmp_path / "res")
    _records(store)
    page = write_html(store.records(), tmp_path / "html", store=store)
    shot = tmp_path / "shot.png"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   check=True, capture_output=True, timeout=60)
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], check=True, capture_output=True, text=True,
                         timeout=60).stdout

    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50          # text, tables, plots: not blank
    assert (pixels.min(axis=-1) < 200).mean() > 0.03                    # a real share of non-white ink

    # the leaderboard per LR resolution lists both models as user rows, the more robust one first
    boards = re.findall(r'<table class="leaderboard" data-resolution="(\d+)">(.*?)</table>', dom, re.S)
    assert [int(r) for r, _ in boards] == [128, 64, 32, 16]
    for _, table in boards:
        users = re.findall(r'<tr class="user">.*?<td class="model">(.*?)</td>', table, re.S)
        assert users == ["alpha-&lt;clip&gt;", "beta &amp; co+sr=bicubic"]
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
