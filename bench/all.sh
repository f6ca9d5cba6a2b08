#!/usr/bin/env bash
# bench/all.sh - every side-by-side benchmark in one go, one dated report.
#
# Runs one after the other, on the same machine, with the same depwatch binary:
#   core   bench/core.sh   /metrics and /api/health of the built-in default run
#                          vs nginx serving the same bodies and node_exporter;
#                          idle RSS
#   http   bench/http.sh   /probe vs blackbox_exporter; then BENCH_PROBES
#                          (10,000) http probes at 15 s: missed rounds, CPU,
#                          /metrics size (gzip), series per target, CPU per
#                          scrape, /api/health vs nginx, peak RSS
#   redis  bench/redis.sh  Redis queue rounds vs redis_exporter
#   logs   bench/logs.sh   log lines/s, one-shot and tail, vs mtail
# and writes bench/results/all-YYYY-MM-DD.md: a summary table (the targets of
# the "performance at scale" issue: work, measured, ratio, target, met) and
# then each part's own report. bench/readme-table.sh turns that summary into
# the README's benchmark table.
#
# USAGE
#   bench/all.sh [--quick] [--parts core,http,redis,logs] [--out FILE] [DEPWATCH_BINARY]
#   Without a binary: DEPWATCH_BIN, else `cargo build --release` (CARGO_TARGET_DIR honoured).
#   A full run takes about 15 minutes; run it on a quiet machine.
#   --quick   small and short settings for a smoke test (a few minutes); the
#             report goes to ${TMPDIR:-/tmp}/depwatch-all-quick-DATE.md unless
#             --out is given (quick numbers are not results).
#   --parts   a comma-separated subset, in any order (run in the order above).
#   --out     the report file.
#
# KNOBS (environment; defaults, then --quick's, in brackets)
#   core:  BENCH_DURATION [5|2] (s per wrk run)  BENCH_CORE_RUNS [3|1]  BENCH_IDLE_S [10|3]
#   http:  BENCH_WRK_DURATION [10|2]  BENCH_WRK_RUNS [3|1]  BENCH_PROBES [10000|200]
#          BENCH_INTERVAL [15s|5s]  BENCH_TIMEOUT [5s|2s]  BENCH_HTTP_ROUNDS [4|1]
#          BENCH_SCRAPES [10|3] (1.2 s apart)  BENCH_JITTER [9/10 of the interval: the
#          first checks spread over it too, as the README advises at this size]  BENCH_HEALTH_SAMPLES [5|2]  BENCH_HEALTH_WARM [10|3]
#   redis: BENCH_REDIS_ROUNDS [200|20]  BENCH_QUEUES [50|5]  BENCH_JOBS [10000|1000]
#   logs:  BENCH_LINES [1000000|50000]  BENCH_LOG_RUNS [5|1]
#   BENCH_WAIT_MAX [600] (s) to wait for running cargo/rustc before starting.
#
# RESULTS: every part writes KEY=VALUE lines to the file named by
# BENCH_RESULTS (bench/lib.sh `result`; also "RESULT KEY=VALUE" on stderr);
# this script gives each part that file, builds the summary from it, and
# appends the raw lines to the report.
#
# depwatch as the candidate of ../shared/bench/peers.sh (the log rows too),
# from the repository root, with the binary at $BIN:
#   BENCH_CANDIDATE_NAME=depwatch \
#   BENCH_CANDIDATE_LOG_METRIC=depwatch_log_sync_operations_total \
#   BENCH_CANDIDATE_ONESHOT="$BIN replay-log --config bench/peers-logs.yml \"\$BENCH_LOG\"" \
#   ../shared/bench/peers.sh "$BIN --config bench/peers-logs.yml" 9898 /metrics > peers.md
#
# RULES: each part binds 127.0.0.1 only, bounds its loops and stops what it
# started by PID; this script starts no server itself.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export LC_ALL=C

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
LOG_TAG=all

