#!/usr/bin/env bash
# test_bus_valgrind.sh — the whole bus API in one process (connect, provision,
# publish, consume, ack, one dead letter, stop, delete streams, nats_Close)
# under valgrind: no memory errors and no heap block left at exit.
#
# Valgrind cannot run sanitized binaries, so this uses the helper from a
# NON-sanitized build: $MB_PLAIN_BIN (default $MB_SOURCE_DIR/build/bin).
# No suppressions are needed: mb_bus_library_close() (nats_CloseAndWait)
# releases all of nats.c's global state.
set -euo pipefail

: "${MB_SOURCE_DIR:?MB_SOURCE_DIR must be set}"
PLAIN="${MB_PLAIN_BIN:-$MB_SOURCE_DIR/build/bin}"
PROG="$PLAIN/mb-test-bus_roundtrip"
[ -x "$PROG" ] || { echo "FAIL: $PROG not built (build a non-sanitized tree, set MB_PLAIN_BIN)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "FAIL: valgrind not installed" >&2; exit 1; }

export MAILBUS_PREFIX="tbusvg$$"
export MAILBUS_LOG_LEVEL="${MAILBUS_LOG_LEVEL:-warn}"
LOG=$(mktemp /tmp/test_bus_valgrind.XXXXXX)
trap 'rm -f "$LOG"' EXIT

rc=0
valgrind --leak-check=full --show-leak-kinds=all --errors-for-leak-kinds=all \
    --error-exitcode=1 "$PROG" >"$LOG" 2>&1 || rc=$?
if [ "$rc" -ne 0 ] || ! grep -q "bus_roundtrip: ok" "$LOG" \
    || ! grep -q "ERROR SUMMARY: 0 errors" "$LOG"; then
    cat "$LOG" >&2
    echo "FAIL: bus round trip under valgrind (exit $rc)" >&2
    exit 1
fi
grep -E "in use at exit|ERROR SUMMARY" "$LOG"
echo "PASS test_bus_valgrind"
