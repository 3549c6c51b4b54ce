#!/usr/bin/env bash
# test_outage_postgres.sh — Postgres stops in the middle of an import for longer
# than AckWait x MaxDeliver allows (2 s x 3 here) and then comes back: every stage
# waits (no process exits), holds its records without spending deliveries, and the
# import completes exactly — counters, the server's bytes, nothing dead-lettered,
# the outage on the job a few times (not once per record), no log flood.
# Runs on a private set of services (lib_outage.sh).
set -euo pipefail
. "$(dirname "$0")/lib_outage.sh"
lo_init test_outage_postgres
N=${MB_OUTAGE_MESSAGES:-800}
DOWN=${MB_OUTAGE_DOWN_S:-12}
lo_mailbox "$N"
lo_env pg
li_stages start >/dev/null || li_fail "stages start"
lo_wait_workers
lo_pids "$LI_W/pg.pids"
t0=$SECONDS
job=$(li_import oacct)
lo_wait_bit "$job" 4 1
lo_pg_stop
li_log "postgres stopped, $(li_count "$job" 4 2>/dev/null || echo '?') stored so far"
sleep "$DOWN"
li_stages_alive
lo_services_start
li_log "postgres back after ${DOWN} s"
at=$(li_count "$job" 4)
lo_verify "$job" "$LI_W/pg.pids" 1 8
li_ok "postgres down ${DOWN} s mid-import ($at/$LO_TOTAL stored when it came back): job complete, counters and bytes exact, no dead letter, no stage restarted, outage on the job $problems times, longest stage log $LO_LOG_MAX lines"
echo "PASS test_outage_postgres.sh ($LO_TOTAL messages, $((SECONDS - t0)) s import, total $((SECONDS - LI_T0)) s)"
