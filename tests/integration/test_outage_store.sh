#!/usr/bin/env bash
# test_outage_store.sh — nats-server loses its JetStream store (stopped, js/
# deleted, started empty) under running stages. What must happen: the stages'
# consume loops find their consumer gone and provision every stream and consumer
# again (no process exits, no human), so the next import completes exactly. Records
# that were in the lost store are the coordinator's business: it republishes the
# chunks still marked published (stages/scan sweep); this test loses the store
# between imports so that its outcome does not depend on that sweep.
# Runs on a private set of services (lib_outage.sh).
set -euo pipefail
. "$(dirname "$0")/lib_outage.sh"
lo_init test_outage_store
N=${MB_OUTAGE_MESSAGES:-400}
lo_mailbox "$N"
lo_env store
li_stages start >/dev/null || li_fail "stages start"
lo_wait_workers
lo_pids "$LI_W/store.pids"
lo_nats_kill
rm -rf "$MAILBUS_RUN_DIR/nats/js"
lo_services_start
li_log "nats-server started with an empty JetStream store"
t0=$SECONDS
until job=$("$MB" import start oacct 2>"$LI_W/import.err") && [[ $job =~ ^[0-9]+$ ]]; do
  ((SECONDS - t0 < 60)) || { cat "$LI_W/import.err"; li_fail "no stage took the import within 60 s"; }
  sleep 0.5
done
lo_verify "$job" "$LI_W/store.pids" 0 0
for s in FETCH PARSE STORE AVSCAN EVENTS DLQ; do
  "$MB_BIN/mb-test-bus_ctl" count "$s" >/dev/null 2>&1 || li_fail "stream $s not provisioned again"
done
li_ok "JetStream store lost under running stages: streams and consumers provisioned again, same processes, next import complete and exact, longest stage log $LO_LOG_MAX lines"
echo "PASS test_outage_store.sh ($LO_TOTAL messages, total $((SECONDS - LI_T0)) s)"
