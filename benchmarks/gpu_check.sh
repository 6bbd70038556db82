#!/usr/bin/env bash
# GPU checks for the tensor-views path, AMP and throughput; < 5 minutes on one GPU.
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh [OUTDIR]
# Needs an environment with lr0fm installed (make venv) and a CUDA device; downloads nothing
# (random-weight models). Writes logs to OUTDIR (default: $OUT or ./gpu-check).
set -u -o pipefail
PY=${PYTHON:-python}
OUTDIR=${1:-${OUT:-gpu-check}}
mkdir -p "$OUTDIR"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { echo; echo "== $*"; }
fail=0

step "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUTDIR/device.txt"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name())" || exit 1

step "1. tensor views: CUDA kernels == CPU kernels, and vs the PIL protocol"
timeout 120 $PY - <<'EOF' 2>&1 | tee "$OUTDIR/views.txt" || fail=1
import numpy as np, torch
from PIL import Image
from lr0fm import gpu_resize
from lr0fm.protocol import Protocol
rng = np.random.default_rng(0)
def photo(w, h):
    small = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
for mode in ("shortest", "squash"):
    p = Protocol(224, (0.5,) * 3, (0.5,) * 3, mode=mode, resolutions=(16, 32, 64, 128, "hr"))
    ims = [photo(int(rng.integers(150, 600)), int(rng.integers(150, 600))) for _ in range(32)]
    hr = torch.from_numpy(np.concatenate([gpu_resize.HRCarrier(p)(im) for im in ims]))
    cpu = gpu_resize.make_views(p, hr).float()
    gpu = gpu_resize.make_views(p, hr.cuda()).cpu().float()
    pil = torch.from_numpy(np.stack([p.views_uint8(im) for im in ims])).float()
    for j, r in enumerate(p.resolutions):
        d, e = (gpu[:, j] - cpu[:, j]).abs(), (gpu[:, j] - pil[:, j]).abs()
        print(f"{mode:9s} r={r!s:4s} cuda-vs-cpu max {d.max():4.0f} mean {d.mean():.3f}   "
              f"cuda-vs-PIL max {e.max():4.0f} mean {e.mean():.3f}  (/255)")
        assert d.max() <= 1, "CUDA and CPU interpolate disagree by more than rounding"
EOF

step "2. tests that touch the tensor path and evaluate (CPU parts)"
timeout 150 $PY -m pytest -q -x tests/test_distributed.py -k "tensor or blocks" 2>&1 | tail -3 | tee "$OUTDIR/tests.txt" || fail=1

step "3. throughput on CUDA: ViT-B-32 random weights, 512 images x 5 resolutions"
for views in on off; do
  timeout 150 $PY benchmarks/throughput.py --device cuda --amp bf16 --images 512 --rounds 1 --batch-size 256 \
    --tensor-views $views --prompt-sample 8000 2>&1 | grep -v "pretrained weights" | tee "$OUTDIR/throughput-views-$views.txt" || fail=1
done

step "4. eval CLI on CUDA end to end (tensor views recorded in the variant)"
timeout 120 $PY - <<'EOF' 2>&1 | tee "$OUTDIR/cli.txt" || fail=1
import json, subprocess, sys, tempfile, pathlib
import numpy as np
from PIL import Image
root = pathlib.Path(tempfile.mkdtemp()) / "imgs"
rng = np.random.default_rng(0)
for c in ("cat", "dog"):
    (root / c).mkdir(parents=True)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (96, 120, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
out = root.parent / "res"
cmd = [sys.executable, "-m", "lr0fm", "--out", str(out), "eval", "-m", "open_clip:ViT-B-32:random", "-d", "imagefolder",
       "--data-root", str(root), "--device", "cuda", "--amp", "bf16", "--no-progress"]
subprocess.run(cmd, check=True)
recs = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
print(len(recs), "records; variants:", {json.dumps(r["variant"]) for r in recs})
assert len(recs) == 5 and all(r["variant"].get("views") == "torch-antialias" for r in recs)
EOF

echo
[ $fail = 0 ] && echo "gpu_check: all steps passed" || echo "gpu_check: some step FAILED (see above)"
exit $fail
