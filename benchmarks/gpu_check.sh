#!/usr/bin/env bash
# One-shot GPU throughput check: ours vs timm (and Keras-on-JAX), B0 and B4, float32 and bfloat16,
# train and infer, in one process per configuration (benchmarks/throughput.py), tables printed and
# kept in a log file. Run from anywhere on a machine with an NVIDIA GPU:
#
#     bash benchmarks/gpu_check.sh            # creates .venv-gpu next to the repo's .venv on first use
#
# Assumptions: Linux x86_64, NVIDIA driver for CUDA 12 (>= 525), python3 >= 3.10 with venv, PyPI
# reachable (or a venv already holding the packages: set VENV=path and SKIP_INSTALL=1).
# What it installs: jax[cuda12] (CUDA/cuDNN from pip wheels), this repo with [train,keras], the
# default PyPI torch build (CUDA on Linux), timm and efficientnet-pytorch. It does not use the
# repo's .venv, whose torch is the CPU build.
# Peers: timm `tf_efficientnet_b*` (TF "same" padding, as ours) under torch.autocast(bfloat16) for
# bfloat16 and channels-last (throughput.py's --channels-last auto = on for CUDA); ours with
# dtype=bfloat16 (float32 parameters); Keras with mixed_bfloat16. JAX does not preallocate GPU
# memory here (XLA_PYTHON_CLIENT_PREALLOCATE=false), so torch and JAX share the GPU fairly and the
# device peaks are what each needs. Override batch sizes with B0_BATCH / B4_BATCH, implementations
# with IMPLS (default ours,timm,keras), rounds with STEPS / REPEATS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-gpu}"
PY="$VENV/bin/python"
B0_BATCH="${B0_BATCH:-128}"
B4_BATCH="${B4_BATCH:-32}"
IMPLS="${IMPLS:-ours,timm,keras}"
STEPS="${STEPS:-20}"
REPEATS="${REPEATS:-5}"
LOG="${LOG:-$ROOT/benchmarks/gpu_check_$(date -u +%Y%m%dT%H%M%SZ).log}"

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check.sh: nvidia-smi not found; this script is for a machine with an NVIDIA GPU" >&2
  exit 1
fi

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  [[ -x "$PY" ]] || python3 -m venv "$VENV"
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet --upgrade "jax[cuda12]"
  "$PY" -m pip install --quiet torch timm efficientnet-pytorch
  "$PY" -m pip install --quiet -e "$ROOT[train,keras]"
fi

export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3
"$PY" - <<'EOF'
import jax, torch
assert jax.default_backend() == "gpu", f"JAX sees no GPU: {jax.devices()} (check the jax[cuda12] install and driver)"
assert torch.cuda.is_available(), "torch sees no GPU (a CPU-only torch build?)"
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, torch.cuda.get_device_name())
EOF

{
  echo "# gpu_check.sh $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  for spec in "efficientnet_b0 $B0_BATCH" "efficientnet_b4 $B4_BATCH"; do
    read -r model batch <<<"$spec"
    for dtype in float32 bfloat16; do
      for mode in train infer; do
        echo
        "$PY" "$ROOT/benchmarks/throughput.py" --model "$model" --batch "$batch" --dtype "$dtype" --mode "$mode" \
          --impl "$IMPLS" --steps "$STEPS" --repeats "$REPEATS" --json
      done
    done
  done
} 2>&1 | tee "$LOG"
echo "log: $LOG"
