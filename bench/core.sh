#!/usr/bin/env bash
# bench/core.sh — /api/health and /metrics of depwatch's built-in default
# run, side by side in one run with nginx serving static files of the same
# bodies and node_exporter's /metrics (minimal collectors); idle RSS of
# depwatch vs node_exporter.
#
# The built-in default run: the configuration depwatch uses without --config
# (DEFAULT_YAML in src/config/mod.rs, read from this source tree), with only
# `listen` and `state_dir` moved to a free port and a scratch directory,
# started in that scratch directory.
#
# USAGE: bench/core.sh > bench/results/core-$(date +%F).md
#   Knobs: BENCH_CONNS [16] BENCH_THREADS [2] BENCH_DURATION [5] (s) BENCH_RUNS [5]
#          BENCH_IDLE_S [10] DEPWATCH_BIN [$CARGO_TARGET_DIR/release/depwatch, built if absent]
#          BENCH_RESULTS [] a file that receives KEY=VALUE results (bench/all.sh)
# Targets (issue "core exporter"): /api/health >= 50% of nginx's requests/s,
# p99 < 2 ms at 16 connections; idle RSS below node_exporter's.
# Targets (issue "performance at scale"): /metrics >= 0.5x nginx's
# requests/s; /api/health >= 0.85x nginx's with a p99 <= nginx's; idle RSS
# <= 8 MiB.
#
# Every server binds 127.0.0.1 on a free port, every load run is bounded by
# wrk -d and timeout, everything started is stopped by PID on exit.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

CONNS=${BENCH_CONNS:-16}
THREADS=${BENCH_THREADS:-2}
DUR=${BENCH_DURATION:-5}
RUNS=${BENCH_RUNS:-5}
IDLE_S=${BENCH_IDLE_S:-10}
BIN=${DEPWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/depwatch}

LOG_TAG=core
for b in wrk nginx prometheus-node-exporter curl; do
  command -v "$b" >/dev/null || die "missing $b: apt-get install -y wrk nginx prometheus-node-exporter curl"
done
if [[ ! -x $BIN ]]; then
  log "building depwatch (release)"
  cargo build --release --quiet
fi
BIN=$(realpath "$BIN") # depwatch runs from the scratch directory

scratch depwatch-bench

wait_http() {
  local url=$1 i
  for ((i = 0; i < 100; i++)); do curl -sf --max-time 1 -o /dev/null "$url" && return 0; sleep 0.1; done
  die "no answer from $url"
}

P_DW=$(free_port); P_NGINX=$(free_port); P_NODE=$(free_port)
mkdir -p "$W/www" "$W/nginx/tmp" "$W/run"
# The built-in configuration with its listen address and state dir moved.
awk '/^pub const DEFAULT_YAML: &str = r#"$/ { on = 1; next } on && /^"#;$/ { on = 0 } on' \
  src/config/mod.rs >"$W/builtin.yml"
[[ $(grep -c '^listen: \|^state_dir: ' "$W/builtin.yml") == 2 ]] ||
  die "no built-in configuration (DEFAULT_YAML with listen and state_dir) found in src/config/mod.rs"
sed -e "s/^listen: .*/listen: 127.0.0.1:$P_DW/" -e "s#^state_dir: .*#state_dir: $W/run/depwatch-data#" \
  "$W/builtin.yml" >"$W/depwatch.yml"
(cd "$W/run" && exec "$BIN" --config "$W/depwatch.yml") >/dev/null 2>"$W/depwatch.log" &
PIDS+=($!); DW_PID=$!
prometheus-node-exporter --collector.disable-defaults --collector.meminfo --collector.loadavg \
  --web.listen-address="127.0.0.1:$P_NODE" >/dev/null 2>&1 &
