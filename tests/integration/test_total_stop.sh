#!/usr/bin/env bash
# test_total_stop.sh — total stop in the middle of an import: kill -9 every stage copy,
# stop nats-server and Postgres; start them again in some order; the job continues from
# its checkpoints and completes, with a result identical to an undisturbed import (rows,
# blob files, exact counters; lib_chaos.sh lc_dump/lc_compare). Two total stops in one
# import, restarted in two orders:
#   1. at a quarter fetched: stages first (NATS and Postgres still down), Postgres, NATS
#   2. as soon as one more message is stored after that restart: NATS, Postgres, stages
# After each restart the checkpoints must still hold: the scan is not redone (same
# chunks, same job_messages rows), chunks done stay done, stored bits are not lost.
# NATS and Postgres are restarted, so this runs on a PRIVATE set of services (run dir
# MB_TOTAL_STOP_RUN_DIR [/tmp/mailbus-test-total-stop], ports 64222 (NATS), 64822
# (monitor), 65432 (Postgres), 60143/60993 (IMAP/IMAPS)), stopped at the end.
set -euo pipefail
. "$(dirname "$0")/lib_chaos.sh"
lc_private_services "${MB_TOTAL_STOP_RUN_DIR:-/tmp/mailbus-test-total-stop}" 64222 64822 65432 60143 60993
export MAILBUS_ACK_WAIT_MS=${MAILBUS_ACK_WAIT_MS:-5000}
# A killed scan's leases pass to its restarted self after MAILBUS_LEASE_MS: 5 s
# instead of 15 (twice per run) keeps the test short; the behaviour is the same.
export MAILBUS_LEASE_MS=${MAILBUS_LEASE_MS:-5000}
. "$(dirname "$0")/lib_import.sh"
li_init test_total_stop
lc_trap
W=$LI_W
N=${MB_TOTAL_STOP_MESSAGES:-1500}
COPIES="fetch=2 parse=1 store=1 avscan=1"

li_mailbox mbtotalstop mbtotalstop-pw --messages "$N" --seed 41 --eicar 1
lc_server_list "$W/server"
total=$(wc -l <"$W/server")
((total == N)) || li_fail "server has $total messages, genmail wrote $N"
li_server_sha "$W/server_sha" "$W/server"

# --- undisturbed baseline -------------------------------------------------------------------
li_env base
li_account tacct mbtotalstop mbtotalstop-pw
li_stages start scan=1 fetch=0 parse=0 store=0 avscan=0 >/dev/null || li_fail "stages start scan"
li_stages start $COPIES >/dev/null || li_fail "stages start"
t0=$SECONDS
job=$(li_import tacct)
li_wait_job "$job" 300
li_stages stop
lc_dump "$W/base.dump" || li_fail "baseline dump"
why=$(lc_check_against_server "$job" "$W/server_sha") || li_fail "baseline: $why"
[[ ! -s $W/base.dump.files ]] || li_fail "baseline: bad blob or temp files: $(head -3 "$W/base.dump.files")"
li_ok "baseline: $total messages imported undisturbed in $((SECONDS - t0)) s, identical to the server's"

# --- the import with two total stops -------------------------------------------------------
li_env stop
li_account tacct mbtotalstop mbtotalstop-pw
li_stages start scan=1 fetch=0 parse=0 store=0 avscan=0 >/dev/null || li_fail "stages start scan"
li_stages start $COPIES >/dev/null || li_fail "stages start"
t0=$SECONDS
job=$(li_import tacct)

# checkpoint: what must survive a total stop (chunk rows, job_messages rows, done chunks,
# stored bits), as one line each, read before the stop.
checkpoint() {
  li_sql "SELECT 'chunks', string_agg(id || ':' || seq, ',' ORDER BY id) FROM job_chunks WHERE job_id = $job"
  li_sql "SELECT 'messages', count(*) FROM job_messages WHERE job_id = $job"
  li_sql "SELECT 'done', coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM job_chunks WHERE job_id = $job AND state = 'done'"
  li_sql "SELECT 'stored', coalesce(string_agg(folder_id || '/' || uid, ',' ORDER BY folder_id, uid), '') FROM job_messages WHERE job_id = $job AND st & 4 <> 0"
}

