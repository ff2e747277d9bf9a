#!/usr/bin/env bash
# Measure Haneul and Orthanc side by side: same machine, same synthetic data,
# same run, rounds interleaved so background noise hits both alike. Medians
# of the rounds are reported, with Haneul/Orthanc ratios.
#
#   bench/compare-orthanc.sh            # everything (the catalog fill takes a while)
#   ROUNDS=5 SKIP_FIND=1 bench/compare-orthanc.sh
#   ONLY_WEB=1 bench/compare-orthanc.sh # DICOMweb only, against Orthanc's DICOMweb plugin
#
# Environment: ROUNDS (3), WITHOUT_WRITE_AHEAD (also measure a Haneul whose
# every store waits for its own file's fsync: storage.write_ahead_max_bytes = 0),
# FIND_STUDIES (100000), FIND_INSTANCES_PER_STUDY (10),
# SKIP_FIND, SKIP_RSS, OUT (bench/out); for DICOMweb: SKIP_WEB, ONLY_WEB,
# SKIP_QIDO (skips the large fill), WEB_CT_INSTANCES (500), WEB_METADATA_REQUESTS (20),
# WEB_RETRIEVALS (5), QIDO_STUDIES (3000, the catalog both servers hold),
# QIDO_QUERIES (500).
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
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
ORTHANC_PORT=$(free_port)
HANEUL_PORT=$(free_port)
ORTHANC_HTTP_PORT=$(free_port)
HANEUL_HTTP_PORT=$(free_port)