PIDS+=($!); NODE_PID=$!
wait_http "http://127.0.0.1:$P_DW/healthz"
wait_http "http://127.0.0.1:$P_NODE/metrics"
sleep 1
curl -sf "http://127.0.0.1:$P_DW/api/health" >"$W/www/health.json"
curl -sf "http://127.0.0.1:$P_DW/metrics" >"$W/www/metrics.txt"
nginx_conf "$W/nginx" "$P_NGINX" "$W/www" 1024 "access_log off; keepalive_requests 1000000;"
nginx -p "$W/nginx/" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_NGINX/health.json"

log "idle ${IDLE_S}s"
sleep "$IDLE_S"
DW_IDLE=$(rss_kb "$DW_PID"); NODE_IDLE=$(rss_kb "$NODE_PID")

declare -A RPS P99 P50 RATIO P99_RATIO
# One wrk run of `url`, appended to $W/KEY.tsv as "req/s p50 p99".
run_once() {  # key url run
  local key=$1 url=$2 i=$3 f
  f="$W/wrk-$key-$i.txt"
  timeout $((DUR + 30)) wrk -t"$THREADS" -c"$CONNS" -d"${DUR}s" --latency "$url" >"$f" 2>&1 || true
  if grep -q 'Non-2xx\|Socket errors' "$f"; then log "$key run $i: errors: $(grep 'Non-2xx\|Socket errors' "$f")"; fi
  printf '%s\t%s\t%s\n' "$(awk '/^Requests\/sec:/ {print $2}' "$f")" \
    "$(to_ms "$(awk '$1 == "50%" {print $2}' "$f")")" "$(to_ms "$(awk '$1 == "99%" {print $2}' "$f")")" >>"$W/$key.tsv"
}
# Each key's medians (req/s, p50, p99 each over its runs).
medians() {  # key
  local key=$1
  RPS[$key]=$(cut -f1 "$W/$key.tsv" | median); P50[$key]=$(cut -f2 "$W/$key.tsv" | median); P99[$key]=$(cut -f3 "$W/$key.tsv" | median)
  log "$key: ${RPS[$key]} req/s, p50 ${P50[$key]} ms, p99 ${P99[$key]} ms"
}
# depwatch and its peer in turns (A B A B …), each after a 1 s warm-up:
# on a shared 2-core machine the speed of the whole machine drifts by tens
# of percent over a minute, and runs of one server after the other's put
# that drift into the ratio. The ratios reported are medians of each
# pair's ratio (req/s, p99).
pair() {  # key_a url_a key_b url_b
  local a=$1 ua=$2 b=$3 ub=$4 i
  timeout 30 wrk -t"$THREADS" -c"$CONNS" -d1s "$ua" >/dev/null 2>&1 || true
  timeout 30 wrk -t"$THREADS" -c"$CONNS" -d1s "$ub" >/dev/null 2>&1 || true
  : >"$W/$a.tsv"; : >"$W/$b.tsv"
  for ((i = 1; i <= RUNS; i++)); do
    run_once "$a" "$ua" "$i"
    run_once "$b" "$ub" "$i"
  done
  medians "$a"; medians "$b"
  RATIO[$a]=$(paste "$W/$a.tsv" "$W/$b.tsv" | awk '$4 > 0 { printf "%.4f\n", $1 / $4 }' | median)
  P99_RATIO[$a]=$(paste "$W/$a.tsv" "$W/$b.tsv" | awk '$6 > 0 { printf "%.4f\n", $3 / $6 }' | median)
  log "$a vs $b: req/s ratio ${RATIO[$a]}, p99 ratio ${P99_RATIO[$a]} (medians of $RUNS pairs)"
}
load() {  # key url (no peer)
  local key=$1 url=$2 i
  timeout 30 wrk -t"$THREADS" -c"$CONNS" -d1s "$url" >/dev/null 2>&1 || true
  : >"$W/$key.tsv"
  for ((i = 1; i <= RUNS; i++)); do run_once "$key" "$url" "$i"; done
  medians "$key"
}
pair dw_health "http://127.0.0.1:$P_DW/api/health" nginx_health "http://127.0.0.1:$P_NGINX/health.json"
pair dw_metrics "http://127.0.0.1:$P_DW/metrics" nginx_metrics "http://127.0.0.1:$P_NGINX/metrics.txt"
load node_metrics "http://127.0.0.1:$P_NODE/metrics"
DW_AFTER=$(rss_kb "$DW_PID")

