#!/usr/bin/env bash
# Installs what building vigil needs, idempotently: a C compiler, make and pkg-config for the
# crates that build C code (zstd, librdkafka). With --tests, also what the tests need: moto's S3
# server, the tansu Kafka broker, pouchdb-server (a CouchDB-compatible server), DuckDB and
# pyarrow (Python packages) for the SQL suite, and Chromium with playwright-core (tests/browser/)
# for the live page's browser check.
# Safe to run again and again.
set -euo pipefail

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# librdkafka's build (rdkafka-sys) needs a C++ compiler and zlib's headers.
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
# Kafka's TLS and SASL SCRAM come from the system's OpenSSL.
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "error: vigil needs ${need_apt[*]}; install them with your package manager" >&2
    exit 1
  fi
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "setup: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed: install Rust 1.94 or newer from https://rustup.rs" >&2
  exit 1
fi

# The S3 tests run against moto's S3 server on loopback (pipelines/tests/s3.rs starts it).
if [ "${1:-}" = "--tests" ] && ! command -v moto_server >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "error: the S3 tests need moto_server; install Python 3 and run: python3 -m pip install 'moto[server]'" >&2
    exit 1
  fi
  echo "setup: installing moto[server] (the S3 endpoint the tests start)" >&2
  python3 -m pip install --quiet 'moto[server]'
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
  hash -r
fi

# The SQL suite and the SQL benchmark compare vigil-sql with DuckDB, and the interop tests read
# the archive with pyarrow (tests/duckdb/query.py): both from PyPI.
if [ "${1:-}" = "--tests" ] && ! python3 -c 'import duckdb, pyarrow' >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "error: the SQL suite needs Python 3 with duckdb and pyarrow: install Python 3, then run: python3 -m pip install duckdb pyarrow" >&2
    exit 1
  fi
  echo "setup: installing the duckdb and pyarrow Python packages (the SQL suite's reference)" >&2
  python3 -m pip install --quiet 'duckdb>=1.1' 'pyarrow>=15'
fi

# The CouchDB listener's tests run against pouchdb-server, a CouchDB-compatible server from the
# npm registry (tests/src/couchdb.rs starts it).
if [ "${1:-}" = "--tests" ] && ! command -v pouchdb-server >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "setup: installing nodejs and npm (for pouchdb-server)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  fi
  echo "setup: installing pouchdb-server (the CouchDB-compatible server the tests start)" >&2
  npm install -g --no-audit --no-fund --loglevel=error pouchdb-server >/dev/null
  hash -r
fi

# The Kafka tests run against tansu, a Kafka-protocol broker, on loopback (tests/src/kafka.rs
# starts it). Built once from crates.io (about 12 minutes on 2 cores).
if [ "${1:-}" = "--tests" ] && ! command -v tansu >/dev/null 2>&1; then
  echo "setup: installing tansu (the Kafka broker the tests start; about 12 minutes, once)" >&2
  cargo install --locked --quiet tansu --features dynostore
  hash -r
fi

# The sync tests use the machine's PostgreSQL (127.0.0.1:5432, user postgres; tests/src/postgres.rs
# creates a database per test; VIGIL_TEST_POSTGRES points elsewhere). Start it when it is
# installed but stopped; install it when missing.
if [ "${1:-}" = "--tests" ] && [ -z "${VIGIL_TEST_POSTGRES:-}" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "setup: installing postgresql (the sync tests' database server)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    for cluster in $(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 {print $1 "/" $2}'); do
      echo "setup: starting PostgreSQL cluster $cluster" >&2
      $SUDO pg_ctlcluster "${cluster%/*}" "${cluster#*/}" start || true
    done
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "warning: PostgreSQL does not answer on 127.0.0.1:5432; the sync tests will say how to point them at a server (VIGIL_TEST_POSTGRES)" >&2
  fi
fi

# Change capture (pipelines/src/pg_capture.rs) decodes PostgreSQL's WAL with the wal2json
# plugin; its test starts a throwaway server of the installed version (tests/src/postgres.rs).
if [ "${1:-}" = "--tests" ]; then
  for lib in /usr/lib/postgresql/*/lib; do
    [ -d "$lib" ] || continue
    version=$(basename "$(dirname "$lib")")
    if [ ! -e "$lib/wal2json.so" ]; then
      SUDO=""
      [ "$(id -u)" -ne 0 ] && SUDO=sudo
      echo "setup: installing postgresql-$version-wal2json (logical decoding for change capture)" >&2
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "postgresql-$version-wal2json" >/dev/null
    fi
  done
fi

# The live page's browser check (tests/browser/check-page.mjs) drives Debian's Chromium through
# playwright-core, pinned in tests/browser/package-lock.json; nothing is downloaded at run time.
if [ "${1:-}" = "--tests" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
      echo "error: the browser check needs chromium; install it with your package manager" >&2
      exit 1
    fi
    echo "setup: installing chromium (the browser the live page's check drives)" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
  browser_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
  if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "error: the browser check needs npm; install Node.js and npm, then run this again" >&2
      exit 1
    fi
    echo "setup: installing playwright-core in tests/browser (the browser check's driver)" >&2
    if [ -e "$browser_dir/package-lock.json" ]; then
      (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    else
      (cd "$browser_dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
    fi
  fi
fi
