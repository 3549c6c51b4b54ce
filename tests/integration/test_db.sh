#!/usr/bin/env bash
# test_db.sh — runs mb-test-db_check (the db/ access layer against the real
# Postgres) on a throwaway database of its own, then checks that the
# password it put in the DSN never reached its output.
set -euo pipefail

: "${MAILBUS_PG_DSN:?MAILBUS_PG_DSN not set (eval \"\$(scripts/services env)\")}"
MB_BIN=${MB_BIN:-$(dirname "$0")/../../build/bin}
PROG=$MB_BIN/mb-test-db_check
[[ -x $PROG ]] || { echo "FAIL: $PROG not built" >&2; exit 1; }

DB=mailbus_test_db_$$
TMP=$(mktemp -d)
cleanup() {
  psql -X -q "$MAILBUS_PG_DSN" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

psql -X -q -v ON_ERROR_STOP=1 "$MAILBUS_PG_DSN" -c "CREATE DATABASE $DB"

# Point at the new database and add a password the server (trust auth)
# ignores, so the program runs with a secret in its DSN.
SECRET=pw_test_db_$$_secret
if [[ $MAILBUS_PG_DSN == postgres://* || $MAILBUS_PG_DSN == postgresql://* ]]; then
  base=${MAILBUS_PG_DSN%%\?*} query=""
  [[ $MAILBUS_PG_DSN == *\?* ]] && query="&${MAILBUS_PG_DSN#*\?}"
  rest=${base#*://}
  DSN="${base%%://*}://${rest%%/*}/$DB?password=$SECRET$query"
else
  DSN="$MAILBUS_PG_DSN dbname=$DB password=$SECRET"
fi

rc=0
MAILBUS_PG_DSN=$DSN MAILBUS_LOG_LEVEL=debug "$PROG" >"$TMP/out" 2>"$TMP/err" || rc=$?
cat "$TMP/out"
if [[ $rc != 0 ]]; then
  tail -n 30 "$TMP/err" >&2
  echo "FAIL: mb-test-db_check exited $rc" >&2
  exit 1
fi
if grep -q "$SECRET" "$TMP/out" "$TMP/err"; then
  echo "FAIL: the DSN's password appeared in the output" >&2
  exit 1
fi
grep -q "reconnecting" "$TMP/err" || { echo "FAIL: no reconnect was logged" >&2; exit 1; }
echo "ok - password never logged ($(wc -l <"$TMP/err") log lines checked)"
echo "PASS test_db"
