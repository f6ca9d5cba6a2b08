#!/usr/bin/env bash
# Log → metrics throughput, depwatch vs mtail, side by side in one run.
#
# Generates a 1,000,000-line JSON log (the generator and fixed seed of
# ../shared/bench/peers.sh), then for each tool:
#   one-shot: read the file to EOF and print metrics
#             (mtail --one_shot  vs  depwatch replay-log), median of RUNS;
#   tail:     the daemon tails an empty file, the log is appended to it, and
#             /metrics is polled (every 0.05 s) until every line is counted;
#             median of RUNS, each a fresh daemon.
# Both count lines by status and observe duration_ms in a histogram (mtail
# with a regex program, depwatch with a JSON rule).
# depwatch also runs a second time with a two-field `group_by: [operation,
# partner]` (per-category latency statistics, 20 categories): the cost of
# group_by on the log path, side by side in the same run.
# Reports lines/s, CPU seconds and peak RSS. Every server binds 127.0.0.1,
# every loop is bounded, every process is stopped by PID.
#
# Usage: bench/logs.sh [> bench/results/logs-$(date +%F).md]
# Knobs: BENCH_LINES [1000000]  BENCH_RUNS [5]  BENCH_TAIL_MAX [300] (s)
#        DEPWATCH [$CARGO_TARGET_DIR/release/depwatch, built if missing]
#        BENCH_RESULTS [] a file that receives KEY=VALUE results (bench/all.sh)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
LINES=${BENCH_LINES:-1000000}
RUNS=${BENCH_RUNS:-5}
TAIL_MAX=${BENCH_TAIL_MAX:-300}
TARGET=${CARGO_TARGET_DIR:-target}
DEPWATCH=${DEPWATCH:-$TARGET/release/depwatch}

LOG_TAG=logs
command -v mtail >/dev/null || die "mtail is missing (apt-get install -y mtail)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install -y time)"
if [[ ! -x $DEPWATCH ]]; then
  log "building depwatch (release)"
  cargo build --release --quiet
fi

scratch depwatch-bench-logs

LOG=$W/bench.log
log "generating $LINES-line JSON log"
python3 - "$LINES" "$LOG" <<'PY'
import random, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(20250104)                 # same seed as peers.sh: identical file
ops = ("job_upload", "job_download", "field_sync", "token_refresh")
partners = ("satloc", "agleader", "trimble", "raven", "deere")
statuses = ("success",) * 16 + ("failure", "failure", "timeout", "skipped")
base = 1735986615
ts_cache = {}
with open(path, "w") as f:
    buf = []
    for i in range(n):
        sec = base + i // 10
        ts = ts_cache.get(sec)
        if ts is None:
            ts_cache.clear()
            ts = ts_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))
        ns = int(rnd.lognormvariate(20.8, 1.6))
        ms = ns // 1_000_000
        st = rnd.choice(statuses)
        lvl = "info" if st == "success" else ("warn" if st == "skipped" else "error")
        m, s = divmod(ns, 60_000_000_000)
        dur = (f"{m}m" if m else "") + f"{s / 1e9:.9f}s"
        buf.append(f'{{"ts":"{ts}","level":"{lvl}","message":"Sync operation completed",'
                   f'"operation":"{rnd.choice(ops)}","partner":"{rnd.choice(partners)}",'
                   f'"status":"{st}","duration":"{dur}","duration_ms":{ms}}}\n')
        if len(buf) >= 20000:
            f.write("".join(buf)); buf.clear()
    f.write("".join(buf))
PY
BYTES=$(wc -c <"$LOG")

mkdir -p "$W/progs"
cat >"$W/progs/bench.mtail" <<'MT'
counter bench_log_lines_total by status
histogram bench_duration_ms buckets 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000

/"status":"(?P<status>[^"]*)".*"duration_ms":(?P<duration_ms>\d+)/ {
  bench_log_lines_total[$status]++
  bench_duration_ms = $duration_ms
}
MT

# The same with depwatch: count by status, duration_ms (ms) in a histogram.
# A fourth argument adds keys to the rule (the group_by variant).
dw_config() {   # file-glob port state-dir [extra rule keys]
  cat <<YML
listen: 127.0.0.1:$2
state_dir: $3
probes:
  - name: bench
    kind: log
    files: [$1]
    start_at: beginning
    rules:
      - metric: sync_operations
        labels: [status]
        duration: { field: duration_ms, unit: ms, buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] }
${4:-}
YML
}
GROUP_BY='        group_by: [operation, partner]'
dw_config "$LOG" 0 "$W/state-oneshot" >"$W/oneshot.yml"
dw_config "$LOG" 0 "$W/state-oneshot-grouped" "$GROUP_BY" >"$W/oneshot-grouped.yml"

metric_sum() { awk -v m="$1" '$1 ~ "^"m"({|$)" { s += $NF } END { printf "%d\n", s }'; }