QUICK=0
PARTS=core,http,redis,logs
OUT=
BIN=${DEPWATCH_BIN:-}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --quick) QUICK=1 ;;
    --parts) PARTS=${2:?--parts needs a list}; shift ;;
    --parts=*) PARTS=${1#--parts=} ;;
    --out) OUT=${2:?--out needs a file}; shift ;;
    --out=*) OUT=${1#--out=} ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) BIN=$1 ;;
  esac
  shift
done
declare -A WANT=()
IFS=, read -r -a wanted <<<"$PARTS"
for p in "${wanted[@]}"; do
  case $p in core | http | redis | logs) WANT[$p]=1 ;; *) die "unknown part '$p' (core, http, redis, logs)" ;; esac
done

q() { if ((QUICK)); then echo "$2"; else echo "$1"; fi; } # q FULL QUICK
CORE_DUR=${BENCH_DURATION:-$(q 5 2)}
CORE_RUNS=${BENCH_CORE_RUNS:-$(q 3 1)}
IDLE_S=${BENCH_IDLE_S:-$(q 10 3)}
WRK_DUR=${BENCH_WRK_DURATION:-$(q 10 2)}
WRK_RUNS=${BENCH_WRK_RUNS:-$(q 3 1)}
PROBES=${BENCH_PROBES:-$(q 10000 200)}
INTERVAL=${BENCH_INTERVAL:-$(q 15s 5s)}
PTIMEOUT=${BENCH_TIMEOUT:-$(q 5s 2s)}
HTTP_ROUNDS=${BENCH_HTTP_ROUNDS:-$(q 4 1)}
SCRAPES=${BENCH_SCRAPES:-$(q 10 3)}
H_SAMPLES=${BENCH_HEALTH_SAMPLES:-$(q 5 2)}
H_WARM=${BENCH_HEALTH_WARM:-$(q 10 3)}
REDIS_ROUNDS=${BENCH_REDIS_ROUNDS:-$(q 200 20)}
QUEUES=${BENCH_QUEUES:-$(q 50 5)}
JOBS=${BENCH_JOBS:-$(q 10000 1000)}
LINES=${BENCH_LINES:-$(q 1000000 50000)}
LOG_RUNS=${BENCH_LOG_RUNS:-$(q 5 1)}

DAY=$(date +%F)
if [[ -z $OUT ]]; then
  if ((QUICK)); then OUT=${TMPDIR:-/tmp}/depwatch-all-quick-$DAY.md; else OUT=bench/results/all-$DAY.md; fi
fi
mkdir -p "$(dirname "$OUT")"

if [[ -z $BIN ]]; then
  log "building depwatch (release)"
  cargo build --release --quiet || die "cargo build --release failed"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/depwatch
fi
[[ -x $BIN ]] || die "no depwatch binary at $BIN"
BIN=$(realpath "$BIN")

busy() { pgrep -x cargo >/dev/null 2>&1 || pgrep -x rustc >/dev/null 2>&1; }
WAITED=0
while busy; do
  ((WAITED < ${BENCH_WAIT_MAX:-600})) || break
  log "cargo/rustc is running: waiting 20s (${WAITED}s so far)"
  sleep 20
  WAITED=$((WAITED + 20))
done

