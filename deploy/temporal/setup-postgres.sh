#!/bin/sh
# Creates Temporal's two PostgreSQL databases and brings their schemas up to the version this admin-tools image
# ships: the steps of Temporal's own compose (temporalio/samples-server compose/scripts/setup-postgres.sh).
# Each step is idempotent in temporal-sql-tool 1.32 (`create` accepts an existing database, `setup-schema -v 0.0`
# only adds the version tables, `update-schema` applies only missing versions), so the same script sets up a new
# stack and upgrades an old one, and nothing needs `|| true`: any error is real, stops here, and the server does
# not start on a half-made schema. The password comes from SQL_PASSWORD (temporal-sql-tool reads it itself).
set -eu

: "${POSTGRES_SEEDS:?set POSTGRES_SEEDS to the PostgreSQL host}"
: "${POSTGRES_USER:?set POSTGRES_USER to the PostgreSQL user}"
: "${SQL_PASSWORD:?set SQL_PASSWORD to the PostgreSQL password}"
port="${DB_PORT:-5432}"
# The admin-tools image keeps the schemas here (its Dockerfile copies them in); TEMPORAL_SCHEMA_DIR overrides it.
schemas="${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema}/postgresql/v12"

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$port" -u "$POSTGRES_USER" "$@"
}

for pair in temporal:temporal temporal_visibility:visibility; do
  db="${pair%%:*}"
  dir="$schemas/${pair#*:}/versioned"
  echo "PostgreSQL database $db: create, set up, update from $dir"
  sql_tool --db "$db" create
  sql_tool --db "$db" setup-schema -v 0.0
  sql_tool --db "$db" update-schema -d "$dir"
done
echo 'PostgreSQL schema setup complete'
