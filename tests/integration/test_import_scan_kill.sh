#!/usr/bin/env bash
# test_import_scan_kill.sh — kill -9 of the scan stage (which also serves the
# commands and coordinates every job) mid-scan and mid-import: the job is
# taken over and completes, identical to an undisturbed import.
#
#  1. mid-scan: one scan copy, killed (supervisor and worker) after the first
#     folder is recorded (a test-only delay holds it there). While no scan
#     runs, a command gets a clear "no answer" error; after the restart the
#     job is scanned again from scratch and completes.
#  2. mid-import: two scan copies; the worker holding the job's coordinator
#     lease is killed -9 while chunks are still to be published. The other
#     copy (or the restarted worker, a new holder) takes the lease once it
#     expires (MAILBUS_LEASE_MS) and the job completes; commands are answered
#     all along by the surviving copy.
# Before leases, coordination was a session advisory lock keyed by an int
# cast of the job id; this test checks the takeover, not the lock type.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_import_scan_kill
W=$LI_W
N=${MB_SCAN_KILL_MESSAGES:-1500}
export MAILBUS_LEASE_MS=3000

li_mailbox mbscankill mbscankill-pw --messages "$N" --seed 29
li_server_state "$W/server"
total=$(wc -l <"$W/server")
((total == N)) || li_fail "server has $total messages, genmail wrote $N"

check_same() { # TAG JOB
  li_dump "$W/$1.dump"
  li_diff "$W/base.dump" "$W/$1.dump" "$1: rows differ from the undisturbed import"
  li_diff "$W/base.dump.blobs" "$W/$1.dump.blobs" "$1: blob files differ from the undisturbed import"
  IFS=$'\t' read -r tot fe pa so er < <(li_sql "SELECT total_messages, fetched, parsed, stored, errors FROM sync_jobs WHERE id = $2")
  [[ "$tot $fe $pa $so $er" == "$total $total $total $total 0" ]] ||
    li_fail "$1: counters total=$tot fetched=$fe parsed=$pa stored=$so errors=$er"
  local dups
  dups=$(li_sql "SELECT count(*) FROM (SELECT folder_id, uid FROM job_messages WHERE job_id = $2 GROUP BY 1, 2 HAVING count(*) > 1) d")
  [[ $dups == 0 ]] || li_fail "$1: $dups duplicate job_messages"
}

# --- undisturbed baseline -------------------------------------------------------------
li_env base
li_account sacct mbscankill mbscankill-pw
li_stages start >/dev/null || li_fail "stages start"
job=$(li_import sacct)
li_wait_job "$job" 180
li_stages stop
li_dump "$W/base.dump"
li_ok "baseline: $total messages"

# --- 1. kill -9 mid-scan -----------------------------------------------------------------
li_env midscan
li_account sacct mbscankill mbscankill-pw
MAILBUS_FAULT_SCAN_FOLDER_DELAY_MS=4000 li_stages start >/dev/null || li_fail "stages start"
job=$(li_import sacct)
li_wait_until 60 "first folder of job $job recorded" \
  "EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $job)"
li_stages kill scan
[[ $(li_job "$job" status) == scanning ]] || li_fail "job $job is $(li_job "$job" status), not scanning, at the kill"
folders_at_kill=$(li_sql "SELECT count(DISTINCT folder_id) FROM job_chunks WHERE job_id = $job")
li_log "killed scan mid-scan ($folders_at_kill folder(s) recorded)"
# Nobody serves commands now: the CLI must say so, not hang or pretend.
if out=$("$MB" import status "$job" 2>&1); then
  li_fail "import status answered with no scan running: $out"
fi
grep -qi 'no answer' <<<"$out" || li_fail "import status without a scan: unclear error: $out"
li_ok "a command with no scan running fails clearly: $(head -n1 <<<"$out")"
li_stages start >/dev/null || li_fail "stages restart"
"$MB" import status "$job" >/dev/null || li_fail "import status after the restart"
li_wait_job "$job" 180
li_stages stop
check_same midscan "$job"
li_ok "kill -9 mid-scan: rescanned, identical to the baseline"

# --- 2. kill -9 of the coordinating copy mid-import ----------------------------------------
li_env midimport
li_account sacct mbscankill mbscankill-pw
export MAILBUS_MAX_INFLIGHT=1
li_stages start scan=2 >/dev/null || li_fail "stages start scan=2"
job=$(li_import sacct)
li_wait_until 60 "job $job coordinated" \
  "EXISTS (SELECT 1 FROM leases WHERE name = 'coord:$job') AND (SELECT count(*) FROM job_messages WHERE job_id = $job AND st & 4 <> 0) > 0"
holder=$(li_sql "SELECT holder FROM leases WHERE name = 'coord:$job'")
pid=$(cut -d: -f2 <<<"$holder")
[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || li_fail "lease holder '$holder' is not a live process"
stored_at_kill=$(li_count "$job" 4)
kill -9 "$pid"
li_log "killed scan worker $pid (coordinator of job $job) at $stored_at_kill/$total stored"
((stored_at_kill < total)) || li_fail "job finished before the kill (raise MB_SCAN_KILL_MESSAGES)"
"$MB" import status "$job" >/dev/null || li_fail "import status not answered by the surviving scan copy"
li_wait_until 30 "coordinator lease of job $job taken over" \
  "EXISTS (SELECT 1 FROM leases WHERE name = 'coord:$job' AND holder <> '$holder')
   OR (SELECT status FROM sync_jobs WHERE id = $job) = 'completed'"
li_wait_job "$job" 180
unset MAILBUS_MAX_INFLIGHT
li_stages stop
check_same midimport "$job"
li_ok "kill -9 of the coordinating scan mid-import: taken over, identical to the baseline"

echo "PASS test_import_scan_kill.sh ($total messages, total $((SECONDS - LI_T0)) s)"
