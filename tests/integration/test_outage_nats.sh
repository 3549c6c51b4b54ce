#!/usr/bin/env bash
# test_outage_nats.sh — nats-server is killed in the middle of an import and
# started again with its JetStream store, after longer than AckWait x MaxDeliver
# (2 s x 3 here): every stage reconnects and goes on without exiting, nothing is
# dead-lettered, and the import completes exactly (counters, the server's bytes),
# with no log flood. Runs on a private set of services (lib_outage.sh).
set -euo pipefail
. "$(dirname "$0")/lib_outage.sh"
lo_init test_outage_nats
N=${MB_OUTAGE_MESSAGES:-800}
DOWN=${MB_OUTAGE_DOWN_S:-10}
lo_mailbox "$N"
lo_env nats
li_stages start >/dev/null || li_fail "stages start"
lo_wait_workers
lo_pids "$LI_W/nats.pids"
t0=$SECONDS
job=$(li_import oacct)
lo_wait_bit "$job" 2 1
lo_nats_kill
at=$(li_count "$job" 4)
li_log "nats-server killed, $at/$LO_TOTAL stored so far"
((at < LO_TOTAL)) || li_fail "the import was over before nats-server was killed (raise MB_OUTAGE_MESSAGES)"
sleep "$DOWN"
li_stages_alive
lo_services_start
li_log "nats-server back after ${DOWN} s (JetStream store kept)"
lo_verify "$job" "$LI_W/nats.pids" 0 8
li_ok "nats-server down ${DOWN} s mid-import ($at/$LO_TOTAL stored at the kill): job complete, counters and bytes exact, no dead letter, no stage restarted, outage on the job $problems times, longest stage log $LO_LOG_MAX lines"
echo "PASS test_outage_nats.sh ($LO_TOTAL messages, $((SECONDS - t0)) s import, total $((SECONDS - LI_T0)) s)"