HB=$(wc -c <"$W/www/health.json"); MB=$(wc -c <"$W/www/metrics.txt")
cat <<EOF
# depwatch core benchmark — $(date -u +%FT%TZ)

Machine: $(nproc) cores, $(uname -r). wrk -t$THREADS -c$CONNS -d${DUR}s, $RUNS runs of each, depwatch and nginx in turns, after a 1 s warm-up; medians of the runs, ratios are medians of each pair's ratio.
depwatch: $("$BIN" --version), built-in configuration (below). nginx runs one worker (\`master_process off; worker_processes 1\`), serving depwatch's own answers as static files.

| endpoint | requests/s | p50 ms | p99 ms | body bytes |
| --- | ---: | ---: | ---: | ---: |
| depwatch /api/health | ${RPS[dw_health]} | ${P50[dw_health]} | ${P99[dw_health]} | $HB |
| nginx static, same body | ${RPS[nginx_health]} | ${P50[nginx_health]} | ${P99[nginx_health]} | $HB |
| depwatch /metrics | ${RPS[dw_metrics]} | ${P50[dw_metrics]} | ${P99[dw_metrics]} | $MB |
| nginx static, same body | ${RPS[nginx_metrics]} | ${P50[nginx_metrics]} | ${P99[nginx_metrics]} | $MB |
| node_exporter /metrics (meminfo, loadavg) | ${RPS[node_metrics]} | ${P50[node_metrics]} | ${P99[node_metrics]} | $(curl -s "http://127.0.0.1:$P_NODE/metrics" | wc -c) |

| ratio | value | target |
| --- | ---: | --- |
| /api/health req/s vs nginx | $(printf '%.2f' "${RATIO[dw_health]}") | >= 0.85 (was >= 0.50) |
| /api/health p99 (ms) | ${P99[dw_health]} | < 2 |
| /api/health p99 vs nginx's | $(printf '%.2f' "${P99_RATIO[dw_health]}") | <= 1 |
| /metrics req/s vs nginx | $(printf '%.2f' "${RATIO[dw_metrics]}") | >= 0.50 |
| /metrics req/s vs node_exporter | $(ratio "${RPS[dw_metrics]}" "${RPS[node_metrics]}") | |

| idle RSS (KiB) | depwatch | node_exporter | ratio |
| --- | ---: | ---: | ---: |
| after ${IDLE_S}s idle (target <= 8192) | $DW_IDLE | $NODE_IDLE | $(ratio "$DW_IDLE" "$NODE_IDLE") |
| depwatch after the load | $DW_AFTER | | |

The built-in configuration as run (listen and state_dir moved):

\`\`\`yaml
$(cat "$W/depwatch.yml")
\`\`\`
EOF

result core.health_rps "${RPS[dw_health]}"
result core.health_p99_ms "${P99[dw_health]}"
result core.nginx_health_rps "${RPS[nginx_health]}"
result core.nginx_health_p99_ms "${P99[nginx_health]}"
result core.metrics_rps "${RPS[dw_metrics]}"
result core.metrics_p99_ms "${P99[dw_metrics]}"
result core.nginx_metrics_rps "${RPS[nginx_metrics]}"
result core.node_metrics_rps "${RPS[node_metrics]}"
result core.health_ratio "${RATIO[dw_health]}"
result core.health_p99_ratio "${P99_RATIO[dw_health]}"
result core.metrics_ratio "${RATIO[dw_metrics]}"
result core.health_bytes "$HB"
result core.metrics_bytes "$MB"
result core.idle_rss_kb "$DW_IDLE"
result core.node_idle_rss_kb "$NODE_IDLE"
result core.rss_after_load_kb "$DW_AFTER"
