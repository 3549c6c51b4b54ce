#!/usr/bin/env bash
# test_import_sweep.sh — work lost from the bus is handed out again: the
# coordinator's sweep finds published chunks without progress and with
# nothing of the account queued, and publishes them again.
#
#  1. fetch tasks lost: chunks are published while no fetch runs, then the
#     FETCH stream is purged (as a lost JetStream store would lose them).
#  2. parse records lost: fetch runs while no parse does, then the PARSE
#     stream is purged; the messages fetched but never stored are fetched
#     again.
# Meanwhile a stage that is merely down (records queued for it) is not swept:
# no copies pile up while fetch is stopped longer than the stall time.
# Afterwards: the job completes, every location's blob equals the server's
# bytes, counters exact, the sweep recorded on the job.
# The stall time here (2 s) needs a duplicate window below it, as the
# defaults have (10 min against 2 min): a refetched message's parse record has
# the Nats-Msg-Id of the purged one and would be dropped as its duplicate, its
# chunk handed back again and again until the window passed (155 s here with
# the default window). A lost JetStream store loses the window with the records.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_import_sweep
W=$LI_W
N=600
export MAILBUS_CHUNK_STALL_MS=2000 MAILBUS_DUPLICATE_WINDOW_MS=1000

li_mailbox mbsweep mbsweep-pw --messages "$N" --seed 37
li_server_state "$W/server"
total=$(wc -l <"$W/server")
((total == N)) || li_fail "server has $total messages, genmail wrote $N"
li_server_sha "$W/server.sha" "$W/server"

li_env sweep
li_account swacct mbsweep mbsweep-pw
bus_ctl() { "$MB_BIN/mb-test-bus_ctl" "$@"; }

# --- 1. fetch tasks lost --------------------------------------------------------------------
li_stages start fetch=0 parse=0 >/dev/null || li_fail "stages start without fetch and parse"
job=$(li_import swacct)
li_wait_until 60 "chunks of job $job published" \
  "EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $job AND state = 'published')"
published=$(li_sql "SELECT count(*) FROM job_chunks WHERE job_id = $job AND state = 'published'")
# Longer than the stall time and two sweeps: queued tasks are not lost work.
sleep 12
queued=$(bus_ctl count FETCH)
[[ $queued == "$published" ]] ||
  li_fail "fetch down for 12 s: $queued tasks queued for $published published chunks (the sweep piled up copies?)"
[[ $(li_sql "SELECT count(*) FROM sync_history WHERE job_id = $job AND event = 'sweep'") == 0 ]] ||
  li_fail "a sweep while the tasks were still queued"
li_ok "fetch down 12 s with stall 2 s: $queued tasks queued, none handed out twice"
bus_ctl purge FETCH || li_fail "purge FETCH"
[[ $(bus_ctl count FETCH) == 0 ]] || li_fail "FETCH not empty after the purge"
li_log "purged $published fetch tasks"
li_stages start fetch=1 parse=0 >/dev/null || li_fail "start fetch"

# --- 2. parse records lost ------------------------------------------------------------------
li_wait_until 120 "every message of job $job fetched after the sweep" \
  "(SELECT count(*) FROM job_messages WHERE job_id = $job AND st & 1 <> 0) = $total"
queued=$(bus_ctl count PARSE)
((queued >= total)) || li_fail "$queued parse records queued for $total fetched messages"
bus_ctl purge PARSE || li_fail "purge PARSE"
li_log "purged the $queued parse records of $total fetched messages"
li_stages start >/dev/null || li_fail "stages start (all)"
li_wait_job "$job" 180
li_stages stop

# --- the result -----------------------------------------------------------------------------
li_sql "SELECT f.name, l.uid, encode(e.blob_sha256, 'hex') FROM email_locations l
        JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id ORDER BY 1, 2" |
  sort >"$W/db.sha"
li_diff "$W/server.sha" "$W/db.sha" "stored locations and blobs differ from the server's"
IFS=$'\t' read -r tot fe pa so er < <(li_sql "SELECT total_messages, fetched, parsed, stored, errors FROM sync_jobs WHERE id = $job")
[[ "$tot $fe $pa $so $er" == "$total $total $total $total 0" ]] ||
  li_fail "counters total=$tot fetched=$fe parsed=$pa stored=$so errors=$er"
sweeps=$(li_sql "SELECT count(*) FROM sync_history WHERE job_id = $job AND event = 'sweep'")
((sweeps >= 1)) || li_fail "no sweep recorded on the job"
handed=$(li_sql "SELECT sum(republished) FROM job_chunks WHERE job_id = $job")
li_ok "lost fetch tasks and parse records: job completed, $total messages equal to the server's, $handed chunk hand-backs, $sweeps sweep problem(s) on the job"
echo "PASS test_import_sweep.sh ($total messages, total $((SECONDS - LI_T0)) s)"
