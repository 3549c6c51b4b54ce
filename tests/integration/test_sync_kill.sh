#!/usr/bin/env bash
# test_sync_kill.sh — kill -9 of a stage during a sync, then restart: the same end
# state as the server's. After an import, for each target (scan, fetch, parse, store)
# another IMAP client makes a fresh round of changes (new messages, flags, expunges,
# moves, copies) and three folders' UIDVALIDITY is reset (so ~290 messages go through
# the pipeline again), a sync starts, the target is killed with SIGKILL at its first sign of
# progress on the sync (scan: between two folders), the stages are started again, and
# the sync must complete with `mailbus messages --json` equal to the server (folder,
# UIDVALIDITY, UID, flags, SHA-256) and a following sync reporting no change.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_sync_kill
W=$LI_W
CHANGES=("python3" "$LI_SRC/tests/integration/imap_changes.py")
STAGES=${MB_KILL_STAGES:-scan fetch parse store}
li_corpus "$W/corpus"
mapfile -t CORPUS < <(find "$W/corpus" -type f | sort)

li_env k
li_mailbox mbsynckill mbsynckill-pw --messages 300 --seed 31 --extra-dir "$W/corpus" --extra-folder Corpus
li_account acct mbsynckill mbsynckill-pw
li_stages start >/dev/null || li_fail "stages start"
job=$(li_import acct)
li_wait_job "$job" 180
li_stages stop >/dev/null

declare -A PREV=([fetch]=0 [parse]=1 [store]=2)
DOVEADM=(doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf")
seed=40
for target in $STAGES; do
  seed=$((seed + 1))
  # A round of changes; and the UIDVALIDITY of INBOX, Sent and Archive reset, so
  # that the sync reads their ~290 messages again and the pipeline has work to be killed in.
  "${CHANGES[@]}" mix --seed "$seed" --eml-dir "$W/corpus" --skip create --skip rename \
    --skip delete >"$W/mix-$target.out" || li_fail "imap_changes mix ($target)"
  for f in INBOX Sent Archive; do
    "${DOVEADM[@]}" mailbox update -u mbsynckill --uid-validity "$((5000 + seed))" "$f" ||
      li_fail "doveadm uid-validity $f"
  done
  "${DOVEADM[@]}" kick mbsynckill >/dev/null 2>&1 || true
  if [[ $target == scan ]]; then
    # Scan pauses after each folder here, so the kill lands between two.
    MAILBUS_FAULT_SCAN_FOLDER_DELAY_MS=700 li_stages start >/dev/null || li_fail "stages start"
    li_scan_ready
    job=$("$MB" sync acct 2>"$W/sync.err") || { cat "$W/sync.err"; li_fail "sync start ($target)"; }
    deadline=$((SECONDS + 60))
    until [[ $(li_sql "SELECT count(*) FROM job_folders WHERE job_id = $job") -gt 0 ]]; do
      ((SECONDS < deadline)) || li_fail "scan recorded no folder in 60 s"
      sleep 0.02
    done
  else
    # As in test_import_kill.sh: the target's input queued first, then the target
    # started and killed at its first committed progress.
    # The fetch stage gets the new messages only when the sync does not download
    # them itself (it does a few per folder).
    inline=200
    [[ $target == fetch ]] && inline=0
    MAILBUS_SYNC_INLINE_MAX=$inline li_stages start "$target=0" >/dev/null ||
      li_fail "stages start without $target"
    li_scan_ready
    job=$("$MB" sync acct 2>"$W/sync.err") || { cat "$W/sync.err"; li_fail "sync start ($target)"; }
    li_wait_until 120 "sync $job scanned and published" "(SELECT status FROM sync_jobs WHERE id = $job) = 'running'
       AND NOT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $job AND state = 'pending')"
    total=$(li_sql "SELECT count(*) FROM job_messages WHERE job_id = $job")
    ((total >= 150)) || li_fail "sync $job has only $total new messages: too little to kill in"
    prev=${PREV[$target]}
    if ((prev)); then
      li_wait_until 120 "sync $job: all messages past the stage before $target" \
        "(SELECT count(*) FROM job_messages WHERE job_id = $job AND st & $prev <> 0) = $total"
    fi
    at_kill=$(li_kill_at_progress "$job" "$target")
    ((at_kill < total)) || li_fail "$target finished all $total before the kill: not a mid-way crash"
  fi
  [[ $target == scan ]] && li_stages kill scan
  st=$(li_job "$job" status)
  [[ $st != completed ]] || li_fail "sync $job completed before $target was killed: not a mid-way crash"
  li_log "killed $target (sync $job $st)"
  sleep 1
  li_stages start >/dev/null || li_fail "stages restart ($target)"
  li_wait_job "$job" 180
  "${CHANGES[@]}" state | sort >"$W/server-$target"
  "$MB" messages acct --json |
    jq -r '[.folder, (.uidvalidity|tostring), (.uid|tostring), ((.flags // []) | sort | join(" ")), .sha256] | join("\t")' |
    sort >"$W/db-$target"
  li_diff "$W/server-$target" "$W/db-$target" "after kill -9 $target during a sync: stored state != server"
  again=$("$MB" sync acct --wait 2>"$W/sync.err") || { cat "$W/sync.err"; li_fail "sync after $target"; }
  changed=$("$MB" history acct --json --limit 1 | jq '[.folders[] | .added + .flags_changed + .deleted + .moved] | add')
  [[ $changed == 0 ]] || li_fail "after kill -9 $target: the next sync ($again) still found $changed changes"
  li_ok "kill -9 $target during sync $job: stored state == server ($(wc -l <"$W/server-$target") locations), next sync finds nothing"
  li_stages stop >/dev/null
done
echo "PASS test_sync_kill.sh (stages: $STAGES, total $((SECONDS - LI_T0)) s)"