# ---------------------------------------------------------------- one-shot
declare -A ONE ONE_LPS ONE_RSS ONE_CPU ONE_CMD ONE_METRIC
oneshot_run() {   # label i
  local label=$1 i=$2 f=$W/$1-$2
  local -a cmd
  read -r -a cmd <<<"${ONE_CMD[$label]}"
  log "one-shot $label run $i/$RUNS"
  /usr/bin/time -v -o "$f.time" timeout 600 "${cmd[@]}" >"$f.out" 2>"$f.err" || die "$label failed: $(tail -n 3 "$f.err")"
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, a, ":"); w = 0; for (j = 1; j <= n; j++) w = w * 60 + a[j] }
    /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident set size/ { m = $2 }
    END { printf "%.2f\t%.2f\t%d\n", w, u + s, m }' "$f.time" >>"$W/$label.tsv"
}
oneshot_report() {   # label: medians of wall and CPU over the runs, peak RSS
  local label=$1 counted wall cpu rss
  counted=$(metric_sum "${ONE_METRIC[$label]}" <"$W/$label-1.out")
  [[ $counted == "$LINES" ]] || log "warning: $label counted $counted of $LINES lines"
  col_median() { cut -f"$1" "$W/$label.tsv" | median; }
  wall=$(col_median 1); cpu=$(col_median 2)
  rss=$(cut -f3 "$W/$label.tsv" | sort -g | tail -n1)
  ONE_LPS[$label]=$(awk -v n="$LINES" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
  ONE[$label]="| $label | one-shot (median of $RUNS) | $LINES | $wall | ${ONE_LPS[$label]} | $cpu | $rss | $counted |"
  ONE_RSS[$label]=$rss
  ONE_CPU[$label]=$cpu
}
P=$(free_port)
ONE_CMD[mtail]="mtail --one_shot --one_shot_format prometheus --progs $W/progs --logs $LOG --address 127.0.0.1 --port $P --logtostderr"
ONE_METRIC[mtail]=bench_log_lines_total
ONE_CMD[depwatch]="$DEPWATCH replay-log --config $W/oneshot.yml $LOG"
ONE_CMD[depwatch+group_by]="$DEPWATCH replay-log --config $W/oneshot-grouped.yml $LOG"
ONE_METRIC[depwatch]=depwatch_log_sync_operations_total
ONE_METRIC[depwatch+group_by]=depwatch_log_sync_operations_total
for label in mtail depwatch depwatch+group_by; do : >"$W/$label.tsv"; done
for ((i = 1; i <= RUNS; i++)); do oneshot_run mtail "$i"; done
# Alternated, so that other load on the machine falls on both alike.
for ((i = 1; i <= RUNS; i++)); do
  oneshot_run depwatch "$i"
  oneshot_run depwatch+group_by "$i"
done
for label in mtail depwatch depwatch+group_by; do oneshot_report "$label"; done

# ---------------------------------------------------------------- tail mode
# Each run is a fresh daemon on a fresh file and state; the medians of RUNS
# runs are reported (one run of about a second is mostly polling
# granularity), the two depwatch variants interleaved.
declare -A TAIL TAIL_LPS TAIL_CPU TAIL_HWM TAIL_COUNT
tail_run() {   # label i url metric file cmd...
  local label=$1 i=$2 url=$3 metric=$4 file=$5; shift 5
  : >"$file"
  "$@" >"$W/$label-tail-$i.out" 2>"$W/$label-tail-$i.err" &
  local pid=$!
  PIDS+=("$pid")
  local deadline=$((SECONDS + 30))
  until curl -s --max-time 2 -o /dev/null "$url"; do
    ((SECONDS < deadline)) || die "$label did not answer $url"
    sleep 0.2
  done
  sleep 1
  log "tail $label run $i/$RUNS: appending $LINES lines"
  local t0 c0 t1 c1 count=0
  t0=$(date +%s.%N); c0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  cat "$LOG" >>"$file"
  deadline=$((SECONDS + TAIL_MAX))
  while ((SECONDS < deadline)); do
    count=$(curl -s --max-time 5 "$url" | metric_sum "$metric" || true)
    ((count >= LINES)) && break
    sleep 0.05
  done
  t1=$(date +%s.%N); c1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  awk -v a="$t0" -v b="$t1" -v ca="$c0" -v cb="$c1" -v hz="$(getconf CLK_TCK)" \
    -v hwm="$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")" -v n="$count" \
    'BEGIN { printf "%.2f\t%.2f\t%d\t%d\n", b - a, (cb - ca) / hz, hwm, n }' >>"$W/$label-tail.tsv"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
tail_report() {   # label: medians of wall and CPU, the highest peak RSS, the fewest lines counted
  local label=$1 wall cpu
  wall=$(cut -f1 "$W/$label-tail.tsv" | median)
  cpu=$(cut -f2 "$W/$label-tail.tsv" | median)
  TAIL_HWM[$label]=$(cut -f3 "$W/$label-tail.tsv" | sort -g | tail -n1)
  TAIL_COUNT[$label]=$(cut -f4 "$W/$label-tail.tsv" | sort -g | head -n1)
  TAIL_LPS[$label]=$(awk -v n="$LINES" -v w="$wall" 'BEGIN { printf "%.0f", n / w }')
  TAIL_CPU[$label]=$cpu
  TAIL[$label]="| $label | tail (median of $RUNS) | $LINES | $wall | ${TAIL_LPS[$label]} | $cpu | ${TAIL_HWM[$label]} | ${TAIL_COUNT[$label]} |"
}
for ((i = 1; i <= RUNS; i++)); do
  PM=$(free_port)
  tail_run mtail "$i" "http://127.0.0.1:$PM/metrics" bench_log_lines_total "$W/tail-mtail-$i.log" \
    mtail --progs "$W/progs" --logs "$W/tail-mtail-$i.log" --address 127.0.0.1 --port "$PM" --logtostderr
done
for ((i = 1; i <= RUNS; i++)); do
  PD=$(free_port)
  dw_config "$W/tail-depwatch-$i.log" "$PD" "$W/state-tail-$i" >"$W/tail-$i.yml"
  tail_run depwatch "$i" "http://127.0.0.1:$PD/metrics" depwatch_log_sync_operations_total "$W/tail-depwatch-$i.log" \
    "$DEPWATCH" --config "$W/tail-$i.yml"
  PG=$(free_port)
  dw_config "$W/tail-grouped-$i.log" "$PG" "$W/state-tail-grouped-$i" "$GROUP_BY" >"$W/tail-grouped-$i.yml"
  tail_run depwatch+group_by "$i" "http://127.0.0.1:$PG/metrics" depwatch_log_sync_operations_total "$W/tail-grouped-$i.log" \
    "$DEPWATCH" --config "$W/tail-grouped-$i.yml"
done
for t in mtail depwatch depwatch+group_by; do tail_report "$t"; done

# ---------------------------------------------------------------- report
echo "# Log → metrics: depwatch vs mtail ($(date -u +%FT%TZ))"
echo
echo "$LINES JSON lines, $BYTES bytes; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))."
echo
echo "| tool | mode | lines | wall s | lines/s | CPU s | peak RSS kB | lines counted |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for t in mtail depwatch depwatch+group_by; do echo "${ONE[$t]}"; done
for t in mtail depwatch depwatch+group_by; do echo "${TAIL[$t]}"; done
echo
cost() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (1 - b / a) * 100 }'; }
more() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b / a - 1) * 100 }'; }
echo "group_by cost (two fields, 20 categories; budget 15%):"
echo
echo "- lines/s: one-shot $(cost "${ONE_LPS[depwatch]}" "${ONE_LPS[depwatch+group_by]}")% fewer, tail $(cost "${TAIL_LPS[depwatch]}" "${TAIL_LPS[depwatch+group_by]}")% fewer (tail mode includes the polling of /metrics);"
echo "- CPU seconds for the same lines: one-shot $(more "${ONE_CPU[depwatch]}" "${ONE_CPU[depwatch+group_by]}")% more, tail $(more "${TAIL_CPU[depwatch]}" "${TAIL_CPU[depwatch+group_by]}")% more (less sensitive to other load on the machine)."
echo
echo "One-shot speed-up: $(awk -v a="${ONE_LPS[depwatch]}" -v b="${ONE_LPS[mtail]}" 'BEGIN { printf "%.1f", a / b }')× mtail's lines/s; peak RSS $(awk -v a="${ONE_RSS[depwatch]}" -v b="${ONE_RSS[mtail]}" 'BEGIN { printf "%.2f", a / b }')× mtail's."
echo
echo "Tail mode includes the 0.05 s polling of /metrics and each tool's own poll interval (depwatch 250 ms)."
echo
echo "Versions: $("$DEPWATCH" --version); $(mtail --version 2>&1 | head -n1)."
echo
echo 'mtail program:'
echo '```'; cat "$W/progs/bench.mtail"; echo '```'
# shellcheck disable=SC2016 # backquotes are Markdown here
echo 'depwatch configuration (one-shot: `depwatch replay-log --config oneshot.yml bench.log`):'
echo '```yaml'; cat "$W/oneshot.yml"; echo '```'
echo 'The group_by variant adds to the rule:'
echo '```yaml'; echo "$GROUP_BY"; echo '```'

for t in mtail depwatch depwatch+group_by; do
  key=${t/+/_}
  result "logs.oneshot_lps_$key" "${ONE_LPS[$t]}"
  result "logs.oneshot_cpu_s_$key" "${ONE_CPU[$t]}"
  result "logs.oneshot_hwm_kb_$key" "${ONE_RSS[$t]}"
  result "logs.tail_lps_$key" "${TAIL_LPS[$t]}"
  result "logs.tail_cpu_s_$key" "${TAIL_CPU[$t]}"
  result "logs.tail_hwm_kb_$key" "${TAIL_HWM[$t]}"
done
result logs.lines "$LINES"
