#!/usr/bin/env bash
# bench/http.sh - partner API probes, measured on loopback.
#
# Part 1, side by side in one run against the same nginx target (a 200-byte
# JSON file): depwatch `/probe?target=URL&module=http_2xx` vs
# blackbox_exporter `/probe?target=URL&module=http_2xx` under wrk:
# probes per second, p99 latency, CPU per probe, resident memory.
#
# Part 2: depwatch with BENCH_PROBES configured http probes (default 2,000)
# at a BENCH_INTERVAL (15 s) against the same nginx, for BENCH_ROUNDS rounds:
# checks per probe (missed rounds), failures, check latency, CPU and memory.
#
# USAGE
#   bench/http.sh [DEPWATCH_BINARY] > report.md     (progress on stderr)
#   Without a binary, `cargo build --release` is run (CARGO_TARGET_DIR honoured).
#
# KNOBS (environment, defaults in brackets)
#   BENCH_WRK_THREADS [2]  BENCH_WRK_CONNS [16]  BENCH_WRK_DURATION [10] (s)
#   BENCH_WRK_RUNS [3] (median reported)  BENCH_PROBES [2000]
#   BENCH_INTERVAL [15s]  BENCH_TIMEOUT [5s]  BENCH_ROUNDS [4]  BENCH_JITTER [] (depwatch default)
#   BENCH_WAIT_MAX [600] (s) to wait for other builds (rustc) to end first
#   BENCH_SKIP_PART1=1 / BENCH_SKIP_PART2=1   BENCH_KEEP_WORK=1 (keep scratch dir)
#
# RULES: every server binds 127.0.0.1 on a free port; every loop is bounded
# (wrk -d under timeout, polls with deadlines); every process started here
# is stopped by PID in the EXIT trap; the scratch dir is removed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  exit 0
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export LC_ALL=C DEPWATCH_LOG=warn
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-16}
WRK_DUR=${BENCH_WRK_DURATION:-10}
WRK_RUNS=${BENCH_WRK_RUNS:-3}
NPROBES=${BENCH_PROBES:-2000}
INTERVAL=${BENCH_INTERVAL:-15s}
ROUNDS=${BENCH_ROUNDS:-4}
JITTER=${BENCH_JITTER:-}
CLK_TCK=$(getconf CLK_TCK)
INTERVAL_S=${INTERVAL%s}

W=$(mktemp -d "${TMPDIR:-/tmp}/http-bench.XXXXXX")
PIDS=()

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

alive() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z ]]
}

