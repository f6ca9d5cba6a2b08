#!/usr/bin/env bash
# bench/scrape-ab.sh - the CPU of a /metrics scrape at scale, two builds at once.
#
# Runs binary A and binary B side by side, each with the same BENCH_PROBES
# http probes (default 10,000 at 15 s, jitter 13 s) against one nginx, and
# scrapes them in turns as Prometheus does (OpenMetrics first, gzip), each
# scrape of a daemon BENCH_GAP seconds after its last, so that each one
# encodes anew (results changed in between). The CPU of every thread but
# the checks' (`depwatch-checks`) over a round's scrapes, divided by them,
# is the CPU per scrape. As in bench/checks-ab.sh, the speed of this
# machine drifts by tens of percent within a minute: read the ratio B / A
# of each round (median over the rounds), not one run against another.
#
# USAGE
#   bench/scrape-ab.sh BINARY_A BINARY_B > report.md   (progress on stderr)
#
# KNOBS (environment, defaults in brackets)
#   BENCH_PROBES [10000]  BENCH_INTERVAL [15] (s)  BENCH_JITTER [13s]
#   BENCH_WARM [35] (s) before the first round  BENCH_ROUNDS [5]
#   BENCH_SCRAPES [8] per daemon and round  BENCH_GAP [1.2] (s)
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
ROUNDS=${BENCH_ROUNDS:-5}
SCRAPES=${BENCH_SCRAPES:-8}
GAP=${BENCH_GAP:-1.2}
CLK_TCK=$(getconf CLK_TCK)
ACCEPT='application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2'
for b in nginx curl python3; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install -y nginx curl python3)" >&2; exit 1; }
done

scratch scrape-ab

declare -A PORT PID
ab_start

scrape() {
  curl -sS --max-time 60 -H "Accept: $ACCEPT" -H 'Accept-Encoding: gzip' -o /dev/null \
    -w '%{http_code}\n' "http://127.0.0.1:${PORT[$1]}/metrics"
}

log "A: ${BIN[A]}"
log "B: ${BIN[B]}"
log "$NPROBES probes each at ${INTERVAL}s; warming up ${WARM}s"
sleep "$WARM"
for k in A B; do [[ $(scrape "$k") == 200 ]] || die "$k did not answer /metrics"; done
half=$(awk -v g="$GAP" 'BEGIN { print g / 2 }')
echo "| round | A ms per scrape | B ms per scrape | B / A |"
echo "| ---: | ---: | ---: | ---: |"
declare -A X0 X1 MS
for ((r = 1; r <= ROUNDS; r++)); do
  for k in A B; do X0[$k]=$(cpu_ticks_except "${PID[$k]}" depwatch-checks); done
  for ((s = 0; s < SCRAPES; s++)); do
    for k in A B; do
      sleep "$half"
      [[ $(scrape "$k") == 200 ]] || die "$k: scrape $s of round $r failed"
    done
  done
  for k in A B; do
    X1[$k]=$(cpu_ticks_except "${PID[$k]}" depwatch-checks)
    MS[$k]=$(awk -v t=$((X1[$k] - X0[$k])) -v hz="$CLK_TCK" -v n="$SCRAPES" 'BEGIN { printf "%.1f", 1000 * t / hz / n }')
    echo "${MS[$k]}" >>"$W/ms$k"
  done
  q=$(ratio "${MS[B]}" "${MS[A]}")
  echo "$q" >>"$W/ratios"
  echo "| $r | ${MS[A]} | ${MS[B]} | $q |"
  log "round $r: A ${MS[A]} ms, B ${MS[B]} ms per scrape, B/A $q"
done
echo
echo "Median over $ROUNDS rounds of $SCRAPES scrapes each: A $(median <"$W/msA") ms per scrape, B $(median <"$W/msB") ms, B / A **$(median <"$W/ratios")**."
