#!/usr/bin/env bash
# Replication figures (issue 6's benchmark) with two release nodes on loopback:
#   1. C-STORE ingest on node A, one association, in interleaved rounds:
#      standalone, with a synchronous peer B, with an asynchronous peer B;
#   2. the asynchronous lag (seconds behind, sampled from A's /metrics every
#      100 ms) while one association ingests at full speed;
#   3. the time B needs to catch up on RESYNC instances stored while it was down.
#
#   cargo build --release && bench/replication.sh
# Environment: ROUNDS (3), COUNT instances per ingest run (1000), RESYNC (10000),
# B_ROOT: where node B keeps its data (default beside A's; a directory on another
# device stands in for the second site's own disk, e.g. /dev/shm on a one-disk VM).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HANEUL="$ROOT/target/release/haneul"
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-1000}
RESYNC=${RESYNC:-10000}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/haneul-replication-bench.XXXXXX")
B_ROOT=${B_ROOT:-$WORK}
data_dir() { # name
    if [[ $1 == b ]]; then echo "$B_ROOT/b"; else echo "$WORK/$1"; fi
}
[[ -x $HANEUL ]] || { echo "build first: cargo build --release" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
A_DICOM=$(free_port); A_HTTP=$(free_port); B_DICOM=$(free_port); B_HTTP=$(free_port)
A_PID=; B_PID=
cleanup() {
    [[ -n $A_PID ]] && kill "$A_PID" 2>/dev/null || true
    [[ -n $B_PID ]] && kill "$B_PID" 2>/dev/null || true
    rm -rf "$WORK"/a "$B_ROOT"/b
}
trap cleanup EXIT

listening() { # port pid
    wait_port "$1" "$2" || { tail -n 20 "$WORK"/*.log >&2; exit 1; }
}

start_node() { # name dicom-port http-port ae extra-toml
    local name=$1 config="$WORK/$1.toml"
    printf '[storage]\ndata_dir = "%s"\n[dicom]\nae_title = "%s"\nlisten = "127.0.0.1:%s"\n[http]\nlisten = "127.0.0.1:%s"\nanonymous_role = "admin"\n%s' \
        "$(data_dir "$name")" "$4" "$2" "$3" "$5" >"$config"
    HANEUL_ADMIN_PASSWORD=bench-admin-password "$HANEUL" serve --config "$config" >>"$WORK/$name.log" 2>&1 &
    local pid=$!
    listening "$2" "$pid"; listening "$3" "$pid"
    if [[ $name == a ]]; then A_PID=$pid; else B_PID=$pid; fi
}
stop_node() { # pid
    kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true
}
peer_toml() { # mode
    printf '[[peer]]\nname = "b"\nae_title = "NODEB"\nhost = "127.0.0.1"\nport = %s\nmode = "%s"\n' "$B_DICOM" "$1"
}
instances_on() { # http-port
    curl -sf "http://127.0.0.1:$1/api/statistics" | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances"])'
}
metric() { # name
    curl -sf "http://127.0.0.1:$A_HTTP/metrics" | awk -v n="$1{peer=\"b\"}" '$1 == n { print $2 }'
}

RESULTS="$WORK/results.txt"
echo "== C-STORE on A, 1 association, $COUNT small instances, $ROUNDS interleaved rounds ($WORK)"
for round in $(seq 1 "$ROUNDS"); do
    case $((round % 3)) in 1) order="standalone sync async" ;; 2) order="sync async standalone" ;; *) order="async standalone sync" ;; esac
    for mode in $order; do
        rm -rf "$WORK/a" "$B_ROOT/b"
        start_node b "$B_DICOM" "$B_HTTP" NODEB ""
        extra=""; [[ $mode != standalone ]] && extra=$(peer_toml "$mode")
        start_node a "$A_DICOM" "$A_HTTP" NODEA "$extra"
        rate=$("$HANEUL" bench store --target "127.0.0.1:$A_DICOM" --called-ae NODEA --kind small --count "$COUNT" \
            --seed "$round" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["instances_per_second"])')
        echo "$mode $rate" >>"$RESULTS"
        echo "  round $round $mode: $rate inst/s"
        stop_node "$A_PID"; A_PID=; stop_node "$B_PID"; B_PID=
    done
done

echo "== asynchronous lag while one association ingests $COUNT instances"
rm -rf "$WORK/a" "$B_ROOT/b"
start_node b "$B_DICOM" "$B_HTTP" NODEB ""
start_node a "$A_DICOM" "$A_HTTP" NODEA "$(peer_toml async)"
"$HANEUL" bench store --target "127.0.0.1:$A_DICOM" --called-ae NODEA --kind small --count "$COUNT" --seed 77 --json \
    >"$WORK/lag-store.json" &
STORE_PID=$!
: >"$WORK/lag.txt"
while kill -0 "$STORE_PID" 2>/dev/null; do
    metric haneul_replication_lag_seconds >>"$WORK/lag.txt" || true
    sleep 0.1
done
started=$(date +%s.%N)
until [[ $(instances_on "$B_HTTP") -ge $COUNT ]]; do sleep 0.05; done
drained=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
echo "  lag samples (s): $(python3 -c "
import statistics
v = [float(x) for x in open('$WORK/lag.txt') if x.strip()]
print(f'n={len(v)} median={statistics.median(v):.3f} p95={sorted(v)[int(len(v) * 0.95) - 1]:.3f} max={max(v):.3f}')")"
echo "  B held everything $drained s after the last store was acknowledged"
stop_node "$A_PID"; A_PID=; stop_node "$B_PID"; B_PID=

echo "== resync: $RESYNC instances stored while B was down"
rm -rf "$WORK/a" "$B_ROOT/b"
start_node b "$B_DICOM" "$B_HTTP" NODEB ""
stop_node "$B_PID"; B_PID=
api_toml=$(printf '\nurl = "http://127.0.0.1:%s"\ntoken_file = "%s"\n' "$B_HTTP" "$WORK/b.token")
start_node a "$A_DICOM" "$A_HTTP" NODEA "$(peer_toml async)$api_toml"
"$HANEUL" bench store --target "127.0.0.1:$A_DICOM" --called-ae NODEA --kind small --count "$RESYNC" \
    --associations 4 --seed 99 >/dev/null
start_node b "$B_DICOM" "$B_HTTP" NODEB ""
started=$(date +%s.%N)
until [[ $(instances_on "$B_HTTP") -ge $RESYNC ]]; do sleep 0.2; done
echo "  B caught up on $RESYNC instances in $(python3 -c "import time; print(f'{time.time() - $started:.1f}')") s"

echo "== verify: A and B compared by digest trees ($RESYNC instances each)"
HANEUL_ADMIN_PASSWORD=bench-admin-password "$HANEUL" token create admin --name bench --config "$WORK/b.toml" >"$WORK/b.token"
for attempt in 1 2 3; do
    curl -sf -X POST "http://127.0.0.1:$A_HTTP/api/replication/peers/b/verify?repair=false" | python3 -c "
import json, sys
r = json.load(sys.stdin)
print('  equal=%s round_trips=%s duration=%.2f s instances=%s' % (r['equal'], r['round_trips'], r['duration_seconds'], r['local_instances']))"
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
median = {mode: statistics.median(float(rate) for m, rate in rows if m == mode) for mode in ("standalone", "sync", "async")}
print()
print("| C-STORE, 1 association | median inst/s | / standalone |")
print("|---|---|---|")
for mode in ("standalone", "sync", "async"):
    print(f"| {mode} | {median[mode]:.0f} | {median[mode] / median['standalone']:.2f} |")
PY
