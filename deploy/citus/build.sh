#!/usr/bin/env bash
# Builds Citus from a source checkout and installs it into the PostgreSQL that pg_config names.
#
#   deploy/citus/build.sh SOURCE_DIR [PG_CONFIG]
#
# SOURCE_DIR: a checkout of https://github.com/citusdata/citus (tag v13.2.2 for PostgreSQL 15;
# Citus main needs 16 or newer), left untouched: the build runs in a copy. PG_CONFIG defaults to
# the pg_config on PATH. Debian's build dependencies:
#   apt-get install postgresql-server-dev-15 libkrb5-dev liblz4-dev libzstd-dev libcurl4-openssl-dev
# Installing writes into the server's lib and share directories (root, or their owner).
set -euo pipefail

source_dir=${1:?usage: $0 SOURCE_DIR [PG_CONFIG]}
pg_config=${2:-pg_config}
[ -f "$source_dir/configure" ] || { echo "$source_dir is not a Citus source tree" >&2; exit 2; }
command -v "$pg_config" >/dev/null || { echo "$pg_config not found: install postgresql-server-dev-<version>" >&2; exit 2; }

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -a "$source_dir/." "$build"
cd "$build"
# A checkout gives configure and configure.ac one time; make would regenerate configure (with
# autoconf) when it looks older.
touch configure

server_headers=$("$pg_config" --includedir-server)
if grep -q "have_createdb_privilege" "$server_headers/commands/dbcommands.h" 2>/dev/null; then
  # PostgreSQL 15.20 exports have_createdb_privilege, which Citus 13.2's compat header defines
  # again as a static function for 15: use the server's.
  perl -0pi -e 's/static inline bool\nhave_createdb_privilege\(void\)\n\{.*?\n\}\n/#include "commands\/dbcommands.h"\n/s' \
    src/include/pg_version_compat.h
fi

./configure PG_CONFIG="$pg_config" --without-libcurl >configure.log 2>&1 || { tail -20 configure.log >&2; exit 1; }
make -j"$(nproc)" >make.log 2>&1 || { grep -m5 -B2 -A5 " error" make.log >&2 || tail -30 make.log >&2; exit 1; }
make install PG_CONFIG="$pg_config" >install.log 2>&1 || { tail -20 install.log >&2; exit 1; }
echo "Citus $(git -C "$source_dir" describe --tags 2>/dev/null || echo '(source)') installed for $("$pg_config" --version)"
echo "each server needs shared_preload_libraries = 'citus' (see docs/scaling.md)"
