#!/usr/bin/env bash
# What authentication and the audit trail cost (issue 5's benchmark): the same
# release binary, on the same machine, in interleaved rounds, configured
#   off:   [audit] enabled = false, [http] anonymous_role = "admin" (no credentials checked)
#   audit: the audit trail on, still no credentials
#   on:    the defaults (audit trail on, every HTTP request with an API token)
# and measured for C-STORE ingest (one association), STOW-RS ingest (one
# connection) and QIDO-RS (study level, patient-name prefixes). Prints each
# round and the medians with the ratios to off.
#
#   cargo build --release && bench/security-overhead.sh
# Environment: ROUNDS (5), COUNT instances per ingest run (1000), QIDO_STUDIES (2000),
# QIDO_QUERIES (500).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HANEUL="$ROOT/target/release/haneul"
ROUNDS=${ROUNDS:-5}
COUNT=${COUNT:-1000}
QIDO_STUDIES=${QIDO_STUDIES:-2000}
QIDO_QUERIES=${QIDO_QUERIES:-500}
WORK=$(mktemp -d /tmp/haneul-security-bench.XXXXXX)
RESULTS="$WORK/results.jsonl"
[[ -x $HANEUL ]] || { echo "build first: cargo build --release" >&2; exit 1; }

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
DICOM_PORT=$(free_port)
HTTP_PORT=$(free_port)
PID=
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK/data-"*; }
trap cleanup EXIT

listening() { # port
    wait_port "$1" "$PID" || { tail -20 "$WORK/haneul.log" >&2; exit 1; }
}

start() { # mode data
    local mode=$1 data=$2 config="$WORK/$1.toml"
    {
        printf '[storage]\ndata_dir = "%s"\n[dicom]\nlisten = "127.0.0.1:%s"\n' "$data" "$DICOM_PORT"
        printf '[http]\nlisten = "127.0.0.1:%s"\n' "$HTTP_PORT"
        if [[ $mode != on ]]; then printf 'anonymous_role = "admin"\n'; fi
        if [[ $mode == off ]]; then printf '[audit]\nenabled = false\n'; fi
    } >"$config"
    HANEUL_ADMIN_PASSWORD=bench-admin-password "$HANEUL" serve --config "$config" >>"$WORK/haneul.log" 2>&1 &
    PID=$!
    listening "$DICOM_PORT"
    listening "$HTTP_PORT"
    TOKEN=""
    if [[ $mode == on ]]; then TOKEN=$("$HANEUL" token create admin --name bench --config "$config" 2>/dev/null); fi
}

stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

record() { # mode measure json
    printf '{"mode":"%s","measure":"%s","result":%s}\n' "$1" "$2" "$3" >>"$RESULTS"
}

measure() { # mode round
    local mode=$1 round=$2 data="$WORK/data-$1" json
    rm -rf "$data"
    "$HANEUL" bench fill --data "$data" --studies "$QIDO_STUDIES" --instances-per-study 1 >/dev/null 2>&1
    start "$mode" "$data"
    json=$("$HANEUL" bench store --target "127.0.0.1:$DICOM_PORT" --called-ae HANEUL --kind small \
        --count "$COUNT" --seed "$round" --json)
    record "$mode" c-store "$json"
    json=$(HANEUL_TOKEN=$TOKEN "$HANEUL" bench web stow --kind small --count "$COUNT" --seed $((round + 1000)) \
        --url "http://127.0.0.1:$HTTP_PORT/dicom-web" --json)
    record "$mode" stow "$json"
    json=$(HANEUL_TOKEN=$TOKEN "$HANEUL" bench web qido --patients $((QIDO_STUDIES / 2)) --queries "$QIDO_QUERIES" \
        --seed "$round" --url "http://127.0.0.1:$HTTP_PORT/dicom-web" --json)
    record "$mode" qido "$json"
    echo "  $mode: $(tail -3 "$RESULTS" | python3 -c '
import json, sys
def show(row):
    result = row["result"]
    if "instances_per_second" in result:
        return "%s %.0f inst/s" % (row["measure"], result["instances_per_second"])
    return "%s %.0f q/s p95 %.2f ms" % (row["measure"], result["queries_per_second"], result["latency"]["p95_ms"])
print("  ".join(show(json.loads(line)) for line in sys.stdin))')"
    stop
    rm -rf "$data"
}

echo "== security overhead: $ROUNDS interleaved rounds, $COUNT instances per ingest, QIDO on $QIDO_STUDIES studies ($WORK)"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round"
    case $((round % 3)) in
        1) order="off audit on" ;;
        2) order="audit on off" ;;
        *) order="on off audit" ;;
    esac
    for mode in $order; do measure "$mode" "$round"; done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def values(mode, measure, path):
    out = []
    for row in rows:
        if row["mode"] == mode and row["measure"] == measure:
            value = row["result"]
            for key in path.split("."):
                value = value[key]
            out.append(value)
    return out
print()
print("| measure | off | audit | audit + auth | audit/off | (audit + auth)/off |")
print("|---|---|---|---|---|---|")
for label, measure, path, unit in [
    ("C-STORE, 1 association", "c-store", "instances_per_second", "inst/s"),
    ("STOW-RS, 1 connection", "stow", "instances_per_second", "inst/s"),
    ("QIDO-RS rate", "qido", "queries_per_second", "q/s"),
    ("QIDO-RS p50", "qido", "latency.p50_ms", "ms"),
    ("QIDO-RS p95", "qido", "latency.p95_ms", "ms"),
]:
    off, audit, on = (statistics.median(values(mode, measure, path)) for mode in ("off", "audit", "on"))
    print(f"| {label} | {off:.2f} {unit} | {audit:.2f} {unit} | {on:.2f} {unit} | {audit / off:.3f} | {on / off:.3f} |")
PY
