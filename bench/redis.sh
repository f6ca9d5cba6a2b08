#!/usr/bin/env bash
# Benchmark: depwatch's Redis queue checks vs redis_exporter scrapes, side by
# side in one run against the same redis-server holding 50 BullMQ queues of
# 10,000 jobs each (jobs in every state, job hashes, locks).
#
#   bench/redis.sh            # 200 rounds each (BENCH_ROUNDS to change)
#   Knobs: BENCH_ROUNDS [200] BENCH_QUEUES [50] BENCH_JOBS [10000]
#          DEPWATCH_BIN [$CARGO_TARGET_DIR/release/depwatch]
#          BENCH_RESULTS [] a file that receives KEY=VALUE results (bench/all.sh)
#
# Measures, per tool: CPU time of its own process (utime+stime from
# /proc/PID/stat), wall time of the rounds, and what the rounds cost Redis:
# read events (`total_reads_processed`, one per request burst = round trips),
# commands (INFO commandstats) and Redis CPU. redis_exporter runs with
# --check-single-keys on the same 450 queue keys depwatch reads.
# Everything binds 127.0.0.1 on free ports; every process started here is
# killed by PID at exit. Needs: redis-server, redis-cli,
# prometheus-redis-exporter (Debian packages), curl, python3, and a release
# build (`cargo build --release`, CARGO_TARGET_DIR honoured).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

ROUNDS=${BENCH_ROUNDS:-200}
QUEUES=${BENCH_QUEUES:-50}
JOBS=${BENCH_JOBS:-10000}
TARGET=${CARGO_TARGET_DIR:-target}
DEPWATCH=${DEPWATCH_BIN:-$TARGET/release/depwatch}
TOKEN=bench-admin-token-0123456789

for p in redis-server redis-cli prometheus-redis-exporter curl python3; do
  command -v "$p" >/dev/null || { echo "missing $p (apt-get install redis-server prometheus-redis-exporter curl python3)" >&2; exit 1; }
done
[ -x "$DEPWATCH" ] || { echo "no release build at $DEPWATCH: run cargo build --release" >&2; exit 1; }

scratch depwatch-bench-redis

hz=$(getconf CLK_TCK)

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$W/redis.log" 2>&1 &
RPID=$!; PIDS+=("$RPID")
wait_port "$RPORT"
rc() { redis-cli -p "$RPORT" "$@"; }

echo "loading $QUEUES queues x $JOBS jobs..." >&2
python3 - "$QUEUES" "$JOBS" >"$W/fixture.resp" <<'EOF'
import sys, time
queues, jobs = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
def cmd(*a):
    out.write(b"*%d\r\n" % len(a))
    for x in a:
        x = str(x).encode()
        out.write(b"$%d\r\n%s\r\n" % (len(x), x))
now = int(time.time() * 1000)
# Per queue: 60% waiting, 1% active (half with a live lock), 10% delayed,
# 2% prioritized, 17% completed, 10% failed.
for q in range(queues):
    b = f"bull:q{q}"
    cmd("HSET", f"{b}:meta", "opts.maxLenEvents", 10000, "version", "bullmq:5.0.0")
    cmd("SET", f"{b}:id", jobs)
    for j in range(1, jobs + 1):
        r = j % 100
        ts = now - (jobs - j) * 1000
        fields = ["name", "sync", "data", '{"user":%d}' % j, "opts", "{}", "timestamp", ts, "delay", 0, "priority", 0]
        if r < 60:
            cmd("LPUSH", f"{b}:wait", j)
        elif r < 61:
            fields += ["processedOn", ts + 500]
            cmd("LPUSH", f"{b}:active", j)
            if j % 2 == 0:
                cmd("SET", f"{b}:{j}:lock", "token", "PX", 3600000)
        elif r < 71:
            cmd("ZADD", f"{b}:delayed", (now + 60000) * 4096 + j, j)
        elif r < 73:
            cmd("ZADD", f"{b}:prioritized", (1 << 32) + j, j)
        elif r < 90:
            fields += ["processedOn", ts + 500, "finishedOn", ts + 900]
            cmd("ZADD", f"{b}:completed", ts + 900, j)
        else:
            fields += ["processedOn", ts + 500, "finishedOn", ts + 900]
            cmd("ZADD", f"{b}:failed", ts + 900, j)
        cmd("HSET", f"{b}:{j}", *fields)
EOF
rc --pipe <"$W/fixture.resp" >/dev/null
echo "redis keys: $(rc DBSIZE)" >&2