scratch depwatch-all
RESULTS=$W/results
: >"$RESULTS"
NOTES=()
declare -A STATUS=()
START=$(date -u +%FT%TZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# "PID NAME (N% of a core)" of every other process busy over 2 s: a
# benchmark or profiler left running competes with every number here.
busy_others() {
  local hz
  hz=$(getconf CLK_TCK)
  ticks() {
    local f pid
    for f in /proc/[0-9]*/stat; do
      pid=${f#/proc/}
      pid=${pid%/stat}
      [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
      # The fields after the command name, which may hold spaces: utime
      # and stime are the 12th and 13th.
      sed 's/.*) //' "$f" 2>/dev/null | awk -v p="$pid" '{ print p, $12 + $13 }'
    done | sort
  }
  local before after s0 s1
  before=$(ticks)
  s0=$EPOCHREALTIME
  sleep 2
  after=$(ticks)
  s1=$EPOCHREALTIME
  join <(echo "$before") <(echo "$after") | while read -r pid t0 t1; do
    pct=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v a="$s0" -v b="$s1" 'BEGIN { printf "%.0f", d * 100 / hz / (b - a) }')
    ((pct >= 2)) || continue
    printf '%s %s (%s%% of a core)\n' "$pid" "$(cat "/proc/$pid/comm" 2>/dev/null)" "$pct"
  done
}
OTHERS=$(busy_others | paste -sd ';' -)
if [[ -n $OTHERS ]]; then
  log "other processes are busy: $OTHERS"
  NOTES+=("other processes were busy when the run started (their CPU competes with every number): $OTHERS")
fi

# run PART COMMAND...: the part's report to $W/PART.md, its stderr to the
# terminal and $W/PART.log; a failing part is recorded, the others still run.
run() {
  local part=$1; shift
  [[ -n ${WANT[$part]:-} ]] || return 0
  if busy; then NOTES+=("cargo/rustc was running when $part started: its numbers are contaminated"); fi
  log "$part: $*"
  local t0=$SECONDS rc=0
  { env BENCH_RESULTS="$RESULTS" "$@" 2>&1 >"$W/$part.md"; } | tee "$W/$part.log" >&2 || rc=$?
  if ((rc == 0)); then STATUS[$part]="ok, $((SECONDS - t0)) s"; else
    STATUS[$part]="FAILED (exit $rc) after $((SECONDS - t0)) s"
    NOTES+=("$part failed (exit $rc); last lines of its log: $(tail -n 3 "$W/$part.log" | tr '\n' ' ')")
  fi
  log "$part: ${STATUS[$part]}"
}
run core env DEPWATCH_BIN="$BIN" BENCH_DURATION="$CORE_DUR" BENCH_RUNS="$CORE_RUNS" BENCH_IDLE_S="$IDLE_S" \
  bench/core.sh
run http env BENCH_WRK_DURATION="$WRK_DUR" BENCH_WRK_RUNS="$WRK_RUNS" BENCH_PROBES="$PROBES" \
  BENCH_INTERVAL="$INTERVAL" BENCH_TIMEOUT="$PTIMEOUT" BENCH_ROUNDS="$HTTP_ROUNDS" BENCH_SCRAPES="$SCRAPES" \
  BENCH_HEALTH_SAMPLES="$H_SAMPLES" BENCH_HEALTH_WARM="$H_WARM" BENCH_WAIT_MAX=0 \
  BENCH_JITTER="${BENCH_JITTER:-$((${INTERVAL%s} * 9 / 10))s}" \
  bench/http.sh "$BIN"
run redis env DEPWATCH_BIN="$BIN" BENCH_ROUNDS="$REDIS_ROUNDS" BENCH_QUEUES="$QUEUES" BENCH_JOBS="$JOBS" \
  bench/redis.sh
run logs env DEPWATCH="$BIN" BENCH_LINES="$LINES" BENCH_RUNS="$LOG_RUNS" \
  bench/logs.sh

# ------------------------------------------------------------------ summary
declare -A R=()
while IFS='=' read -r k v; do [[ -n $k ]] && R[$k]=$v; done <"$RESULTS"
num() { [[ ${R[$1]:-} =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; }
have() { local k; for k; do num "$k" || return 1; done; }
# calc FORMAT EXPR: awk arithmetic on values checked by `have`.
calc() { awk "BEGIN { printf \"$1\", ($2) }"; }
v() { echo "${R[$1]}"; }
yes_no() { if [[ $(calc '%d' "$1") == 1 ]]; then echo yes; else echo no; fi; }
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); }
absent() { [[ -z ${WANT[$3]:-} ]] || row "$1" "not measured" "—" "$2" "no"; } # WORK TARGET PART

w="\`/metrics\`, default run, req/s vs nginx static same body"
if have core.metrics_rps core.nginx_metrics_rps core.metrics_ratio; then
  r=$(calc '%.2f' "$(v core.metrics_ratio)")
  row "$w" "$(calc '%.0f' "$(v core.metrics_rps)") vs $(calc '%.0f' "$(v core.nginx_metrics_rps)") req/s ($(v core.metrics_bytes) bytes)" "${r}×" "≥ 0.5×" "$(yes_no "$r >= 0.5")"
else absent "$w" "≥ 0.5×" core; fi

w="\`/metrics\` at $PROBES http targets: CPU per scrape (Prometheus' headers)"
if have http.scrape_cpu_ms_serving http.scrape_cpu_ms; then
  # Judged on the serving threads' own CPU (measured, not estimated).
  row "$w" "$(v http.scrape_cpu_ms_serving) ms by the serving threads ($(v http.scrape_cpu_ms) ms net of probing, estimated; $(v http.scrape_wall_ms) ms wall)" "—" "≤ 30 ms" "$(yes_no "$(v http.scrape_cpu_ms_serving) <= 30")"
elif have http.scrape_cpu_ms http.scrape_cpu_ms_raw; then
  row "$w" "$(v http.scrape_cpu_ms) ms net of probing ($(v http.scrape_cpu_ms_raw) ms raw, $(v http.scrape_wall_ms) ms wall)" "—" "≤ 30 ms" "$(yes_no "$(v http.scrape_cpu_ms) <= 30")"
else absent "$w" "≤ 30 ms" http; fi

w="\`/metrics\` at $PROBES http targets: body"
if have http.metrics_bytes http.metrics_prom_bytes; then
  mb() { calc '%.2f' "$1 / 1000000"; }
  if [[ ${R[http.metrics_prom_encoding]:-} == gzip ]]; then
    row "$w" "$(mb "$(v http.metrics_bytes)") MB identity, $(mb "$(v http.metrics_prom_bytes)") MB gzip as Prometheus asks" \
      "$(calc '%.3f' "$(v http.metrics_prom_bytes) / $(v http.metrics_bytes)")×" "gzip ≤ 3 MB (3,000,000 bytes)" "$(yes_no "$(v http.metrics_prom_bytes) <= 3000000")"
  else
    row "$w" "$(mb "$(v http.metrics_bytes)") MB, no gzip (Content-Encoding: ${R[http.metrics_prom_encoding]:-?})" "—" "gzip ≤ 3 MB (3,000,000 bytes)" no
  fi
else absent "$w" "gzip ≤ 3 MB" http; fi

w="series per http target"
if have http.series_per_target; then
  row "$w" "$(v http.series_per_target)" "—" "≤ 24" "$(yes_no "$(v http.series_per_target) <= 24")"
else absent "$w" "≤ 24" http; fi

w="\`/api/health\` at $PROBES components vs nginx serving the same body"
if have http.health_cold_ms http.health_warm_ms http.nginx_health_cold_ms http.nginx_health_warm_ms; then
  rc=$(calc '%.1f' "$(v http.health_cold_ms) / $(v http.nginx_health_cold_ms)")
  rw=$(calc '%.1f' "$(v http.health_warm_ms) / $(v http.nginx_health_warm_ms)")
  row "$w" "cold $(v http.health_cold_ms) ms (max $(v http.health_cold_max_ms)), warm $(v http.health_warm_ms) ms; nginx $(v http.nginx_health_cold_ms) / $(v http.nginx_health_warm_ms) ms; $(v http.health_bytes) bytes" \
    "cold ${rc}×, warm ${rw}×" "≤ 5×, cold or warm" "$(yes_no "$rc <= 5 && $rw <= 5")"
else absent "$w" "≤ 5×, cold or warm" http; fi

w="\`/api/health\`, default run, req/s vs nginx same body"
if have core.health_rps core.nginx_health_rps core.health_p99_ms core.nginx_health_p99_ms core.health_ratio core.health_p99_ratio; then
  # Ratios are medians of the pairs' ratios (core.sh runs the two in turns).
  r=$(calc '%.2f' "$(v core.health_ratio)")
  pr=$(calc '%.2f' "$(v core.health_p99_ratio)")
  row "$w" "$(calc '%.0f' "$(v core.health_rps)") vs $(calc '%.0f' "$(v core.nginx_health_rps)") req/s; p99 $(v core.health_p99_ms) vs $(v core.nginx_health_p99_ms) ms" \
    "${r}×, p99 ${pr}×" "≥ 0.85×, p99 ≤ nginx's" "$(yes_no "$r >= 0.85 && $pr <= 1")"
else absent "$w" "≥ 0.85×, p99 ≤ nginx's" core; fi

w="idle RSS, default run"
if have core.idle_rss_kb core.node_idle_rss_kb; then
  row "$w" "$(calc '%.1f' "$(v core.idle_rss_kb) / 1024") MiB ($(v core.idle_rss_kb) KiB; node_exporter $(calc '%.1f' "$(v core.node_idle_rss_kb) / 1024") MiB)" \
    "$(calc '%.2f' "$(v core.idle_rss_kb) / $(v core.node_idle_rss_kb)")× node_exporter" "≤ 8 MiB (8192 KiB)" "$(yes_no "$(v core.idle_rss_kb) <= 8192")"
else absent "$w" "≤ 8 MiB" core; fi

w="$PROBES http probes at $INTERVAL"
if have http.missed_probes http.cpu_pct http.hwm_seq_kb http.hwm_end_kb; then
  row "$w" "$(v http.missed_probes) missed ($(v http.checks_done) of $(v http.checks_expected) checks), $(v http.cpu_pct)% of a core, peak $(calc '%.1f' "$(v http.hwm_seq_kb) / 1024") MiB ($(calc '%.1f' "$(v http.hwm_end_kb) / 1024") MiB after wrk on /api/health)" \
    "$(if have http.cpu_per_check_vs_lean http.lean_ms_per_request http.cpu_user_ms_per_check http.cpu_sys_ms_per_check; then echo "CPU per check $(v http.cpu_per_check_vs_lean)× wrk's per fresh-connection request ($(v http.cpu_ms_per_check) vs $(v http.lean_ms_per_request) ms; depwatch's $(v http.cpu_user_ms_per_check) user, $(v http.cpu_sys_ms_per_check) system)"; else echo "—"; fi)" \
    "0 missed, ≤ 5% core, ≤ 100 MiB peak" "$(yes_no "$(v http.missed_probes) == 0 && $(v http.cpu_pct) <= 5 && $(v http.hwm_seq_kb) <= 102400")"
else absent "$w" "0 missed, ≤ 5% core, ≤ 100 MiB peak" http; fi

w="log lines/s, one-shot and tail, vs mtail"
if have logs.oneshot_lps_depwatch logs.oneshot_lps_mtail logs.tail_lps_depwatch logs.tail_lps_mtail; then
  ro=$(calc '%.1f' "$(v logs.oneshot_lps_depwatch) / $(v logs.oneshot_lps_mtail)")
  rt=$(calc '%.1f' "$(v logs.tail_lps_depwatch) / $(v logs.tail_lps_mtail)")
  row "$w" "$(calc '%.2f' "$(v logs.oneshot_lps_depwatch) / 1e6")M / $(calc '%.2f' "$(v logs.tail_lps_depwatch) / 1e6")M lines/s vs mtail $(calc '%.2f' "$(v logs.oneshot_lps_mtail) / 1e6")M / $(calc '%.2f' "$(v logs.tail_lps_mtail) / 1e6")M ($(v logs.lines) lines)" \
    "${ro}× / ${rt}×" "no worse: ≥ 9.9× / ≥ 6.5×" "$(yes_no "$ro >= 9.9 && $rt >= 6.5")"
else absent "$w" "≥ 9.9× / ≥ 6.5×" logs; fi

w="\`/probe\` vs blackbox_exporter (same nginx target)"
if have http.probe_rps_depwatch http.probe_rps_blackbox http.probe_cpu_ms_depwatch http.probe_cpu_ms_blackbox; then
  rr=$(calc '%.2f' "$(v http.probe_rps_depwatch) / $(v http.probe_rps_blackbox)")
  rcpu=$(calc '%.2f' "$(v http.probe_cpu_ms_depwatch) / $(v http.probe_cpu_ms_blackbox)")
  row "$w" "$(calc '%.0f' "$(v http.probe_rps_depwatch)") vs $(calc '%.0f' "$(v http.probe_rps_blackbox)") probes/s; $(v http.probe_cpu_ms_depwatch) vs $(v http.probe_cpu_ms_blackbox) ms CPU each" \
    "${rr}× probes/s, ${rcpu}× CPU" "≥ 1.5× probes/s, ≤ 1× CPU (http probe issue)" "$(yes_no "$rr >= 1.5 && $rcpu <= 1")"
else absent "$w" "≥ 1.5× probes/s" http; fi

w="Redis queue round vs redis_exporter scrape ($QUEUES BullMQ queues × $JOBS jobs)"
if have redis.cpu_ms_depwatch redis.cpu_ms_exporter redis.round_trips_depwatch redis.round_trips_exporter; then
  row "$w" "$(v redis.cpu_ms_depwatch) vs $(v redis.cpu_ms_exporter) ms CPU per round; $(v redis.round_trips_depwatch) vs $(v redis.round_trips_exporter) Redis round trips" \
    "$(calc '%.2f' "$(v redis.cpu_ms_depwatch) / $(v redis.cpu_ms_exporter)")× CPU" "—" "—"
else absent "$w" "—" redis; fi

# ------------------------------------------------------------------ report
# A part's report two heading levels down, under "## PART".
demote() { awk '/^```/ { code = !code } !code && /^#/ { $0 = "##" $0 } { print }' "$1"; }
declare -A SCRIPT=([core]=bench/core.sh [http]=bench/http.sh [redis]=bench/redis.sh [logs]=bench/logs.sh)
{
  echo "# depwatch benchmarks, side by side — $DAY"
  echo
  if ((QUICK)); then echo "**Quick smoke-test settings (\`--quick\`): not results.**"; echo; fi
  echo "- started $START, ended $(date -u +%FT%TZ); host: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- depwatch: \`$BIN\` ($("$BIN" --version | first_line)); source tree $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "- command: \`bench/all.sh$( ((QUICK)) && echo ' --quick') --parts $PARTS\`; waited ${WAITED}s for cargo/rustc before starting"
  echo "- settings: core wrk ${CORE_DUR}s × $CORE_RUNS; /probe wrk ${WRK_DUR}s × $WRK_RUNS; $PROBES http probes at $INTERVAL (timeout $PTIMEOUT) over $HTTP_ROUNDS rounds, $SCRAPES scrapes, $H_SAMPLES cold /api/health samples; redis $REDIS_ROUNDS rounds, $QUEUES queues × $JOBS jobs; logs $LINES lines × $LOG_RUNS runs"
  for p in core http redis logs; do [[ -z ${WANT[$p]:-} ]] || echo "- $p: ${STATUS[$p]:-not run}"; done
  for n in "${NOTES[@]}"; do echo "- **warning**: $n"; done
  echo
  echo "## Summary"
  echo
  echo "Targets of the \"performance at scale\" issue (the last two rows: targets of earlier issues). \"by the serving threads\": the CPU of every thread but the checks' (\`depwatch-checks\`) during the scrapes, measured; \"net of probing\": depwatch's CPU during the scrapes less its probes' CPU at the rate measured over the rounds, estimated."
  echo
  echo "<!-- summary:start -->"
  echo "| work | measured | ratio | target | met |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
  echo "<!-- summary:end -->"
  echo
  for p in core http redis logs; do
    [[ -n ${WANT[$p]:-} && -s $W/$p.md ]] || continue
    echo "## $p (\`${SCRIPT[$p]}\`)"
    echo
    demote "$W/$p.md"
    echo
  done
  echo "## Raw results"
  echo
  echo '```'
  sort "$RESULTS"
  echo '```'
} >"$OUT"
log "report: $OUT"
printf '%s\n' "${ROWS[@]}" >&2
for p in "${!STATUS[@]}"; do [[ ${STATUS[$p]} == ok* ]] || exit 1; done