# total_stop BIT N CP ORDER...: once N messages have the progress BIT (1 fetched, 4 stored),
# kill -9 every stage copy, keep the checkpoint in CP, stop NATS and Postgres, then start
# them again in ORDER (stages, nats, postgres), a second apart (none after the last).
total_stop() {
  local bit=$1 n=$2 cp=$3 what deadline=$((SECONDS + 300))
  shift 3
  # Watched tightly, and every copy killed with one kill call: the pipeline is fast.
  while (($(li_count "$job" "$bit") < n)); do
    ((SECONDS < deadline)) || li_fail "job $job: not $n messages with bit $bit after 300 s"
    sleep 0.05
  done
  lc_kill_all
  # Stages are gone: nothing changes any more, so this is the state to keep.
  checkpoint >"$cp"
  at=$(li_count "$job" 4)
  fetched=$(li_count "$job" 1)
  ((at < total)) || li_fail "all $total stored before the total stop: not mid-import (raise MB_TOTAL_STOP_MESSAGES)"
  [[ $(li_job "$job" status) != completed ]] || li_fail "job completed before the total stop"
  lc_services stop nats postgres || li_fail "services stop nats postgres"
  li_log "total stop at $fetched/$total fetched, $at stored: every stage killed, nats and postgres stopped"
  sleep 1
  for what in "$@"; do
    case $what in
      stages) li_stages start $COPIES >"$W/start.log" 2>&1 || { cat "$W/start.log"; li_fail "stages start while nats/postgres down"; } ;;
      nats | postgres) lc_services start "$what" || li_fail "services start $what" ;;
    esac
    li_log "started $what"
    [[ $what == "${*: -1}" ]] || sleep 1
  done
}

# check_checkpoint BEFORE AFTER WHAT: chunks and job_messages rows unchanged (the scan was
# not redone); every chunk done before is still done, every stored bit still set.
check_checkpoint() {
  local key line got
  while IFS=$'\t' read -r key line; do
    got=$(awk -F'\t' -v k="$key" '$1 == k {print $2}' "$2")
    case $key in
      chunks | messages) [[ $got == "$line" ]] || li_fail "$3: $key changed (scan redone?): '$line' -> '$got'" ;;
      done | stored)
        comm -23 <(tr ',' '\n' <<<"$line" | sed '/^$/d' | sort) <(tr ',' '\n' <<<"$got" | sort) >"$W/lost"
        [[ ! -s $W/lost ]] || li_fail "$3: $(wc -l <"$W/lost") $key checkpoints lost (e.g. $(head -1 "$W/lost"))" ;;
    esac
  done <"$1"
}

total_stop 1 $((total / 4)) "$W/cp1" stages postgres nats
stored1=$at
# The second stop comes as soon as the restarted pipeline has stored something more.
total_stop 4 $((stored1 + 1)) "$W/cp2" nats postgres stages
((at > stored1)) || li_fail "no message stored between the two total stops"
check_checkpoint "$W/cp1" "$W/cp2" "after the first total stop ($stored1 stored)"
li_ok "total stop at $stored1 stored, restarted in the order stages, postgres, nats: continued from its checkpoints to $at stored"
li_wait_job "$job" 300
checkpoint >"$W/cp3"
check_checkpoint "$W/cp2" "$W/cp3" "after the second total stop ($at stored)"
li_ok "total stop at $at stored, restarted in the order nats, postgres, stages: continued from its checkpoints"
li_stages stop
lc_dump "$W/stop.dump" || li_fail "dump"
if ! res=$(lc_compare "$W/base.dump" "$W/stop.dump"); then
  sed -n 1,12p "$W/stop.dump.diff" | cut -c1-300
  li_fail "after two total stops the result differs from the undisturbed import: $res"
fi
why=$(lc_check_against_server "$job" "$W/server_sha") || li_fail "after two total stops: $why"
li_ok "after two total stops: job completed in $((SECONDS - t0)) s, result identical to the undisturbed import, counters exact"
echo "PASS test_total_stop.sh ($total messages, total $((SECONDS - LI_T0)) s)"
