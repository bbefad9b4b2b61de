#!/usr/bin/env bash
# metric_jax on an accelerator (issue 11 item 6): one prepared run that fits one device call of about 8 minutes.
#
#   bash benchmarks/accelerator.sh             on the GPU machine, from the repository root (wheels carried in .whl/)
#   bash benchmarks/accelerator.sh --dry-run   here, on the CPU, every section at tiny sizes (about two minutes)
#
# Sections, each under its own time budget (a section that would overrun is stopped or skipped, with a note):
#   facts    GPU, driver, CUDA, jax / torch versions                     (benchmarks/_gpu_report.py facts)
#   tests    the SPMD step, loss contract and evaluation tests on the device (pytest, JAX_PLATFORMS=cuda)
#   losses   value and gradient at G = 1024, 4096, 16384 (D = 512) next to the floor and pytorch-metric-learning on
#            CUDA (benchmarks/losses.py --torch-device cuda), one process per G
#   train    train steps per second, float32 vs bfloat16 backbone (benchmarks/train.py --dtype float32,bfloat16)
#   knn      exact kNN, k = 100, metric_jax next to torch.topk (benchmarks/knn_gpu.py) at 131072 x 128, then at
#            1M x 128; then, with the time left, metric_jax with the library's default chunk sizes at 131072 x 128
# It writes benchmarks/results/gpu.md (the dry run writes only $OUT/gpu.md) and copies it, with the log, to $OUT.
#
# Device call (the device tool's `run`): command "bash benchmarks/accelerator.sh", carry [".whl"], timeout_s 560.
# Prepare .whl/ first with `bash benchmarks/fetch_wheels.sh`.
#
# Environment: OUT (where results go; a temporary folder if unset), PYTHON (default python3), ACCELERATOR_BUDGET_S
# (total seconds, default 480 on the device, 300 in the dry run), ACCELERATOR_DRY_RUN=1 (same as --dry-run),
# ACCELERATOR_LOSSES (comma-separated loss keys of benchmarks/losses.py).

set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
DRY=${ACCELERATOR_DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-$(mktemp -d /tmp/accelerator_out.XXXXXX)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/accelerator_work.XXXXXX)
LOG="$OUT/log"
PY=${PYTHON:-python3}
START=$(date +%s)
COMMAND="bash benchmarks/accelerator.sh $*"
COMMAND=${COMMAND% }

