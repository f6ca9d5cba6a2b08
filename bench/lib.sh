# shellcheck shell=bash
# bench/lib.sh — helpers the benchmark scripts share (sourced, not run).
# Everything here reads /proc or talks to 127.0.0.1 only.
#
# Pipes and `set -o pipefail`: never end a pipe with a reader that stops
# early (`head`, `grep -q`, `awk '... exit'`) while the writer may still be
# writing: the writer dies of SIGPIPE and the pipe fails with 141 once its
# output outgrows the pipe buffer. Take the first line, the minimum or a
# match with awk (which reads to the end), or from a file or a variable.

# A free TCP port on 127.0.0.1 (bound and released).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Whether something listens on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits up to 10 s for 127.0.0.1:PORT to accept connections; exits otherwise.
wait_port() {
  local i
  for ((i = 0; i < 200; i++)); do port_open "$1" && return 0; sleep 0.05; done
  echo "port $1 never opened" >&2
  exit 1
}

# A process's user and system CPU in clock ticks, "USER SYSTEM" (the
# command name may hold spaces); cpu_ticks: their sum.
cpu_split() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
cpu_ticks() { cpu_split "$1" | awk '{print $1 + $2}'; }
# The user and system CPU ticks of PID's threads other than those named
# NAME (depwatch runs its checks on a thread of their own, depwatch-checks):
# what the rest (the HTTP server's workers) used.
cpu_ticks_except() {
  local t sum=0
  for t in /proc/"$1"/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == "$2" ]] && continue
    sum=$((sum + $(sed 's/^.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
  done
  echo "$sum"
}

# A field of /proc/PID/status in kB: rss_kb PID [VmRSS|VmHWM] (default VmRSS).
rss_kb() { awk -v k="${2:-VmRSS}:" '$1 == k {print $2}' "/proc/$1/status"; }

# A wrk latency (850.00us, 1.23ms, 1.02s) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "?" }'
}

# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# The smallest and the largest number on stdin, one per line: "MIN MAX"
# ("n/a n/a" when there is none). Reads everything (safe under pipefail).
min_max() { awk 'NR == 1 || $1 < lo { lo = $1 } NR == 1 || $1 > hi { hi = $1 } END { if (NR) print lo, hi; else print "n/a n/a" }'; }

# The first line of stdin; reads everything (unlike head -n1 under pipefail).
first_line() { awk 'NR == 1'; }

# Records one result of a benchmark: `result KEY VALUE` prints
# "RESULT KEY=VALUE" on stderr and, when BENCH_RESULTS names a file (as
# bench/all.sh sets it), appends "KEY=VALUE" to it. KEY is part.name
# ([a-z0-9_.]); VALUE is one word (a number, yes/no); empty is written n/a.
result() {
  local v=${2:-n/a}
  [[ $1 =~ ^[a-z0-9_.]+$ && $v != *[[:space:]=]* ]] || { echo "result: bad key or value: '$1' '$v'" >&2; return 1; }
  echo "RESULT $1=$v" >&2
  if [[ -n ${BENCH_RESULTS:-} ]]; then echo "$1=$v" >>"$BENCH_RESULTS"; fi
}

# A / B with two decimals ("n/a" when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# Writes DIR/nginx.conf for one foreground nginx process (no master, one
# worker) serving ROOT on 127.0.0.1:PORT, with its temp files under DIR:
# nginx_conf DIR PORT ROOT WORKER_CONNECTIONS 'http-level directives'
# Start it with: nginx -p DIR/ -c DIR/nginx.conf -e DIR/error.log
nginx_conf() {
  local d=$1 port=$2 root=$3 conns=$4 extra=$5
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $conns; }
http {
  $extra
  default_type application/json;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  server { listen 127.0.0.1:$port; root $root; }
}
EOF
}

# Progress on stderr: `log MSG` with the time (and LOG_TAG, when a script
# sets one); `die MSG` logs and exits 1.
log() { printf '[%s] %s%s\n' "$(date +%T)" "${LOG_TAG:+$LOG_TAG: }" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# Whether PID is a running process (not gone, not a zombie).
alive() {
  local st
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $st && $st != Z ]]
}

# Stops one process by PID: TERM, up to 5 s, then KILL; reaps it.
stop() {
  local i
  kill -TERM "$1" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do alive "$1" || break; sleep 0.1; done
  if alive "$1"; then kill -KILL "$1" 2>/dev/null || true; fi
  wait "$1" 2>/dev/null || true
}

# The processes a script started (it appends their PIDs: `PIDS+=($!)`) and
# its scratch directory, made by `scratch NAME` into $W. `scratch` also sets
# the traps: at exit every PID is stopped (TERM to all first, then `stop`
# each) and $W removed (kept with BENCH_KEEP_WORK=1); INT and TERM exit
# through it with 130 and 143.
PIDS=()
W=
scratch() {
  W=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
bench_cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do stop "$p"; done
  if [[ -n $W ]]; then
    if [[ ${BENCH_KEEP_WORK:-0} == 1 ]]; then log "kept $W"; else rm -rf "$W"; fi
  fi
  exit "$rc"
}

# The setup of bench/checks-ab.sh and bench/scrape-ab.sh: one nginx serving
# a 200-byte JSON file, and the builds BIN[A] and BIN[B] side by side, each
# with NPROBES http probes of it at INTERVAL seconds (jitter JITTER). Sets
# P_NGINX, PORT[A|B] and PID[A|B] (the caller declares `declare -A BIN PORT
# PID`); every process goes into PIDS, stopped by the EXIT trap of scratch.
ab_start() {
  P_NGINX=$(free_port)
  mkdir -p "$W/www"
  printf '{"status":"ok","pad":"%0173d"}\n' 0 >"$W/www/status.json"
  nginx_conf "$W/nginx" "$P_NGINX" "$W/www" 65536 "access_log off; keepalive_timeout 5s;"
  nginx -p "$W/nginx/" -c "$W/nginx/nginx.conf" -e "$W/nginx/error.log" &
  PIDS+=($!)
  wait_port "$P_NGINX"
  local k i
  for k in A B; do
    PORT[$k]=$(free_port)
    mkdir -p "$W/$k"
    {
      echo "listen: 127.0.0.1:${PORT[$k]}"
      echo "state_dir: $W/$k/state"
      echo "health:"
      echo "  cache_ttl: $((INTERVAL * 2))s"
      echo "defaults:"
      echo "  interval: ${INTERVAL}s"
      echo "  timeout: 5s"
      echo "  jitter: $JITTER"
      echo "probes:"
      for ((i = 0; i < NPROBES; i++)); do
        printf '  - { name: p%04d, kind: http, url: "http://127.0.0.1:%s/status.json?p=%d", expect: { body_json: { "/status": "ok" } } }\n' "$i" "$P_NGINX" "$i"
      done
    } >"$W/$k/depwatch.yml"
    (cd "$W/$k" && { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; } && exec "${BIN[$k]}" --config "$W/$k/depwatch.yml") >"$W/$k.log" 2>&1 &
    PID[$k]=$!
    PIDS+=("${PID[$k]}")
  done
  for k in A B; do wait_port "${PORT[$k]}"; done
}