# depwatch: one probe reading every queue.
DPORT=$(free_port)
{
  echo "listen: 127.0.0.1:$DPORT"
  echo "state_dir: $W/state"
  echo "auth:"
  echo "  admin_token: $TOKEN"
  echo "probes:"
  echo "  - name: jobs"
  echo "    kind: redis"
  echo "    url: redis://127.0.0.1:$RPORT/0"
  echo "    interval: 1h"
  echo "    timeout: 5s"
  echo "    jitter: 0s"
  echo "    queues:"
  for q in $(seq 0 $((QUEUES - 1))); do echo "      - { name: q$q, type: bullmq, prefix: bull }"; done
} >"$W/depwatch.yml"
# The same without the stalled-job scan (one lock lookup per active job).
DPORT2=$(free_port)
sed -e "s/^listen: .*/listen: 127.0.0.1:$DPORT2/" -e "s#^state_dir: .*#state_dir: $W/state2#" \
  -e 's/^    jitter: 0s/    jitter: 0s\n    max_active_scan: 0/' "$W/depwatch.yml" >"$W/depwatch-noscan.yml"

# redis_exporter: the same keys as single keys.
keys=()
for q in $(seq 0 $((QUEUES - 1))); do
  for k in wait active paused delayed prioritized waiting-children completed failed meta; do
    keys+=("db0=bull:q$q:$k")
  done
done
EPORT=$(free_port)
SINGLE=$(IFS=,; echo "${keys[*]}")

redis_stat() { rc INFO all | tr -d '\r' | awk -F: -v k="$1" '$1 == k {print $2}'; }
redis_cmds() { rc INFO commandstats | tr -d '\r' | awk -F'calls=' '/^cmdstat_/ {split($2, a, ","); s += a[1]} END {print s}'; }
redis_cpu() { rc INFO cpu | tr -d '\r' | awk -F: '$1 == "used_cpu_user" || $1 == "used_cpu_sys" {s += $2} END {printf "%.3f", s}'; }

# measure NAME PID CMD...: runs `CMD N` (N rounds in one curl, so that curl's
# own start-up stays out of the wall time), prints one result line.
measure() {
  local name=$1 pid=$2; shift 2
  "$@" 1 >/dev/null # warm-up round: connections, script load
  local c0 r0 n0 u0 t0 t1
  c0=$(cpu_ticks "$pid"); r0=$(redis_stat total_reads_processed); n0=$(redis_cmds); u0=$(redis_cpu)
  t0=$(date +%s.%N)
  "$@" "$ROUNDS" >/dev/null
  t1=$(date +%s.%N)
  local c1 r1 n1 u1
  c1=$(cpu_ticks "$pid"); r1=$(redis_stat total_reads_processed); n1=$(redis_cmds); u1=$(redis_cpu)
  # The INFO calls of this function are 3 reads and 3 commands of their own.
  python3 - "$name" "$ROUNDS" "$hz" "$c0" "$c1" "$t0" "$t1" "$r0" "$r1" "$n0" "$n1" "$u0" "$u1" <<'EOF'
import sys
name, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c0, c1, t0, t1, r0, r1, n0, n1, u0, u1 = map(float, sys.argv[4:])
cpu = (c1 - c0) / hz
print(f"{name}\t{cpu:.3f}\t{(t1 - t0):.3f}\t{cpu / rounds * 1000:.3f}\t{(t1 - t0) / rounds * 1000:.2f}\t{(r1 - r0 - 3) / rounds:.2f}\t{(n1 - n0 - 3) / rounds:.1f}\t{(u1 - u0) / rounds * 1000:.3f}")
EOF
}

"$DEPWATCH" --config "$W/depwatch.yml" >"$W/depwatch.out" 2>"$W/depwatch.log" &
DPID=$!; PIDS+=("$DPID")
wait_port "$DPORT"
"$DEPWATCH" --config "$W/depwatch-noscan.yml" >"$W/depwatch2.out" 2>"$W/depwatch2.log" &
DPID2=$!; PIDS+=("$DPID2")
wait_port "$DPORT2"
prometheus-redis-exporter -redis.addr "redis://127.0.0.1:$RPORT" -web.listen-address "127.0.0.1:$EPORT" \
  -check-single-keys "$SINGLE" >"$W/exporter.log" 2>&1 &
EPID=$!; PIDS+=("$EPID")
wait_port "$EPORT"

