#!/bin/sh
# The large-batch study at CPU scale, here: every entry of the plan one after the other on this machine's
# CPU devices, then the summary (results.json, table.md, figures in experiments/large_batch/).
#   sh experiments/large_batch/run.sh [SWEEP_DIR]       # default runs/large_batch; rerunning skips finished runs
# Hardware: a 2-core CPU, about 4-5 minutes per run, 28 runs. On a cluster, the same plan runs as an
# array job, one entry per task (experiments/large_batch/README.md).
set -eu
dir="${1:-runs/large_batch}"
bin="${HEPGAN_BIN:-.venv/bin}"
mkdir -p "$dir"
"$bin/python" experiments/large_batch/study.py plan --scale cpu -o "$dir/plan.txt"
n=$(grep -vc '^#' "$dir/plan.txt")
i=0
while [ "$i" -lt "$n" ]; do
  if [ -f "$dir/$i/result.json" ] && grep -q '"status": "ok"' "$dir/$i/result.json"; then
    echo "[$i/$n] done before"
  else
    echo "[$i/$n] $(date -u +%H:%M:%S) $(sed -n "$((i + 3))p" "$dir/plan.txt")"
    "$bin/hepgan-sweep" run "$dir/plan.txt" "$i" --sweep-dir "$dir" > "$dir/run_$i.log" 2>&1 || echo "[$i/$n] failed: $dir/run_$i.log"
  fi
  i=$((i + 1))
done
"$bin/python" experiments/large_batch/study.py summarize "$dir" --out experiments/large_batch
