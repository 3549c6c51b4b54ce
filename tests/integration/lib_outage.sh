# lib_outage.sh — shared helpers of the outage tests (test_outage_*.sh): NATS and
# Postgres go away in the middle of an import (or before the stages start) and the
# import must still complete exactly, without a stage process exiting, without a
# dead letter, with the outage on the job a few times at most and no log flood.
# Sourced, not run.
#
# These tests stop and kill servers, so they run on a PRIVATE set of services
# (own run directory and ports, never the shared ones), started here if it is not
# up and stopped again when the test ends:
#   MB_OUTAGE_RUN_DIR [/tmp/mailbus-outage-run]  MB_OUTAGE_NATS_PORT [24222]
#   MB_OUTAGE_NATS_MONITOR_PORT [28222]  MB_OUTAGE_PG_PORT [25432]
#   MB_OUTAGE_IMAP_PORT [20143]  MB_OUTAGE_IMAPS_PORT [20993]
# The ports lie below the kernel's ephemeral range (32768-60999 here): a port in
# it was once taken by an outgoing connection when the private NATS started.
# Short AckWait and MaxDeliver make "an outage longer than the deliveries allow"
# take seconds: MAILBUS_ACK_WAIT_MS=2000, MAILBUS_MAX_DELIVER=3.
LO_SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
LO_SERVICES=$LO_SRC/scripts/services

export MAILBUS_RUN_DIR=${MB_OUTAGE_RUN_DIR:-/tmp/mailbus-outage-run}
export MAILBUS_NATS_PORT=${MB_OUTAGE_NATS_PORT:-24222}
export MAILBUS_NATS_MONITOR_PORT=${MB_OUTAGE_NATS_MONITOR_PORT:-28222}
export MAILBUS_PG_PORT=${MB_OUTAGE_PG_PORT:-25432}
export MAILBUS_IMAP_PORT=${MB_OUTAGE_IMAP_PORT:-20143}
export MAILBUS_IMAPS_PORT=${MB_OUTAGE_IMAPS_PORT:-20993}
# Nothing of the shared set may leak into this one.
unset LI_ADMIN_DSN MAILBUS_PG_DSN MAILBUS_NATS_URL MAILBUS_BLOB_DIR MAILBUS_MAIL_ROOT \
  MAILBUS_CLAMD_SOCKET MAILBUS_SECRET_KEY_FILE MAILBUS_PG_SOCKET_DIR
"$LO_SERVICES" start >/tmp/outage-services-start.$$.log 2>&1 ||
  { cat /tmp/outage-services-start.$$.log >&2; echo "FAIL: private services did not start" >&2; exit 1; }
rm -f /tmp/outage-services-start.$$.log
eval "$("$LO_SERVICES" env)"
export MAILBUS_ACK_WAIT_MS=${MAILBUS_ACK_WAIT_MS:-2000}
export MAILBUS_MAX_DELIVER=${MAILBUS_MAX_DELIVER:-3}
# Each statement gives up on an unreachable server after 2 s (instead of 30):
# the stages must wait out a long outage themselves, not inside libpq.
export MAILBUS_PG_CONNECT_TIMEOUT=${MAILBUS_PG_CONNECT_TIMEOUT:-2}
. "$LO_SRC/tests/integration/lib_import.sh"

LO_NATS_PID=$MAILBUS_RUN_DIR/nats/nats.pid
LO_PG_PID=$MAILBUS_RUN_DIR/pg/data/postmaster.pid

# lo_init NAME: li_init, with a cleanup that also stops the private services.
lo_init() {
  li_init "$1"
  trap lo_cleanup EXIT
}

lo_cleanup() {
  local rc=$?
  set +e
  "$LO_SERVICES" start >/dev/null 2>&1 # li_cleanup drops databases and streams
  (exit $rc)
  (li_cleanup) >/dev/null 2>&1
  "$LO_SERVICES" stop >/dev/null 2>&1
  exit $rc
}

# lo_mailbox N: the test's mailbox (N generated messages, one EICAR), the server's
# view of it in $LI_W/server and the sha256 of every raw message in $LI_W/server_sha.
lo_mailbox() {
  li_mailbox mboutage mboutage-pw --messages "$1" --seed 37 --eicar 1
  # folder<TAB>uid of every message (li_server_state also reads flags, one
  # process per message: minutes on a loaded machine; only the bytes matter here).
  local name noselect
  : >"$LI_W/server"
  li_imapt 120 folders >"$LI_W/folders.txt" || li_fail "imap_tool folders"
  while IFS=$'\t' read -r name _ _ _ noselect; do
    [[ ${noselect:-0} == 1 ]] && continue
    li_imapt 120 scan "$name" | awk -v f="$name" '{print f "\t" $1}' >>"$LI_W/server" ||
      li_fail "imap_tool scan $name"
  done <"$LI_W/folders.txt"
  sort -o "$LI_W/server" "$LI_W/server"
  LO_TOTAL=$(wc -l <"$LI_W/server")
  ((LO_TOTAL == $1)) || li_fail "server has $LO_TOTAL messages, genmail wrote $1"
  li_server_sha "$LI_W/server_sha" "$LI_W/server"
  [[ $(wc -l <"$LI_W/server_sha") == "$LO_TOTAL" ]] || li_fail "imap_tool fetched $(wc -l <"$LI_W/server_sha") of $LO_TOTAL"
}

# lo_env TAG: fresh prefix, database, blob dir and stage dir, with the account.
lo_env() {
  li_env "$1"
  li_account oacct mboutage mboutage-pw
  LO_TAG=$1
}

