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
# Then, at that scale: /metrics body size (identity, gzip, as Prometheus asks
# for it), series per http target, CPU per scrape as Prometheus scrapes
# (BENCH_SCRAPES sequential scrapes, its Accept and Accept-Encoding headers),
# and /api/health cold (first request after checks changed the state) and
# warm, side by side with a second nginx serving the same body from a file
# (single requests, then wrk with the same connections); peak RSS.
#
# USAGE
#   bench/http.sh [DEPWATCH_BINARY] > report.md     (progress on stderr)
#   Without a binary, `cargo build --release` is run (CARGO_TARGET_DIR honoured).
#
# KNOBS (environment, defaults in brackets)
#   BENCH_WRK_THREADS [2]  BENCH_WRK_CONNS [16]  BENCH_WRK_DURATION [10] (s)
#   BENCH_WRK_RUNS [3] (median reported)  BENCH_PROBES [2000]
#   BENCH_INTERVAL [15s]  BENCH_TIMEOUT [5s]  BENCH_CACHE_TTL [2 × interval] (part 2's health.cache_ttl)  BENCH_ROUNDS [4]  BENCH_JITTER [] (depwatch default)
#   BENCH_SCRAPES [20] /metrics scrapes timed in part 2
#   BENCH_LEAN_DURATION [5] (s) wrk with a fresh connection per request, the
#     machine's price of a check's connection (part 2, before depwatch starts)
#   BENCH_HEALTH_SAMPLES [5] cold /api/health requests (1 s apart)
#   BENCH_HEALTH_WARM [10] warm requests on one connection after each cold one
#   BENCH_HEALTH_DURATION [BENCH_WRK_DURATION] (s) wrk on /api/health vs nginx
#   BENCH_WAIT_MAX [600] (s) to wait for other builds (rustc) to end first
#   BENCH_SKIP_PART1=1 / BENCH_SKIP_PART2=1   BENCH_KEEP_WORK=1 (keep scratch dir)
#   BENCH_RESULTS [] a file that receives KEY=VALUE results (bench/all.sh)
#
# METRICS READ: depwatch_probe_success (part 1); depwatch_checks_total,
# depwatch_check_failures_total and depwatch_check_duration_seconds_{sum,count}
# of kind="http" (part 2), each by its component label.
#
# RULES: every server binds 127.0.0.1 on a free port; every loop is bounded
# (wrk -d under timeout, polls with deadlines); every process started here
# is stopped by PID in the EXIT trap; the scratch dir is removed.
set -euo pipefail
# shellcheck source=bench/lib.sh
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
SCRAPES=${BENCH_SCRAPES:-20}
HEALTH_SAMPLES=${BENCH_HEALTH_SAMPLES:-5}
HEALTH_WARM=${BENCH_HEALTH_WARM:-10}
HEALTH_DUR=${BENCH_HEALTH_DURATION:-$WRK_DUR}
LEAN_DUR=${BENCH_LEAN_DURATION:-5}
# What Prometheus 2.42 (Debian 12, the one the bundle tests use) sends on
# every scrape (scrape/scrape.go: acceptHeader, acceptEncodingHeader with
# enable_compression on, the default). Prometheus >= 2.49 builds Accept from
# scrape_protocols with other weights; gzip is asked by both.
PROM_ACCEPT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
CLK_TCK=$(getconf CLK_TCK)
INTERVAL_S=${INTERVAL%s}

scratch http-bench

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

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
echo "- depwatch: \`$DW\` ($("$DW" --version 2>/dev/null | first_line)); blackbox_exporter: $(prometheus-blackbox-exporter --version 2>&1 | awk 'NR == 1 {print $3}')"
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
    one=$(curl -sS --max-time 10 "${URL[$name]}" 2>&1 || true)
    grep -Eq "${OKRE[$name]}" <<<"$one" || die "$name: one /probe did not succeed: ${one:0:800}"
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
  for name in depwatch blackbox_exporter; do
    key=${name%_exporter}
    result "http.probe_rps_$key" "${RPS[$name]}"
    result "http.probe_p99_ms_$key" "${P99[$name]}"
    result "http.probe_cpu_ms_$key" "${CPU[$name]}"
    result "http.probe_hwm_kb_$key" "${HWM[$name]}"
  done
  stop "$DW_PID"
  stop "$BB_PID"
