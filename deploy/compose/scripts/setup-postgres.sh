#!/bin/sh
# Create Temporal's two PostgreSQL databases and bring their schemas up to date (idempotent).
set -eu
tool() { temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$DB_PORT" "$@"; }
until nc -z -w 2 "$POSTGRES_SEEDS" "$DB_PORT"; do sleep 1; done
for db in temporal temporal_visibility; do
  schema=temporal; [ "$db" = temporal_visibility ] && schema=visibility
  tool --db "$db" create || true   # exists already on a restart
  tool --db "$db" setup-schema -v 0.0
  tool --db "$db" update-schema -d "/etc/temporal/schema/postgresql/v12/$schema/versioned"
done
echo "PostgreSQL schema ready"
