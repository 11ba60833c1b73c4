#!/usr/bin/env bash
# Accelerator acceptance in one call of under 8 minutes (issue 12, item 6), for any session holding a GPU.
#
# What it runs, each phase time-boxed so the whole script ends inside its budget and keeps what finished
# (rows are written as they are made):
#   1. pip install --no-deps -e .  (the image's JAX, flax, optax, orbax are used; wheels in .whl/ first)
#   2. dlbench profile scan, every model, lengths 2^10..2^16 (65,536), modes fwd, fwdbwd and train,
#      backend auto, in-process cells  -> gpu-scan/
#   3. the backend `auto` should pick, per model: every backend at 4,096 and 65,536, fwdbwd -> gpu-auto/
#   4. dlbench run quick at one seed                                           -> gpu-quick/
# Outputs: $OUT/gpu-{scan,auto,quick}/rows.csv (+ throughput.png) and $OUT/gpu-acceptance.log; with
# OUT unset, ./results. Commit them as results/gpu-*; the README's accelerator column of the `auto`
# table comes from gpu-auto/rows.csv (fastest backend per model at 65,536, see the summary printed last).
#
# On the device tool (one call, e.g. timeout_s 540, carry [".whl"] when the image lacks a package):
#     bash scripts/gpu-acceptance.sh
# The `quick` suite reads bundled datasets from aeon, which the GPU image lacks: before the call, here,
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl aeon==1.6.0 Deprecated
# and carry ".whl"; without aeon phase 4 is skipped with a message.
#
# Dry run on a CPU (tiny sizes, no install, seconds per phase): DLBENCH_ACCEPTANCE_TINY=1 OUT=/tmp/x bash scripts/gpu-acceptance.sh
# Phase budgets (seconds) can be changed with SCAN_S, AUTO_S, QUICK_S.
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results}"
mkdir -p "$OUT"
LOG="$OUT/gpu-acceptance.log"
WORK="${TMPDIR:-/tmp}/dlbench-gpu-acceptance.$$"
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 DLBENCH_JAX_CACHE="$WORK/jax-cache"
TINY="${DLBENCH_ACCEPTANCE_TINY:-}"
PY="${PYTHON:-python3}"
status=0

say() { echo "[gpu-acceptance $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
# phase NAME SECONDS CMD...: run CMD under a time box; a phase that fails or runs out is reported, not fatal.
phase() {
  local name=$1 budget=$2; shift 2
  say "$name: start (budget ${budget}s): $*"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$budget" "$@" >>"$LOG" 2>&1
  local rc=$?
  say "$name: rc=$rc after $((SECONDS - t0))s"
  [ "$rc" -eq 0 ] || status=1
}

if [ -n "$TINY" ]; then
  say "dry run (DLBENCH_ACCEPTANCE_TINY): tiny sizes, no install"
  LENGTHS=64,128; AUTO_LENGTHS=64; WIDTH=(--hidden 8 --state 4 --repeats 1 --min-time 0 --rounds 1 --max-rounds 1 --no-bandwidth)
  QUICK_SETS=(--set train.steps=2 --set train.eval_every=1 --set model.hidden_dim=4 --set model.state_dim=2
              --set model.num_blocks=1 --set train.batch_size=4)
  SCAN_S=${SCAN_S:-240}; AUTO_S=${AUTO_S:-120}; QUICK_S=${QUICK_S:-240}
  MODELS=${MODELS:-attention,lru}
  DL=("$PY" -c "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))")
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  # Three rounds, no more: the whole script must fit one device call of under 8 minutes.
  LENGTHS=1024,2048,4096,8192,16384,32768,65536; AUTO_LENGTHS=4096,65536; WIDTH=(--repeats 5 --min-time 0.3 --rounds 3 --max-rounds 3)
  QUICK_SETS=()
  SCAN_S=${SCAN_S:-210}; AUTO_S=${AUTO_S:-70}; QUICK_S=${QUICK_S:-150}
  MODELS=${MODELS:-all}
  say "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl >>"$LOG" 2>&1 \
      && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . >>"$LOG" 2>&1; then
    say "pip install -e . failed (see log); running from the source tree"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  DL=("$PY" -c "import sys; from dlbench.cli import main; sys.exit(main(sys.argv[1:]))")
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$LOG"
fi

SCAN=(profile scan --models "$MODELS" --backends auto --lengths "$LENGTHS" --batch 1 --no-isolate "${WIDTH[@]}")
# fwd and fwdbwd in one sweep; the full training step (forward, loss, backward, Adam) appended with --resume.
phase scan "$SCAN_S" "${DL[@]}" "${SCAN[@]}" --mode both --out "$WORK/gpu-scan"
if "$PY" -c "from dlbench.profile import MODES; assert 'train' in MODES" >/dev/null 2>&1; then
  phase scan-train "$((SCAN_S / 2))" "${DL[@]}" "${SCAN[@]}" --mode train --out "$WORK/gpu-scan-train"
else
  say "scan-train: skipped, this dlbench has no 'profile scan --mode train'"; status=1
fi
phase auto "$AUTO_S" "${DL[@]}" profile scan --models "$MODELS" --backends all --lengths "$AUTO_LENGTHS" --mode fwdbwd \
  --no-isolate "${WIDTH[@]}" --out "$WORK/gpu-auto"
if "$PY" -c "import aeon" >/dev/null 2>&1; then
  QUICK_MODELS=()
  if [ "$MODELS" != all ]; then for m in ${MODELS//,/ }; do QUICK_MODELS+=(--model "$m"); done; fi
  phase quick "$QUICK_S" "${DL[@]}" run quick --seeds 0 "${QUICK_MODELS[@]}" "${QUICK_SETS[@]}" --out "$WORK/gpu-quick"
else
  say "quick: skipped, aeon is not importable (carry its wheels in .whl/, see the header)"; status=1
fi

# Bring back only the rows and plots ($OUT: at most 8 files, 2 folders down).
for d in gpu-scan gpu-scan-train gpu-auto gpu-quick; do
  [ -f "$WORK/$d/rows.csv" ] || continue
  mkdir -p "$OUT/$d"
  cp "$WORK/$d/rows.csv" "$OUT/$d/"
  [ "$d" = gpu-scan ] && [ -f "$WORK/$d/throughput.png" ] && cp "$WORK/$d/throughput.png" "$OUT/$d/"
done
"$PY" - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
for d in ("gpu-scan", "gpu-scan-train", "gpu-auto", "gpu-quick"):
    path = out / d / "rows.csv"
    if not path.is_file():
        print(f"{d}: no rows")
        continue
    rows = pd.read_csv(path, keep_default_na=False, na_values=[""])
    bad = rows[rows.status != "ok"]
    print(f"{d}: {len(rows)} rows, {len(bad)} not ok" + (f" ({', '.join(sorted(set(bad.status)))})" if len(bad) else ""))
    if d == "gpu-auto" and "wall_s" in set(rows.metric):
        wall = rows[(rows.metric == "wall_s") & (rows.status == "ok")]
        longest = wall[wall.seq_len == wall.seq_len.max()]
        fastest = longest.loc[longest.groupby("model").value.idxmin(), ["model", "backend", "seq_len", "value"]]
        print("fastest backend per model (fwdbwd wall_s at the longest length):")
        print(fastest.to_string(index=False))
    if d == "gpu-quick":
        final = rows[rows.metric.isin(["test_accuracy", "test_rmse"])]
        print(final[["task", "model", "metric", "value"]].to_string(index=False))
EOF
rm -rf "$WORK"
say "done, status $status"
exit "$status"
