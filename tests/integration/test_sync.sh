#!/usr/bin/env bash
# test_sync.sh — the sync issue's done-when, against the real services: after an
# import, another IMAP client (imap_changes.py) makes mixed changes — new messages in
# several folders, flags set and cleared, expunges, UID MOVE, UID COPY, a folder
# created, one renamed, one deleted — and one folder's UIDVALIDITY is reset
# (doveadm). After `mailbus sync ACCOUNT --wait`, `mailbus messages --json` equals the
# server exactly (every folder, UIDVALIDITY, UID, flag set, SHA-256 of the raw bytes),
# the history names what happened, deleted emails are marked and moved ones are not,
# and a second sync changes nothing and reports zero changes. Run three times: against
# Dovecot with QRESYNC and CONDSTORE (127.0.0.1), against the same Dovecot
# advertising neither (127.0.0.2: UID-set comparison), and advertising CONDSTORE
# without QRESYNC (127.0.0.3, as Gmail's IMAP: CHANGEDSINCE and message counts).
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_sync
W=$LI_W
CHANGES=("python3" "$LI_SRC/tests/integration/imap_changes.py")
DOVEADM=(doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf")
li_corpus "$W/corpus"
mapfile -t CORPUS < <(find "$W/corpus" -type f | sort)

# server_state OUT: folder, uidvalidity, uid, flags, sha256 of every server message.
server_state() { "${CHANGES[@]}" --host "$HOST" state | sort >"$1" || li_fail "imap_changes state"; }
# db_state OUT: the same, from `mailbus messages --json`.
db_state() {
  "$MB" messages acct --json >"$W/messages.json" || li_fail "mailbus messages --json"
  jq -r '[.folder, (.uidvalidity|tostring), (.uid|tostring), ((.flags // []) | sort | join(" ")), .sha256] | join("\t")' \
    "$W/messages.json" | sort >"$1"
}
# sync_ok WHAT: a sync, waited for; echoes the job id.
sync_ok() {
  local out
  out=$("$MB" sync acct --wait 2>"$W/sync.err") || { cat "$W/sync.err" >&2; li_fail "sync ($1): $out"; }
  echo "$out"
}
# latest_history JQ: evaluate JQ on the newest history entry.
latest_history() { "$MB" history acct --json --limit 1 | jq -r "$1"; }

# run_case TAG HOST USER [VAR=VALUE...]: the VARs in the stages' environment.
run_case() {
  local tag=$1 user=$3 t0
  HOST=$2
  shift 3
  local -a stage_env=("$@")
  li_env "$tag"
  li_mailbox "$user" "$user-pw" --messages 300 --seed 21 --extra-dir "$W/corpus" --extra-folder Corpus
  # Two plain folders (no special use) to rename and to delete.
  for i in 0 1 2 3; do
    "${CHANGES[@]}" --host "$HOST" append Lists "${CORPUS[$i]}" >/dev/null || li_fail "append Lists"
    "${CHANGES[@]}" --host "$HOST" append Old "${CORPUS[$((i + 4))]}" >/dev/null || li_fail "append Old"
  done
  li_account acct "$user" "$user-pw" "$HOST"
  env "${stage_env[@]}" "$LI_SRC/scripts/stages" start idle=0 >/dev/null || li_fail "stages start"
  li_scan_ready
  local job
  job=$(li_import acct)
  # A sync asked for while the import runs (it takes seconds; the request
  # milliseconds) is refused, naming the import.
  "$MB" sync acct >"$W/busy.out" 2>&1 && li_fail "[$tag] a sync during the import was accepted"
  grep -q "already has an active job: import $job is" "$W/busy.out" ||
    li_fail "[$tag] refusal: $(cat "$W/busy.out")"
  li_ok "[$tag] a sync during the import is refused: $(grep 'already has' "$W/busy.out")"
  li_wait_job "$job" 180

  # A sync right after the import changes nothing.
  job=$(sync_ok "after the import")
  [[ $(latest_history '[.folders[] | .added + .flags_changed + .deleted + .moved] | add') == 0 ]] ||
    li_fail "[$tag] a sync right after the import reported changes: $(latest_history .)"

  # --- another client changes the mailbox -------------------------------------------------
  "${CHANGES[@]}" --host "$HOST" mix --seed 7 --eml-dir "$W/corpus" --keep Lists --keep Old \
    --rename-from Lists --rename-to Lists-renamed --delete Old >"$W/mix-$tag.out" ||
    li_fail "[$tag] imap_changes mix"
  "${DOVEADM[@]}" mailbox update -u "$user" --uid-validity 4242 Drafts || li_fail "doveadm uid-validity"
  "${DOVEADM[@]}" kick "$user" >/dev/null 2>&1 || true
  li_log "[$tag] changes: $(cut -d' ' -f1 "$W/mix-$tag.out" | sort | uniq -c | tr -s ' \n' ' ')"

  t0=$(date +%s%3N)
  job=$(sync_ok "after the changes")
  li_log "[$tag] sync job $job: $(($(date +%s%3N) - t0)) ms"
  server_state "$W/server-$tag"
  db_state "$W/db-$tag"
  li_diff "$W/server-$tag" "$W/db-$tag" "[$tag] mailbus messages != the server after the sync"
  li_ok "[$tag] after the sync, messages --json == server: $(wc -l <"$W/server-$tag") locations (folder, uidvalidity, uid, flags, sha256)"
  # Who downloaded the new messages: the sync's own connections (a few per folder,
  # the default), or the fetch stage (MAILBUS_SYNC_INLINE_MAX=0).
  local by_fetch
  by_fetch=$(cat "$MAILBUS_STAGES_DIR"/fetch-*.log | grep -c " job=$job .*chunk .*: fetched" || true)
  if [[ " ${stage_env[*]} " == *" MAILBUS_SYNC_INLINE_MAX=0 "* ]]; then
    ((by_fetch > 0)) || li_fail "[$tag] the fetch stage fetched nothing of sync $job"
    li_ok "[$tag] new messages fetched by the fetch stage ($by_fetch chunks)"
  else
    ((by_fetch == 0)) || li_fail "[$tag] the fetch stage fetched $by_fetch chunks of sync $job: expected the sync to download them"
    li_ok "[$tag] new messages downloaded by the sync ($(grep -c " job=$job .*new (downloaded)" "$MAILBUS_STAGES_DIR"/scan-*.log) folders), none by the fetch stage"
  fi

  # Blobs of every location are there, with the server's bytes.
  local bad=0 sha
  while read -r sha; do
    [[ $(sha256sum "$MAILBUS_BLOB_DIR/${sha:0:2}/$sha" 2>/dev/null | cut -d' ' -f1) == "$sha" ]] || bad=$((bad + 1))
  done < <(cut -f5 "$W/db-$tag" | sort -u)
  ((bad == 0)) || li_fail "[$tag] $bad blobs missing or wrong"

  # History names what happened.
  latest_history . >"$W/history-$tag.json"
  local ev
  ev=$(jq -r '[.folders[] | select(.event != null) | .event + ":" + .folder] | sort | join(" ")' "$W/history-$tag.json")
  [[ $ev == "created:Projects/New deleted:Old renamed:Lists-renamed reset:Drafts" ]] ||
    li_fail "[$tag] folder events: '$ev' ($(cat "$W/history-$tag.json"))"
  [[ $(jq -r '.folders[] | select(.folder == "Lists-renamed") | .old_name' "$W/history-$tag.json") == Lists ]] ||
    li_fail "[$tag] rename without old_name"
  local moved flags deleted
  # In folders without an event: the deleted folder's messages may count as moved
  # too, where the same bytes were appended elsewhere in this run (one email).
  moved=$(jq '[.folders[] | select(.event == null) | .moved] | add' "$W/history-$tag.json")
  flags=$(jq '[.folders[].flags_changed] | add' "$W/history-$tag.json")
  deleted=$(jq '[.folders[] | select(.event == null) | .deleted] | add' "$W/history-$tag.json")
  [[ $moved == 3 ]] || li_fail "[$tag] moved $moved, expected 3 ($(cat "$W/history-$tag.json"))"
  [[ $deleted == 3 ]] || li_fail "[$tag] deleted $deleted in unchanged folders, expected the 3 expunged"
  ((flags > 0)) || li_fail "[$tag] no flag change recorded"
  li_ok "[$tag] history: $ev; moved $moved, expunged $deleted, flags changed $flags"

  # Deleted emails (no location left) are marked; every email with a location is not.
  [[ $(li_sql "SELECT count(*) FROM emails e WHERE (e.deleted_at IS NULL) =
                NOT EXISTS (SELECT 1 FROM email_locations l WHERE l.email_id = e.id)") == 0 ]] ||
    li_fail "[$tag] deleted_at disagrees with locations"
  li_ok "[$tag] $(li_sql "SELECT count(*) FROM emails WHERE deleted_at IS NOT NULL") emails kept as deleted, none with a location"

  # A second sync finds nothing.
  job=$(sync_ok "second")
  [[ $(latest_history '[.folders[] | .added + .flags_changed + .deleted + .moved] | add') == 0 &&
     $(latest_history '[.folders[] | select(.event != null)] | length') == 0 ]] ||
    li_fail "[$tag] the second sync reported changes: $(latest_history .)"
  db_state "$W/db2-$tag"
  li_diff "$W/server-$tag" "$W/db2-$tag" "[$tag] the second sync changed the result"
  li_ok "[$tag] a second sync changes nothing ($(latest_history '[.folders[].method] | group_by(.) | map(.[0] + " " + (length|tostring)) | join(", ")'))"
  li_stages stop >/dev/null
}

run_case q 127.0.0.1 mbsyncq
# Here a sync's new messages go through the fetch stage, folders one at a time.
run_case p 127.0.0.2 mbsyncp MAILBUS_SYNC_INLINE_MAX=0 MAILBUS_SYNC_CONNECTIONS=1
run_case c 127.0.0.3 mbsyncc
echo "PASS test_sync.sh"
