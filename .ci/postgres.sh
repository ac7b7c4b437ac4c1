#!/usr/bin/env bash
# Make sure a PostgreSQL server binary (initdb, pg_ctl) is available for tests/search/test_postgres.py.
# CI runs as root on a fresh Debian machine; the test itself runs the server as an unprivileged user.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
ls /usr/lib/postgresql/*/bin/initdb
