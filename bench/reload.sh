#!/usr/bin/env bash
# bench/reload.sh — what reloads that change the components cost over time:
# depwatch's RSS, threads and series after every block of reloads that
# rename every probe (each reload removes N components and adds N new ones),
# then the same number of no-op reloads as a control.
#
# USAGE: bench/reload.sh > bench/results/reload-$(date +%F).md
#   Knobs: BENCH_PROBES [500] BENCH_RELOADS [300] BENCH_EVERY [0.4] (s between SIGHUPs)
#          BENCH_REPORT_EVERY [25] BENCH_KIND [process: self | log]
#          DEPWATCH_BIN [target/release/depwatch, built if absent]
# Target (defects issue, item 9): RSS and threads flat after warm-up
# (the first 50 reloads) over 300 changing reloads.
#
# depwatch binds 127.0.0.1 on a free port, is stopped by PID on exit.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

N=${BENCH_PROBES:-500}
RELOADS=${BENCH_RELOADS:-300}
EVERY=${BENCH_EVERY:-0.4}
REPORT=${BENCH_REPORT_EVERY:-25}
KIND=${BENCH_KIND:-process}
BIN=${DEPWATCH_BIN:-${CARGO_TARGET_DIR:-target}/release/depwatch}

LOG_TAG=reload
command -v curl >/dev/null || die "missing curl: apt-get install -y curl"
if [[ ! -x $BIN ]]; then
  log "building depwatch (release)"
  cargo build --release --quiet
fi

scratch depwatch-bench
DW_PID=

PORT=$(free_port)
mkdir -p "$W/state"
: >"$W/app.log"

# config GENERATION: N probes named p<i>-<generation>.
config() {
  local g=$1 i
  {
    printf 'listen: 127.0.0.1:%s\nstate_dir: %s\nprobes:\n' "$PORT" "$W/state"
    for ((i = 0; i < N; i++)); do
      case $KIND in
        process) printf '  - name: p%s-%s\n    kind: process\n    self: true\n    interval: 1s\n    timeout: 900ms\n    jitter: 500ms\n' "$i" "$g" ;;
        log) printf '  - name: p%s-%s\n    kind: log\n    files: [%s]\n    interval: 1s\n    timeout: 900ms\n    rules:\n      - metric: hits\n' "$i" "$g" "$W/app.log" ;;
        *) die "BENCH_KIND is process or log" ;;
      esac
    done
  } >"$W/depwatch.yml.new"
  mv "$W/depwatch.yml.new" "$W/depwatch.yml"
}

threads() { awk '$1 == "Threads:" {print $2}' "/proc/$1/status"; }
series() { curl -sf --max-time 10 "http://127.0.0.1:$PORT/metrics" | grep -c '^depwatch_.*component="' || true; }

# Waits until the reload of generation G is in force (its last probe is known).
wait_reloaded() {
  local g=$1 i
  for ((i = 0; i < 400; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/api/health?component=p$((N - 1))-$g") != 404 ]] && return 0
    sleep 0.05
  done
  die "reload to generation $g did not complete"
}

config 0
"$BIN" --config "$W/depwatch.yml" >/dev/null 2>"$W/depwatch.log" &
DW_PID=$!
PIDS+=("$DW_PID")
wait_port "$PORT"
wait_reloaded 0
sleep 2

row() {  # phase reloads
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(rss_kb "$DW_PID")" "$(threads "$DW_PID")" "$(series)"
}

cat <<EOF
# depwatch reload benchmark — $(date -u +%FT%TZ)

Machine: $(nproc) cores, $(uname -r). $N \`kind: $KIND\` probes; a SIGHUP every ${EVERY}s
(after the previous reload completed), each renaming every probe (changing) or
rewriting the same file (no-op). Binary: \`$BIN\`.

| phase | reloads | RSS KiB | threads | component series |
| --- | ---: | ---: | ---: | ---: |
EOF
row start 0
g=0
for ((r = 1; r <= RELOADS; r++)); do
  g=$((g + 1))
  config "$g"
  kill -HUP "$DW_PID"
  wait_reloaded "$g"
  sleep "$EVERY"
  if ((r % REPORT == 0)); then row changing "$r"; fi
done
for ((r = 1; r <= RELOADS; r++)); do
  config "$g"
  kill -HUP "$DW_PID"
  sleep "$EVERY"
  if ((r % (REPORT * 4) == 0)); then row no-op "$r"; fi
done
sleep 3
row "idle 3s" "$RELOADS"
