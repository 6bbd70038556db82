"""The benchmark scripts that docs/performance.md quotes keep running as the library changes: the
CLIP_benchmark side by side (tiny: 4 photos, ViT-S-32) and the GPU check's every step on CPU
(SMOKE), so a GPU session does not spend its device minutes finding a broken script."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUXPAINT = Path("/usr/share/tuxpaint/stamps")


def _run(argv, **env) -> str:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(not TUXPAINT.is_dir(), reason="needs the tuxpaint-stamps-default Debian package")
def test_vs_clip_benchmark_runs_and_lr0fm_agrees_with_the_peer_at_every_resolution(tmp_path):
    out = _run([sys.executable, "benchmarks/vs_clip_benchmark.py", "--images", "4", "--rounds", "1",
                "--slice-images", "0", "--workers", "0", "--batch-size", "4", "--arch", "ViT-S-32"],
               LR0FM_CACHE=str(tmp_path / "cache"))
    assert "top-1 equal to the peer's: 100% at every resolution" in out, out
    assert "time(peer, 5 runs) / time(lr0fm, 1 pass, lr0fm-w0):" in out, out


@pytest.mark.slow
def test_gpu_check_every_step_passes_on_cpu(tmp_path):
    out = _run(["bash", "benchmarks/gpu_check.sh", str(tmp_path / "check")], DEVICE="cpu", SMOKE="1",
               PYTHON=sys.executable)
    assert "gpu_check: all steps passed" in out, out[-3000:]
    summary = (tmp_path / "check" / "summary.txt").read_text()
    assert "records identical yes" in summary and "max 0/255" in summary, summary
    assert "7 vs CLIP_benchmark: passed" in summary and "peer/lr0fm ViT-S-32 on cpu:" in summary, summary
    assert "8 decode rates: passed" in summary and "torchvision-cpu" in summary, summary
