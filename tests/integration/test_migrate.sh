#!/usr/bin/env bash
# test_migrate.sh — `mailbus migrate` against the real Postgres:
#   1. on a fresh empty database it creates every table of the schema;
#   2. running it again applies nothing;
#   3. two runs started at the same moment on another fresh database both
#      succeed and each migration is recorded exactly once.
# Uses its own throwaway databases (dropped on exit), never the demo's.
set -euo pipefail

: "${MAILBUS_PG_DSN:?MAILBUS_PG_DSN not set (eval \"\$(scripts/services env)\")}"
MB_BIN=${MB_BIN:-$(dirname "$0")/../../build/bin}
MAILBUS=$MB_BIN/mailbus
[[ -x $MAILBUS ]] || { echo "FAIL: $MAILBUS not built" >&2; exit 1; }

# The DSN of another database on the same server (URI or key=value form).
dsn_for_db() {
  local db=$1
  if [[ $MAILBUS_PG_DSN == postgres://* || $MAILBUS_PG_DSN == postgresql://* ]]; then
    local base=${MAILBUS_PG_DSN%%\?*} query=""
    [[ $MAILBUS_PG_DSN == *\?* ]] && query="?${MAILBUS_PG_DSN#*\?}"
    local rest=${base#*://}
    local authority=${rest%%/*}
    echo "${base%%://*}://${authority}/${db}${query}"
  else
    echo "$MAILBUS_PG_DSN dbname=$db"
  fi
}

DB1=mailbus_test_migrate_$$_a
DB2=mailbus_test_migrate_$$_b
TMP=$(mktemp -d)
cleanup() {
  for db in "$DB1" "$DB2"; do
    psql -X -q "$MAILBUS_PG_DSN" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$1" -c "$2"; }

sql "$MAILBUS_PG_DSN" "CREATE DATABASE $DB1"
sql "$MAILBUS_PG_DSN" "CREATE DATABASE $DB2"
DSN1=$(dsn_for_db "$DB1")
DSN2=$(dsn_for_db "$DB2")

# --- 1. fresh database -> every table --------------------------------------
[[ -z $(sql "$DSN1" "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'") ]] \
  || fail "$DB1 is not empty"
out=$(MAILBUS_PG_DSN=$DSN1 "$MAILBUS" migrate 2>"$TMP/err1") || { cat "$TMP/err1" >&2; fail "first migrate exited non-zero"; }
[[ $out =~ ^applied\ [1-9][0-9]*\ migrations?\ \(schema\ version\ [1-9][0-9]*\)$ ]] || fail "unexpected output: $out"
nmig=$(sql "$DSN1" "SELECT count(*) FROM schema_migrations")
version=$(sql "$DSN1" "SELECT max(version) FROM schema_migrations")
[[ $out == "applied $nmig migration"*"(schema version $version)" ]] || fail "output '$out' does not match schema_migrations ($nmig rows, max $version)"

expected=(accounts folders emails email_locations addresses attachments av_verdicts
          sync_jobs job_chunks job_messages dead_letters sync_history leases schema_migrations)
for t in "${expected[@]}"; do
  n=$(sql "$DSN1" "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = '$t' AND table_type = 'BASE TABLE'")
  [[ $n == 1 ]] || fail "table $t missing after migrate"
done
# A few structural promises the stages rely on.
n=$(sql "$DSN1" "SELECT count(*) FROM information_schema.table_constraints WHERE table_name = 'emails' AND constraint_type = 'UNIQUE'")
[[ $n -ge 1 ]] || fail "emails has no UNIQUE (account_id, blob_sha256)"
sql "$DSN1" "INSERT INTO accounts (name, kind, secret) VALUES ('a', 'imap', decode(repeat('00', 40), 'hex'))"
if sql "$DSN1" "INSERT INTO accounts (name, kind, secret) VALUES ('b', 'pop3', decode(repeat('00', 40), 'hex'))" 2>/dev/null; then
  fail "accounts.kind CHECK did not reject 'pop3'"
fi
sql "$DSN1" "INSERT INTO emails (account_id, blob_sha256) SELECT id, sha256('x') FROM accounts WHERE name = 'a'"
sql "$DSN1" "DELETE FROM accounts WHERE name = 'a'"
[[ $(sql "$DSN1" "SELECT count(*) FROM emails") == 0 ]] || fail "deleting an account did not cascade to emails"
echo "ok - fresh database migrated: $nmig migration(s), version $version, ${#expected[@]} tables"

# --- 2. second run is a no-op ---------------------------------------------
out=$(MAILBUS_PG_DSN=$DSN1 "$MAILBUS" migrate 2>"$TMP/err2") || { cat "$TMP/err2" >&2; fail "second migrate exited non-zero"; }
[[ $out == "schema up to date (version $version)" ]] || fail "second run said: $out"
[[ $(sql "$DSN1" "SELECT count(*) FROM schema_migrations") == "$nmig" ]] || fail "second run changed schema_migrations"
echo "ok - second run applied nothing"

# --- 3. two concurrent runs --------------------------------------------------
# Hold the migration lock (the key in db/migrate.c) from psql so both runs
# provably start together and queue on it, then let them go.
LOCK_KEY=7881696737104327501
advisory_waiters() {
  sql "$MAILBUS_PG_DSN" "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                         WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = '$DB2'"
}
psql -X -q "$DSN2" -c "SELECT pg_advisory_lock($LOCK_KEY)" -c "SELECT pg_sleep(3)" >/dev/null & holder=$!
for _ in $(seq 50); do
  [[ $(sql "$MAILBUS_PG_DSN" "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                              WHERE l.locktype = 'advisory' AND l.granted AND d.datname = '$DB2'") == 1 ]] && break
  sleep 0.1
done
MAILBUS_PG_DSN=$DSN2 "$MAILBUS" migrate >"$TMP/c1.out" 2>"$TMP/c1.err" & p1=$!
MAILBUS_PG_DSN=$DSN2 "$MAILBUS" migrate >"$TMP/c2.out" 2>"$TMP/c2.err" & p2=$!
waiting=0
for _ in $(seq 50); do
  waiting=$(advisory_waiters)
  [[ $waiting == 2 ]] && break
  sleep 0.1
done
[[ $waiting == 2 ]] || fail "expected both runs to wait on the migration lock, saw $waiting waiting"
wait $holder
rc1=0; rc2=0
wait $p1 || rc1=$?
wait $p2 || rc2=$?
[[ $rc1 == 0 && $rc2 == 0 ]] || { cat "$TMP"/c*.err >&2; fail "concurrent runs exited $rc1 and $rc2"; }
dups=$(sql "$DSN2" "SELECT count(*) FROM (SELECT version FROM schema_migrations GROUP BY version HAVING count(*) > 1) d")
[[ $dups == 0 ]] || fail "a migration was recorded twice"
[[ $(sql "$DSN2" "SELECT count(*) FROM schema_migrations") == "$nmig" ]] || fail "concurrent runs recorded the wrong number of migrations"
applied_total=0
for f in "$TMP/c1.out" "$TMP/c2.out"; do
  if [[ $(cat "$f") =~ ^applied\ ([0-9]+) ]]; then applied_total=$((applied_total + BASH_REMATCH[1])); fi
done
[[ $applied_total == "$nmig" ]] || fail "concurrent runs applied $applied_total migrations in total, expected $nmig: $(cat "$TMP"/c*.out)"
echo "ok - concurrent runs: both exit 0, each migration applied once ($(tr '\n' ';' <"$TMP/c1.out") $(tr '\n' ';' <"$TMP/c2.out"))"

# --- usage errors ----------------------------------------------------------
rc=0; "$MAILBUS" migrate --bogus >/dev/null 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "unknown argument exit code $rc, expected 2"
rc=0; MAILBUS_PG_CONNECT_TIMEOUT=1 MAILBUS_PG_DSN="postgresql://nobody:hunter2secret@127.0.0.1:1/x" \
  "$MAILBUS" migrate >/dev/null 2>"$TMP/err3" || rc=$?
[[ $rc == 1 ]] || fail "unreachable server exit code $rc, expected 1"
grep -q "127.0.0.1:1" "$TMP/err3" || fail "error does not name the server: $(cat "$TMP/err3")"
! grep -q hunter2secret "$TMP/err3" || fail "password leaked into the error output"
echo "ok - usage and connection errors"
echo "PASS test_migrate"