# N sequential requests on one kept-alive connection.
repeat() { local n=$1 url=$2 i; for i in $(seq 1 "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url"; done; }
check_depwatch() { repeat "${1:-1}" "http://127.0.0.1:$DPORT/api/admin/probes/jobs/run" | curl -sf -X POST -H "Authorization: Bearer $TOKEN" -K -; }
check_depwatch_noscan() { repeat "${1:-1}" "http://127.0.0.1:$DPORT2/api/admin/probes/jobs/run" | curl -sf -X POST -H "Authorization: Bearer $TOKEN" -K -; }
scrape_exporter() { repeat "${1:-1}" "http://127.0.0.1:$EPORT/metrics" | curl -sf -K -; }
check_seconds() { curl -sf "http://127.0.0.1:$DPORT/metrics" | awk '/^depwatch_check_duration_seconds_(sum|count)\{/ && index($0, "component=\"jobs\"") {split($1, a, "{"); v[a[1]] = $NF} END {printf "%.6f %d", v["depwatch_check_duration_seconds_sum"], v["depwatch_check_duration_seconds_count"]}'; }

# Both must see the same queues before timing.
check_depwatch 1 >/dev/null
dw_wait=$(curl -sf "http://127.0.0.1:$DPORT/metrics" | awk '/^depwatch_queue_jobs\{/ && index($0, "component=\"jobs\"") && index($0, "queue=\"q0\"") && index($0, "state=\"waiting\"") {print $NF}')
ex_wait=$(curl -sf "http://127.0.0.1:$EPORT/metrics" | awk '/^redis_key_size\{db="db0",key="bull:q0:wait"\}/ {print $2}')
echo "q0 waiting: depwatch=$dw_wait redis_exporter=$ex_wait" >&2

echo "timing $ROUNDS rounds each..." >&2
read -r s0 n0 <<<"$(check_seconds)"
dw=$(measure depwatch "$DPID" check_depwatch)
read -r s1 n1 <<<"$(check_seconds)"
dw2=$(measure "depwatch, max_active_scan: 0" "$DPID2" check_depwatch_noscan)
ex=$(measure redis_exporter "$EPID" scrape_exporter)

python3 - "$dw" "$ex" "$ROUNDS" "$QUEUES" "$JOBS" "$s0" "$s1" "$n0" "$n1" "$dw2" <<'EOF'
import sys
rows = [l.split("\t") for l in sys.argv[1:3]]
rounds, queues, jobs = sys.argv[3:6]
s0, s1, n0, n1 = map(float, sys.argv[6:10])
noscan = sys.argv[10].split("\t")
print(f"## depwatch checks vs redis_exporter scrapes ({rounds} rounds, {queues} BullMQ queues x {jobs} jobs)\n")
print("| tool | CPU s (total) | wall s (total) | CPU ms/round | wall ms/round | Redis round trips/round | Redis commands/round | Redis CPU ms/round |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in [rows[0], noscan, rows[1]]:
    print("| " + " | ".join(r) + " |")
d, e = ([float(x) for x in r[1:]] for r in rows)
ratio = lambda a, b: f"{a / b:.2f}" if b else "n/a"
print()
print(f"- CPU per round, depwatch / redis_exporter: {ratio(d[2], e[2])}")
print(f"- wall per round, depwatch / redis_exporter: {ratio(d[3], e[3])}")
print(f"- Redis round trips per round: depwatch {d[4]:.2f}, redis_exporter {e[4]:.0f} ({e[4] / d[4]:.0f}x fewer)")
print(f"- Redis CPU per round, depwatch / redis_exporter: {ratio(d[6], e[6])}")
if n1 > n0:
    print(f"- depwatch's own check duration (PING+INFO+{queues} queue scripts, one round trip): {(s1 - s0) / (n1 - n0) * 1000:.2f} ms mean over {int(n1 - n0)} checks")
print("\ndepwatch reads more per round (per-state counts, oldest waiting/active job ages, stalled jobs via lock keys) than redis_exporter's key sizes.")
EOF

for t in "depwatch:$dw" "depwatch_noscan:$dw2" "exporter:$ex"; do
  key=${t%%:*}; row=${t#*:}
  result "redis.cpu_ms_$key" "$(cut -f4 <<<"$row")"
  result "redis.wall_ms_$key" "$(cut -f5 <<<"$row")"
  result "redis.round_trips_$key" "$(cut -f6 <<<"$row")"
  result "redis.redis_cpu_ms_$key" "$(cut -f8 <<<"$row")"
done