fi

# ------------------------------------------------------------------ part 2
if [[ ${BENCH_SKIP_PART2:-0} != 1 ]]; then
  # The machine's own price of a check's connection: wrk, a lean C client,
  # making one fresh connection per request (`Connection: close`, as the
  # checks do) to the same nginx, 8 at a time on one thread. Its CPU per
  # request is mostly the kernel's (connect, the handshake, the partner's
  # side of loopback TCP, close) and is what any client pays here before
  # doing anything with the answer; depwatch's CPU per check is reported
  # against it.
  log "part 2: wrk, one fresh connection per request, for the price of a connection"
  timeout $((LEAN_DUR + 30)) wrk -t1 -c8 -d"$((LEAN_DUR + 2))s" -H 'Connection: close' "$TARGET" >"$W/lean.out" 2>&1 &
  LEAN_PID=$!
  PIDS+=("$LEAN_PID")
  sleep 1
  wrk_pid=$(awk '{ print $1 }' "/proc/$LEAN_PID/task/$LEAN_PID/children") # timeout's child
  [[ -n $wrk_pid ]] || die "wrk (fresh connections) did not start: $(tail -n 3 "$W/lean.out")"
  lt0=$(cpu_ticks "$wrk_pid")
  sleep "$LEAN_DUR"
  lt1=$(cpu_ticks "$wrk_pid")
  wait "$LEAN_PID" || die "wrk (fresh connections) failed: $(tail -n 3 "$W/lean.out")"
  lean_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$W/lean.out")
  lean_ms=$(awk -v t=$((lt1 - lt0)) -v hz="$CLK_TCK" -v r="$lean_rps" -v s="$LEAN_DUR" 'BEGIN { printf "%.3f", 1000 * t / hz / (r * s) }')
  result http.lean_ms_per_request "$lean_ms"

  P_DW2=$(free_port)
  mkdir -p "$W/dw2"
  {
    echo "listen: 127.0.0.1:$P_DW2"
    echo "state_dir: $W/dw2/state"
    # At scale the health cache reads the scheduler's results: a TTL under
    # the interval would make a health request check every component whose
    # result is older than the TTL (two thirds of them at 5s of 15s).
    echo "health:"
    echo "  cache_ttl: ${BENCH_CACHE_TTL:-$((INTERVAL_S * 2))s}"
    echo "defaults:"
    echo "  interval: $INTERVAL"
    echo "  timeout: ${BENCH_TIMEOUT:-5s}"
    [[ -z $JITTER ]] || echo "  jitter: $JITTER"
    echo "probes:"
    for ((i = 0; i < NPROBES; i++)); do
      printf '  - { name: p%04d, kind: http, url: "%s?p=%d", expect: { body_json: { "/status": "ok" } } }\n' "$i" "$TARGET" "$i"
    done
  } >"$W/dw2/depwatch.yml"
  "$DW" check-config --config "$W/dw2/depwatch.yml" >"$W/check-config.out" 2>&1 ||
    die "the generated config is invalid: $(tail -n 3 "$W/check-config.out")"
  (cd "$W/dw2" && { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; } && exec "$DW" --config "$W/dw2/depwatch.yml") >"$W/dw2.log" 2>&1 &
  PID2=$!
  PIDS+=("$PID2")
  wait_started "$P_DW2" "$PID2" 30 || die "depwatch (part 2) did not come up: $(tail -n 5 "$W/dw2.log")"
  M="http://127.0.0.1:$P_DW2/metrics"
  # "COMPONENT CHECKS" of every benchmark probe, sorted for join.
  snapshot() {
    curl -fsS --max-time 60 "$M" | awk '
      /^depwatch_checks_total\{/ && index($0, "kind=\"http\"") && match($0, /component="p[0-9]+"/) {
        print substr($0, RSTART + 11, RLENGTH - 12), $NF }' | sort
  }

  log "part 2: $NPROBES probes at $INTERVAL; waiting for every probe's first check"
  deadline=$((SECONDS + INTERVAL_S + 60))
  while :; do
    snapshot >"$W/s0" || true
    [[ $(wc -l <"$W/s0") -ge $NPROBES ]] && break
    ((SECONDS < deadline)) || die "not every probe checked within $((INTERVAL_S + 60))s ($(wc -l <"$W/s0") did)"
    sleep 1
  done
  rss_warm=$(rss_kb "$PID2" VmRSS)
  snapshot >"$W/s0"
  # CPU of the rounds alone: the two /metrics reads around them stay out
  # (the cost of a scrape is measured below).
  read -r u0 s0 < <(cpu_split "$PID2")
  t0=$((u0 + s0)); c0=$(date +%s.%N)
  window=$((ROUNDS * INTERVAL_S))
  log "part 2: measuring $ROUNDS rounds (${window}s)"
  sleep "$window"
  read -r u1 s1 < <(cpu_split "$PID2")
  t1=$((u1 + s1)); c1=$(date +%s.%N)
  snapshot >"$W/s1"
  hwm_rounds=$(rss_kb "$PID2" VmHWM)
  curl -fsS --max-time 60 -D "$W/metrics.hdr" -o "$W/metrics.txt" "$M"
  join "$W/s0" "$W/s1" | awk '{ print $3 - $2 }' >"$W/diff"
  read -r min max < <(min_max <"$W/diff")
  probed=$(wc -l <"$W/diff")
  short=$(awk -v r="$ROUNDS" '$1 < r { n++ } END { print n + 0 }' "$W/diff")
  short=$((short + NPROBES - probed)) # a probe missing from a snapshot missed its rounds
  checks=$(awk '{ s += $1 } END { print s + 0 }' "$W/diff")
  # Sums over the benchmark probes (component="pNNNN", kind="http").
  kind_sum() { awk -v m="$1" 'index($0, m "{") == 1 && index($0, "kind=\"http\"") && /component="p[0-9]+"/ { s += $NF } END { print s + 0 }' "$W/metrics.txt"; }
  failures=$(kind_sum depwatch_check_failures_total)
  dsum=$(kind_sum depwatch_check_duration_seconds_sum)
  dcount=$(kind_sum depwatch_check_duration_seconds_count)
  cpu_pct=$(awk -v t=$((t1 - t0)) -v hz="$CLK_TCK" -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", 100 * t / hz / (b - a) }')
  per_check() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$checks" 'BEGIN { if (n > 0) printf "%.3f", t * 1000 / hz / n; else print "n/a" }'; }
  cpu_per=$(per_check $((t1 - t0)))
  # User space is what depwatch's code can change; system time is mostly the
  # connections' kernel work, on loopback the partner's side of it too.
  cpu_user_per=$(per_check $((u1 - u0)))
  cpu_sys_per=$(per_check $((s1 - s0)))
  echo "## $NPROBES configured http probes at $INTERVAL"
  echo
  echo "Every probe checks \`$TARGET?p=N\` (JSON pointer expectation) on its own schedule; jitter ${JITTER:-default (interval/10, at most 5s)}. Measured over $ROUNDS rounds (${window}s) after every probe's first check."
  echo
  echo "| checks expected | checks done | checks per probe (min–max) | probes with a missed round | failed checks (since start) | mean check time (ms) | CPU (% of one core) | CPU per check (ms) | RSS warm (MiB) | RSS end of rounds (MiB) | peak RSS (MiB) |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  printf '| %d | %d | %s–%s | %d | %d | %.2f | %s | %s | %.1f | %.1f | %.1f |\n' \
    $((NPROBES * ROUNDS)) "$checks" "$min" "$max" "$short" "$failures" \
    "$(awk -v s="$dsum" -v c="$dcount" 'BEGIN { print (c > 0 ? 1000 * s / c : 0) }')" "$cpu_pct" "$cpu_per" \
    "$(mib "$rss_warm")" "$(mib "$(rss_kb "$PID2" VmRSS)")" "$(mib "$hwm_rounds")"
  echo
  echo "- the price of a connection here: wrk (one thread, 8 at a time, a fresh connection per request with \`Connection: close\`, same nginx) used **$lean_ms ms** of CPU per request ($lean_rps req/s); depwatch used $cpu_per ms per check ($cpu_user_per user, $cpu_sys_per system), **$(ratio "$cpu_per" "$lean_ms")×** that. 5% of a core at this rate is $(awk -v n="$NPROBES" -v i="$INTERVAL_S" 'BEGIN { printf "%.3f", 50 * i / n }') ms per check."
  echo
  result http.probes "$NPROBES"
  result http.interval_s "$INTERVAL_S"
  result http.rounds "$ROUNDS"
  result http.checks_expected $((NPROBES * ROUNDS))
  result http.checks_done "$checks"
  result http.missed_probes "$short"
  result http.failed_checks "$failures"
  result http.cpu_pct "$cpu_pct"
  result http.cpu_ms_per_check "$cpu_per"
  result http.cpu_per_check_vs_lean "$(ratio "$cpu_per" "$lean_ms")"
  result http.cpu_user_ms_per_check "$cpu_user_per"
  result http.cpu_sys_ms_per_check "$cpu_sys_per"
  result http.rss_warm_kb "$rss_warm"
  result http.hwm_rounds_kb "$hwm_rounds"

  # ---------------------------------------------------------- at this scale
  hdr() { awk -v h="$2" '{ sub(/\r$/, "") } tolower($0) ~ "^" h ":" { sub(/^[^:]*:[ \t]*/, ""); v = $0 } END { print v }' "$1"; }
  ms() { awk -v s="$1" 'BEGIN { printf "%.2f", s * 1000 }'; }
  urls() { local i; for ((i = 0; i < $2; i++)); do printf 'url = "%s"\noutput = "/dev/null"\n' "$1"; done; }

  # /metrics bodies: as plain curl asks (identity), with --compressed (bytes
  # on the wire), raw with Accept-Encoding: gzip, and as Prometheus asks.
  log "part 2: /metrics body sizes and series"
  id_bytes=$(wc -c <"$W/metrics.txt")
  id_lines=$(wc -l <"$W/metrics.txt")
  series=$(awk 'index($0, "component=\"p0000\"") && !/^#/ { n++ } END { print n + 0 }' "$W/metrics.txt")
  wire=$(curl -fsS --compressed --max-time 60 -o /dev/null -w '%{size_download}' "$M")
  curl -fsS --max-time 60 -H 'Accept-Encoding: gzip' -D "$W/gz.hdr" -o "$W/metrics.gz" "$M"
  gz_bytes=$(wc -c <"$W/metrics.gz")
  gz_enc=$(hdr "$W/gz.hdr" content-encoding)
  gz_vary=$(hdr "$W/gz.hdr" vary)
  if [[ $gz_enc == gzip ]]; then
    gz_plain=$(gzip -dc "$W/metrics.gz" | wc -c) || die "/metrics answered Content-Encoding: gzip with a body gzip cannot read"
    gzip_ok=yes
  else
    gz_plain=$gz_bytes
    gzip_ok=no
  fi
  curl -fsS --max-time 60 -H "Accept: $PROM_ACCEPT" -H 'Accept-Encoding: gzip' -D "$W/prom.hdr" -o "$W/metrics.prom" "$M"
  prom_bytes=$(wc -c <"$W/metrics.prom")
  prom_type=$(hdr "$W/prom.hdr" content-type)
  prom_enc=$(hdr "$W/prom.hdr" content-encoding)

  # CPU per scrape: SCRAPES scrapes as Prometheus asks, each 1.2 s after
  # the one before, so that each one encodes anew (depwatch reuses an
  # encoding for at most a second, and only while no result changed);
  # depwatch's own CPU over them, less what its probes used in the same
  # time at the rate measured over the rounds.
  log "part 2: $SCRAPES scrapes as Prometheus asks, 1.2 s apart"
  : >"$W/scrapes.out"
  s0=$(cpu_ticks "$PID2"); w0=$(date +%s.%N); x0=$(cpu_ticks_except "$PID2" depwatch-checks)
  for ((s = 0; s < SCRAPES; s++)); do
    sleep 1.2
    curl -sS --max-time 60 -H "Accept: $PROM_ACCEPT" -H 'Accept-Encoding: gzip' -o /dev/null \
      -w '%{http_code} %{time_total}\n' "$M" >>"$W/scrapes.out" || log "warning: scrape $s failed"
  done
  s1=$(cpu_ticks "$PID2"); w1=$(date +%s.%N); x1=$(cpu_ticks_except "$PID2" depwatch-checks)
  scrapes_ok=$(awk '$1 == 200 { n++ } END { print n + 0 }' "$W/scrapes.out")
  ((scrapes_ok == SCRAPES)) || log "warning: $scrapes_ok of $SCRAPES scrapes answered 200"
  read -r scrape_raw scrape_net < <(awk -v s=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$scrapes_ok" \
    -v bg=$((t1 - t0)) -v bgw="$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" -v w="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
    'BEGIN { if (n == 0) { print "n/a n/a"; exit } raw = s * 1000 / hz / n; net = (s - bg * w / bgw) * 1000 / hz / n
             printf "%.1f %.1f\n", raw, (net > 0 ? net : 0) }')
  # The same without the estimate: the CPU of every thread but the checks'
  # (the HTTP server's workers, idle otherwise at this scale).
  scrape_serving=$(awk -v s=$((x1 - x0)) -v hz="$CLK_TCK" -v n="$scrapes_ok" 'BEGIN { if (n == 0) print "n/a"; else printf "%.1f\n", s * 1000 / hz / n }')
  scrape_wall=$(awk '$1 == 200 { print $2 }' "$W/scrapes.out" | median)
  scrape_wall=$(ms "$scrape_wall")

  # /api/health: a second nginx (no access log) serves the same body.
  H="http://127.0.0.1:$P_DW2/api/health"
  mkdir -p "$W/www2" "$W/nginx2"
  curl -fsS --max-time 60 -o "$W/www2/health.json" "$H"
  health_bytes=$(wc -c <"$W/www2/health.json")
  P_NGINX2=$(free_port)
  nginx_conf "$W/nginx2" "$P_NGINX2" "$W/www2" 1024 "access_log off; keepalive_requests 1000000;"
  start nginx-static "$P_NGINX2" nginx -c "$W/nginx2/nginx.conf" -p "$W/nginx2"
  HN="http://127.0.0.1:$P_NGINX2/health.json"
  urls "$H" "$HEALTH_WARM" >"$W/warm-dw.cfg"
  urls "$HN" "$HEALTH_WARM" >"$W/warm-nginx.cfg"
  log "part 2: /api/health ($health_bytes bytes) cold and warm, $HEALTH_SAMPLES samples"
  : >"$W/dw.cold"; : >"$W/dw.warm"; : >"$W/nginx.cold"; : >"$W/nginx.warm"
  for ((i = 1; i <= HEALTH_SAMPLES; i++)); do
    sleep 1 # about NPROBES / interval checks end in between: the state has changed
    curl -fsS --max-time 60 -o /dev/null -w '%{time_total}\n' "$H" >>"$W/dw.cold"
    curl -fsS --max-time 60 -K "$W/warm-dw.cfg" -w '%{time_total}\n' >>"$W/dw.warm"
    curl -fsS --max-time 60 -o /dev/null -w '%{time_total}\n' "$HN" >>"$W/nginx.cold"
    curl -fsS --max-time 60 -K "$W/warm-nginx.cfg" -w '%{time_total}\n' >>"$W/nginx.warm"
  done
  cold=$(ms "$(median <"$W/dw.cold")"); read -r _ cold_max < <(min_max <"$W/dw.cold"); cold_max=$(ms "$cold_max")
  warm=$(ms "$(median <"$W/dw.warm")"); read -r warm_best _ < <(min_max <"$W/dw.warm"); warm_best=$(ms "$warm_best")
  ngx_cold=$(ms "$(median <"$W/nginx.cold")"); ngx_warm=$(ms "$(median <"$W/nginx.warm")")
  hwm_seq=$(rss_kb "$PID2" VmHWM)

  declare -A HRPS HP50 HP99 HERR
  for name in depwatch nginx; do
    url=$H; [[ $name == nginx ]] && url=$HN
    log "part 2: wrk /api/health $name ${HEALTH_DUR}s"
    out=$(timeout $((HEALTH_DUR + 60)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${HEALTH_DUR}s" --timeout 10s --latency "$url" 2>&1) || log "warning: wrk on $name failed: $out"
    HRPS[$name]=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    HP50[$name]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    HP99[$name]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    HERR[$name]=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  done
  hwm_end=$(rss_kb "$PID2" VmHWM)

  echo "### /metrics at $NPROBES http targets"
  echo
  echo "| body | bytes | lines | Content-Encoding | Content-Type |"
  echo "| --- | ---: | ---: | --- | --- |"
  echo "| identity (no Accept, no Accept-Encoding) | $id_bytes | $id_lines | $(hdr "$W/metrics.hdr" content-encoding | sed 's/^$/none/') | $(hdr "$W/metrics.hdr" content-type) |"
  echo "| \`curl --compressed\` (bytes on the wire) | $wire | | | |"
  echo "| \`Accept-Encoding: gzip\` (raw; $gz_plain bytes decoded) | $gz_bytes | | ${gz_enc:-none} (Vary: ${gz_vary:-none}) | |"
  echo "| as Prometheus asks (\`Accept: $PROM_ACCEPT\`, \`Accept-Encoding: gzip\`) | $prom_bytes | | ${prom_enc:-none} | ${prom_type:-?} |"
  echo
  echo "- series per http target (lines with \`component=\"p0000\"\`): **$series** (target ≤ 24)"
  echo "- CPU per scrape as Prometheus asks, $scrapes_ok of $SCRAPES scrapes 1.2 s apart (each a new encoding): **$scrape_net ms** net of the probes' own CPU at the rate of the rounds ($scrape_raw ms raw; target ≤ 30 ms); **$scrape_serving ms** by the threads other than the checks' (\`depwatch-checks\`), which does without the estimate; $scrape_wall ms wall (median)"
  echo
  echo "### /api/health at $NPROBES components ($health_bytes bytes) vs nginx serving the same body"
  echo
  echo "Cold: the first request (new connection) after 1 s in which about $((NPROBES / INTERVAL_S)) checks ended, $HEALTH_SAMPLES samples; warm: $HEALTH_WARM requests on one connection right after each cold one. curl time_total, medians."
  echo
  echo "| server | cold (ms) | cold max (ms) | warm (ms) | warm best (ms) | wrk req/s | wrk p50 (ms) | wrk p99 (ms) | wrk errors |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  echo "| depwatch /api/health | $cold | $cold_max | $warm | $warm_best | ${HRPS[depwatch]} | ${HP50[depwatch]} | ${HP99[depwatch]} | ${HERR[depwatch]:-none} |"
  echo "| nginx, same body | $ngx_cold | | $ngx_warm | | ${HRPS[nginx]} | ${HP50[nginx]} | ${HP99[nginx]} | ${HERR[nginx]:-none} |"
  echo
  echo "- time vs nginx: cold **$(ratio "$cold" "$ngx_cold")×**, warm **$(ratio "$warm" "$ngx_warm")×**; wrk req/s nginx / depwatch $(ratio "${HRPS[nginx]}" "${HRPS[depwatch]}")× (target ≤ 5×, cold or warm); wrk -t$WRK_THREADS -c$WRK_CONNS -d${HEALTH_DUR}s, one run each"
  echo "- peak RSS (VmHWM): $(mib "$hwm_rounds") MiB after the rounds, $(mib "$hwm_seq") MiB after the scrapes and the single /api/health requests, $(mib "$hwm_end") MiB after wrk on /api/health"
  echo

  result http.metrics_bytes "$id_bytes"
  result http.metrics_lines "$id_lines"
  result http.metrics_wire_bytes_compressed "$wire"
  result http.metrics_gzip "$gzip_ok"
  result http.metrics_gzip_bytes "$gz_bytes"
  result http.metrics_prom_bytes "$prom_bytes"
  result http.metrics_prom_encoding "${prom_enc:-none}"
  result http.series_per_target "$series"
  result http.scrape_cpu_ms "$scrape_net"
  result http.scrape_cpu_ms_raw "$scrape_raw"
  result http.scrape_cpu_ms_serving "$scrape_serving"
  result http.scrape_wall_ms "$scrape_wall"
  result http.health_bytes "$health_bytes"
  result http.health_cold_ms "$cold"
  result http.health_cold_max_ms "$cold_max"
  result http.health_warm_ms "$warm"
  result http.nginx_health_cold_ms "$ngx_cold"
  result http.nginx_health_warm_ms "$ngx_warm"
  result http.health_rps "${HRPS[depwatch]}"
  result http.nginx_health_rps "${HRPS[nginx]}"
  result http.health_p99_ms "${HP99[depwatch]}"
  result http.nginx_health_p99_ms "${HP99[nginx]}"
  result http.hwm_seq_kb "$hwm_seq"
  result http.hwm_end_kb "$hwm_end"
fi
log "done"
