#!/usr/bin/env bash
# test_import_control.sh — pause, resume and cancel an import, and the errors a
# person sees for commands that cannot apply.
#
# One chunk in flight (MAILBUS_MAX_INFLIGHT=1; a 1,500-message mailbox in four
# folders makes five chunks of at most 500) so a pause really stops the job between chunks:
# after it, the chunks in flight finish, nothing new is published, and the
# stored count stands still; resume finishes the job with exact counters.
# Cancel stops a second job for good: no new chunk, `watch` exits 1.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_import_control
W=$LI_W
export MAILBUS_MAX_INFLIGHT=1

li_mailbox mbimportctl mbimportctl-pw --messages 1500 --seed 31
li_env ctl
li_account ctl mbimportctl mbimportctl-pw
li_stages start >/dev/null || li_fail "stages start"

settled() { # JOB: SQL condition "no chunk of the job is in flight"
  echo "(SELECT count(*) FROM job_chunks WHERE job_id = $1 AND state = 'published') = 0"
}
snapshot() { # JOB: chunks out of 'pending' and messages stored
  li_sql "SELECT (SELECT count(*) FROM job_chunks WHERE job_id = $1 AND state <> 'pending')
              || '/' || (SELECT count(*) FROM job_messages WHERE job_id = $1 AND st & 4 <> 0)"
}

# --- pause and resume -------------------------------------------------------------------------
job=$(li_import ctl)
li_wait_until 60 "first message stored" "(SELECT count(*) FROM job_messages WHERE job_id = $job AND st & 4 <> 0) > 0"
out=$("$MB" import pause "$job") || li_fail "import pause: $out"
[[ $out == "job $job: paused" ]] || li_fail "import pause printed '$out'"
[[ $(li_job "$job" status) == paused ]] || li_fail "job not paused"
li_wait_until 60 "in-flight chunks of the paused job to finish" "$(settled "$job")"
before=$(snapshot "$job")
sleep 3
after=$(snapshot "$job")
[[ $before == "$after" ]] || li_fail "paused job moved on: chunks/stored $before -> $after"
total=$(li_job "$job" total_messages)
[[ ${after#*/} -lt $total ]] || li_fail "job finished before the pause took effect ($after of $total)"
li_ok "pause: job $job holds at chunks/stored $after of $total"

"$MB" import pause "$job" >"$W/pause2.out" 2>&1 && li_fail "pausing a paused job succeeded"
grep -q "is paused: cannot go to paused" "$W/pause2.out" || li_fail "pausing twice: $(cat "$W/pause2.out")"
out=$("$MB" import resume "$job") || li_fail "import resume: $out"
timeout 120 "$MB" watch "$job" >"$W/watch.out" 2>&1 || li_fail "watch after resume: $(tail -3 "$W/watch.out")"
read -r st tot sc fe pa so er <<<"$(li_job "$job" "status, total_messages, scanned, fetched, parsed, stored, errors" | tr '\t' ' ')"
[[ $st == completed && $tot == 1500 && $sc == 1500 && $fe == 1500 && $pa == 1500 && $so == 1500 && $er == 0 ]] ||
  li_fail "after resume: status=$st total=$tot scanned=$sc fetched=$fe parsed=$pa stored=$so errors=$er"
[[ $(li_sql "SELECT count(*) FROM email_locations") == 1500 ]] || li_fail "locations after resume"
li_ok "resume: job $job completed, 1500 stored exactly once"
"$MB" import resume "$job" >"$W/resume2.out" 2>&1 && li_fail "resuming a completed job succeeded"
grep -q "is completed: cannot go to running" "$W/resume2.out" || li_fail "resume completed: $(cat "$W/resume2.out")"

# --- cancel -----------------------------------------------------------------------------------
li_account ctl2 mbimportctl mbimportctl-pw
job2=$(li_import ctl2)
li_wait_until 60 "first message of job $job2 stored" "(SELECT count(*) FROM job_messages WHERE job_id = $job2 AND st & 4 <> 0) > 0"
"$MB" import cancel "$job2" >/dev/null || li_fail "import cancel"
[[ $(li_job "$job2" status) == cancelled ]] || li_fail "job not cancelled"
before=$(snapshot "$job2")
sleep 3
after=$(snapshot "$job2")
[[ ${before%/*} == "${after%/*}" ]] || li_fail "cancelled job published more chunks: $before -> $after"
[[ $(li_job "$job2" status) == cancelled ]] || li_fail "cancelled job changed status to $(li_job "$job2" status)"
timeout 20 "$MB" watch "$job2" >"$W/watch2.out" 2>&1 && li_fail "watch of a cancelled job exited 0"
grep -q "cancelled" "$W/watch2.out" || li_fail "watch of a cancelled job: $(tail -2 "$W/watch2.out")"
li_ok "cancel: job $job2 stopped at chunks/stored $after, watch exits 1"

# --- errors a person sees ---------------------------------------------------------------------
"$MB" import start nosuchaccount >"$W/noacct.out" 2>&1 && li_fail "import of a missing account succeeded"
grep -q "no account 'nosuchaccount'" "$W/noacct.out" || li_fail "missing account: $(cat "$W/noacct.out")"
"$MB" import start ctl --since 2024-13-01 >"$W/baddate.out" 2>&1 && li_fail "bad --since accepted"
grep -q "2024-13-01" "$W/baddate.out" || li_fail "bad date: $(cat "$W/baddate.out")"
"$MB" import pause 999999 >"$W/nojob.out" 2>&1 && li_fail "pausing a missing job succeeded"
grep -q "job 999999 does not exist" "$W/nojob.out" || li_fail "missing job: $(cat "$W/nojob.out")"
li_ok "errors name the bad account, date and job"
echo "PASS test_import_control.sh (total $((SECONDS - LI_T0)) s)"
