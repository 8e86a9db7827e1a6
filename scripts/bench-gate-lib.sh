# The pieces the scripts/bench-gate* scripts share: sourced, with CONNS and DUR set, from the
# repository root. Installs what BENCH_NEEDS names where missing (wrk and HAProxy unless the
# script says otherwise), builds vitals and the test servers, and kills every server it started
# when the script exits.
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then SERVER_CPU="taskset -c 0"; LOAD_CPU="taskset -c 1"; else SERVER_CPU=""; LOAD_CPU=""; fi
need=()
for tool in ${BENCH_NEEDS:-wrk haproxy}; do
  command -v "$tool" >/dev/null || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q --locked -p vitals-cli -p vitals-test-util
T=$(mktemp -d)
# The servers start inside $(...) subshells: their pids go to a file, which cleanup reads (an
# array filled in a subshell stays empty in the script, and the servers would outlive it).
# Quiet: the shell would report each server it kills.
cleanup() { exec 2>/dev/null; [ -f "$T/pids" ] && while read -r p; do kill -9 "$p" 2>/dev/null || true; done < "$T/pids"; rm -rf "$T"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_hello() { # ms -> prints address
  $SERVER_CPU ./target/release/hyper-hello 127.0.0.1:0 "$1" > "$T/hello.$1" 2>/dev/null & echo $! >> "$T/pids"
  until [ -s "$T/hello.$1" ]; do sleep 0.05; done
  cat "$T/hello.$1"
}
gate_toml() { # name probe_port gate_port upstream max depth queue_timeout -> writes $T/name.toml
  printf '[server]\nlisten = "127.0.0.1:%s"\n[gate]\nlisten = "127.0.0.1:%s"\nupstream = "http://%s"\nmax_concurrent = %s\nqueue_depth = %s\nqueue_timeout = "%s"\nrequest_timeout = "30s"\n[gate.retry]\nattempts = 0\n' \
    "$2" "$3" "$4" "$5" "$6" "$7" > "$T/$1.toml"
}
start_gate() { # name upstream max depth queue_timeout [vitals binary] -> prints the gate's address; probe address in $T/name.probe
  local name=$1 up=$2 max=$3 depth=$4 qt=$5 bin=${6:-./target/release/vitals} port probe
  port=$(free_port); probe=$(free_port)
  gate_toml "$name" "$probe" "$port" "$up" "$max" "$depth" "$qt"
  RUST_LOG=warn $SERVER_CPU "$bin" serve --config "$T/$name.toml" 2>"$T/$name.log" >/dev/null & echo $! >> "$T/pids"; echo $! > "$T/$name.pid"
  until curl -fs "http://127.0.0.1:$probe/readyz" >/dev/null 2>&1; do sleep 0.05; done
  echo "127.0.0.1:$probe" > "$T/$name.probe"
  echo "127.0.0.1:$port"
}
start_bare() { # upstream -> prints the address of hyper-proxy, the smallest hyper proxy, in front of it
  $SERVER_CPU ./target/release/hyper-proxy 127.0.0.1:0 "$1" > "$T/bare.addr" 2>/dev/null & echo $! >> "$T/pids"; echo $! > "$T/bare.pid"
  until [ -s "$T/bare.addr" ]; do sleep 0.05; done
  cat "$T/bare.addr"
}
start_haproxy() { # name upstream maxconn queue_timeout -> prints address
  local name=$1 up=$2 max=$3 qt=$4 port
  port=$(free_port)
  cat > "$T/$name.cfg" <<CFG
global
  maxconn 4096
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout queue $qt
frontend f
  bind 127.0.0.1:$port
  default_backend b
backend b
  server up $up maxconn $max
CFG
  $SERVER_CPU haproxy -db -f "$T/$name.cfg" >"$T/$name.log" 2>&1 & echo $! >> "$T/pids"; echo $! > "$T/$name.pid"
  until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.05; done
  echo "127.0.0.1:$port"
}
# wrk: "<req/s> <p50 ms>"; with a pid as $2 and CPU=1, also "<µs of that process's CPU a request>"
# (perf stat's task-clock over the run, user and kernel time together).
run_wrk() {
  local sp=""
  : > "$T/cpu.out"
  if [ "${CPU:-0}" = 1 ] && [ -n "${2:-}" ]; then
    perf stat -x, -e task-clock -p "$2" -o "$T/cpu.out" -- sleep "${DUR%s}" 2>/dev/null & sp=$!
  fi
  $LOAD_CPU wrk -t1 -c"$CONNS" -d"$DUR" --latency "http://$1/v1/completions" > "$T/wrk.out" 2>&1
  [ -z "$sp" ] || wait "$sp"
  awk -v ms="$(awk -F, '/task-clock/ {print $1}' "$T/cpu.out")" -v d="${DUR%s}" '/Requests\/sec/ {r=$2} /^ +50%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p=v} END {printf "%s %.3f", r, p; if (ms != "") printf " %.2f", ms * 1000 / (r * d); print ""}' "$T/wrk.out"
}