export PYTHONUNBUFFERED=1
main() {
  export XLA_PYTHON_CLIENT_PREALLOCATE=false   # JAX and torch share the device: neither takes 75% up front

  if [ "$DRY" = 1 ]; then
    TOTAL=${ACCELERATOR_BUDGET_S:-300}
    export JAX_PLATFORMS=cpu
    TORCH_DEVICE=cpu
    RESULT="$OUT/gpu.md"
    TESTS=(tests/evaluation/test_extract.py tests/evaluation/test_verification.py)
    PYTEST_ARGS=()
    LOSS_SIZES=(64 128)
    LOSS_WEIGHTS=(1 1)
    LOSS_DIM=16
    LOSSES=${ACCELERATOR_LOSSES:-contrastive,proxy_anchor}
    MIN_CLASSES=16
    LOSS_ARGS=(--repeats 3 --warmup 1 --min-seconds 0.05 --rounds 1 --pml-timeout 60)
    TRAIN_ARGS=(--cases tiny --dtype float32,bfloat16 --steps 3)
    KNN_SMALL=2000
    KNN_ARGS=(--dim 16 --k 10 --repeats 1 --chunk-size 512 --reference-chunk-size 2048 --torch-block 512)
    KNN_BIG=4000
    KNN_DEFAULT_ARGS=(--dim 16 --k 10 --repeats 1)
    #          facts tests losses train knn-small knn-big
    BUDGETS=(  30    60    90     60    30        40 )
  else
    TOTAL=${ACCELERATOR_BUDGET_S:-480}
    export JAX_PLATFORMS=cuda
    TORCH_DEVICE=cuda
    RESULT="$ROOT/benchmarks/results/gpu.md"
    # The step, the loss contract and evaluation (kNN, retrieval, clustering, classification, extraction) tests,
    # without the argument-checking tests (they raise before any device work) and the hypothesis property test (one
    # compilation per drawn shape): 12 + 240 + 92 + 131 tests.
    TESTS=(tests/train/test_step.py tests/evaluation/test_knn.py tests/evaluation/test_evaluate.py
           tests/losses/test_contract.py tests/losses/test_param_contract.py tests/evaluation/test_extract.py
           tests/evaluation/test_retrieval.py tests/evaluation/test_clustering.py tests/evaluation/test_classification.py
           tests/evaluation/test_verification.py)
    PYTEST_ARGS=(-n 8 --dist loadfile -k "not bad_arguments and not test_property_finite")
    LOSS_SIZES=(1024 4096 16384)
    LOSS_WEIGHTS=(25 30 45)   # shares of the losses budget; time a size leaves unused goes to the later ones
    LOSS_DIM=512
    LOSSES=${ACCELERATOR_LOSSES:-contrastive,triplet,triplet[mining=hard],multi_similarity,nca,histogram,proxy_anchor,supcon}
    MIN_CLASSES=1000
    LOSS_ARGS=(--repeats 10 --warmup 2 --min-seconds 0.5 --rounds 2 --pml-timeout 15)
    TRAIN_ARGS=(--cases resnet14_64,resnet28 --dtype float32,bfloat16 --steps 20)
    # kNN first at N = 131072 (both methods, small enough to finish whatever the speed), then at N = 1M.
    KNN_SMALL=131072
    KNN_ARGS=(--dim 128 --k 100 --repeats 2 --chunk-size 2048 --reference-chunk-size 262144 --torch-block 2048)
    KNN_BIG=1000000
    KNN_DEFAULT_ARGS=(--dim 128 --k 100 --repeats 1)
    #          facts tests losses train knn-small knn-big
    BUDGETS=(  25    110   160    65    25        80 )
  fi
  DEADLINE=$((START + TOTAL))
  REPORT_RESERVE=15
  : > "$WORK/sections.tsv"

  echo "== accelerator.sh: dry run=$DRY, budget ${TOTAL} s, OUT=$OUT, work=$WORK, $(date -Is)"

  elapsed() { echo $(( $(date +%s) - START )); }

  # record NAME RC SECONDS BUDGET NOTE: one row of the section table.
  record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$WORK/sections.tsv"; }

  # section NAME BUDGET MIN_S COMMAND...: runs COMMAND under `timeout` for at most BUDGET seconds and what the total
  # budget leaves; skips it (with a note) when fewer than MIN_S seconds are left. SIGINT first, so that pytest still
  # writes its report, then KILL 15 s later.
  section() {
    local name=$1 budget=$2 min_s=$3; shift 3
    local left=$(( DEADLINE - $(date +%s) - REPORT_RESERVE ))
    local allowed=$(( budget < left ? budget : left ))
    if [ "$allowed" -lt "$min_s" ]; then
      echo "== $name: skipped, ${left} s left of the total budget (needs at least ${min_s} s)"
      record "$name" "—" 0 "$budget" "skipped: ${left} s left of the ${TOTAL} s total, needs at least ${min_s} s"
      return 0
    fi
    echo "== $name: up to ${allowed} s, at $(elapsed) s: $*"
    local t0 rc note=""
    t0=$(date +%s)
    timeout -s INT -k 15 "$allowed" "$@"
    rc=$?
    local spent=$(( $(date +%s) - t0 ))
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      note="stopped at its ${allowed} s budget: results so far only"
    elif [ "$rc" != 0 ]; then
      note="exit status $rc (see the log)"
    fi
    echo "== $name: exit $rc after ${spent} s"
    record "$name" "$rc" "$spent" "$allowed" "$note"
    return 0
  }

  # Wheels the device image lacks (benchmarks/fetch_wheels.sh), installed beside the image's packages.
  if [ "$DRY" != 1 ]; then
    if compgen -G ".whl/*.whl" > /dev/null; then
      t0=$(date +%s)
      if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
      then
        export PYTHONPATH="/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
        record wheels 0 $(( $(date +%s) - t0 )) — "installed: $(cd .whl && ls *.whl | tr '\n' ' ')"
      else
        record wheels 1 $(( $(date +%s) - t0 )) — "pip install of .whl/ failed (see the log)"
      fi
    else
      record wheels — 0 — "no .whl/ carried: pytorch-metric-learning and faiss may be missing"
    fi
  fi
  export PYTHONPATH="${PYTHONPATH:-$ROOT}"

  # facts: stop early when JAX does not see the device (nothing else would mean anything).
  section facts "${BUDGETS[0]}" 5 "$PY" -m benchmarks._gpu_report facts "$WORK/facts.json"
  if [ "$DRY" != 1 ] && ! grep -q '"jax_backend": "gpu"' "$WORK/facts.json" 2>/dev/null; then
    echo "== JAX does not see a GPU: only the facts are reported"
    record stop — 0 — "JAX backend is not gpu: later sections not run"
  else
    # tests
    # True float32 products in the tests and the loss benchmark (JAX's default lets XLA use TF32 on the GPU's tensor
    # cores; the tests' float32 tolerances and torch's default, allow_tf32=False, assume full float32).
    printf '%q ' JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" -m pytest -q -p no:cacheprovider "${PYTEST_ARGS[@]}" \
      "${TESTS[@]}" > "$WORK/tests.cmd"
    export ACCELERATOR_COLLECTED="$WORK/tests.collected"
    section tests "${BUDGETS[1]}" 20 env JAX_DEFAULT_MATMUL_PRECISION=highest \
      "$PY" -m pytest -q -p no:cacheprovider -p benchmarks._pytest_count \
      "${PYTEST_ARGS[@]}" --durations=15 --junitxml="$WORK/tests.xml" "${TESTS[@]}"

    # losses: one process per G, so that a size stopped at its budget leaves the earlier sizes' results.
    losses_end=$(( $(date +%s) + BUDGETS[2] ))
    for i in "${!LOSS_SIZES[@]}"; do
      g=${LOSS_SIZES[$i]}
      weight_left=0
      for w in "${LOSS_WEIGHTS[@]:$i}"; do weight_left=$(( weight_left + w )); done
      share=$(( (losses_end - $(date +%s)) * LOSS_WEIGHTS[i] / weight_left ))
      classes=$(( g / 4 > MIN_CLASSES ? g / 4 : MIN_CLASSES ))   # every class of the batch (4 per class) has proxies
      section "losses G=$g" "$share" 15 env JAX_DEFAULT_MATMUL_PRECISION=highest \
        "$PY" -m benchmarks.losses --sizes "${g}x${LOSS_DIM}" --losses "$LOSSES" \
        --torch-device "$TORCH_DEVICE" --num-classes "$classes" "${LOSS_ARGS[@]}" --out "$WORK/losses_${g}.md"
    done

    # train steps, float32 vs bfloat16
    section train "${BUDGETS[3]}" 20 "$PY" benchmarks/train.py "${TRAIN_ARGS[@]}" --out "$WORK/train.md"

    # exact kNN next to torch.topk (torch first, so that its row stays if metric_jax overruns), at a smaller N and at
    # the full N; then, with whatever time is left, metric_jax with the library's default chunk sizes at the smaller N
    section "knn N=$KNN_SMALL" "${BUDGETS[4]}" 15 "$PY" benchmarks/knn_gpu.py --num "$KNN_SMALL" "${KNN_ARGS[@]}" \
      --methods torch,metric_jax --torch-device "$TORCH_DEVICE" --out "$WORK/knn_small.md"
    section "knn N=$KNN_BIG" "${BUDGETS[5]}" 20 "$PY" benchmarks/knn_gpu.py --num "$KNN_BIG" "${KNN_ARGS[@]}" \
      --methods torch,metric_jax --torch-device "$TORCH_DEVICE" --out "$WORK/knn.md"
    section "knn N=$KNN_SMALL, default chunks" $(( DEADLINE - $(date +%s) - REPORT_RESERVE )) 15 \
      "$PY" benchmarks/knn_gpu.py --num "$KNN_SMALL" "${KNN_DEFAULT_ARGS[@]}" --methods metric_jax \
      --out "$WORK/knn_defaults.md"
  fi

  echo "== report at $(elapsed) s"
  DRY_FLAG=()
  [ "$DRY" = 1 ] && DRY_FLAG=(--dry-run)
  "$PY" -m benchmarks._gpu_report write --work "$WORK" --out "$RESULT" --command "$COMMAND" "${DRY_FLAG[@]}"
  rc=$?
  if [ "$RESULT" != "$OUT/gpu.md" ]; then
    cp "$RESULT" "$OUT/gpu.md"
  fi
  [ -f "$WORK/tests.xml" ] && cp "$WORK/tests.xml" "$OUT/tests.xml"
  echo "== done in $(elapsed) s: $RESULT (copy in $OUT/gpu.md), log $LOG"
  return "$rc"
}

# Everything goes to the terminal and to $OUT/log (which comes back from the device even if the call is cut off).
main 2>&1 | tee -a "$LOG"
