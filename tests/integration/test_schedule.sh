#!/usr/bin/env bash
# test_schedule.sh — the scheduler (stages/scan/scheduler.c, migration 0007) against the
# real services, with time scaled by MAILBUS_SCHEDULE_SCALE:
#  1. after the import every folder's automatic interval is its role's base (INBOX 5 min,
#     Sent and Drafts 15 min, Archive daily, others 30 min) and its next sync is its last
#     sync + interval x scale, plus at most 10 % jitter;
#  2. activity, with scheduling off and syncs started by hand: a sync that found changes
#     in a folder halves its interval (down to base/4), a quiet one grows it by half (up
#     to base x 4);
#  3. at scale 0.01 (INBOX 3 s, Archive 14 min), syncs start on their own: the due folders
#     of the account in one job, the daily one not among them; a message APPENDed to INBOX
#     and a folder created on the server reach `mailbus messages` with no command;
#  4. `mailbus schedule set` takes effect (Sent every 1m = 0.6 s scaled; INBOX off;
#     the whole account off) and `mailbus schedule --json` shows it; bad input is refused;
#  5. two scan copies: kill -9 of the one holding the scheduler lease (worker and
#     supervisor); the other takes the lease over and scheduled syncs go on;
#  6. an account imported with --folders INBOX: its scheduled syncs (which LIST the
#     server to find folders created, renamed or deleted) do not import the others.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_schedule
W=$LI_W
CHANGES=("python3" "$LI_SRC/tests/integration/imap_changes.py")
li_corpus "$W/corpus"
mapfile -t CORPUS < <(find "$W/corpus" -type f | sort)
export MAILBUS_LEASE_MS=3000

li_env sched
li_mailbox mbsched mbsched-pw --messages 80 --seed 5
for i in 0 1; do
  "${CHANGES[@]}" append Lists "${CORPUS[$i]}" >/dev/null || li_fail "append Lists"
done
li_account acct mbsched mbsched-pw

# schedule_of FOLDER FIELD: a field of `mailbus schedule acct --json` for the folder.
schedule_of() {
  "$MB" schedule acct --json | jq -r --arg f "$1" "select(.folder == \$f) | .$2"
}
interval_of() { li_sql "SELECT extract(epoch FROM sync_interval) FROM folders WHERE name = '$1'"; }
sched_jobs() { li_sql "SELECT count(*) FROM sync_jobs WHERE options->>'origin' = 'scheduler' $*"; }
sync_ok() { "$MB" sync acct --wait >"$W/sync.out" 2>&1 || li_fail "sync: $(cat "$W/sync.out")"; }

# --- 1. intervals by role after the import (scale 0.1: INBOX 30 s, nothing due soon) ---------
export MAILBUS_SCHEDULE_SCALE=0.1
li_stages start >/dev/null || li_fail "stages start"
li_scan_ready
job=$(li_import acct)
li_wait_job "$job" 120
li_wait_until 10 "next sync times computed" \
  "NOT EXISTS (SELECT 1 FROM folders WHERE next_sync_at IS NULL)"