# lo_pids OUT: "stage supervisor-pid worker-pid" of every running stage.
lo_pids() {
  li_stages status | sed -E 's/^([a-z]+-[0-9]+) up \(pid ([0-9]+), worker ([0-9]*)\)$/\1 \2 \3/' | sort >"$1"
  [[ $(wc -l <"$1") == 5 ]] || li_fail "expected 5 stages: $(tr '\n' ';' <"$1")"
  ! awk 'NF != 3 {bad=1} END {exit !bad}' "$1" || li_fail "a stage has no worker: $(tr '\n' ';' <"$1")"
}

# lo_wait_workers: until every stage's supervisor runs a worker.
lo_wait_workers() {
  local i
  for i in $(seq 1 100); do
    li_stages status | grep -q 'worker )' || return 0
    sleep 0.1
  done
  li_fail "a stage has no worker: $(li_stages status | tr '\n' ';')"
}

lo_nats_kill() {
  local pid
  pid=$(tr -dc 0-9 <"$LO_NATS_PID")
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

lo_pg_stop() {
  local pid
  pid=$(head -n1 "$LO_PG_PID" | tr -dc 0-9)
  kill -INT "$pid" # fast shutdown: every session is terminated
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# lo_services_start: start whatever of the private set is down.
lo_services_start() {
  "$LO_SERVICES" start >"$LI_W/services-start.log" 2>&1 || { cat "$LI_W/services-start.log"; li_fail "services start"; }
}

# lo_wait_bit JOB BIT MIN: until at least MIN messages of JOB have BIT.
lo_wait_bit() {
  local deadline=$((SECONDS + 90))
  while (($(li_count "$1" "$2") < $3)); do
    ((SECONDS < deadline)) || li_fail "job $1: fewer than $3 messages with bit $2 after 90 s"
    sleep 0.05
  done
}

# lo_verify JOB PIDS-BEFORE MIN-PROBLEMS MAX-PROBLEMS: the job completed with exact
# counters, every message stored once with the server's bytes, no dead letter, no
# stage process replaced, the outage on the job MIN..MAX times, no log flood.
lo_verify() {
  local job=$1 before=$2 pmin=$3 pmax=$4
  li_wait_job "$job" 150
  IFS=$'\t' read -r tot fe pa so er avp < <(li_sql "SELECT total_messages, fetched, parsed, stored, errors, av_pending FROM sync_jobs WHERE id = $job")
  [[ "$tot $fe $pa $so $er $avp" == "$LO_TOTAL $LO_TOTAL $LO_TOTAL $LO_TOTAL 0 0" ]] ||
    li_fail "counters total=$tot fetched=$fe parsed=$pa stored=$so errors=$er av_pending=$avp (want $LO_TOTAL each, 0 errors)"
  li_sql "SELECT coalesce(f.remote_name, f.name), l.uid, encode(e.blob_sha256, 'hex')
          FROM email_locations l JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id
          ORDER BY 1, 2" | sort >"$LI_W/$LO_TAG.db_sha"
  li_diff "$LI_W/server_sha" "$LI_W/$LO_TAG.db_sha" "stored messages (folder, uid, sha256) != the server's"
  cut -f3 "$LI_W/$LO_TAG.db_sha" | sort -u >"$LI_W/$LO_TAG.want_blobs"
  (cd "$MAILBUS_BLOB_DIR" && find . -path './??/*' -type f -print0 | xargs -0 sha256sum) |
    awk '{n = $2; sub(/.*\//, "", n); print $1 "\t" n}' | sort >"$LI_W/$LO_TAG.blob_hashes"
  awk -F'\t' '{print $1}' "$LI_W/$LO_TAG.blob_hashes" >"$LI_W/$LO_TAG.blob_content"
  awk -F'\t' '{print $2}' "$LI_W/$LO_TAG.blob_hashes" >"$LI_W/$LO_TAG.blob_names"
  li_diff "$LI_W/$LO_TAG.blob_names" "$LI_W/$LO_TAG.blob_content" "blob files whose bytes do not hash to their name"
  li_diff "$LI_W/$LO_TAG.want_blobs" "$LI_W/$LO_TAG.blob_names" "blob files != distinct stored messages"
  [[ $(li_sql "SELECT count(*) FROM attachments WHERE scan_status = 'infected'") == 1 ]] ||
    li_fail "want 1 infected attachment: $(li_sql "SELECT scan_status, count(*) FROM attachments GROUP BY 1" | tr '\n' ' ')"
  local dlq
  dlq=$("$MB_BIN/mb-test-bus_ctl" count DLQ 2>"$LI_W/dlq.err") || li_fail "count DLQ: $(cat "$LI_W/dlq.err")"
  [[ $dlq == 0 ]] || { "$MB" dlq list >&2 || true; li_fail "$dlq dead letters"; }
  lo_pids "$LI_W/$LO_TAG.pids.after"
  li_diff "$before" "$LI_W/$LO_TAG.pids.after" "a stage process exited and was replaced (stage supervisor worker)"
  problems=$(li_sql "SELECT count(*) FROM sync_history WHERE job_id = $job AND event = 'outage'")
  ((problems >= pmin && problems <= pmax)) ||
    { li_sql "SELECT event, detail FROM sync_history WHERE job_id = $job" | head -20 >&2
      li_fail "the outage is on the job $problems times, want $pmin..$pmax"; }
  local f lines warn max=0
  for f in "$MAILBUS_STAGES_DIR"/*.log; do
    lines=$(wc -l <"$f")
    warn=$(grep -c -E '(WARN|ERROR)' "$f" || true)
    ((warn <= 25)) || { tail -n 30 "$f" >&2; li_fail "$(basename "$f"): $warn warning/error lines (log flood)"; }
    ((lines > max)) && max=$lines
  done
  LO_LOG_MAX=$max
  li_sql "SELECT count(*) FROM emails" >/dev/null
}
