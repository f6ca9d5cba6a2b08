#!/usr/bin/env bash
# bench/events.sh — the status page's weight with 20 components, and
# depwatch holding N idle /api/events streams (default 1,000): RSS before and
# with the streams, the streams gauge, that every stream still receives the
# next check, and the cap (one stream over events.max_streams is a 503).
#
# USAGE: bench/events.sh > bench/results/events-$(date +%F).md
#   Knobs: BENCH_STREAMS [1000] BENCH_SETTLE_S [5] DEPWATCH_BIN [target/release/depwatch, built if absent]
# Targets (issue 13): page < 100 KB for 20 components; 1,000 idle streams held.
#
# depwatch binds 127.0.0.1 on a free port; everything started is stopped by PID on exit.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."

STREAMS=${BENCH_STREAMS:-1000}
SETTLE=${BENCH_SETTLE_S:-5}
BIN=${DEPWATCH_BIN:-target/release/depwatch}

LOG_TAG=events
for b in curl python3; do command -v "$b" >/dev/null || die "missing $b"; done
if [[ ! -x $BIN ]]; then
  log "building depwatch (release)"
  cargo build --release --quiet
fi

scratch depwatch-bench

PORT=$(free_port)
{
  echo "listen: 127.0.0.1:$PORT"
  echo "state_dir: $W/state"
  echo "events:"
  echo "  max_streams: $STREAMS"
  echo "probes:"
  echo "  - { name: depwatch, kind: process, self: true, interval: 2s, timeout: 1s }"
  for i in $(seq 1 19); do
    mkdir -p "$W/disk$i"
    echo "  - { name: disk-$i, kind: storage, path: $W/disk$i, interval: 2s, timeout: 1s }"
  done
} >"$W/depwatch.yml"
"$BIN" --config "$W/depwatch.yml" >"$W/depwatch.log" 2>&1 &
PIDS+=($!)
DW=$!
wait_port "$PORT"
sleep "$SETTLE"

PAGE=$(curl -s "http://127.0.0.1:$PORT/" | wc -c)
GZ=$(curl -s "http://127.0.0.1:$PORT/" | gzip -9 | wc -c)
RSS0=$(rss_kb "$DW")
log "page $PAGE bytes, idle RSS ${RSS0} kB; opening $STREAMS streams"

# The client: N sockets, each sends a GET and reads its snapshot, then sits
# idle; after the settle time, it waits until every stream got one more
# event (the next round of checks) and asks for one stream over the cap.
python3 - "$PORT" "$STREAMS" "$SETTLE" "$W/go" >"$W/client.out" <<'PY' &
import os, resource, selectors, socket, sys, time
port, n, settle, go = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.setblocking(False)
    socks.append(s)

def read_until(marker, within):
    """Reads every socket until each has sent `marker`; how many did."""
    got = {s: b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    waiting, deadline = len(socks), time.time() + within
    while waiting and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                got[s] += s.recv(1 << 16)
            except BlockingIOError:
                continue
            if marker in got[s]:
                sel.unregister(s)
                waiting -= 1
    sel.close()
    return got

first = read_until(b"event: pipeline", 60)
ok = sum(1 for v in first.values() if v.startswith(b"HTTP/1.1 200") and b"event: pipeline" in v)
print(f"opened {ok}", flush=True)
time.sleep(settle)
# Drop what arrived while settling, then hold while the shell reads RSS.
for s in socks:
    try:
        while s.recv(1 << 16):
            pass
    except BlockingIOError:
        pass
print("idle", flush=True)
while not os.path.exists(go):
    time.sleep(0.1)
fresh = read_until(b"event: ", 30)
print(f"received {sum(1 for v in fresh.values() if b'event: ' in v)}", flush=True)
over = socket.create_connection(("127.0.0.1", port))
over.sendall(b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n")
over.settimeout(5)
print(f"over-cap {over.recv(64).split(b' ')[1].decode()}", flush=True)
PY
CLIENT=$!
PIDS+=("$CLIENT")
for _ in $(seq 1 1200); do grep -q '^idle' "$W/client.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^idle' "$W/client.out" || die "the client never settled: $(cat "$W/client.out")"
RSS1=$(rss_kb "$DW")
HWM=$(rss_kb "$DW" VmHWM)
GAUGE=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '$1 == "depwatch_events_streams" {print $2}')
THREADS=$(awk '$1 == "Threads:" {print $2}' "/proc/$DW/status")
touch "$W/go"
wait "$CLIENT" || true
OPENED=$(awk '$1 == "opened" {print $2}' "$W/client.out")
RECEIVED=$(awk '$1 == "received" {print $2}' "$W/client.out")
OVER=$(awk '$1 == "over-cap" {print $2}' "$W/client.out")

cat <<MD
# /api/events and the page — $(date -u +%F), $(nproc) cores, $(uname -r)

Command: \`bench/events.sh\` (BENCH_STREAMS=$STREAMS), release build, 20 components
(1 process, 19 storage) checked every 2 s.

| measure | value |
| --- | --- |
| page weight, 20 components | $PAGE bytes ($GZ gzipped) |
| RSS idle, no stream | $((RSS0 / 1024)) MiB ($RSS0 kB) |
| streams opened (200 + snapshot) | $OPENED of $STREAMS |
| depwatch_events_streams | $GAUGE |
| RSS with the streams idle | $((RSS1 / 1024)) MiB ($RSS1 kB); peak $((HWM / 1024)) MiB |
| RSS per stream | $(( (RSS1 - RSS0) / STREAMS )) kB |
| threads with the streams | $THREADS |
| streams that received the next check | $RECEIVED of $STREAMS |
| one stream over the cap | HTTP $OVER |
MD