bad=$(li_sql "
  SELECT name || ' ' || coalesce(role, '-') || ' ' || sync_interval || ' next +' ||
         extract(epoch FROM next_sync_at - synced_at)
  FROM folders
  WHERE sync_interval IS DISTINCT FROM CASE
          WHEN role = 'inbox' THEN interval '5 min' WHEN role IN ('sent', 'drafts') THEN interval '15 min'
          WHEN role IN ('archive', 'all', 'trash', 'junk') THEN interval '1 day' ELSE interval '30 min' END
     OR next_sync_at - synced_at NOT BETWEEN sync_interval * 0.1 AND sync_interval * 0.1 * 1.1")
[[ -z $bad ]] || li_fail "interval or next sync not as the role says: $bad"
roles=$(li_sql "SELECT string_agg(name || '=' || coalesce(role, '-'), ' ' ORDER BY name) FROM folders")
[[ $roles == *INBOX=inbox* && $roles == *Sent=sent* && $roles == *Archive=archive* && $roles == *Lists=-* ]] ||
  li_fail "folder roles: $roles"
[[ $(schedule_of INBOX interval_s) == 300 && $(schedule_of Archive interval_s) == 86400 &&
   $(schedule_of Lists set_by) == auto && $(schedule_of INBOX scheduled) == true ]] ||
  li_fail "mailbus schedule --json: $("$MB" schedule acct --json)"
li_ok "after the import: intervals by role ($roles), next sync = last + interval x scale (+<=10 %)"

# --- 2. the activity rule, with scheduling off and syncs by hand -----------------------------
"$MB" schedule set acct --every off >/dev/null || li_fail "schedule set --every off"
[[ $(schedule_of INBOX next_sync) == null && $(schedule_of INBOX set_by) == account &&
   $(schedule_of INBOX scheduled) == false ]] || li_fail "account off: $("$MB" schedule acct --json | head -3)"
want=(300)
for step in quiet change change quiet change change change quiet quiet quiet quiet quiet; do
  if [[ $step == change ]]; then
    "${CHANGES[@]}" append INBOX "${CORPUS[$((${#want[@]} + 1))]}" >/dev/null || li_fail "append INBOX"
  fi
  sync_ok
  next=$(awk -v l="${want[-1]}" -v s=$step 'BEGIN {
    n = s == "change" ? l / 2 : l * 1.5; if (n < 75) n = 75; if (n > 1200) n = 1200; printf "%.6f", n }')
  want+=("$next")
  got=$(interval_of INBOX)
  # Postgres keeps intervals to the microsecond: equal to 1 ms.
  awk -v a="$got" -v b="$next" 'BEGIN { exit !(a - b < 0.001 && b - a < 0.001) }' || li_fail "INBOX interval after a $step sync: $got s, want $next s (${want[*]})"
done
[[ $(interval_of Sent) == 3600.000000 ]] || li_fail "Sent after 12 quiet syncs: $(interval_of Sent) s, want 3600 (900 x 4)"
li_ok "activity: INBOX ${want[*]} s (change: /2 down to 75; quiet: x1.5 up to 1200); Sent 900 -> 3600"
(($(sched_jobs) == 0)) || li_fail "a scheduled sync started while the account was off"
li_stages stop >/dev/null

# --- 3. syncs start on their own (scale 0.01), two scan copies ------------------------------
export MAILBUS_SCHEDULE_SCALE=0.01
li_stages start scan=2 >/dev/null || li_fail "stages start scan=2"
li_scan_ready
# As if the last syncs had ended 100 s ago: every folder is due (Lists, after 12 quiet
# syncs, every 2 h: 72 s scaled) except the daily ones
# (Archive, Trash, Junk: 14 min scaled, at least).
li_sql "UPDATE folders SET synced_at = now() - interval '100 s'" >/dev/null
"$MB" schedule set acct --every auto >/dev/null || li_fail "schedule set --every auto"
li_wait_until 15 "a scheduled sync" "EXISTS (SELECT 1 FROM sync_jobs WHERE options->>'origin' = 'scheduler')"
first=$(li_sql "SELECT id FROM sync_jobs WHERE options->>'origin' = 'scheduler' ORDER BY id LIMIT 1")
folders=$(li_sql "SELECT string_agg(x, ',' ORDER BY x) FROM sync_jobs, jsonb_array_elements_text(options->'folders') x WHERE id = $first")
want_folders=$(li_sql "SELECT string_agg(coalesce(remote_name, name), ',' ORDER BY coalesce(remote_name, name))
                       FROM folders WHERE coalesce(role, '') NOT IN ('archive', 'all', 'trash', 'junk')")
[[ $folders == "$want_folders" ]] || li_fail "first scheduled job $first: folders $folders, want $want_folders"
[[ $(li_job "$first" "options->>'discover'") == true ]] || li_fail "scheduled job without discovery"
li_wait_job "$first" 60
li_ok "scheduled sync $first started on its own with the due folders in one job: $folders"

before=$(li_sql "SELECT max(id) FROM sync_jobs")
t0=$SECONDS
uid=$("${CHANGES[@]}" append INBOX "${CORPUS[9]}" | awk '$1 == "append" {print $3}')
[[ $uid =~ ^[0-9]+$ ]] || li_fail "append INBOX printed no UID"
# A folder created on the server meanwhile: found by the LIST of a scheduled sync.
"${CHANGES[@]}" append Fresh "${CORPUS[10]}" >/dev/null || li_fail "append Fresh"
# (To a file first: jq's any() stops reading at the match, and the CLI's
# SIGPIPE would fail the pipeline.)
until "$MB" messages acct --json >"$W/messages.json" &&
      jq -n -e --argjson u "$uid" 'any(inputs; .folder == "INBOX" and .uid == $u)' "$W/messages.json" >/dev/null &&
      jq -n -e 'any(inputs; .folder == "Fresh")' "$W/messages.json" >/dev/null; do
  ((SECONDS - t0 < 30)) || li_fail "the appended message (INBOX UID $uid) or the new folder Fresh is not in mailbus messages after 30 s"
  li_stages_alive
  sleep 0.2
done
[[ $(li_sql "SELECT count(*) FROM sync_jobs WHERE id > $before AND options->>'origin' IS DISTINCT FROM 'scheduler'") == 0 ]] ||
  li_fail "a job not started by the scheduler"
(($(li_sql "SELECT count(*) FROM sync_jobs WHERE options->'folders' ? 'Archive'") == 0)) ||
  li_fail "the daily Archive was synced by the scheduler"
[[ $(li_sql "SELECT sync_interval FROM folders WHERE name = 'Fresh'") == 00:30:00 ]] ||
  li_fail "the new folder Fresh is not scheduled"
li_ok "a message APPENDed to INBOX and a folder created arrived in $((SECONDS - t0)) s through scheduled syncs alone"

# --- 4. schedule set ------------------------------------------------------------------------
for bad in "--folder Nope --every 10m:has no folder 'Nope'" "--every 10:at least 1m" \
           "--every soon:every 'soon'" "--folder Sent:--every are required"; do
  # shellcheck disable=SC2086
  if "$MB" schedule set acct ${bad%%:*} >"$W/bad.out" 2>&1; then li_fail "schedule set ${bad%%:*} accepted"; fi
  grep -qF -- "${bad#*:}" "$W/bad.out" || li_fail "schedule set ${bad%%:*}: unclear error: $(cat "$W/bad.out")"
done
"$MB" schedule set acct --folder Sent --every 1m >/dev/null || li_fail "schedule set Sent 1m"
[[ $(schedule_of Sent interval_s) == 60 && $(schedule_of Sent set_by) == folder ]] ||
  li_fail "Sent after set: $("$MB" schedule acct --json | grep Sent)"
n0=$(sched_jobs "AND options->'folders' ? 'Sent'")
sleep 6
n1=$(sched_jobs "AND options->'folders' ? 'Sent'")
# 0.6 s scaled + a sync each: several in 6 s; its automatic interval (>= 13.5 s scaled) allows none.
((n1 - n0 >= 3)) || li_fail "Sent every 1m (0.6 s scaled): $((n1 - n0)) scheduled syncs in 6 s"
li_ok "schedule set Sent --every 1m: $((n1 - n0)) syncs of Sent in 6 s"

"$MB" schedule set acct --folder INBOX --every off >/dev/null || li_fail "schedule set INBOX off"
[[ $(schedule_of INBOX scheduled) == false ]] || li_fail "INBOX still scheduled"
li_wait_until 10 "no active sync" "NOT EXISTS (SELECT 1 FROM sync_jobs WHERE status IN ('scanning', 'running'))"
mark=$(li_sql "SELECT max(id) FROM sync_jobs")
sleep 5
[[ $(li_sql "SELECT count(*) FROM sync_jobs WHERE id > $mark AND options->'folders' ? 'INBOX'") == 0 ]] ||
  li_fail "INBOX synced while off"
(($(li_sql "SELECT count(*) FROM sync_jobs WHERE id > $mark") > 0)) || li_fail "Sent no longer synced"
li_ok "schedule set INBOX --every off: no INBOX sync in 5 s while Sent goes on"
"$MB" schedule set acct --every off >/dev/null || li_fail "account off"
"$MB" schedule set acct --folder Sent --every auto >/dev/null || li_fail "Sent auto"
li_wait_until 10 "no active sync" "NOT EXISTS (SELECT 1 FROM sync_jobs WHERE status IN ('scanning', 'running'))"
mark=$(li_sql "SELECT max(id) FROM sync_jobs")
sleep 3
[[ $(li_sql "SELECT count(*) FROM sync_jobs WHERE id > $mark") == 0 ]] || li_fail "a sync while the account is off"
li_ok "schedule set acct --every off: no scheduled sync"

# --- 5. the scheduler's process dies: the other copy takes over ------------------------------
holder=$(li_sql "SELECT holder FROM leases WHERE name = 'scheduler'")
pid=$(cut -d: -f2 <<<"$holder")
[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || li_fail "scheduler lease holder '$holder' is not a live process"
sup=$(ps -o ppid= -p "$pid" | tr -d ' ')
kill -9 "$sup" "$pid"
grep -lx "$sup" "$MAILBUS_STAGES_DIR"/scan-*.pid | xargs rm -f # killed on purpose
li_log "killed the scheduler's scan copy (supervisor $sup, worker $pid)"
"$MB" schedule set acct --every auto >/dev/null || li_fail "schedule set auto (answered by the other copy)"
li_sql "UPDATE folders SET synced_at = now() - interval '100 s'" >/dev/null
mark=$(li_sql "SELECT max(id) FROM sync_jobs")
li_wait_until 20 "another copy schedules" \
  "EXISTS (SELECT 1 FROM leases WHERE name = 'scheduler' AND holder <> '$holder' AND expires_at > now())
   AND EXISTS (SELECT 1 FROM sync_jobs WHERE id > $mark AND options->>'origin' = 'scheduler')"
job=$(li_sql "SELECT min(id) FROM sync_jobs WHERE id > $mark AND options->>'origin' = 'scheduler'")
li_wait_job "$job" 60
li_ok "scheduler taken over by $(li_sql "SELECT holder FROM leases WHERE name = 'scheduler'"): job $job completed"
# --- 6. an account imported with --folders keeps to them -------------------------------------
li_account acct2 mbsched mbsched-pw
job=$("$MB" import start acct2 --folders INBOX) || li_fail "import acct2 --folders INBOX"
li_wait_job "$job" 60
a2=$(li_sql "SELECT id FROM accounts WHERE name = 'acct2'")
li_wait_until 30 "a scheduled sync of acct2 completed" \
  "EXISTS (SELECT 1 FROM sync_jobs WHERE account_id = $a2 AND options->>'origin' = 'scheduler' AND status = 'completed')"
[[ $(li_sql "SELECT string_agg(name, ',') FROM folders WHERE account_id = $a2") == INBOX ]] ||
  li_fail "the scheduler's discovery imported folders acct2's import did not choose: $(li_sql "SELECT string_agg(name, ',') FROM folders WHERE account_id = $a2")"
li_ok "an account imported with --folders INBOX: scheduled syncs keep to INBOX"
echo "PASS test_schedule.sh (total $((SECONDS - LI_T0)) s)"
