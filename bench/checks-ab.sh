#!/usr/bin/env bash
# bench/checks-ab.sh - the CPU of scheduled http checks, two builds at once.
#
# Runs binary A and binary B side by side, each with the same BENCH_PROBES
# http probes (default 10,000 at 15 s, jitter 13 s) against one nginx serving
# a 200-byte JSON file, and reads both processes' CPU over the same windows.
# On a shared 2-core machine the speed drifts by tens of percent within a
# minute: runs one after the other cannot tell a 10% change; two processes
# measured over the same seconds see the same drift, so the ratio B / A of
# each window is what to read (median over the windows).
#
# USAGE
#   bench/checks-ab.sh BINARY_A BINARY_B > report.md   (progress on stderr)
#
# KNOBS (environment, defaults in brackets)
#   BENCH_PROBES [10000]  BENCH_INTERVAL [15] (s)  BENCH_JITTER [13s]
#   BENCH_WARM [35] (s) before the first window  BENCH_WINDOW [30] (s)
#   BENCH_WINDOWS [5]
#
# METRICS READ: depwatch_checks_total of kind="http" (summed).
#
# RULES: every server binds 127.0.0.1 on a free port; every process started
# here is stopped by PID in the EXIT trap; the scratch dir is removed.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -ne 2 || ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  [[ $# -eq 2 ]] && exit 0 || exit 2
fi
export LC_ALL=C DEPWATCH_LOG=warn
declare -A BIN=([A]=$(realpath "$1") [B]=$(realpath "$2"))
NPROBES=${BENCH_PROBES:-10000}
INTERVAL=${BENCH_INTERVAL:-15}
JITTER=${BENCH_JITTER:-13s}
WARM=${BENCH_WARM:-35}
WINDOW=${BENCH_WINDOW:-30}
WINDOWS=${BENCH_WINDOWS:-5}
CLK_TCK=$(getconf CLK_TCK)
for b in nginx curl python3; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install -y nginx curl python3)" >&2; exit 1; }
done

scratch checks-ab

declare -A PORT PID
ab_start

checks() {
  curl -fsS --max-time 60 "http://127.0.0.1:${PORT[$1]}/metrics" |
    awk '/^depwatch_checks_total\{/ && index($0, "kind=\"http\"") { s += $NF } END { printf "%d\n", s }'
}

log "A: ${BIN[A]}"
log "B: ${BIN[B]}"
log "$NPROBES probes each at ${INTERVAL}s; warming up ${WARM}s"
sleep "$WARM"
echo "| window | A % of a core | B % of a core | A ms per check | B ms per check | B / A (CPU per check) |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
declare -A T0 C0 T1 C1 PCT MS
for ((w = 1; w <= WINDOWS; w++)); do
  for k in A B; do C0[$k]=$(checks "$k"); T0[$k]=$(cpu_ticks "${PID[$k]}"); done
  sleep "$WINDOW"
  for k in A B; do T1[$k]=$(cpu_ticks "${PID[$k]}"); C1[$k]=$(checks "$k"); done
  for k in A B; do
    t=$((T1[$k] - T0[$k])) n=$((C1[$k] - C0[$k]))
    ((n > 0)) || die "$k made no checks in window $w"
    PCT[$k]=$(awk -v t="$t" -v hz="$CLK_TCK" -v s="$WINDOW" 'BEGIN { printf "%.2f", 100 * t / hz / s }')
    MS[$k]=$(awk -v t="$t" -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.4f", 1000 * t / hz / n }')
  done
  r=$(ratio "${MS[B]}" "${MS[A]}")
  echo "$r" >>"$W/ratios"
  echo "${PCT[A]}" >>"$W/pa"
  echo "${PCT[B]}" >>"$W/pb"
  echo "| $w | ${PCT[A]} | ${PCT[B]} | ${MS[A]} | ${MS[B]} | $r |"
  log "window $w: A ${PCT[A]}% (${MS[A]} ms/check), B ${PCT[B]}% (${MS[B]} ms/check), B/A $r"
done
echo
echo "Median over $WINDOWS windows of ${WINDOW}s: A $(median <"$W/pa")% of a core, B $(median <"$W/pb")%, B / A **$(median <"$W/ratios")**."
