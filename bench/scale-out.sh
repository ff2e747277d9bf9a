#!/usr/bin/env bash
# Several nodes and the PostgreSQL catalog, measured in one run:
#   1. C-FIND and QIDO-RS latency (p50/p95/p99, patient-name prefixes at
#      study level; C-FIND also given names under any surname, `*^Minjun*`,
#      and three days' studies, `StudyDate=20240312-20240314`) on a
#      catalog of FIND_STUDIES × FIND_INSTANCES_PER_STUDY instances, on SQLite
#      (the default) and on PostgreSQL, same synthetic data, and the catalog's
#      size on disk;
#   2. C-STORE ingest through 1 node and through 3 nodes at once, all on one
#      PostgreSQL catalog and one S3 bucket;
#   3. WADO-RS retrieval of a READ_INSTANCES-instance CT series from the
#      bucket, read once and then READ_REPETITIONS times more, through a node
#      with its read cache (the default) and one without (read_cache_bytes = 0).
#
#   BENCH_POSTGRES=postgresql://USER:PASSWORD@127.0.0.1:5432 \
#   BENCH_S3=http://KEY:SECRET@127.0.0.1:8333/BUCKET bench/scale-out.sh
#
# BENCH_POSTGRES: a role that may create databases (one per part is made and
# dropped). BENCH_S3: as HANEUL_TEST_S3 in scripts/test.sh (each part uses a
# key prefix of its own). Environment: FIND_STUDIES (100000),
# FIND_INSTANCES_PER_STUDY (10), QUERIES (1000), INGEST_COUNT (3000),
# ASSOCIATIONS_PER_NODE (2), ROUNDS (3), READ_INSTANCES (200), READ_REPETITIONS (3),
# SKIP_FIND, SKIP_INGEST, SKIP_READ, OUT (bench/out).
# Every node runs on this one machine: the ingest part shows what the shared
# catalog and bucket allow, not what three machines would add.
set -euo pipefail