cleanup() {
  local rc=$? p i
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do alive "$p" || break; sleep 0.1; done
    alive "$p" && kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ ${BENCH_KEEP_WORK:-0} == 1 ]]; then log "kept $W"; else rm -rf "$W"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_started() {  # port pid seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    alive "$2" || return 1
    port_open "$1" && return 0
    sleep 0.1
  done
  return 1
}
start() {  # name port cmd...  -> sets LAST_PID
  local name=$1 port=$2; shift 2
  "$@" >"$W/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  wait_started "$port" "$LAST_PID" 30 || die "$name did not come up: $(tail -n 5 "$W/$name.log")"
  local bad
  bad=$(ss -ltnpH 2>/dev/null | awk -v p="pid=$LAST_PID," 'index($0, p) {print $4}' | grep -Ev '^(127\.|\[::1\])' || true)
  [[ -z $bad ]] || die "$name listens on a non-loopback address: $bad"
}
stop() {  # pid
  kill -TERM "$1" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do alive "$1" || break; sleep 0.1; done
  alive "$1" && kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

for b in nginx wrk prometheus-blackbox-exporter curl ss python3; do
  command -v "$b" >/dev/null || die "missing $b (apt-get install -y nginx wrk prometheus-blackbox-exporter curl iproute2)"
done

DW=${1:-}
if [[ -z $DW ]]; then
  log "building depwatch (release)"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
  DW=${CARGO_TARGET_DIR:-$ROOT/target}/release/depwatch
fi
[[ -x $DW ]] || die "no depwatch binary at $DW"
DW=$(realpath "$DW") # part 2 runs depwatch from its own directory
WAITED=0
BUSY_NOTE=""
while pgrep -x rustc >/dev/null 2>&1; do
  if ((WAITED >= ${BENCH_WAIT_MAX:-600})); then
    BUSY_NOTE="rustc was still running after ${WAITED}s of waiting: numbers are contaminated by other builds"
    log "WARNING: $BUSY_NOTE"
    break
  fi
  log "rustc is running (another build): waiting 20s (${WAITED}s so far)"
  sleep 20
  WAITED=$((WAITED + 20))
done

# ------------------------------------------------------------------ target
mkdir -p "$W/www" "$W/nginx/tmp"
python3 - "$W/www/status.json" <<'EOF'
import sys
head = '{"status":"ok","service":"bench","version":"1.0.0","checks":{"redis":"ok","disk":"ok"},"padding":"'
tail = '"}\n'
open(sys.argv[1], "w").write(head + "x" * (200 - len(head) - len(tail)) + tail)
EOF
P_NGINX=$(free_port)
# One access-log line per request that reached the target: counts the probes
# that really happened (a /probe answered without reaching nginx is not one).
nginx_conf "$W/nginx" "$P_NGINX" "$W/www" 8192 "log_format hits '\$status'; access_log $W/nginx/access.log hits;"
start nginx "$P_NGINX" nginx -c "$W/nginx/nginx.conf" -p "$W/nginx"
TARGET="http://127.0.0.1:$P_NGINX/status.json"
TARGET_Q=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$TARGET")

echo "# depwatch http probes — benchmark"
echo
echo "- date: $(date -u +%FT%TZ); host: $(nproc) CPU(s), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- depwatch: \`$DW\` ($("$DW" --version 2>/dev/null | head -n1)); blackbox_exporter: $(prometheus-blackbox-exporter --version 2>&1 | head -n1 | awk '{print $3}')"
[[ -z $BUSY_NOTE ]] || echo "- **warning**: $BUSY_NOTE"
echo "- target: nginx on 127.0.0.1:$P_NGINX serving a 200-byte JSON file (\`$TARGET\`)"
echo

# ------------------------------------------------------------------ part 1
if [[ ${BENCH_SKIP_PART1:-0} != 1 ]]; then
  P_BB=$(free_port)
  cat >"$W/blackbox.yml" <<'EOF'
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
EOF
  start blackbox "$P_BB" prometheus-blackbox-exporter --config.file="$W/blackbox.yml" \
    --web.listen-address="127.0.0.1:$P_BB" --log.level=warn
  BB_PID=$LAST_PID

  P_DW=$(free_port)
  mkdir -p "$W/dw1"
  cat >"$W/dw1/depwatch.yml" <<EOF
listen: 127.0.0.1:$P_DW
state_dir: $W/dw1/state
modules:
  http_2xx:
    timeout: 5s
    allowed_targets: ["http://127.0.0.1:*/*"]
probes:
  - name: self
    kind: process
    self: true
EOF
  start depwatch-probe "$P_DW" "$DW" --config "$W/dw1/depwatch.yml"
  DW_PID=$LAST_PID

  declare -A URL=(
    [depwatch]="http://127.0.0.1:$P_DW/probe?target=$TARGET_Q&module=http_2xx"
    [blackbox_exporter]="http://127.0.0.1:$P_BB/probe?target=$TARGET_Q&module=http_2xx"
  )
  declare -A XPID=([depwatch]=$DW_PID [blackbox_exporter]=$BB_PID)
  declare -A OKRE=([depwatch]='^depwatch_probe_success\{[^}]*\} 1$' [blackbox_exporter]='^probe_success 1$')

  declare -A RPS P99 CPU ERR IDLE RSS HWM HITS
  for name in depwatch blackbox_exporter; do
    curl -fsS --max-time 10 "${URL[$name]}" | grep -Eq "${OKRE[$name]}" ||
      die "$name: one /probe did not succeed: $(curl -sS --max-time 10 "${URL[$name]}" | head -c 800)"
    IDLE[$name]=$(rss_kb "${XPID[$name]}" VmRSS)
  done

  for ((run = 1; run <= WRK_RUNS; run++)); do
    for name in depwatch blackbox_exporter; do
      pid=${XPID[$name]}
      h0=$(grep -c '^200$' "$W/nginx/access.log" || true)
      t0=$(cpu_ticks "$pid")
      out=$(timeout $((WRK_DUR + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WRK_DUR}s" --latency "${URL[$name]}" 2>&1) || die "wrk failed: $out"
      t1=$(cpu_ticks "$pid")
      h1=$(grep -c '^200$' "$W/nginx/access.log" || true)
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
      p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
      errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
      cpu_ms=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN { printf "%.3f", t * 1000 / hz / n }')
      hit_pct=$(awk -v h=$((h1 - h0)) -v n="$reqs" 'BEGIN { printf "%.1f", 100 * h / n }')
      log "$name run $run: $rps probes/s, p99 ${p99} ms, ${cpu_ms} ms CPU/probe, ${hit_pct}% reached nginx with 200 ${errs}"
      echo "$hit_pct" >>"$W/$name.hits"
      echo "$rps" >>"$W/$name.rps"
      echo "$p99" >>"$W/$name.p99"
      echo "$cpu_ms" >>"$W/$name.cpu"
      [[ -z $errs ]] || ERR[$name]="${ERR[$name]:-}$errs"
    done
  done
  for name in depwatch blackbox_exporter; do
    RPS[$name]=$(median <"$W/$name.rps")
    P99[$name]=$(median <"$W/$name.p99")
    CPU[$name]=$(median <"$W/$name.cpu")
    HITS[$name]=$(median <"$W/$name.hits")
    RSS[$name]=$(rss_kb "${XPID[$name]}" VmRSS)
    HWM[$name]=$(rss_kb "${XPID[$name]}" VmHWM)
  done

  echo "## /probe side by side"
  echo
  echo "wrk -t$WRK_THREADS -c$WRK_CONNS -d${WRK_DUR}s, $WRK_RUNS runs each, alternating; medians. Each /probe makes a fresh connection to nginx (both exporters)."
  echo
  echo "| exporter | probes/s | p99 (ms) | CPU per probe (ms) | probes that reached nginx (200) | RSS idle (MiB) | RSS after load (MiB) | peak RSS (MiB) | errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  for name in depwatch blackbox_exporter; do
    printf '| %s | %s | %s | %s | %s %% | %.1f | %.1f | %.1f | %s |\n' "$name" "${RPS[$name]}" "${P99[$name]}" "${CPU[$name]}" "${HITS[$name]}" \
      "$(awk -v k="${IDLE[$name]}" 'BEGIN{print k/1024}')" "$(awk -v k="${RSS[$name]}" 'BEGIN{print k/1024}')" \
      "$(awk -v k="${HWM[$name]}" 'BEGIN{print k/1024}')" "${ERR[$name]:-none}"
  done
  echo
  printf -- '- throughput ratio depwatch / blackbox_exporter: **%s×** (target ≥ 1.5×)\n' \
    "$(awk -v a="${RPS[depwatch]}" -v b="${RPS[blackbox_exporter]}" 'BEGIN { printf "%.2f", a / b }')"
  printf -- '- CPU per probe ratio: **%s** (target ≤ 1)\n' \
    "$(awk -v a="${CPU[depwatch]}" -v b="${CPU[blackbox_exporter]}" 'BEGIN { printf "%.2f", a / b }')"
  printf -- '- peak memory ratio: **%s** (target < 1)\n' \
    "$(awk -v a="${HWM[depwatch]}" -v b="${HWM[blackbox_exporter]}" 'BEGIN { printf "%.2f", a / b }')"
  echo
  stop "$DW_PID"
  stop "$BB_PID"
fi

# ------------------------------------------------------------------ part 2
if [[ ${BENCH_SKIP_PART2:-0} != 1 ]]; then
  P_DW2=$(free_port)
  mkdir -p "$W/dw2"
  {
    echo "listen: 127.0.0.1:$P_DW2"
    echo "state_dir: $W/dw2/state"
    echo "defaults:"
    echo "  interval: $INTERVAL"
    echo "  timeout: ${BENCH_TIMEOUT:-5s}"
    [[ -z $JITTER ]] || echo "  jitter: $JITTER"
    echo "probes:"
    for ((i = 0; i < NPROBES; i++)); do
      printf '  - { name: p%04d, kind: http, url: "%s?p=%d", expect: { body_json: { "/status": "ok" } } }\n' "$i" "$TARGET" "$i"
    done
  } >"$W/dw2/depwatch.yml"
  "$DW" check-config --config "$W/dw2/depwatch.yml" >/dev/null || die "the generated config is invalid"
  (cd "$W/dw2" && { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; } && exec "$DW" --config "$W/dw2/depwatch.yml") >"$W/dw2.log" 2>&1 &
  PID2=$!
  PIDS+=("$PID2")
  wait_started "$P_DW2" "$PID2" 30 || die "depwatch (part 2) did not come up: $(tail -n 5 "$W/dw2.log")"
  M="http://127.0.0.1:$P_DW2/metrics"
  snapshot() { curl -fsS --max-time 20 "$M" | awk '/^depwatch_checks_total\{component="p[0-9]+",kind="http"\}/ { sub(/^[^"]*"/, ""); sub(/".* /, " "); print }' | sort; }
  sum() { awk '{ s += $2 } END { print s + 0 }' "$1"; }

  log "part 2: $NPROBES probes at $INTERVAL; waiting for every probe's first check"
  deadline=$((SECONDS + INTERVAL_S + 60))
  while :; do
    snapshot >"$W/s0" || true
    [[ $(wc -l <"$W/s0") -ge $NPROBES ]] && break
    ((SECONDS < deadline)) || die "not every probe checked within $((INTERVAL_S + 60))s ($(wc -l <"$W/s0") did)"
    sleep 1
  done
  rss_warm=$(rss_kb "$PID2" VmRSS)
  t0=$(cpu_ticks "$PID2"); c0=$(date +%s.%N)
  snapshot >"$W/s0"
  window=$((ROUNDS * INTERVAL_S))
  log "part 2: measuring $ROUNDS rounds (${window}s)"
  sleep "$window"
  snapshot >"$W/s1"
  t1=$(cpu_ticks "$PID2"); c1=$(date +%s.%N)
  body=$(curl -fsS --max-time 20 "$M")
  join "$W/s0" "$W/s1" | awk '{ print $3 - $2 }' >"$W/diff"
  min=$(sort -g "$W/diff" | head -n1); max=$(sort -g "$W/diff" | tail -n1)
  short=$(awk -v r="$ROUNDS" '$1 < r { n++ } END { print n + 0 }' "$W/diff")
  checks=$(awk '{ s += $1 } END { print s }' "$W/diff")
  failures=$(awk '/^depwatch_http_request_failures_total\{/ { s += $NF } END { print s + 0 }' <<<"$body")
  dsum=$(awk '/^depwatch_http_duration_seconds_sum\{/ { s += $NF } END { print s }' <<<"$body")
  dcount=$(awk '/^depwatch_http_duration_seconds_count\{/ { s += $NF } END { print s }' <<<"$body")
  cpu_pct=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", 100 * t / hz / (b - a) }')
  cpu_per=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$checks" 'BEGIN { printf "%.3f", t * 1000 / hz / n }')
  echo "## $NPROBES configured http probes at $INTERVAL"
  echo
  echo "Every probe checks \`$TARGET?p=N\` (JSON pointer expectation) on its own schedule; jitter ${JITTER:-default (interval/10, at most 5s)}. Measured over $ROUNDS rounds (${window}s) after every probe's first check."
  echo
  echo "| checks expected | checks done | checks per probe (min–max) | probes with a missed round | failed requests (total) | mean check time (ms) | CPU (% of one core) | CPU per check (ms) | RSS warm (MiB) | RSS end (MiB) | peak RSS (MiB) |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  printf '| %d | %d | %s–%s | %d | %d | %.2f | %s | %s | %.1f | %.1f | %.1f |\n' \
    $((NPROBES * ROUNDS)) "$checks" "$min" "$max" "$short" "$failures" \
    "$(awk -v s="$dsum" -v c="$dcount" 'BEGIN { print 1000 * s / c }')" "$cpu_pct" "$cpu_per" \
    "$(awk -v k="$rss_warm" 'BEGIN{print k/1024}')" "$(awk -v k="$(rss_kb "$PID2" VmRSS)" 'BEGIN{print k/1024}')" \
    "$(awk -v k="$(rss_kb "$PID2" VmHWM)" 'BEGIN{print k/1024}')"
  echo
fi
log "done"
