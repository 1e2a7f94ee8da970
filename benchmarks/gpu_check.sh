#!/usr/bin/env bash
# GPU check of reot_mm, one script (< 8 minutes on one GPU):
#   1. the tests marked `cuda` (tests/cuda: solver fp32/fp64 on the device
#      equals the CPU, the honest convergence flag, the RE-OT loss from the
#      registry, the GML class queue, a digits demo training step, a bf16
#      autocast step);
#   2. benchmarks/bench_gpu.py: Sinkhorn, loss and training-step timings,
#      device and CPU side by side.
# Writes gpu_check_summary.txt (and the full logs) to $OUT if set, else to
# ./gpu_check_out. Exit status: that of pytest.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to pick the interpreter
#
# Interpreter: $PYTHON, else .venv/bin/python when it imports torch, else
# python3. A bare GPU image (torch only) runs the solver tests and timings and
# skips, saying why, what needs mmengine / mmpretrain; wheels of those (and of
# their missing dependencies) placed in ./.whl are installed to a temporary
# site first.
set -u
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-./gpu_check_out}
mkdir -p "$OUT_DIR"
SUMMARY=$OUT_DIR/gpu_check_summary.txt
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then
        PYTHON=.venv/bin/python
    else
        PYTHON=python3
    fi
fi
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/reot_site .whl/*.whl \
        && export PYTHONPATH=/tmp/reot_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # reot_mm without installing
export PYTHONUNBUFFERED=1

{
    echo "== reot_mm GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi -L 2>&1 || echo 'nvidia-smi not found'
    "$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")'
    "$PYTHON" -c 'import mmengine, mmpretrain; print("mmengine", mmengine.__version__, "mmpretrain", mmpretrain.__version__)' 2>/dev/null \
        || echo 'mmengine / mmpretrain missing: the tests and timings that need them are skipped'
} > "$SUMMARY" 2>&1

echo "== pytest -m cuda tests/cuda" >> "$SUMMARY"
# --confcutdir: tests/conftest.py imports mmengine, absent on a bare image
timeout 300 "$PYTHON" -m pytest -q -rs -m cuda -p no:cacheprovider \
    --confcutdir=tests/cuda tests/cuda > "$OUT_DIR/pytest_cuda.log" 2>&1
status=$?
tail -n 30 "$OUT_DIR/pytest_cuda.log" >> "$SUMMARY"
echo "pytest exit status $status" >> "$SUMMARY"

echo "== timings: benchmarks/bench_gpu.py" >> "$SUMMARY"
timeout 240 "$PYTHON" benchmarks/bench_gpu.py --repeats 5 \
    > "$OUT_DIR/bench_gpu.log" 2>&1
echo "bench exit status $?" >> "$OUT_DIR/bench_gpu.log"
grep -v -i 'warning\|warnings.warn\|^ *t, res' "$OUT_DIR/bench_gpu.log" >> "$SUMMARY"
cat "$SUMMARY"
exit $status
