#!/usr/bin/env bash
# Measure Haneul and Orthanc side by side: same machine, same synthetic data,
# same run, rounds interleaved so background noise hits both alike. Medians
# of the rounds are reported, with Haneul/Orthanc ratios.
#
#   bench/compare-orthanc.sh            # everything (the catalog fill takes a while)
#   ROUNDS=5 SKIP_FIND=1 bench/compare-orthanc.sh
#
# Environment: ROUNDS (3), FIND_STUDIES (100000), FIND_INSTANCES_PER_STUDY (10),
# SKIP_FIND, SKIP_RSS, OUT (bench/out).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
FIND_STUDIES=${FIND_STUDIES:-100000}
FIND_INSTANCES_PER_STUDY=${FIND_INSTANCES_PER_STUDY:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
WORK=$(mktemp -d)
RESULTS="$OUT/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
HANEUL="$ROOT/target/release/haneul"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ORTHANC_PORT=$(free_port)
HANEUL_PORT=$(free_port)

cleanup() {
    [[ -n "${ORTHANC_PID:-}" ]] && kill "$ORTHANC_PID" 2>/dev/null || true
    [[ -n "${HANEUL_PID:-}" ]] && kill "$HANEUL_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v Orthanc >/dev/null; then
    echo "installing Orthanc from Debian's orthanc package"
    sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq orthanc >/dev/null
fi
(cd "$ROOT" && cargo build --release -q -p haneul)

wait_port() { # port pid
    for _ in $(seq 1 400); do
        if ! kill -0 "$2" 2>/dev/null; then echo "process $2 exited before listening on $1" >&2; return 1; fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    return 1
}

start_orthanc() {
    rm -rf "$WORK/orthanc"; mkdir -p "$WORK/orthanc"
    cat > "$WORK/orthanc.json" <<EOF
{ "Name": "bench", "StorageDirectory": "$WORK/orthanc", "IndexDirectory": "$WORK/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": $ORTHANC_PORT, "HttpServerEnabled": false,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true, "Plugins": [] }
EOF
    # Orthanc 1.10 networks through DCMTK, which disables Nagle only when told so.
    TCP_NODELAY=1 Orthanc "$WORK/orthanc.json" >"$WORK/orthanc.log" 2>&1 &
    ORTHANC_PID=$!
    wait_port $ORTHANC_PORT $ORTHANC_PID
}

start_haneul() {
    local data=$1
    "$HANEUL" serve --data "$data" --dicom-port $HANEUL_PORT --http "" >"$WORK/haneul.log" 2>&1 &
    HANEUL_PID=$!
    wait_port $HANEUL_PORT $HANEUL_PID
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

record() { # system scenario json
    echo "{\"system\":\"$1\",\"scenario\":\"$2\",\"result\":$3}" >> "$RESULTS"
}

run_store() { # system port ae scenario args...
    local system=$1 port=$2 ae=$3 scenario=$4; shift 4
    local json
    json=$("$HANEUL" bench store --target "127.0.0.1:$port" --called-ae "$ae" --json "$@")
    record "$system" "$scenario" "$json"
    echo "  $system $scenario: $(echo "$json" | python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency"]; print("%.1f inst/s, %.1f MB/s, p50 %.2f ms, p95 %.2f ms, failures %d" % (r["instances_per_second"], r["megabytes_per_second"], l["p50_ms"], l["p95_ms"], r["failures"]))')"
}

SCENARIOS=(
    "small-1|--kind small --count 2000 --associations 1 --per-study 100"
    "ct-1|--kind ct --count 500 --associations 1 --per-study 250"
    "small-8|--kind small --count 2000 --associations 8 --per-study 100"
    "ct-8|--kind ct --count 500 --associations 8 --per-study 250"
)

echo "== C-STORE throughput, $ROUNDS interleaved rounds (results in $RESULTS)"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    start_orthanc
    start_haneul "$WORK/haneul-$round"
    for entry in "${SCENARIOS[@]}"; do
        scenario=${entry%%|*}; args=${entry#*|}
        # Alternate who goes first, so neither always runs on a warmer machine.
        if (( round % 2 )); then
            run_store orthanc $ORTHANC_PORT ORTHANC "$scenario" $args
            run_store haneul $HANEUL_PORT HANEUL "$scenario" $args
        else
            run_store haneul $HANEUL_PORT HANEUL "$scenario" $args
            run_store orthanc $ORTHANC_PORT ORTHANC "$scenario" $args
        fi
    done
    stop "$ORTHANC_PID"; ORTHANC_PID=
    stop "$HANEUL_PID"; HANEUL_PID=
    rm -rf "$WORK/haneul-$round" "$WORK/orthanc"
done

if [[ -z "${SKIP_RSS:-}" ]]; then
    echo "== peak RSS while 8 associations each send one 200 MB instance"
    for system in haneul orthanc; do
        if [[ $system == haneul ]]; then start_haneul "$WORK/haneul-rss"; pid=$HANEUL_PID; port=$HANEUL_PORT; ae=HANEUL
        else start_orthanc; pid=$ORTHANC_PID; port=$ORTHANC_PORT; ae=ORTHANC; fi
        run_store "$system" "$port" "$ae" large-8 --kind large --size-mb 200 --count 8 --associations 8 --per-study 1
        peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        record "$system" peak-rss "{\"peak_rss_mb\":$((peak_kb / 1024))}"
        echo "  $system peak RSS: $((peak_kb / 1024)) MB"
        stop "$pid"; HANEUL_PID=; ORTHANC_PID=
    done
fi

if [[ -z "${SKIP_FIND:-}" ]]; then
    echo "== C-FIND, STUDY level, patient-name prefixes, on $FIND_STUDIES studies × $FIND_INSTANCES_PER_STUDY instances"
    "$HANEUL" bench fill --data "$WORK/haneul-find" --studies "$FIND_STUDIES" --instances-per-study "$FIND_INSTANCES_PER_STUDY"
    start_haneul "$WORK/haneul-find"
    json=$("$HANEUL" bench find --target "127.0.0.1:$HANEUL_PORT" --patients $((FIND_STUDIES / 2)) --queries 1000 --json)
    record haneul find "$json"
    echo "  haneul find: $json"
    stop "$HANEUL_PID"; HANEUL_PID=
fi

echo "== medians"
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for row in rows:
    by.setdefault((row["scenario"], row["system"]), []).append(row["result"])
def median(key, scenario, system):
    values = [r[key] for r in by.get((scenario, system), []) if key in r]
    return statistics.median(values) if values else None
print("| scenario | Orthanc inst/s | Haneul inst/s | ratio | Haneul p50 ms | Haneul p95 ms |")
print("|---|---|---|---|---|---|")
for scenario in ["small-1", "ct-1", "small-8", "ct-8", "large-8"]:
    o = median("instances_per_second", scenario, "orthanc")
    h = median("instances_per_second", scenario, "haneul")
    if h is None:
        continue
    lat = [r["latency"] for r in by[(scenario, "haneul")]]
    p50 = statistics.median(l["p50_ms"] for l in lat)
    p95 = statistics.median(l["p95_ms"] for l in lat)
    ratio = f"{h / o:.2f}×" if o else "n/a"
    print(f"| {scenario} | {o or 0:.1f} | {h:.1f} | {ratio} | {p50:.2f} | {p95:.2f} |")
for small, many in [("small-1", "small-8"), ("ct-1", "ct-8")]:
    a = median("instances_per_second", small, "haneul"); b = median("instances_per_second", many, "haneul")
    if a and b:
        print(f"Haneul {many} / {small}: {b / a:.2f}×")
for system in ["haneul", "orthanc"]:
    rss = median("peak_rss_mb", "peak-rss", system)
    if rss is not None:
        print(f"{system} peak RSS, 8 × 200 MB: {rss:.0f} MB")
find = by.get(("find", "haneul"))
if find:
    f = find[0]
    print(f"Haneul C-FIND patient-name prefix: p50 {f['latency']['p50_ms']:.2f} ms, p95 {f['latency']['p95_ms']:.2f} ms, {f['mean_matches']:.1f} matches on average")
PY
