#!/usr/bin/env bash
# test_outage_start.sh — the stages are started while nats-server and Postgres
# are both down: each waits (the same worker process throughout, no exit, no
# restart loop), and once both servers are started an import completes exactly,
# with no log flood. Runs on a private set of services (lib_outage.sh).
set -euo pipefail
. "$(dirname "$0")/lib_outage.sh"
lo_init test_outage_start
N=${MB_OUTAGE_MESSAGES:-400}
DOWN=${MB_OUTAGE_DOWN_S:-12}
lo_mailbox "$N"
lo_env start
lo_nats_kill
lo_pg_stop
li_stages start >/dev/null || li_fail "stages start"
sleep 2
lo_wait_workers
lo_pids "$LI_W/start.pids"
sleep "$DOWN"
li_stages_alive
lo_services_start
li_log "nats-server and postgres started after ${DOWN} s"
# The CLI asks the scan stage over NATS: it answers once it is connected.
t0=$SECONDS
until job=$("$MB" import start oacct 2>"$LI_W/import.err") && [[ $job =~ ^[0-9]+$ ]]; do
  ((SECONDS - t0 < 60)) || { cat "$LI_W/import.err"; li_fail "no stage took the import within 60 s"; }
  sleep 0.5
done
li_log "import $job accepted $((SECONDS - t0)) s after the servers came back"
lo_verify "$job" "$LI_W/start.pids" 0 0
li_ok "stages started with nats-server and postgres down for ${DOWN} s: same processes throughout, job complete, counters and bytes exact, no dead letter, longest stage log $LO_LOG_MAX lines"
echo "PASS test_outage_start.sh ($LO_TOTAL messages, total $((SECONDS - LI_T0)) s)"
