#!/usr/bin/env bash
# test_import_kill.sh — kill -9 the fetch, parse or store stage in the middle of
# an import, restart it, and the result must be identical to an undisturbed
# import of the same mailbox: same locations, blob hashes, flags, attachments
# and scan verdicts, same row counts, same blob files.
#
# The pipeline is fast, so "the middle" is forced: every stage except the
# target runs first until the target's input is queued, then the target starts
# and is killed as soon as it has committed some, not all, of its work. Each
# run has its own database, prefix and blob dir; all share one IMAP user.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_import_kill
W=$LI_W
N=${MB_KILL_MESSAGES:-900}
STAGES=${MB_KILL_STAGES:-fetch parse store}

li_mailbox mbimportkill mbimportkill-pw --messages "$N" --seed 23 --eicar 1
li_server_state "$W/server"
total=$(wc -l <"$W/server")
((total == N)) || li_fail "server has $total messages, genmail wrote $N"

# --- undisturbed baseline -----------------------------------------------------------------
li_env base
li_account kacct mbimportkill mbimportkill-pw
li_stages start >/dev/null || li_fail "stages start"
t0=$SECONDS
job=$(li_import kacct)
li_wait_job "$job" 180
li_stages stop
li_dump "$W/base.dump"
[[ $(grep -c . "$W/base.dump") == $((total + 4)) ]] || li_fail "baseline has $(($(wc -l <"$W/base.dump") - 4)) locations, want $total"
[[ $(wc -l <"$W/base.dump.blobs") == "$(cut -f3 "$W/base.dump" | head -n "$total" | sort -u | wc -l)" ]] || li_fail "baseline blob files != distinct messages"
li_ok "baseline: $total messages imported undisturbed in $((SECONDS - t0)) s"

declare -A PREV=([fetch]=0 [parse]=1 [store]=2)

for target in $STAGES; do
  li_env "$target"
  li_account kacct mbimportkill mbimportkill-pw
  t0=$SECONDS
  li_stages start "$target=0" >/dev/null || li_fail "stages start without $target"
  job=$(li_import kacct)
  # The target's input is queued: every message scanned and every chunk published
  # (fetch), or every message through the previous stage (parse, store).
  li_wait_until 120 "job $job scanned" "(SELECT count(*) FROM job_messages WHERE job_id = $job) = $total
     AND NOT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $job AND state = 'pending')"
  prev=${PREV[$target]}
  if ((prev)); then
    li_wait_until 120 "job $job: all messages past the stage before $target" \
      "(SELECT count(*) FROM job_messages WHERE job_id = $job AND st & $prev <> 0) = $total"
  fi
  at_kill=$(li_kill_at_progress "$job" "$target")
  ((at_kill < total)) || li_fail "$target finished all $total before the kill: not a mid-way crash (raise MB_KILL_MESSAGES)"
  li_log "killed $target at $at_kill/$total marked by $target"
  [[ $(li_job "$job" status) != completed ]] || li_fail "job completed while $target was dead"
  sleep 1
  li_stages start >/dev/null || li_fail "stages restart"
  li_wait_job "$job" 180
  li_stages stop
  li_dump "$W/$target.dump"
  li_diff "$W/base.dump" "$W/$target.dump" "after kill -9 $target: rows differ from the undisturbed import"
  li_diff "$W/base.dump.blobs" "$W/$target.dump.blobs" "after kill -9 $target: blob files differ from the undisturbed import"
  IFS=$'\t' read -r st tot fe pa so er avp < <(li_sql "SELECT status, total_messages, fetched, parsed, stored, errors, av_pending FROM sync_jobs WHERE id = $job")
  [[ "$tot $fe $pa $so $er $avp" == "$total $total $total $total 0 0" ]] ||
    li_fail "after kill -9 $target: counters total=$tot fetched=$fe parsed=$pa stored=$so errors=$er av_pending=$avp"
  li_ok "kill -9 $target at $at_kill/$total: result identical to the baseline, counters exact ($((SECONDS - t0)) s)"
done

echo "PASS test_import_kill.sh ($total messages, stages: $STAGES, total $((SECONDS - LI_T0)) s)"
