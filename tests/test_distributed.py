"""torchrun sharding (images and cells) gives the single-process records. (Device views: tests/test_tensor_views.py
and tests/test_one_pass.py.)"""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from lr0fm import distributed as dist
from lr0fm.cli import main

from conftest import assert_same_store


def test_blocks_partition_the_images():
    for n in (0, 1, 5, 12, 13):
        for w in (1, 2, 3, 5):
            blocks = [dist.block(n, r, w) for r in range(w)]
            assert blocks[0][0] == 0 and blocks[-1][1] == n
            assert all(blocks[i][1] == blocks[i + 1][0] for i in range(w - 1))
            assert max(hi - lo for lo, hi in blocks) - min(hi - lo for lo, hi in blocks) <= 1


@pytest.mark.slow
@pytest.mark.parametrize("two_models", [False, True], ids=["images-sharded", "cells-sharded"])
def test_torchrun_two_processes_match_single_process(two_models, tiny_open_clip, second_tiny_model, image_folder,
                                                     tmp_path, capsys):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    models = tiny_open_clip[0] + ("," + second_tiny_model if two_models else "")
    args = ["eval", "--model", models, "--dataset", "imagefolder", "--data-root", str(image_folder),
            "--resolutions", "16,32,hr", "--batch-size", "4", "--workers", "0", "--no-progress"]
    assert main(["--out", str(tmp_path / "single")] + args) == 0
    single_out = capsys.readouterr().out
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "lr0fm",
                             "--out", str(tmp_path / "ranks")] + args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:  # never leave rank processes behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert_same_store(tmp_path / "single", tmp_path / "ranks", n_records=6 if two_models else 3)
    # rank 0 alone prints the report, with the same table as the single process
    assert stdout.count("results:") == 1
    assert single_out.split("results:")[0] == stdout.split("results:")[0]