: "${BENCH_POSTGRES:?a PostgreSQL URL with a role that may create databases}"
: "${BENCH_S3:?an S3 URL http://KEY:SECRET@HOST:PORT/BUCKET}"
FIND_STUDIES=${FIND_STUDIES:-100000}
FIND_INSTANCES_PER_STUDY=${FIND_INSTANCES_PER_STUDY:-10}
QUERIES=${QUERIES:-1000}
INGEST_COUNT=${INGEST_COUNT:-3000}
ASSOCIATIONS_PER_NODE=${ASSOCIATIONS_PER_NODE:-2}
ROUNDS=${ROUNDS:-3}
READ_INSTANCES=${READ_INSTANCES:-200}
READ_REPETITIONS=${READ_REPETITIONS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
WORK=$(mktemp -d)
RESULTS="$OUT/scale-out-$(date -u +%Y%m%dT%H%M%SZ).jsonl"
HANEUL="$ROOT/target/release/haneul"
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

[[ -x $HANEUL ]] || cargo build --release -p haneul --manifest-path "$ROOT/Cargo.toml"
export HANEUL_ADMIN_PASSWORD=bench-admin-password

# postgresql://user:password@host:port -> parts
pg_rest=${BENCH_POSTGRES#*://}
PG_USER=${pg_rest%%:*}
pg_rest=${pg_rest#*:}
PG_PASSWORD=${pg_rest%%@*}
PG_HOSTPORT=${pg_rest#*@}
PG_HOSTPORT=${PG_HOSTPORT%%/*}
printf '%s' "$PG_PASSWORD" > "$WORK/pg-password"
s3_rest=${BENCH_S3#*://}
S3_SCHEME=${BENCH_S3%%://*}
S3_KEY=${s3_rest%%:*}
s3_rest=${s3_rest#*:}
printf '%s' "${s3_rest%%@*}" > "$WORK/s3-secret"
s3_rest=${s3_rest#*@}
S3_HOST=${s3_rest%%/*}
S3_BUCKET=${s3_rest#*/}

new_database() { # name
    PGPASSWORD=$PG_PASSWORD psql -q -h "${PG_HOSTPORT%%:*}" -p "${PG_HOSTPORT##*:}" -U "$PG_USER" -d postgres \
        -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
}

# A node's configuration file: config NAME DATA_DIR DICOM_PORT HTTP_PORT CATALOG(sqlite|DBNAME) BLOBS(local|PREFIX) [S3_LINE]
config() {
    local name=$1 data=$2 dicom=$3 http=$4 catalog=$5 blobs=$6 s3_line=${7:-} file="$WORK/$1.toml"
    {
        echo "[storage]"
        echo "data_dir = \"$data\""
        if [[ $blobs != local ]]; then echo "backend = \"s3\""; fi
        echo "node = \"$name\""
        echo "[dicom]"
        echo "listen = \"127.0.0.1:$dicom\""
        echo "max_associations_per_ae = 64"
        echo "[http]"
        echo "listen = \"127.0.0.1:$http\""
        echo "[audit]"
        echo "enabled = false"
        echo "[log]"
        echo "level = \"warn\""
        if [[ $catalog != sqlite ]]; then
            echo "[catalog]"
            echo "engine = \"postgres\""
            echo "url = \"postgresql://$PG_USER@$PG_HOSTPORT/$catalog\""
            echo "password_file = \"$WORK/pg-password\""
        fi
        if [[ $blobs != local ]]; then
            echo "[storage.s3]"
            echo "endpoint = \"$S3_SCHEME://$S3_HOST\""
            echo "bucket = \"$S3_BUCKET\""
            echo "prefix = \"$blobs\""
            echo "access_key_id = \"$S3_KEY\""
            echo "secret_access_key_file = \"$WORK/s3-secret\""
            if [[ -n $s3_line ]]; then echo "$s3_line"; fi
        fi
    } > "$file"
    echo "$file"
}

start_node() { # config dicom_port http_port; sets NODE_PID
    "$HANEUL" serve --config "$1" >>"$WORK/nodes.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_port "$2" "$NODE_PID"
    wait_port "$3" "$NODE_PID"
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

record() { # scenario json
    echo "{\"scenario\":\"$1\",\"result\":$2}" >> "$RESULTS"
}

if [[ -z "${SKIP_FIND:-}" ]]; then
    total=$((FIND_STUDIES * FIND_INSTANCES_PER_STUDY))
    for engine in sqlite postgres; do
        echo "== $engine catalog with $total instances ($FIND_STUDIES studies)"
        dicom=$(free_port); http=$(free_port)
        catalog=sqlite
        if [[ $engine == postgres ]]; then catalog=haneul_bench_find; new_database "$catalog"; fi
        file=$(config "find-$engine" "$WORK/find-$engine" "$dicom" "$http" "$catalog" local)
        started=$(date +%s)
        "$HANEUL" bench fill --config "$file" --studies "$FIND_STUDIES" --instances-per-study "$FIND_INSTANCES_PER_STUDY"
        echo "  filled in $(($(date +%s) - started)) s"
        if [[ $engine == postgres ]]; then
            bytes=$(PGPASSWORD=$PG_PASSWORD psql -Atq -h "${PG_HOSTPORT%%:*}" -p "${PG_HOSTPORT##*:}" -U "$PG_USER" \
                -d "$catalog" -c "SELECT pg_database_size(current_database())")
        else
            bytes=$(wc -c < "$WORK/find-$engine/catalog.sqlite")
        fi
        record "catalog-bytes-$engine" "{\"bytes\":$bytes,\"instances\":$total}"
        echo "  catalog: $bytes bytes, $((bytes / total)) per instance"
        start_node "$file" "$dicom" "$http"
        pid=$NODE_PID
        token=$("$HANEUL" token create admin --name bench --config "$file" 2>/dev/null)
        for round in $(seq 1 "$ROUNDS"); do
            for pattern in prefix any-surname date-range; do
                json=$("$HANEUL" bench find --target "127.0.0.1:$dicom" --patients $((FIND_STUDIES / 2)) \
                    --queries "$QUERIES" --seed "$round" --pattern "$pattern" --json)
                scenario=c-find-$pattern; [[ $pattern == prefix ]] && scenario=c-find
                record "$scenario-$engine" "$json"
                echo "  C-FIND ($pattern) round $round: $json" | cut -c1-200
            done
            json=$(HANEUL_TOKEN=$token "$HANEUL" bench web qido --url "http://127.0.0.1:$http/dicom-web" \
                --patients $((FIND_STUDIES / 2)) --queries "$QUERIES" --seed "$round" --json)
            record "qido-$engine" "$json"
            echo "  QIDO-RS round $round: $json" | cut -c1-200
        done
        stop "$pid"
        rm -rf "$WORK/find-$engine"
    done
fi

if [[ -z "${SKIP_INGEST:-}" ]]; then
    for round in $(seq 1 "$ROUNDS"); do
        for nodes in 1 3; do
            database="haneul_bench_ingest_${nodes}_$round"
            new_database "$database"
            prefix="bench-$(date +%s%N)-$nodes"
            pids=(); ports=()
            for n in $(seq 1 "$nodes"); do
                dicom=$(free_port); http=$(free_port)
                file=$(config "node$n" "$WORK/ingest-$nodes-$n" "$dicom" "$http" "$database" "$prefix")
                start_node "$file" "$dicom" "$http"
                pids+=("$NODE_PID"); ports+=("$dicom")
            done
            per_node=$((INGEST_COUNT / nodes))
            started=$(date +%s%N)
            senders=()
            for port in "${ports[@]}"; do
                "$HANEUL" bench store --target "127.0.0.1:$port" --called-ae HANEUL --kind small \
                    --count "$per_node" --associations "$ASSOCIATIONS_PER_NODE" --per-study 100 --json \
                    > "$WORK/store-$port.json" &
                senders+=($!)
            done
            failed=0
            for sender in "${senders[@]}"; do wait "$sender" || failed=1; done
            elapsed_ns=$(($(date +%s%N) - started))
            (( failed == 0 )) || { echo "a bench store failed" >&2; exit 1; }
            rate=$(python3 -c "print(round($per_node * $nodes / ($elapsed_ns / 1e9), 1))")
            json="{\"nodes\":$nodes,\"instances\":$((per_node * nodes)),\"instances_per_second\":$rate}"
            record "ingest-$nodes-nodes" "$json"
            echo "== round $round, $nodes node(s) on PostgreSQL + S3: $json"
            for pid in "${pids[@]}"; do stop "$pid"; done
            rm -rf "$WORK"/ingest-*
        done
    done
fi

if [[ -z "${SKIP_READ:-}" ]]; then
    for round in $(seq 1 "$ROUNDS"); do
        database="haneul_bench_read_$round"
        new_database "$database"
        prefix="bench-$(date +%s%N)-read"
        declare -A webs=()
        pids=()
        for variant in cached uncached; do
            dicom=$(free_port); http=$(free_port)
            line=""; [[ $variant == uncached ]] && line="read_cache_bytes = 0"
            file=$(config "$variant" "$WORK/read-$variant" "$dicom" "$http" "$database" "$prefix" "$line")
            start_node "$file" "$dicom" "$http"
            pids+=("$NODE_PID")
            webs[$variant]="http://127.0.0.1:$http/dicom-web"
            [[ $variant == cached ]] && { store_port=$dicom; token_config=$file; }
        done
        "$HANEUL" bench store --target "127.0.0.1:$store_port" --called-ae HANEUL --kind ct --count "$READ_INSTANCES" \
            --associations 2 --per-study "$READ_INSTANCES" --seed "$round" >/dev/null
        token=$("$HANEUL" token create admin --name bench --config "$token_config" 2>/dev/null)
        read -r study series <<<"$(curl -sf -H "Authorization: Bearer $token" \
            "${webs[cached]}/series?includefield=0020000D" | python3 -c '
import json, sys
o = json.load(sys.stdin)[0]
print(o["0020000D"]["Value"][0], o["0020000E"]["Value"][0])')"
        for variant in cached uncached; do
            for pass in first again; do
                repetitions=1; [[ $pass == again ]] && repetitions=$READ_REPETITIONS
                json=$(HANEUL_TOKEN=$token "$HANEUL" bench web retrieve-series --url "${webs[$variant]}" \
                    --study "$study" --series "$series" --repetitions "$repetitions" --json)
                record "read-$variant-$pass" "$json"
                echo "== round $round, $variant, $pass read: $json" | cut -c1-220
            done
        done
        for pid in "${pids[@]}"; do stop "$pid"; done
        rm -rf "$WORK"/read-*
    done
fi

python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def median(scenario, key, sub=None):
    values = [(r["result"][sub][key] if sub else r["result"][key]) for r in rows if r["scenario"] == scenario]
    return statistics.median(values) if values else None
print("medians:")
for engine in ("sqlite", "postgres"):
    for kind in ("c-find", "c-find-any-surname", "c-find-date-range", "qido"):
        p50, p95 = median(f"{kind}-{engine}", "p50_ms", "latency"), median(f"{kind}-{engine}", "p95_ms", "latency")
        if p50 is not None:
            print(f"  {kind:18} on {engine:8}: p50 {p50:.2f} ms, p95 {p95:.2f} ms")
    size = [r["result"] for r in rows if r["scenario"] == f"catalog-bytes-{engine}"]
    if size:
        print(f"  catalog on {engine:8}: {size[0]['bytes'] / size[0]['instances']:.0f} bytes per instance")
one, three = median("ingest-1-nodes", "instances_per_second"), median("ingest-3-nodes", "instances_per_second")
if one and three:
    print(f"  ingest: 1 node {one:.0f} inst/s, 3 nodes {three:.0f} inst/s (ratio {three / one:.2f})")
for variant in ("cached", "uncached"):
    for read in ("first", "again"):
        rate = median(f"read-{variant}-{read}", "megabytes_per_second")
        if rate is not None:
            print(f"  series read from the bucket, {variant:8} node, {read:5} read: {rate:.0f} MB/s")
EOF
echo "results: $RESULTS"
