#!/bin/sh
# Compose's one-shot postgres-init, before the migrations: the role the API and workers log in
# as, with its password. The migrations create tenantry_app as well, but with no password
# (tenantry.infrastructure.db.rls.create_app_role), and this server asks for one over TCP; they
# find the role here and only grant it. Runs on every `docker compose up`, so a changed
# APP_DB_PASSWORD takes effect (Vault receives the same value from vault-bootstrap).
set -eu
psql --no-psqlrc -v ON_ERROR_STOP=1 -v app_password="$APP_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE tenantry_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE'
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenantry_app')
\gexec
ALTER ROLE tenantry_app WITH LOGIN PASSWORD :'app_password';
SQL
echo "postgres-init: role tenantry_app ready"
