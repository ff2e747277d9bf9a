#!/usr/bin/env bash
# Migration figures (issue 8's benchmark), release build, everything on loopback:
# in each round Orthanc (Debian's package) plays the legacy PACS holding COUNT
# synthetic instances, and in the same round
#   1. Haneul's own C-STORE ingest rate: the same kind and number of instances
#      sent to a fresh Haneul over PARALLEL associations (haneul bench store);
#   2. the migration rate: a fresh Haneul migrates everything from Orthanc with
#      PARALLEL C-MOVEs (or C-GETs: METHOD=c-get) (haneul migrate start), from the start to the last study
#      verified (planning and verification included).
# Rounds alternate which goes first; medians and the ratio are printed.
#
#   cargo build --release && bench/migration.sh
# Environment: ROUNDS (3), COUNT (2000), PER_STUDY instances per study (50),
# KIND (small | ct), PARALLEL (4), METHOD (c-move | c-get); ORTHANC_THREADS sets
# Orthanc's DicomThreadsCount (its default, 4, when unset); LOGS: a directory
# that receives the last round's server logs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HANEUL="$ROOT/target/release/haneul"
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-2000}
PER_STUDY=${PER_STUDY:-50}
KIND=${KIND:-small}
PARALLEL=${PARALLEL:-4}
METHOD=${METHOD:-c-move}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/haneul-migration-bench.XXXXXX")
[[ -x $HANEUL ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v Orthanc >/dev/null || { echo "install Debian's orthanc package first" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
ORTHANC_PORT=$(free_port); HANEUL_PORT=$(free_port); HANEUL_HTTP=$(free_port)
ORTHANC_PID=; HANEUL_PID=
cleanup() {
    [[ -n ${LOGS:-} ]] && mkdir -p "$LOGS" && cp "$WORK"/*.log "$LOGS"/ 2>/dev/null
    [[ -n $ORTHANC_PID ]] && kill "$ORTHANC_PID" 2>/dev/null || true
    [[ -n $HANEUL_PID ]] && kill "$HANEUL_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

start_orthanc() {
    rm -rf "$WORK/orthanc"; mkdir -p "$WORK/orthanc"
    local threads=""
    [[ -n ${ORTHANC_THREADS:-} ]] && threads="\"DicomThreadsCount\": $ORTHANC_THREADS,"
    cat > "$WORK/orthanc.json" <<JSON
{ "Name": "legacy", "StorageDirectory": "$WORK/orthanc", "IndexDirectory": "$WORK/orthanc",
  "DicomAet": "LEGACY", "DicomPort": $ORTHANC_PORT, "HttpServerEnabled": false,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowStore": true, "DicomAlwaysAllowFind": true,
  "DicomAlwaysAllowMove": true, $threads
  "DicomModalities": { "haneul": ["HANEUL", "127.0.0.1", $HANEUL_PORT] } }
JSON
    # Orthanc 1.10 networks through DCMTK, which disables Nagle only when told so.
    TCP_NODELAY=1 Orthanc "$WORK/orthanc.json" >"$WORK/orthanc.log" 2>&1 &
    ORTHANC_PID=$!
    wait_port "$ORTHANC_PORT" "$ORTHANC_PID"
}

start_haneul() { # data-dir
    cat > "$WORK/haneul.toml" <<TOML
[[migration.source]]
name = "legacy"
method = "$METHOD"
ae_title = "LEGACY"
host = "127.0.0.1"
port = $ORTHANC_PORT
parallel = $PARALLEL
TOML
    HANEUL_ADMIN_PASSWORD=bench-admin-password "$HANEUL" serve --config "$WORK/haneul.toml" --data "$1" \
        --dicom-port "$HANEUL_PORT" --http "127.0.0.1:$HANEUL_HTTP" >"$WORK/haneul.log" 2>&1 &
    HANEUL_PID=$!
    wait_port "$HANEUL_PORT" "$HANEUL_PID"
    wait_port "$HANEUL_HTTP" "$HANEUL_PID"
}

store_rate() { # port called-ae → instances per second
    "$HANEUL" bench store --target "127.0.0.1:$1" --called-ae "$2" --kind "$KIND" --count "$COUNT" \
        --associations "$PARALLEL" --per-study "$PER_STUDY" --json |
        python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["failures"] == 0, r; print(r["instances_per_second"])'
}

# Haneul's own mean time per stored instance, from its last received byte to
# durable and catalogued (its metrics): the same in both parts of a round means
# the difference in rate lies with the sender.
own_ms() { # token
    curl -sf -H "Authorization: Bearer $1" "http://127.0.0.1:$HANEUL_HTTP/metrics" | awk '
        $1 == "haneul_ingest_seconds_sum" { sum = $2 } $1 == "haneul_ingest_seconds_count" { count = $2 }
        END { if (count) printf "%.3f\n", 1000 * sum / count }'
}

ingest_round() { # round
    start_haneul "$WORK/haneul-ingest-$1"
    local rate; rate=$(store_rate "$HANEUL_PORT" HANEUL)
    own_ms "$("$HANEUL" token create admin --name bench --data "$WORK/haneul-ingest-$1" 2>/dev/null)" >>"$WORK/own-ingest"
    stop "$HANEUL_PID"; HANEUL_PID=
    rm -rf "$WORK/haneul-ingest-$1"
    echo "$rate"
}

migration_round() { # round
    start_haneul "$WORK/haneul-migrate-$1"
    local token
    token=$("$HANEUL" token create admin --name bench --data "$WORK/haneul-migrate-$1" 2>/dev/null)
    HANEUL_TOKEN=$token "$HANEUL" migrate start legacy --server "http://127.0.0.1:$HANEUL_HTTP" \
        --json >"$WORK/report.json" 2>/dev/null || { echo "migration incomplete, see $WORK/report.json" >&2; exit 1; }
    own_ms "$token" >>"$WORK/own-migration"
    stop "$HANEUL_PID"; HANEUL_PID=
    rm -rf "$WORK/haneul-migrate-$1"
    python3 - "$WORK/report.json" "$COUNT" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
status, expected = report["status"], int(sys.argv[2])
migrated = status["counts"]["migrated_instances"]
assert migrated == expected and not report["discrepancies"], (migrated, expected)
print(migrated / ((status["finished_ms"] - status["started_ms"]) / 1000))
PY
}

ingest=(); migration=()
for round in $(seq 1 "$ROUNDS"); do
    start_orthanc
    store_rate "$ORTHANC_PORT" LEGACY >/dev/null
    # Orthanc leaves its files to the kernel's writeback: flush them now, not
    # during whichever measurement comes first.
    sync
    if (( round % 2 )); then
        ingest+=("$(ingest_round "$round")"); sync; migration+=("$(migration_round "$round")")
    else
        migration+=("$(migration_round "$round")"); sync; ingest+=("$(ingest_round "$round")")
    fi
    stop "$ORTHANC_PID"; ORTHANC_PID=
    printf 'round %d: Haneul C-STORE ingest %.0f instances/s, migration from Orthanc %.0f instances/s\n' \
        "$round" "${ingest[-1]}" "${migration[-1]}"
done
python3 - "${ingest[*]}" "${migration[*]}" "$COUNT" "$KIND" "$PARALLEL" "$METHOD" \
    "$(cat "$WORK/own-ingest")" "$(cat "$WORK/own-migration")" <<'PY'
import statistics, sys
ingest = [float(x) for x in sys.argv[1].split()]
migration = [float(x) for x in sys.argv[2].split()]
i, m = statistics.median(ingest), statistics.median(migration)
print(f"{sys.argv[3]} {sys.argv[4]} instances, {sys.argv[5]} associations ({sys.argv[6]}), medians of {len(ingest)} rounds:")
print(f"  Haneul C-STORE ingest {i:.0f}/s, migration from Orthanc {m:.0f}/s, ratio {m / i:.2f} (target >= 0.80)")
own_ingest = [float(x) for x in sys.argv[7].split()]
own_migration = [float(x) for x in sys.argv[8].split()]
if own_ingest and own_migration:
    print(f"  Haneul's own time per stored instance: ingest {statistics.median(own_ingest):.3f} ms, "
          f"migration {statistics.median(own_migration):.3f} ms")
PY
