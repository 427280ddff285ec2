#!/usr/bin/env bash
# Run every scripts/bench_*.py and print one table of the ratios they report (lines that mention a ratio or a goal).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
tmp=$(mktemp -d)
status=0
for script in scripts/bench_*.py; do
  name=$(basename "$script" .py)
  echo ">>> $script" >&2
  if ! "$PY" "$script" >"$tmp/$name.log" 2>&1; then
    echo "!!! $script failed (log: $tmp/$name.log)" >&2
    status=1
  fi
done
echo
printf '%-18s %s\n' "benchmark" "ratio (as printed)"
printf '%-18s %s\n' "---------" "------------------"
for log in "$tmp"/*.log; do
  name=$(basename "$log" .log)
  grep -hiE "ratio|goal" "$log" | while IFS= read -r line; do printf '%-18s %s\n' "$name" "$line"; done
done
echo "(full logs in $tmp)"
exit $status
