#!/usr/bin/env bash
# test_chaos.sh — the short version of scripts/chaos: 3 runs of a 2,000-message import,
# each with 2-4 faults at random moments chosen from a fixed seed (kill -9 of a random
# copy of a random stage, restart of nats-server, restart of Postgres, the IMAP
# connections dropped, a clamd outage), on a PRIVATE set of services (own run directory
# and ports, started and stopped by scripts/chaos; the shared services are untouched).
# Every run must end identical to an undisturbed import of the same mailbox: the same
# emails, email_locations, addresses, attachments, verdicts, folders, job counters,
# chunks and progress bits, the same blob files with the right bytes, no temp files,
# no dead letters. Seed 9 covers every fault kind (kills of store, fetch and avscan).
#
# MB_CHAOS_RUNS, MB_CHAOS_MESSAGES, MB_CHAOS_SEED override the defaults; the private set
# lives in MB_CHAOS_RUN_DIR [/tmp/mailbus-test-chaos] on ports 63222 (NATS), 63822
# (monitor), 63432 (Postgres), 63143/63993 (IMAP/IMAPS).
set -euo pipefail
SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
: "${MB_BIN:?MB_BIN must point at the build bin directory}"
runs=${MB_CHAOS_RUNS:-3}
messages=${MB_CHAOS_MESSAGES:-2000}
seed=${MB_CHAOS_SEED:-9}
out=$(mktemp -d /tmp/test_chaos.XXXXXX)
t0=$SECONDS

rc=0
MAILBUS_CHAOS_RUN_DIR=${MB_CHAOS_RUN_DIR:-/tmp/mailbus-test-chaos} \
  MAILBUS_CHAOS_NATS_PORT=63222 MAILBUS_CHAOS_NATS_MONITOR_PORT=63822 MAILBUS_CHAOS_PG_PORT=63432 \
  MAILBUS_CHAOS_IMAP_PORT=63143 MAILBUS_CHAOS_IMAPS_PORT=63993 \
  "$SRC/scripts/chaos" --runs "$runs" --messages "$messages" --seed "$seed" --bin "$MB_BIN" \
  --out "$out" >"$out/stdout" 2>"$out/stderr" || rc=$?
cat "$out/stderr" "$out/stdout"
json=$(tail -n 1 "$out/stdout")
fail() {
  echo "FAIL: $*" >&2
  local d
  for d in "$out"/run-*; do
    [[ -f $d/dump.diff || -f $d/compare ]] || continue
    echo "--- $(basename "$d"): $(tail -n 1 "$d/run.log")"
    grep -v '^stages running' "$d/run.log" | sed -n 1,20p
    [[ ! -s $d/dump.diff ]] || { echo "--- first row differences (< undisturbed, > this run)"; cut -c1-300 "$d/dump.diff" | sed -n 1,12p; }
  done >&2
  echo "(details kept in $out)" >&2
  exit 1
}
jq -e . >/dev/null 2>&1 <<<"$json" || fail "scripts/chaos exited $rc without its summary line"
faults=$(jq .faults <<<"$json")
ident=$(jq .identical <<<"$json")
((faults >= runs)) || fail "only $faults faults injected in $runs runs"
((ident == runs)) || fail "$ident of $runs runs identical to the undisturbed import: $json"
((rc == 0)) || fail "scripts/chaos exited $rc"
rm -rf "$out"
echo "PASS test_chaos.sh ($runs runs of $messages messages, $faults faults, all identical; $((SECONDS - t0)) s)"
