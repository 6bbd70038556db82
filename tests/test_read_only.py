"""A results folder that cannot be written: one line and exit 2 wherever the first write lands
(a fresh folder, a used one with records, locks/ and partial/, or only one part of it read-only),
nothing changed in it; reading it (finished cells, reports) works as before. Real read-only
mounts, so it holds for root as well (tests/read_only.py)."""
from __future__ import annotations

import shutil

import numpy as np
from read_only import needs_read_only, run_read_only

from lr0fm.cli import main
from lr0fm.store import ResultsStore


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _eval(out, model, data, resolutions: str) -> list[str]:
    return ["eval", "--model", model, "--dataset", "imagefolder", "--data-root", str(data), "--resolutions",
            resolutions, "--workers", "0", "--no-progress", "--out", str(out)]


def _one_line(ran, folder, part: str) -> None:
    lines = ran.err.strip().splitlines()
    assert ran.rc == 2 and len(lines) == 1, ran
    assert lines[0].startswith(f"lr0fm: error: cannot write to results folder {folder} ({part}"), lines[0]
    assert "make it writable or choose another --out" in lines[0], lines[0]


@needs_read_only
def test_read_only_results_folders_are_one_line(tiny_open_clip, image_folder, tmp_path):
    model = tiny_open_clip[0]
    fresh, used = tmp_path / "fresh", tmp_path / "used"
    fresh.mkdir()
    assert main(_eval(used, model, image_folder, "16,hr")) == 0
    store = ResultsStore(used)
    records = store.records()
    assert (used / "locks").is_dir() and len(records) == 2
    # a resume point left beside them, covering a finished cell: the next pass removes it
    cell16 = next(r["cell"] for r in records if r["resolution"] == 16)
    store.save_partial(f"{records[0]['evaluation']}-stale", topk=np.zeros((1, 12, 3), np.int32),
                       valid=np.ones(12, bool), done=np.int64(5), cells=np.asarray([cell16]))
    part_ro = tmp_path / "part-ro"  # the same used folder with only partial/ read-only
    shutil.copytree(used, part_ro)
    before = {f: _files(f) for f in (fresh, used, part_ro)}

    ran = run_read_only([fresh, used, part_ro / "partial"], [
        _eval(fresh, model, image_folder, "16,hr"),       # nothing there yet
        _eval(used, model, image_folder, "16,32,hr"),     # a new cell in a used folder
        _eval(used, model, image_folder, "16,hr"),        # only finished cells: read, not written
        ["report", "--out", used],                         # only a report
        _eval(part_ro, model, image_folder, "16,32,hr"),  # a new cell; only partial/ refuses writes
    ], tmp_path / "logs")

    _one_line(ran[1], used, "locks")  # was a traceback from the lock file
    _one_line(ran[4], part_ro, "partial")  # said before the pass, not at its first write there (was a traceback)
    _one_line(ran[0], fresh, "locks")
    assert ran[2].rc == 0 and ran[2].err == "" and f"results: {used}" in ran[2].out, ran[2]
    assert ran[3].rc == 0 and ran[3].err == "" and "gamma" in ran[3].out, ran[3]
    assert {f: _files(f) for f in (fresh, used, part_ro)} == before  # nothing written, nothing removed
