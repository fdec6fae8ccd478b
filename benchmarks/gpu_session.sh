#!/usr/bin/env bash
# Everything the first session with a GPU must run, in one command, with every output kept:
#   python -m pytest -m cuda; fastmnist doctor --device cuda (text and JSON);
#   fastmnist bench --device cuda; python benchmarks/bench_workload.py --device cuda --memory
#
#   benchmarks/gpu_session.sh [FOLDER]      (default: gpu-session/)
#
# Results go to FOLDER: session.log (all output), doctor.json, bench/ (workload and core JSON and
# PNG), workload.json and workload.png. Where $OUT is set (the lent machine's return folder),
# session.log and doctor.json are copied there and the whole folder packed as gpu-session.tgz.
# It runs every step even when one fails and exits 1 if any did.
#
# Data: the tests and benchmarks need the MNIST test digits and Fashion-MNIST. A machine without
# network reads them from .data/ in the checkout when it exists (FASTMNIST_DATA). To carry them:
#   mkdir -p .data/mnist .data/fashion-mnist && echo /.data/ >> .git/info/exclude
#   cp ../shared/data/mnist/t10k-* .data/mnist/
#   cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# and name .data in the run's carry list. PYTHON picks the interpreter (default: python3).
set -uo pipefail
cd "$(dirname "$0")/.."

folder="${1:-gpu-session}"
mkdir -p "$folder/bench"
log="$folder/session.log"
: >"$log"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .data ] && [ -z "${FASTMNIST_DATA:-}" ]; then
  export FASTMNIST_DATA="$PWD/.data"
fi

failed=0
step() {
  echo "=== $* ($(date +%H:%M:%S))" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== exit $rc" | tee -a "$log"
  [ "$rc" -eq 0 ] || failed=1
}

step nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step "$py" -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"
# other helpers' optional stacks may be missing here: their modules must not stop the cuda tests
step "$py" -m pytest -m cuda -p no:cacheprovider --continue-on-collection-errors -rs --durations=10
step "$py" -m fastmnist.cli doctor --device cuda
"$py" -m fastmnist.cli doctor --device cuda --json >"$folder/doctor.json" 2>>"$log" || failed=1
step "$py" -m fastmnist.cli bench --device cuda --out "$folder/bench"
step "$py" benchmarks/bench_workload.py --device cuda --memory --json "$folder/workload.json" \
  --chart "$folder/workload.png"

if [ -n "${OUT:-}" ]; then
  cp "$log" "$folder/doctor.json" "$OUT/"
  tar -czf "$OUT/gpu-session.tgz" -C "$folder" .
fi
echo "results in $folder/$([ "$failed" -eq 0 ] && echo '; every step passed' || echo '; SOME STEPS FAILED')"
exit "$failed"
