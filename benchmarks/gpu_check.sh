#!/usr/bin/env bash
# The GPU measurements in one script: about 10 minutes on one H200, random weights, nothing downloaded.
#
#   PYTHON=python3 bash benchmarks/gpu_check.sh OUTDIR                    # on a CUDA machine
#   DEVICE=cpu SMOKE=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh OUTDIR   # every step, tiny, on CPU
#
# Steps (each under a timeout; one log per step in OUTDIR; the RESULT lines are collected in OUTDIR/summary.txt):
#   1. device views bit-exact on the device (tests/test_tensor_views.py's cuda tests) and their speed against PIL
#      (benchmarks/device_views.py, photo and mixed sizes)
#   2. device JPEG decoder (nvjpeg on CUDA) vs PIL: pixels, views, per-image top-1 (benchmarks/decoder_diff.py)
#      on TuxPaint's photos as JPEGs ($TUX: the stamps or a folder from decoder_diff.py --export-tuxpaint;
#      default /usr/share/tuxpaint/stamps), else generated photo-like JPEGs
#   3. b/a: lr0fm evaluate (device decode + device views, 5 resolutions, 8192 JPEGs) against the bare ViT-B-32
#      bf16 forward (benchmarks/throughput.py); target >= 0.90; then one profiled pass: its stage table (--profile);
#      the same for ViT-L-14 on 2048 JPEGs, target >= 0.95
#   4. one 3-model pass against three single-model passes, and the sum of the bare forwards (benchmarks/many_models.py);
#      target: one pass <= 1.2x the sum of the forwards
#   5. tests/test_pass_streams.py (its cuda case: the overlapped pass hands over the views of a plain decode of
#      512 JPEGs while the device is busy), then `lr0fm eval -m M1,M2 --profile` on the device end to end:
#      records say run.views device, decoder
#      torchvision-<device>, and hold run.stages with the device stages timed; the stage table is printed
#   6. `lr0fm calibrate` on 3 architectures (ViT-B-32, ViT-L-14, RN50), then each one's pass over 4096 other JPEGs:
#      the sweep plan's estimate from the measured speeds against the pass's run.seconds (benchmarks/calibrate_check.py);
#      target: within 15%
#   7. CLIP_benchmark 1.6.2 against lr0fm on the same device, checkpoint (ViT-B-32) and 4096 JPEGs at the five
#      resolutions: its five run_classification calls (its CLI's autocast: fp16 on CUDA; PIL in as many workers as
#      lr0fm has) against one lr0fm pass (--amp fp16, its device defaults) (benchmarks/vs_clip_benchmark.py
#      --device); prints peer time / lr0fm time; no target
#   8. JPEG decoding rates on the device at decode batches of 64, 256 and 1024: PIL (one process), torchvision's
#      decode_jpeg (lr0fm's --decoder device: nvjpeg) and nvImageCodec where its wheels are installed, and their
#      pixels against each other (benchmarks/decode_rate.py); no target: whether decoding bounds the pass
# Environment: PYTHON (default python), DEVICE (cuda), SMOKE (0; 1: tiny models and sizes), TUX, TIME_SCALE
# (an integer that multiplies every timeout, default 1, 3 with SMOKE), WHEELS (a folder of wheels installed first into a
# temporary folder on PYTHONPATH, e.g. open_clip_torch, ftfy, wcwidth and clip_benchmark where the image lacks them,
# and nvImageCodec for step 8: `make gpu-check-prep`), STEPS (the steps
# to run, e.g. "3 6"; default all; step 0 always runs), TRACE (1: step 3 also writes a torch.profiler trace of
# the profiled ViT-B-32 pass to OUTDIR/trace, a few MB).
# lr0fm is imported from this tree's src/.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
SMOKE=${SMOKE:-0}
OUTDIR=${1:-${OUT:-gpu-check}}
SCALE=${TIME_SCALE:-$([ "$SMOKE" = 1 ] && echo 3 || echo 1)}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
rm -f "$OUTDIR"/step[0-8]-*.txt "$OUTDIR/summary.txt"  # logs are appended to: start them empty
STEPS=${STEPS:-1 2 3 4 5 6 7 8}
want() { [[ " $STEPS " == *" $1 "* ]]; }
WORK=$(mktemp -d -t lr0fm-gpu-check-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 LR0FM_CACHE="$WORK/cache"
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl \
    || { echo "gpu_check: FAILED: could not install the wheels in $WHEELS"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
START=$(date +%s)
STATUS=()  # "step: passed|FAILED (rc)"

step() { echo; echo "== $* ($(( $(date +%s) - START ))s)"; }
# run LOG SECONDS CMD...: run under a timeout, append to OUTDIR/LOG, remember failures of the current step
run() {
  local log=$1 secs=$(( $2 * SCALE )); shift 2
  echo "\$ $*" >>"$OUTDIR/$log"
  timeout "$secs" "$@" 2>&1 | grep --line-buffered -v "No pretrained weights loaded" | tee -a "$OUTDIR/$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "!! timed out after ${secs}s (TIME_SCALE=2 doubles every limit)" | tee -a "$OUTDIR/$log"
  [ "$rc" = 0 ] || step_rc=$rc
  return 0
}
finish() { STATUS+=("$1: $([ "$step_rc" = 0 ] && echo passed || echo "FAILED (rc $step_rc)")"); }

if [ "$SMOKE" = 1 ]; then
  # two tiny ViTs (tests/conftest.py's config, and one with 8-px patches and 3 layers): same pixels, other weights
  "$PY" - "$WORK" <<'EOF' || exit 1
import json, sys
sys.path.insert(0, "tests")
from conftest import TINY_OPEN_CLIP_CFG as tiny
other = json.loads(json.dumps(tiny))
other["vision_cfg"].update(layers=3, patch_size=8)
for name, cfg in (("lr0fm-tiny-vit", tiny), ("lr0fm-tiny-vit-p8", other)):
    with open(f"{sys.argv[1]}/{name}.json", "w") as f:
        json.dump(cfg, f)
EOF
  MODEL="open_clip:$WORK/lr0fm-tiny-vit.json:random"
  MODEL_L="open_clip:$WORK/lr0fm-tiny-vit-p8.json:random"
  MODELS="$MODEL,$MODEL_L"
  CLI_MODELS=$MODELS; CAL_MODELS=$MODELS
  AMP=(); THREADS=(--threads 1)   # tiny models on a shared CPU: one thread avoids spinning workers
  N_VIEWS=8; N_DIFF=(--limit 16 --generated 16); N_B=16; B=8; ROUNDS_B=1; N_B_L=16; ROUNDS_B_L=1
  N_MANY=16; ROUNDS_MANY=2; N_CAL=64; CAL_SECONDS=2
  PEER=(--arch ViT-S-32 --images 16 --classes 10 --templates 2 --batch-size 8 --rounds 1 --workers 0 --peer-workers 0)
  DECODE=(--images 32 --batch-sizes 8,32 --rounds 1 --pil-images 16)
else
  MODEL="open_clip:ViT-B-32:random"
  MODEL_L="open_clip:ViT-L-14:random"
  MODELS="open_clip:ViT-B-32:random,open_clip:ViT-B-16:random,open_clip:RN50:random"
  CLI_MODELS="open_clip:ViT-B-32:random,open_clip:RN50:random"
  CAL_MODELS="open_clip:ViT-B-32:random,open_clip:ViT-L-14:random,open_clip:RN50:random"
  AMP=(--amp bf16); THREADS=()
  N_VIEWS=512; N_DIFF=(); N_B=8192; B=256; ROUNDS_B=3; N_B_L=2048; ROUNDS_B_L=2
  N_MANY=1024; ROUNDS_MANY=2; N_CAL=4096; CAL_SECONDS=8
  # lr0fm's default workers on a GPU (cores - 1, at most 32) for both sides
  PEER=(--arch ViT-B-32 --peer-amp --amp fp16 --images 4096 --batch-size "$B" --rounds 3 --workers -1
        --peer-workers "$(( $(nproc) - 1 < 32 ? $(nproc) - 1 : 32 ))")
  DECODE=(--images 4096 --batch-sizes 64,256,1024 --rounds 2 --pil-images 256)
fi
TRACE_ARGS=()
[ "${TRACE:-0}" = 1 ] && TRACE_ARGS=(--profile-trace "$OUTDIR/trace")

step "0. machine" ; step_rc=0
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"; uptime; echo "cpus $(nproc)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} 2>&1 | tee "$OUTDIR/step0-machine.txt"
run step0-machine.txt 90 "$PY" -c "
import sys, torch, torchvision, PIL, open_clip
print('python', sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__,
      'pillow', PIL.__version__, 'open_clip', open_clip.__version__)
if torch.device('$DEVICE').type == 'cuda':
    assert torch.cuda.is_available(), 'DEVICE=$DEVICE but torch sees no CUDA device'
    print(torch.cuda.get_device_name())
if '$(want 7 && echo 7)':  # step 7's peer: missing, it would fail after minutes of other steps
    from importlib.metadata import version
    import clip_benchmark.metrics.zeroshot_classification
    print('clip_benchmark', version('clip_benchmark'))
"
finish "0 machine"
[ "$step_rc" = 0 ] || { echo "gpu_check: FAILED: no usable $DEVICE (see $OUTDIR/step0-machine.txt)"; exit 1; }

if want 1; then
step "1. device views == PIL chain on $DEVICE, and their speed"; step_rc=0
run step1-views.txt 30 "$PY" -m pytest -q -p no:cacheprovider tests/test_tensor_views.py -k cuda
# mixed sizes (one size group per image) are the device path's worst case
run step1-views.txt 30 "$PY" benchmarks/device_views.py --devices "$DEVICE" --images "$N_VIEWS" --sizes photo --rounds 2
run step1-views.txt 40 "$PY" benchmarks/device_views.py --devices "$DEVICE" --images "$N_VIEWS" --sizes mixed --rounds 2
finish "1 device views"
fi

if want 2; then
step "2. device JPEG decoder vs PIL: pixels and per-image top-1"; step_rc=0
run step2-decoder.txt 35 "$PY" benchmarks/decoder_diff.py --device "$DEVICE" --model "$MODEL" "${AMP[@]}" \
  "${THREADS[@]}" "${N_DIFF[@]}"
finish "2 decoder"
fi

if want 3; then
step "3. b/a: lr0fm evaluate (device decode + views) vs the bare forward, $N_B JPEGs; stage times"; step_rc=0
run step3-throughput.txt 75 "$PY" benchmarks/throughput.py --device "$DEVICE" --model "$MODEL" "${AMP[@]}" \
  "${THREADS[@]}" --images "$N_B" --batch-size "$B" --rounds "$ROUNDS_B" --views device --decoder device --skip-paper \
  --jpeg-dir "$WORK/jpegs" --profile "${TRACE_ARGS[@]}"
run step3-throughput.txt 120 "$PY" benchmarks/throughput.py --device "$DEVICE" --model "$MODEL_L" "${AMP[@]}" \
  "${THREADS[@]}" --images "$N_B_L" --batch-size "$B" --rounds "$ROUNDS_B_L" --views device --decoder device \
  --skip-paper --jpeg-dir "$WORK/jpegs" --target 0.95 --profile
finish "3 b/a"
fi

if want 4; then
step "4. one pass for ${MODELS//,/ + } vs one pass each"; step_rc=0
run step4-many-models.txt 60 "$PY" benchmarks/many_models.py --device "$DEVICE" --models "$MODELS" "${AMP[@]}" \
  "${THREADS[@]}" --images "$N_MANY" --batch-size "$B" --rounds "$ROUNDS_MANY" --views device --decoder device \
  --jpeg-dir "$WORK/jpegs"
finish "4 many models"
fi

if want 5; then
step "5. the overlapped pass's views on $DEVICE; lr0fm eval -m ${CLI_MODELS//,/,} --profile end to end"; step_rc=0
# the prefetch thread's views (side stream, nvjpeg on its own stream) against a plain decode, the device kept busy
run step5-cli.txt 90 "$PY" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_pass_streams.py
CLI_FLAGS=(--device "$DEVICE" "${AMP[@]}" --profile)
# on CUDA the defaults must pick device views and the device decoder; on CPU they are asked for
[ "$DEVICE" = cpu ] && CLI_FLAGS+=(--views device --decoder device --workers 0)
run step5-cli.txt 35 "$PY" - "$WORK" "$CLI_MODELS" "$DEVICE" "${CLI_FLAGS[@]}" <<'EOF'
import json, shutil, subprocess, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from throughput import generate_jpegs
work, models, device, flags = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
root = work / "cli-images"
for i, path in enumerate(generate_jpegs(work / "jpegs", 48)):
    (root / ("cat", "dog")[i % 2]).mkdir(parents=True, exist_ok=True)
    shutil.copy(path, root / ("cat", "dog")[i % 2] / path.name)
out = work / "cli-results"
cmd = [sys.executable, "-m", "lr0fm", "--out", str(out), "eval", "-m", models, "-d", "imagefolder",
       "--data-root", str(root), "--no-progress", *flags]
print("$", " ".join(cmd), flush=True)
done = subprocess.run(cmd, check=True, capture_output=True, text=True)
print(done.stdout, flush=True)
assert "stage times" in done.stdout, "--profile printed no stage table"
records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
decoder = "torchvision-" + device.split(":")[0]
seen = sorted({(r["model"], r["run"]["views"], r["identity"]["protocol"]["decoder"], r["run"]["models_in_pass"])
               for r in records})
print(len(records), "records; (model, run.views, identity.protocol.decoder, run.models_in_pass):", seen)
n_models = len(models.split(","))
assert len(records) == 5 * n_models, f"expected {5 * n_models} records"
assert all(r["run"]["views"] == "device" for r in records), "views were not made on the device"
assert all(r["identity"]["protocol"]["decoder"] == decoder for r in records), f"decoder is not {decoder}"
assert all("views" not in r["identity"]["protocol"] for r in records), "exact device views must not be a variant"
assert all(r["run"]["models_in_pass"] == n_models for r in records), "the models did not share one pass"
stages = {"wall", "wait", "read", "decode", "views", "forward", "scoring", "topk_copy"}
assert all(stages <= set(r["run"].get("stages", {})) for r in records), \
    f"run.stages lacks some of {sorted(stages)}: {records[0]['run'].get('stages')}"
print(f"RESULT cli: {len(records)} records, run.views device, identity.protocol.decoder {decoder}, "
      f"{n_models} models in one pass, run.stages with every stage")
EOF
finish "5 eval CLI"
fi

if want 6; then
step "6. lr0fm calibrate on ${CAL_MODELS//,/ + }: the plan's pass time vs the pass"; step_rc=0
run step6-calibrate.txt 300 "$PY" benchmarks/calibrate_check.py --device "$DEVICE" --models "$CAL_MODELS" "${AMP[@]}" \
  "${THREADS[@]}" --images "$N_CAL" --batch-size "$B" --seconds "$CAL_SECONDS" --jpeg-dir "$WORK/jpegs-calibrate"
finish "6 calibrate"
fi

if want 7; then
step "7. CLIP_benchmark 1.6.2 (5 runs) vs one lr0fm pass on $DEVICE"; step_rc=0
run step7-vs-clip-benchmark.txt 240 "$PY" benchmarks/vs_clip_benchmark.py --device "$DEVICE" "${PEER[@]}" \
  "${THREADS[@]}" --jpeg-dir "$WORK/jpegs"
finish "7 vs CLIP_benchmark"
fi

if want 8; then
step "8. JPEG decoding rates on $DEVICE: PIL, torchvision (nvjpeg), nvImageCodec where installed"; step_rc=0
# nvImageCodec finds libnvjpeg of the nvidia-nvjpeg wheel (WHEELS) there
run step8-decode-rate.txt 120 env LD_LIBRARY_PATH="$WORK/site/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$PY" benchmarks/decode_rate.py --device "$DEVICE" "${DECODE[@]}" "${THREADS[@]}" --jpeg-dir "$WORK/jpegs"
finish "8 decode rates"
fi

{
  echo "gpu_check on $DEVICE$([ "$SMOKE" = 1 ] && echo " (SMOKE: tiny models and sizes)"), $(( $(date +%s) - START ))s:"
  printf '  %s\n' "${STATUS[@]}"
  if [ -f "$OUTDIR/step1-views.txt" ]; then
    echo "device views (ms/image; 'vs PIL' = speed-up):"
    grep -hE "^[0-9]+ images \(|^(pil|cpu|cuda) +[0-9]" "$OUTDIR/step1-views.txt" | sed 's/^/  /'
  fi
  grep -h "^RESULT" "$OUTDIR"/step[2-8]-*.txt 2>/dev/null | sed 's/^RESULT /  /'
} >"$OUTDIR/summary.txt"
echo; echo "== summary"; cat "$OUTDIR/summary.txt"
if printf '%s\n' "${STATUS[@]}" | grep -q FAILED; then
  echo "gpu_check: FAILED (see the logs in $OUTDIR)"; exit 1
fi
echo "gpu_check: all steps passed"
