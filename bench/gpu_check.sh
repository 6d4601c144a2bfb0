#!/usr/bin/env bash
# One prepared GPU session: CUDA tests, feed-forward and Gatys benchmarks, profiles; compiled graphs (STAGES=compiled,
# minutes of inductor compilation) and offline-model training (STAGES=offline) on request.
#
#   OUT=/tmp/gpu-check bash bench/gpu_check.sh            # all stages
#   STAGES="tests bench" bash bench/gpu_check.sh          # some of them
#
# Everything goes to $OUT: gpu_check.log (all output), gpu_measures.jsonl (figures of tests/gpu),
# offline_summary.json, offline_<name>_sheet.png and the best offline weights (offline_best.pth).
# Needs python3 with torch, torchvision, pillow, numpy, pandas, pytest (no Prefect, no boto3).
set -u
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
PY=${PY:-python3}
STAGES=${STAGES:-env tests bench shard gatys profile}
OFFLINE_STEPS=${OFFLINE_STEPS:-8000}
OFFLINE_LIMIT=${OFFLINE_LIMIT:-110}   # seconds per offline training run
DEVICE=${DEVICE:-cuda}                # cpu: a dry run of this script
LAYERS=${LAYERS:-fused+cudnn}         # STYLECORE_CUDA_LAYERS variants to test and benchmark (default: the engine default)
COMPILE=${COMPILE:-off}                # engine compile modes the bench compares, e.g. "off default reduce-overhead"
COMPILE_BATCHES=${COMPILE_BATCHES:-16}  # batch sizes measured for the compiled modes
PROFILE_COMPILE=${PROFILE_COMPILE:-off}  # STYLECORE_COMPILE for the profiles
BIG_BATCH=${BIG_BATCH:-64}            # stage bigbatch: 256 px at this batch size, eager against reduce-overhead
FORMS=${FORMS:-fast+pads fused fused+borders fused+cudnn fused+cudnn+borders}  # stage forms: one process
PROFILE_LAYERS=${PROFILE_LAYERS:-${LAYERS##* }}  # STYLECORE_CUDA_LAYERS for the profiles
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD GPU_CHECK_OUT=$OUT DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
LOG=$OUT/gpu_check.log
t0=$(date +%s)
stage() { echo; echo "=== $1 (t=$(( $(date +%s) - t0 )) s) ==="; }

run_offline() {  # name, extra recipe arguments...
  local name=$1; shift
  local work=/tmp/offline-$name
  rm -rf "$work"
  timeout "$OFFLINE_LIMIT" $PY -m stylecore.training.offline_model --device "$DEVICE" --steps "$OFFLINE_STEPS" \
    --checkpoint-every 1000 --work "$work" --no-install "$@"
  if [ ! -f "$work/metrics.json" ]; then  # cut off: evaluate the newest checkpoint
    local last
    last=$(ls "$work"/train/checkpoints/*.pth 2>/dev/null | sort | tail -1)
    [ -n "$last" ] && $PY -m stylecore.training.offline_model --eval-only --weights "$last" --work "$work" "$@"
  fi
  tail -3 "$work/train/losses.csv" 2>/dev/null
  [ -f "$work/sheet.png" ] && cp "$work/sheet.png" "$OUT/offline_${name}_sheet.png"
}

{
  for s in $STAGES; do
    case $s in
      env)
        stage env
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
        $PY -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1
        (gcc --version || cc --version) 2>&1 | head -1; nproc
        ;;
      tests)
        for v in ${TEST_LAYERS:-$LAYERS}; do
          stage "tests/gpu (STYLECORE_CUDA_LAYERS=$v)"
          STYLECORE_CUDA_LAYERS=$v GPU_TEST_DEVICE=$DEVICE timeout ${TEST_LIMIT:-120} $PY -m pytest tests/gpu -q -p no:cacheprovider \
            -k "not compiled" --durations=6 2>&1 | grep -v "^MEASURE" | tail -25
        done
        ;;
      compiled)  # inductor with dynamic shapes: ~2 min of compilation per method on an H200 (16 cores)
        stage "tests/gpu/test_compiled_cuda.py"
        GPU_TEST_DEVICE=$DEVICE timeout ${COMPILED_LIMIT:-400} $PY -m pytest tests/gpu/test_compiled_cuda.py -q -p no:cacheprovider \
          --durations=3 2>&1 | grep -v "^MEASURE\|pow_by_natural" | tail -25
        ;;
      bench)
        for v in $LAYERS; do
          stage "bench_feedforward --device $DEVICE (STYLECORE_CUDA_LAYERS=$v)"
          STYLECORE_CUDA_LAYERS=$v timeout ${BENCH_LIMIT:-300} $PY bench/bench_feedforward.py --device $DEVICE \
            --compile $COMPILE --compile-batches $COMPILE_BATCHES
        done
        ;;
      bigbatch)
        stage "bench_feedforward --device $DEVICE, 256 px, batch $BIG_BATCH"
        timeout ${BIG_BATCH_LIMIT:-80} $PY bench/bench_feedforward.py --device $DEVICE --sizes 256 --batches $BIG_BATCH \
          --images $(( BIG_BATCH * 4 )) --compile off reduce-overhead
        ;;
      forms)  # CUDA layer forms side by side in one process (stylecore/fused_layers.py), batches 16 and 64
        stage "bench_feedforward --device $DEVICE, layer forms $FORMS"
        timeout ${FORMS_LIMIT:-200} $PY bench/bench_feedforward.py --device $DEVICE --batches 16 64 --forms $FORMS
        ;;
      shard)  # the shard runner alone (no Prefect): auto batch (one forward pass per engine call) against 8
        for m in adain johnson; do
          stage "bench_shard --device $DEVICE --method $m"
          timeout ${SHARD_LIMIT:-60} $PY bench/bench_shard.py --device $DEVICE --method $m --rows ${SHARD_ROWS:-1024}
        done
        ;;
      processes)  # shard processes sharing the GPU (a worker's --limit): 1, 2 and 4 processes on slices of one shard
        for m in adain johnson; do
          stage "bench_shard --device $DEVICE --method $m --processes ${PROCESSES:-1 2 4}"
          timeout ${PROCESSES_LIMIT:-150} $PY bench/bench_shard.py --device $DEVICE --method $m \
            --rows ${PROCESSES_ROWS:-2048} --repeat 2 --processes ${PROCESSES:-1 2 4}
        done
        ;;
      static)  # compiled graphs with constant sizes (STYLECORE_COMPILE_DYNAMIC=0) against eager (default 256 px batch 64)
        stage "bench_feedforward --device $DEVICE, static compiled graphs"
        STYLECORE_COMPILE_DYNAMIC=0 timeout ${STATIC_LIMIT:-240} $PY bench/bench_feedforward.py --device $DEVICE \
          --sizes ${STATIC_SIZES:-256} --batches ${STATIC_BATCHES:-64} --images ${STATIC_IMAGES:-256} \
          --compile ${STATIC_COMPILE:-off default reduce-overhead} ${STATIC_FORMS:+--forms $STATIC_FORMS} 2>&1 \
          | grep -v pow_by_natural
        ;;
      staticgraphs)  # the compiled-graph tests with constant sizes (one graph per shape)
        stage "tests/gpu/test_compiled_cuda.py, STYLECORE_COMPILE_DYNAMIC=0"
        STYLECORE_COMPILE_DYNAMIC=0 GPU_TEST_DEVICE=$DEVICE timeout ${COMPILED_LIMIT:-400} $PY -m pytest \
          tests/gpu/test_compiled_cuda.py -q -p no:cacheprovider --durations=3 2>&1 | grep -v "^MEASURE\|pow_by_natural" | tail -25
        ;;
      gatys)
        stage "bench_gatys --device $DEVICE"
        timeout 45 $PY bench/bench_gatys.py --device $DEVICE --sizes 256 512 1024 --steps 50
        ;;
      profile)
        for m in ${PROFILE_METHODS:-johnson adain}; do
          stage "profile $m 256 px batch 16 (compile $PROFILE_COMPILE, layers $PROFILE_LAYERS)"
          STYLECORE_COMPILE=$PROFILE_COMPILE STYLECORE_CUDA_LAYERS=$PROFILE_LAYERS timeout ${PROFILE_LIMIT:-90} $PY bench/profile_feedforward.py --device $DEVICE --method $m --size 256 --batch 16
        done
        ;;
      offline)
        stage "offline model: the recipe (80 px crops, batch 4)"
        run_offline recipe
        stage "offline model: 128 px crops, batch 8, content weight 3"
        run_offline crop128 --crop 128 --batch-size 8 --content-weight 3
        stage "offline summary"
        $PY - "$OUT" <<'EOF'
import json, shutil, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = {}
for work in sorted(pathlib.Path("/tmp").glob("offline-*")):
    m = work / "metrics.json"
    if m.exists():
        rows[work.name] = json.loads(m.read_text())
(out / "offline_summary.json").write_text(json.dumps(rows, indent=1))
def score(s):  # passing first, then the worst margin to the bar
    return (s["passed"], min(0.5 - s["swd_ratio"], 0.5 - s["gram_ratio"], s["grad_corr"] - 0.5))
best = max(rows, key=lambda k: score(rows[k]["summary"]), default=None)
for k, r in rows.items():
    print(k, r["summary"], r["recipe"].get("steps"))
if best:
    w = pathlib.Path("/tmp") / best / "train" / "model.pth"
    if not w.exists():
        w = sorted((pathlib.Path("/tmp") / best / "train" / "checkpoints").glob("*.pth"))[-1]
    shutil.copy(w, out / "offline_best.pth")
    print("best:", best, w)
EOF
        ;;
    esac
  done
  stage done
} 2>&1 | tee "$LOG"