cleanup() {
    [[ -n "${ORTHANC_PID:-}" ]] && kill "$ORTHANC_PID" 2>/dev/null || true
    [[ -n "${HANEUL_PID:-}" ]] && kill "$HANEUL_PID" 2>/dev/null || true
    [[ -n "${WA_PID:-}" ]] && kill "$WA_PID" 2>/dev/null || true
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
DICOMWEB_PLUGIN=""
if [[ -z "${SKIP_WEB:-}" ]]; then
    DICOMWEB_PLUGIN=$(dpkg -L orthanc-dicomweb 2>/dev/null | grep -m1 '/libOrthancDicomWeb\.so$' || true)
    if [[ -z "$DICOMWEB_PLUGIN" ]]; then
        echo "installing Orthanc's DICOMweb plugin from Debian's orthanc-dicomweb package"
        sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq orthanc-dicomweb >/dev/null
        DICOMWEB_PLUGIN=$(dpkg -L orthanc-dicomweb | grep -m1 '/libOrthancDicomWeb\.so$')
    fi
fi
# A machine without a toolchain (a lent benchmark host) brings its own release build.
if command -v cargo >/dev/null; then (cd "$ROOT" && cargo build --release -q -p haneul); fi
[[ -x $HANEUL ]] || { echo "build first: cargo build --release" >&2; exit 1; }

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

# The same server with every store waiting for its own file's fsync.
WA_PORT=$(free_port)
start_haneul_without_write_ahead() {
    local data=$1
    printf '[storage]\nwrite_ahead_max_bytes = 0\n' > "$WORK/no-write-ahead.toml"
    "$HANEUL" serve --config "$WORK/no-write-ahead.toml" --data "$data" --dicom-port $WA_PORT --http "" \
        >"$WORK/haneul-wa.log" 2>&1 &
    WA_PID=$!
    wait_port $WA_PORT $WA_PID
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

record() { # system scenario json
    echo "{\"system\":\"$1\",\"scenario\":\"$2\",\"result\":$3}" >> "$RESULTS"
}

run_store() { # system port ae scenario args...
    local system=$1 port=$2 ae=$3 scenario=$4; shift 4
    local json
    # Orthanc leaves its files to the kernel's writeback; flush them first, so
    # the next measurement (Haneul's fsyncs above all) does not pay for them.
    sync
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

if [[ -z "${ONLY_WEB:-}" ]]; then
echo "== C-STORE throughput, $ROUNDS interleaved rounds (results in $RESULTS)"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    start_orthanc
    start_haneul "$WORK/haneul-$round"
    [[ -n "${WITHOUT_WRITE_AHEAD:-}" ]] && start_haneul_without_write_ahead "$WORK/haneul-wa-$round"
    for entry in "${SCENARIOS[@]}"; do
        scenario=${entry%%|*}; args=${entry#*|}
        # Alternate who goes first, so neither always runs on a warmer machine
        # (the disk still writing back what the previous sender stored).
        # The variant without write-ahead goes last, then first.
        if [[ -n "${WITHOUT_WRITE_AHEAD:-}" ]] && ! (( round % 2 )); then
            run_store haneul-no-write-ahead $WA_PORT HANEUL "$scenario" $args
        fi
        if (( round % 2 )); then
            run_store orthanc $ORTHANC_PORT ORTHANC "$scenario" $args
            run_store haneul $HANEUL_PORT HANEUL "$scenario" $args
        else
            run_store haneul $HANEUL_PORT HANEUL "$scenario" $args
            run_store orthanc $ORTHANC_PORT ORTHANC "$scenario" $args
        fi
        if [[ -n "${WITHOUT_WRITE_AHEAD:-}" ]] && (( round % 2 )); then
            run_store haneul-no-write-ahead $WA_PORT HANEUL "$scenario" $args
        fi
    done
    stop "$ORTHANC_PID"; ORTHANC_PID=
    stop "$HANEUL_PID"; HANEUL_PID=
    if [[ -n "${WA_PID:-}" ]]; then stop "$WA_PID"; WA_PID=; fi
    rm -rf "$WORK/haneul-$round" "$WORK/haneul-wa-$round" "$WORK/orthanc"
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
fi # ONLY_WEB

if [[ -z "${SKIP_WEB:-}" ]]; then
# ---------------------------------------------------------------- DICOMweb
# Haneul's DICOMweb against Orthanc's DICOMweb plugin, on identical bytes:
# the series is sent to Haneul by C-STORE (its C-STORE rate, for the STOW
# comparison) and Haneul's stored Part 10 files are then posted to Orthanc's
# REST API, so both hold the same files. Both are restarted before the
# measurements, so "cold" is each server's first request in a fresh process
# (the operating system's page cache is warm for both).
WEB_CT_INSTANCES=${WEB_CT_INSTANCES:-500}
WEB_METADATA_REQUESTS=${WEB_METADATA_REQUESTS:-20}
WEB_RETRIEVALS=${WEB_RETRIEVALS:-5}
QIDO_STUDIES=${QIDO_STUDIES:-3000}
QIDO_QUERIES=${QIDO_QUERIES:-500}

start_orthanc_web() { # keep-storage (1 keeps what is stored)
    [[ "${1:-0}" == 1 ]] || { rm -rf "$WORK/orthanc"; mkdir -p "$WORK/orthanc"; }
    # Orthanc's and the plugin's defaults otherwise (series metadata read from the files).
    cat > "$WORK/orthanc-web.json" <<EOF
{ "Name": "bench", "StorageDirectory": "$WORK/orthanc", "IndexDirectory": "$WORK/orthanc",
  "DicomAet": "ORTHANC", "DicomPort": $ORTHANC_PORT, "HttpServerEnabled": true,
  "HttpPort": $ORTHANC_HTTP_PORT, "RemoteAccessAllowed": false, "AuthenticationEnabled": false,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true,
  "Plugins": ["$DICOMWEB_PLUGIN"], "DicomWeb": { "Enable": true, "Root": "/dicom-web/" } }
EOF
    TCP_NODELAY=1 Orthanc "$WORK/orthanc-web.json" >>"$WORK/orthanc.log" 2>&1 &
    ORTHANC_PID=$!
    wait_port $ORTHANC_PORT $ORTHANC_PID
    wait_port $ORTHANC_HTTP_PORT $ORTHANC_PID
}

start_haneul_web() { # data
    HANEUL_ADMIN_PASSWORD=bench-admin-password "$HANEUL" serve --data "$1" --dicom-port $HANEUL_PORT \
        --http "127.0.0.1:$HANEUL_HTTP_PORT" >>"$WORK/haneul.log" 2>&1 &
    HANEUL_PID=$!
    wait_port $HANEUL_PORT $HANEUL_PID
    wait_port $HANEUL_HTTP_PORT $HANEUL_PID
    # Haneul runs as deployed, every request authenticated (an API token);
    # Orthanc with its default of no authentication on loopback.
    HANEUL_TOKEN=$("$HANEUL" token create admin --name bench --data "$1" 2>/dev/null)
}

HANEUL_WEB="http://127.0.0.1:$HANEUL_HTTP_PORT/dicom-web"
ORTHANC_WEB="http://127.0.0.1:$ORTHANC_HTTP_PORT/dicom-web"
web_url() { if [[ $1 == haneul ]]; then echo "$HANEUL_WEB"; else echo "$ORTHANC_WEB"; fi; }
# The systems in this round's order: alternate who goes first.
web_order() { if (( $1 % 2 )); then echo "orthanc haneul"; else echo "haneul orthanc"; fi; }

# Post every Part 10 file Haneul stored to Orthanc's REST API; prints the count.
copy_to_orthanc() { # haneul-data expected
    python3 - "$1" "$ORTHANC_HTTP_PORT" "$2" <<'PY'
import http.client, os, sys
root, port, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
count = 0
for directory, _, names in sorted(os.walk(os.path.join(root, "blobs"))):
    for name in sorted(names):
        if not name.endswith(".dcm"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            body = f.read()
        if not body:
            continue  # a file the blob store made ahead of use
        connection.request("POST", "/instances", body, {"Content-Type": "application/dicom"})
        answer = connection.getresponse()
        text = answer.read()
        if answer.status != 200:
            sys.exit(f"Orthanc refused {name}: {answer.status} {text[:300]!r}")
        count += 1
if count != expected:
    sys.exit(f"copied {count} files to Orthanc, expected {expected}")
print(count)
PY
}

# "study series count" of the largest series a DICOMweb server lists.
largest_series() { # url
    curl -sf -H "Authorization: Bearer ${HANEUL_TOKEN:-}" "$1/series?includefield=0020000D&includefield=00201209" | python3 -c '
import json, sys
def first(o, t):
    v = o.get(t, {}).get("Value", [None])[0]
    return v
rows = [(int(first(o, "00201209") or 0), first(o, "0020000D"), first(o, "0020000E")) for o in json.load(sys.stdin)]
n, study, series = max(rows)
print(study, series, n)'
}

run_web() { # system scenario bench-web-args...
    local system=$1 scenario=$2 json; shift 2
    local token=""
    [[ $system == haneul ]] && token=$HANEUL_TOKEN
    json=$(HANEUL_TOKEN=$token "$HANEUL" bench web "$@" --url "$(web_url "$system")" --json)
    record "$system" "$scenario" "$json"
    echo "  $system $scenario: $json" | cut -c1-240
}

echo "== DICOMweb: $WEB_CT_INSTANCES-instance CT series, $ROUNDS interleaved rounds (results in $RESULTS)"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    data="$WORK/haneul-web-$round"
    start_orthanc_web 0
    start_haneul_web "$data"
    # The load: Haneul's C-STORE rate in this run, then the same files to Orthanc.
    json=$("$HANEUL" bench store --target "127.0.0.1:$HANEUL_PORT" --called-ae HANEUL --json \
        --kind ct --count "$WEB_CT_INSTANCES" --associations 1 --per-study "$WEB_CT_INSTANCES" --seed "$round")
    record haneul web-cstore-load "$json"
    echo "  haneul C-STORE load: $json" | cut -c1-240
    copy_to_orthanc "$data" "$WEB_CT_INSTANCES" >/dev/null
    read -r study series count <<<"$(largest_series "$HANEUL_WEB")"
    read -r ostudy oseries ocount <<<"$(largest_series "$ORTHANC_WEB")"
    if [[ "$study $series $count" != "$ostudy $oseries $ocount" || $count != "$WEB_CT_INSTANCES" ]]; then
        echo "the servers do not hold the same series: haneul $series ($count), orthanc $oseries ($ocount)" >&2
        exit 1
    fi
    stop "$ORTHANC_PID"; ORTHANC_PID=
    stop "$HANEUL_PID"; HANEUL_PID=
    start_orthanc_web 1
    start_haneul_web "$data"
    choice=(--study "$study" --series "$series")
    for system in $(web_order "$round"); do
        run_web "$system" web-metadata metadata "${choice[@]}" --requests "$WEB_METADATA_REQUESTS"
    done
    for system in $(web_order "$round"); do
        run_web "$system" web-retrieve retrieve-series "${choice[@]}" --repetitions "$WEB_RETRIEVALS"
    done
    for system in $(web_order "$round"); do
        run_web "$system" web-frames frames "${choice[@]}" --concurrency 4
    done
    # STOW-RS of another series of the same kind and size, one instance per
    # request, and next to it Haneul's C-STORE of one more such series, on the
    # same server in the same state (the order alternates between rounds).
    stow_all() {
        for system in $(web_order "$round"); do
            run_web "$system" web-stow stow --kind ct --count "$WEB_CT_INSTANCES" --per-study "$WEB_CT_INSTANCES" \
                --concurrency 1 --batch 1 --seed $((round + 100))
        done
    }
    cstore_reference() {
        json=$("$HANEUL" bench store --target "127.0.0.1:$HANEUL_PORT" --called-ae HANEUL --json --kind ct \
            --count "$WEB_CT_INSTANCES" --associations 1 --per-study "$WEB_CT_INSTANCES" --seed $((round + 200)))
        record haneul web-cstore "$json"
        echo "  haneul web-cstore: $json" | cut -c1-240
    }
    if (( round % 2 )); then stow_all; cstore_reference; else cstore_reference; stow_all; fi
    stop "$ORTHANC_PID"; ORTHANC_PID=
    stop "$HANEUL_PID"; HANEUL_PID=
    rm -rf "$data" "$WORK/orthanc"
done

# QIDO-RS on a catalog both can hold: one small instance per study, one
# study per patient, stored in Haneul by C-STORE and copied to Orthanc.
# Names are asked for in their alphabetic form only: Orthanc 1.10 keeps no
# ideographic or phonetic group of ISO 2022 IR 149 names.
echo "== QIDO-RS, STUDY level, patient-name prefixes, $QIDO_STUDIES studies in both"
data="$WORK/haneul-qido"
start_orthanc_web 0
start_haneul_web "$data"
"$HANEUL" bench store --target "127.0.0.1:$HANEUL_PORT" --called-ae HANEUL --kind small \
    --count "$QIDO_STUDIES" --associations 4 --per-study 1 >/dev/null
copy_to_orthanc "$data" "$QIDO_STUDIES" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    for system in $(web_order "$round"); do
        run_web "$system" web-qido qido --patients "$QIDO_STUDIES" --queries "$QIDO_QUERIES" --alphabetic --seed "$round"
    done
done
stop "$ORTHANC_PID"; ORTHANC_PID=
stop "$HANEUL_PID"; HANEUL_PID=
rm -rf "$data" "$WORK/orthanc"

if [[ -z "${SKIP_QIDO:-}" ]]; then
    # Haneul alone on the large catalog (the C-FIND section's, when it ran).
    data="$WORK/haneul-find"
    if [[ ! -d "$data" ]]; then
        echo "== filling $FIND_STUDIES studies × $FIND_INSTANCES_PER_STUDY instances for QIDO-RS"
        "$HANEUL" bench fill --data "$data" --studies "$FIND_STUDIES" --instances-per-study "$FIND_INSTANCES_PER_STUDY"
    fi
    echo "== QIDO-RS, STUDY level, patient-name prefixes (Latin and Hangul), Haneul on $FIND_STUDIES studies"
    start_haneul_web "$data"
    for round in $(seq 1 "$ROUNDS"); do
        run_web haneul web-qido-large qido --patients $((FIND_STUDIES / 2)) --queries "$QIDO_QUERIES" --seed "$round"
    done
    stop "$HANEUL_PID"; HANEUL_PID=
fi

echo "== DICOMweb medians"
python3 - "$RESULTS" "$OUT" "$ROUNDS" "$WEB_CT_INSTANCES" "$QIDO_STUDIES" "$FIND_STUDIES" <<'PY'
import json, statistics, sys
results, out, rounds, ct, qido_studies, large_studies = sys.argv[1:7]
rows = [json.loads(line) for line in open(results)]
def values(scenario, system, path):
    found = []
    for row in rows:
        if row["scenario"] != scenario or row["system"] != system:
            continue
        value = row["result"]
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            found.append(value)
    return found
def median(scenario, system, path):
    found = values(scenario, system, path)
    return statistics.median(found) if found else None
# (label, scenario, path, unit, higher is better)
lines = [
    ("series metadata, cold", "web-metadata", "cold_ms", "ms", False),
    ("series metadata, warm median", "web-metadata", "median_ms", "ms", False),
    ("series metadata, warm p95", "web-metadata", "p95_ms", "ms", False),
    ("retrieve series, instances/s", "web-retrieve", "instances_per_second", "inst/s", True),
    ("retrieve series, MB/s", "web-retrieve", "megabytes_per_second", "MB/s", True),
    ("frames/1 of every instance (4 at a time), frames/s", "web-frames", "frames_per_second", "frames/s", True),
    ("frames/1, MB/s", "web-frames", "megabytes_per_second", "MB/s", True),
    ("frames/1, p50 latency", "web-frames", "latency.p50_ms", "ms", False),
    ("STOW-RS, 1 instance per request, instances/s", "web-stow", "instances_per_second", "inst/s", True),
    (f"QIDO-RS studies, {qido_studies} studies, p50", "web-qido", "latency.p50_ms", "ms", False),
    (f"QIDO-RS studies, {qido_studies} studies, p95", "web-qido", "latency.p95_ms", "ms", False),
    (f"QIDO-RS mean matches, {qido_studies} studies", "web-qido", "mean_matches", "", None),
]
table, summary = [], {"rounds": int(rounds), "ct_instances": int(ct), "rows": []}
table.append(f"DICOMweb, {ct}-instance CT series (medians of {rounds} rounds; ratio = how many times better Haneul is)")
table.append("")
table.append("| measure | Haneul | Orthanc | Haneul vs Orthanc |")
table.append("|---|---|---|---|")
for label, scenario, path, unit, higher in lines:
    h, o = median(scenario, "haneul", path), median(scenario, "orthanc", path)
    if h is None and o is None:
        continue
    ratio = None
    if h and o and higher is not None:
        ratio = h / o if higher else o / h
    summary["rows"].append({"measure": label, "unit": unit, "haneul": h, "orthanc": o, "ratio": ratio,
                            "haneul_rounds": values(scenario, "haneul", path),
                            "orthanc_rounds": values(scenario, "orthanc", path)})
    fmt = lambda v: "n/a" if v is None else f"{v:.2f} {unit}".strip()
    table.append(f"| {label} | {fmt(h)} | {fmt(o)} | {'n/a' if ratio is None else f'{ratio:.2f}×'} |")
cstore = median("web-cstore", "haneul", "instances_per_second")
stow = median("web-stow", "haneul", "instances_per_second")
metadata_bytes = {s: median("web-metadata", s, "bytes") for s in ("haneul", "orthanc")}
series_bytes = median("web-retrieve", "haneul", "body_bytes")
retrievals = median("web-retrieve", "haneul", "requests")
table.append("")
if cstore and stow:
    table.append(f"Haneul STOW-RS {stow:.1f} inst/s vs its C-STORE {cstore:.1f} inst/s (same server, same run, 1 connection each): {stow / cstore:.2f}")
    summary["haneul_stow_over_cstore"] = stow / cstore
    # The disk's speed drifts between rounds: the ratio within each round too.
    pairs = zip(values("web-stow", "haneul", "instances_per_second"), values("web-cstore", "haneul", "instances_per_second"))
    per_round = [s / c for s, c in pairs]
    if per_round:
        table.append("  within each round: " + ", ".join(f"{r:.2f}" for r in per_round) + f" (median {statistics.median(per_round):.2f})")
        summary["haneul_stow_over_cstore_per_round"] = per_round
if series_bytes and retrievals:
    table.append(f"series body {series_bytes / retrievals / 1e6:.1f} MB; metadata answer Haneul {metadata_bytes['haneul'] / 1e3:.0f} kB, Orthanc {metadata_bytes['orthanc'] / 1e3:.0f} kB")
large = {k: median("web-qido-large", "haneul", f"latency.{k}_ms") for k in ("p50", "p95", "p99")}
if large["p50"] is not None:
    matches = median("web-qido-large", "haneul", "mean_matches")
    table.append(f"Haneul QIDO-RS studies on {large_studies} studies (Latin and Hangul prefixes): p50 {large['p50']:.2f} ms, p95 {large['p95']:.2f} ms, p99 {large['p99']:.2f} ms, {matches:.1f} matches on average")
    summary["qido_large"] = {"studies": int(large_studies), **large, "mean_matches": matches}
text = "\n".join(table)
print(text)
stamp = results.rsplit("results-", 1)[-1].removesuffix(".jsonl")
with open(f"{out}/web-{stamp}.md", "w") as f:
    f.write(text + "\n")
with open(f"{out}/web-{stamp}.json", "w") as f:
    json.dump(summary, f, indent=1)
print(f"(written to {out}/web-{stamp}.md and .json)")
PY
fi # SKIP_WEB

if [[ -z "${ONLY_WEB:-}" ]]; then

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
for scenario in ["small-1", "ct-1", "small-8", "ct-8"]:
    w = median("instances_per_second", scenario, "haneul-no-write-ahead")
    h = median("instances_per_second", scenario, "haneul")
    if w and h:
        print(f"{scenario}: Haneul without write-ahead {w:.1f} inst/s; the default is {h / w:.2f}× that")
# Ratios within each round as well: the disk's speed drifts between rounds.
for scenario in ["small-1", "ct-1", "small-8", "ct-8"]:
    pairs = zip([r["instances_per_second"] for r in by.get((scenario, "haneul"), [])],
                [r["instances_per_second"] for r in by.get((scenario, "orthanc"), [])])
    per_round = [h / o for h, o in pairs if o]
    if per_round:
        print(f"{scenario} Haneul / Orthanc per round: " + ", ".join(f"{r:.2f}" for r in per_round))
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
fi # ONLY_WEB
