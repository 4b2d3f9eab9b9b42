#!/usr/bin/env bash
# Runs issue 28's benchmarks (S1–S9) one after the other, then renders their results
# into the guide's chart and table (bench/chart.py).
#
#   bench/run_all.sh              # all of them (51 min on 2 cores, 2026-12-07)
#   bench/run_all.sh S3 S7        # only the scripts that measure S3 and S7
#   bench/run_all.sh --list       # which script measures what, and which are missing
#
# Each script measures ours against its anchors in the same run on this machine and
# records its figures in bench/results/S<n>.json (RECORD=1, bench/record.py). The binary
# is built once here (cargo, incremental) and copied aside, so a build started meanwhile
# does not change what is being timed; scripts that honour TS= use the copy. A script
# that is missing is skipped with a message; one that fails does not stop the others,
# but makes this script exit 1 at the end. Size knobs (ROWS=…) differ per script: set
# them only when running one.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# script | the benchmarks it measures
SCRIPTS=(
  "pg_bench.sh|S1"
  "incr_bench.sh|S2"
  "pg_large_bench.sh|S3"
  "tables_bench.sh|S4"
  "mysql_bench.sh|S5 S6"
  "sqlite_bench.sh|S7"
  "console_bench.py|S8"
  "repo_scale_bench.sh|S9"
)

if [ "${1:-}" = --list ]; then
  for entry in "${SCRIPTS[@]}"; do
    script="${entry%%|*}"; ids="${entry#*|}"
    if [ -e "$ROOT/bench/$script" ]; then state=present; else state=missing; fi
    printf '%-8s bench/%-22s %s\n' "$ids" "$script" "$state"
  done
  exit 0
fi
for want in "$@"; do
  [[ "$want" =~ ^S[1-9]$ ]] || { echo "unknown benchmark '$want': give S1 … S9 (bench/run_all.sh --list)" >&2; exit 2; }
done
selected() {
  [ $# -eq 0 ] && return 1
  local ids="$1"; shift
  [ $# -eq 0 ] && return 0
  for want in "$@"; do [[ " $ids " == *" $want "* ]] && return 0; done
  return 1
}

echo "== building the release binary" >&2
(cd "$ROOT" && cargo build --release -p server) || { echo "the release build failed (above): fix it, then run this again" >&2; exit 1; }
BIN_COPY="$(mktemp /tmp/tablesafe-bench-bin-XXXXXX)"
trap 'rm -f "$BIN_COPY"' EXIT
cp "$ROOT/target/release/tablesafe" "$BIN_COPY"
chmod 0755 "$BIN_COPY" # mktemp made it 0600: the scripts run it
export TS="$BIN_COPY" TS_BIN="$BIN_COPY" RECORD=1

started=$SECONDS
failed=()
summary=()
for entry in "${SCRIPTS[@]}"; do
  script="${entry%%|*}"; ids="${entry#*|}"
  selected "$ids" "$@" || continue
  path="$ROOT/bench/$script"
  if [ ! -e "$path" ]; then
    echo "== $ids: bench/$script does not exist yet; skipped" >&2
    summary+=("$(printf '%-6s bench/%-22s skipped (missing)' "$ids" "$script")")
    continue
  fi
  echo "== $ids: bench/$script ($(date -u +%H:%M) UTC, load $(cut -d' ' -f1 /proc/loadavg))" >&2
  t0=$SECONDS
  case "$script" in
    *.py) python3 "$path" ;;
    *) bash "$path" ;;
  esac
  rc=$?
  took=$((SECONDS - t0))
  if [ $rc -ne 0 ]; then
    failed+=("bench/$script")
    summary+=("$(printf '%-6s bench/%-22s FAILED (exit %d) after %d min %02d s' "$ids" "$script" "$rc" $((took / 60)) $((took % 60)))")
  else
    summary+=("$(printf '%-6s bench/%-22s %d min %02d s' "$ids" "$script" $((took / 60)) $((took % 60)))")
  fi
done

echo "== rendering the chart and the table" >&2
python3 "$ROOT/bench/chart.py" || failed+=("bench/chart.py")
echo
printf '%s\n' "${summary[@]}"
total=$((SECONDS - started))
echo "in all $((total / 60)) min $((total % 60)) s; results in bench/results, chart in docs/src/images/benchmarks.svg"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]} (their output is above)" >&2
  exit 1
fi
