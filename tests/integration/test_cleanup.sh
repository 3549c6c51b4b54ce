#!/usr/bin/env bash
# test_cleanup.sh — the cleanup job (stages/store/cleanup.c), against the real
# services: after an import of two accounts, messages are expunged on the server
# and `mailbus sync --wait` marks their emails deleted; `mailbus cleanup` with a
# shortened retention then purges them (with their addresses and attachments) and
# removes their blobs — except a blob another account still references (kept byte
# for byte), a blob still in another folder (the email keeps a location), and a
# blob a fetch touched recently or that an active job may still reference (kept
# until both no longer hold). History rows carry the counts, a further pass
# removes nothing, the walk of the blob store removes a never-referenced old blob
# and keeps a new one, a pass while another holds the lease is refused, the blobs
# of a removed account go, and the store stage's own timer purges what the server
# deleted next.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_cleanup
W=$LI_W
CHANGES=("python3" "$LI_SRC/tests/integration/imap_changes.py")
DOVEADM=(doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf")
li_corpus "$W/corpus"
C0=$W/corpus/german-qp.msg         # in INBOX and Copies: expunged from INBOX only
C1=$W/corpus/bluedot-simple.msg    # in both accounts: a's is expunged
C2=$W/corpus/nodemailer.eml        # a's only: expunged, blob removed
C3=$W/corpus/multi-2gifs.msg       # a's only, attachments: expunged, blob touched
for f in "$C0" "$C1" "$C2" "$C3"; do [[ -f $f ]] || li_fail "corpus file $f missing"; done

li_env c
ACTIVE="status IN ('pending', 'scanning', 'running', 'paused')"
# sync_a WHAT: `mailbus sync a --wait`; a sync the IDLE watcher started first
# (an INBOX change) makes ours refused: then wait for it and ask again.
sync_a() {
  local deadline=$((SECONDS + 90))
  until "$MB" sync a --wait >"$W/sync.out" 2>&1; do
    grep -q "already has an active job" "$W/sync.out" || { cat "$W/sync.out"; li_fail "sync a ($1)"; }
    ((SECONDS < deadline)) || li_fail "sync a ($1): refused for 90 s: $(cat "$W/sync.out")"
    sleep 1
  done
}
# The timer is off until the last part: the passes below are the CLI's.
export MAILBUS_CLEANUP_EVERY_MS=0
# append USER FOLDER FILE: echo the new UID.
append() {
  local out
  out=$("${CHANGES[@]}" --user "$1" append "$2" "$3") || li_fail "append $2 for $1"
  [[ $out =~ ^append\ [^\ ]+\ ([0-9]+)\  ]] || li_fail "append printed '$out'"
  echo "${BASH_REMATCH[1]}"
}
li_mailbox mbclnb mbclnb-pw --messages 3 --seed 4
append mbclnb INBOX "$C1" >/dev/null
li_mailbox mbclna mbclna-pw --messages 12 --seed 5
U0=$(append mbclna INBOX "$C0")
U0C=$(append mbclna Copies "$C0")
U1=$(append mbclna INBOX "$C1")
U2=$(append mbclna INBOX "$C2")
U3=$(append mbclna Gone "$C3")
li_account a mbclna mbclna-pw
li_account b mbclnb mbclnb-pw
li_stages start >/dev/null || li_fail "stages start"
li_scan_ready
ja=$(li_import a)
jb=$(li_import b)
li_wait_job "$ja" 120
li_wait_job "$jb" 120

# sha ACCOUNT FOLDER UID: the stored blob of that location.
sha() {
  li_sql "SELECT encode(e.blob_sha256, 'hex') FROM emails e JOIN accounts a ON a.id = e.account_id
          JOIN email_locations l ON l.email_id = e.id JOIN folders f ON f.id = l.folder_id
          WHERE a.name = '$1' AND f.name = '$2' AND l.uid = $3"
}
S0=$(sha a INBOX "$U0"); S1=$(sha a INBOX "$U1"); S2=$(sha a INBOX "$U2"); S3=$(sha a Gone "$U3")
[[ $S0 =~ ^[0-9a-f]{64}$ && $S1 =~ ^[0-9a-f]{64}$ && $S2 =~ ^[0-9a-f]{64}$ && $S3 =~ ^[0-9a-f]{64}$ ]] ||
  li_fail "blobs of the appended messages: '$S0' '$S1' '$S2' '$S3'"
[[ $(sha a Copies "$U0C") == "$S0" ]] || li_fail "the copy in Copies is not the same email"
[[ $(li_sql "SELECT count(DISTINCT account_id) FROM emails WHERE blob_sha256 = decode('$S1', 'hex')") == 2 ]] ||
  li_fail "C1 is not stored for both accounts"
blob() { echo "$MAILBUS_BLOB_DIR/${1:0:2}/$1"; }
for s in "$S0" "$S1" "$S2" "$S3"; do
  [[ $(sha256sum "$(blob "$s")" | cut -d' ' -f1) == "$s" ]] || li_fail "blob $s missing after the import"
done
# The ids of the emails that will be purged, with their dependent rows.
IDS=$(li_sql "SELECT string_agg(e.id::text, ',') FROM emails e JOIN accounts a ON a.id = e.account_id
              WHERE a.name = 'a' AND e.blob_sha256 IN (decode('$S1', 'hex'), decode('$S2', 'hex'), decode('$S3', 'hex'))")
deps() { li_sql "SELECT (SELECT count(*) FROM addresses WHERE email_id IN ($IDS)) || ' ' ||
                        (SELECT count(*) FROM attachments WHERE email_id IN ($IDS))"; }
read -r naddr natt <<<"$(deps)"
((naddr > 0 && natt >= 2)) || li_fail "expected addresses and attachments rows, got $naddr $natt"
li_ok "imported: a has C0 in INBOX and Copies, C1 (also b's), C2, C3 ($natt attachments)"

# --- the server deletes; a sync marks the emails deleted ----------------------------------
for fu in "INBOX $U0" "INBOX $U1" "INBOX $U2" "Gone $U3"; do
  read -r folder uid <<<"$fu"
  "${DOVEADM[@]}" expunge -u mbclna mailbox "$folder" uid "$uid" || li_fail "doveadm expunge $folder $uid"
done
"${DOVEADM[@]}" kick mbclna >/dev/null 2>&1 || true
sync_a "expunged"
deleted() { li_sql "SELECT count(*) FROM emails e JOIN accounts a ON a.id = e.account_id
                    WHERE a.name = '$1' AND e.deleted_at IS NOT NULL AND e.blob_sha256 = decode('$2', 'hex')"; }
for s in "$S1" "$S2" "$S3"; do [[ $(deleted a "$s") == 1 ]] || li_fail "email $s of a not marked deleted"; done
[[ $(deleted a "$S0") == 0 ]] || li_fail "C0 still in Copies, yet marked deleted"
[[ $(deleted b "$S1") == 0 ]] || li_fail "b's C1 marked deleted"
li_ok "after the sync: 3 emails of a kept as deleted; C0 (in Copies) and b's C1 not"
# No job may be left active (one would hold blobs back: the active-job guard).
sleep 2
li_wait_until 60 "no active job" "NOT EXISTS (SELECT 1 FROM sync_jobs WHERE $ACTIVE)"
li_stages stop >/dev/null
[[ $(li_sql "SELECT count(*) FROM sync_jobs WHERE $ACTIVE") == 0 ]] || li_fail "a job is active after the stop"

# --- passes ---------------------------------------------------------------------------------
# pass WHAT ARGS...: mailbus cleanup --json, output in $W/pass.json.
pass() {
  local what=$1; shift
  "$MB" cleanup --json "$@" >"$W/pass.json" 2>"$W/pass.err" || { cat "$W/pass.err"; li_fail "cleanup ($what)"; }
  jq -e . "$W/pass.json" >/dev/null || li_fail "cleanup ($what) printed no JSON: $(cat "$W/pass.json")"
}
# expect WHAT "purged removed kept_referenced kept_recent absent"
expect() {
  local got
  got=$(jq -r '[.emails_purged, .blobs_removed, .blobs_kept_referenced, .blobs_kept_recent, .blobs_absent] | join(" ")' "$W/pass.json")
  [[ $got == "$2" ]] || li_fail "$1: purged/removed/kept referenced/kept recent/absent = $got, expected $2 ($(cat "$W/pass.json"))"
}
present() { [[ $(sha256sum "$(blob "$1")" 2>/dev/null | cut -d' ' -f1) == "$1" ]]; }
emails() { li_sql "SELECT count(*) FROM emails"; }
n_emails=$(emails)

"$MB" cleanup --help | grep -q -- "--retention" || li_fail "cleanup --help"
"$MB" cleanup --retention soon >/dev/null 2>&1 && li_fail "--retention soon accepted"
pass "retention not over" --retention 1h
expect "a pass within the retention" "0 0 0 0 0"
pass "dry run" --retention 0 --dry-run
expect "a dry run" "3 2 1 0 0"
[[ $(emails) == "$n_emails" && $(li_sql "SELECT count(*) FROM blob_gc") == 0 ]] || li_fail "the dry run changed rows"
for s in "$S1" "$S2" "$S3"; do present "$s" || li_fail "the dry run removed $s"; done
li_ok "within the retention nothing is purged; a dry run says 3 emails, 2 blobs and changes nothing"

# The race guard: a blob a fetch found again (a dedup commit sets its mtime now)
# is kept although no email references it.
sleep 4
touch "$(blob "$S3")"
pass "first" --retention 3s
expect "the first pass" "3 1 1 1 0"
[[ $(emails) == $((n_emails - 3)) ]] || li_fail "emails: $(emails), expected $((n_emails - 3))"
[[ $(deps) == "0 0" ]] || li_fail "addresses/attachments of the purged emails left: $(deps)"
present "$S2" && li_fail "blob of C2 not removed"
present "$S1" || li_fail "C1's blob (b's email references it) not kept byte for byte"
present "$S0" || li_fail "C0's blob (still in Copies) removed"
present "$S3" || li_fail "C3's blob, touched after the pass started, removed"
[[ $(li_sql "SELECT encode(sha256, 'hex') FROM blob_gc") == "$S3" ]] || li_fail "queue: $(li_sql "SELECT encode(sha256, 'hex') FROM blob_gc")"
hist() {
  li_sql "SELECT h.detail->>'emails_purged', h.detail->>'blobs_removed', h.detail->>'blobs_kept_referenced',
                 h.detail->>'blobs_kept_recent', h.detail->>'blobs_absent'
          FROM sync_history h JOIN accounts a ON a.id = h.account_id
          WHERE a.name = '$1' AND h.event = 'cleanup' ORDER BY h.id DESC LIMIT 1" | tr '\t' ' '
}
[[ $(hist a) == "3 1 1 1 0" ]] || li_fail "history of a: '$(hist a)'"
[[ $(li_sql "SELECT count(*) FROM sync_history h JOIN accounts a ON a.id = h.account_id
             WHERE a.name = 'b' AND h.event = 'cleanup'") == 0 ]] || li_fail "a cleanup history row for b"
li_ok "first pass: 3 emails purged with their rows, C2's blob removed; C1's (b) and C0's kept, C3's (touched) kept queued; history of a: $(hist a)"

# The active-job guard: a blob not touched within the retention, but after the
# start (minus 5 min of clock skew) of a job still active, is kept.
jf=$(li_sql "INSERT INTO sync_jobs (account_id, type, status, created_at)
             SELECT id, 'sync', 'running', now() - interval '30 minutes' FROM accounts WHERE name = 'b'
             RETURNING id")
touch -d '20 minutes ago' "$(blob "$S3")"
pass "with an active job" --retention 3s
expect "a pass during an older active job" "0 0 0 1 0"
present "$S3" || li_fail "C3's blob removed while a job older than its mtime is active"
li_sql "DELETE FROM sync_jobs WHERE id = $jf" >/dev/null
pass "after the job" --retention 3s
expect "the pass after the job" "0 1 0 0 0"
present "$S3" && li_fail "C3's blob not removed once nothing wanted it"
[[ $(hist a) == "0 1 0 0 0" ]] || li_fail "history of a after the C3 pass: '$(hist a)'"
pass "again" --retention 3s
expect "a further pass" "0 0 0 0 0"
[[ $(li_sql "SELECT count(*) FROM blob_gc") == 0 ]] || li_fail "blob_gc not empty"
li_ok "an active job older than the blob keeps it; once it is gone the blob goes; a further pass removes nothing"

# The walk: blobs no email ever referenced (a cancelled import's): the old one
# goes, the new one (a fetch may be about to reference it) stays.
orphan() {
  local f=$W/orphan-$1 h
  printf 'Subject: orphan %s\r\n\r\nnever stored\r\n' "$1" >"$f"
  h=$(sha256sum "$f" | cut -d' ' -f1)
  mkdir -p "$MAILBUS_BLOB_DIR/${h:0:2}"
  cp "$f" "$(blob "$h")"
  echo "$h"
}
O_OLD=$(orphan old); O_NEW=$(orphan new)
touch -d '2 hours ago' "$(blob "$O_OLD")"
pass "walk" --retention 3s --walk-all
expect "the walk" "0 1 0 1 0"
[[ $(jq -r '.blobs_queued, .dirs_walked' "$W/pass.json" | tr '\n' ' ') == "2 256 " ]] ||
  li_fail "walk: $(cat "$W/pass.json")"
present "$O_OLD" && li_fail "old orphan blob not removed"
present "$O_NEW" || li_fail "new orphan blob removed"
bad=0
while read -r s; do present "$s" || bad=$((bad + 1)); done < <(li_sql "SELECT DISTINCT encode(blob_sha256, 'hex') FROM emails")
((bad == 0)) || li_fail "$bad blobs of stored emails missing"
li_ok "walk of 256 directories: queued 2 never-referenced blobs, removed the old, kept the new; every email's blob intact"

# One pass at a time: while another process holds the lease, the CLI says so.
li_sql "INSERT INTO leases (name, holder, expires_at) VALUES ('cleanup', 'someone-else', now() + interval '1 minute')" >/dev/null
"$MB" cleanup --retention 3s >"$W/busy.out" 2>&1 && li_fail "a pass ran while another held the lease"
grep -q "another process is running a cleanup pass" "$W/busy.out" || li_fail "refusal: $(cat "$W/busy.out")"
li_sql "DELETE FROM leases WHERE name = 'cleanup'" >/dev/null
li_ok "a pass while another process holds the lease is refused"

# An account removed with its emails (a cascade): its blobs are queued by the same
# trigger and go with the next pass, C1's too now that no email references it.
mapfile -t SB < <(li_sql "SELECT encode(e.blob_sha256, 'hex') FROM emails e JOIN accounts a ON a.id = e.account_id
                          WHERE a.name = 'b' ORDER BY 1")
((${#SB[@]} == 4)) || li_fail "b has ${#SB[@]} emails, expected 4"
bid=$(li_sql "SELECT id FROM accounts WHERE name = 'b'")
"$MB" account remove b >/dev/null || li_fail "account remove b"
touch -d '+1 hour' "$(blob "$O_NEW")" # still queued: kept in this pass for sure
pass "after removing b" --retention 3s
expect "the pass after removing b" "0 4 0 1 0"
[[ $(jq -r --argjson b "$bid" '.accounts[] | select(.account_id == $b) | "\(.account):\(.blobs_removed)"' "$W/pass.json") == "null:4" ]] ||
  li_fail "per account after removing b: $(cat "$W/pass.json")"
for s in "${SB[@]}"; do present "$s" && li_fail "blob $s of the removed account b kept"; done
li_ok "account b removed: its 4 blobs (C1 among them) removed by the next pass"

# --- the store stage's timer ---------------------------------------------------------------
"${DOVEADM[@]}" expunge -u mbclna mailbox Copies uid "$U0C" || li_fail "doveadm expunge Copies"
"${DOVEADM[@]}" kick mbclna >/dev/null 2>&1 || true
touch -d '1 minute ago' "$(blob "$O_NEW")"
MAILBUS_CLEANUP_EVERY_MS=500 MAILBUS_RETENTION_DAYS=0.00003 li_stages start >/dev/null || li_fail "stages start"
li_scan_ready
sync_a "Copies"
li_wait_until 60 "the store stage's timer to purge C0" \
  "NOT EXISTS (SELECT 1 FROM emails WHERE blob_sha256 = decode('$S0', 'hex'))"
for _ in $(seq 1 50); do present "$S0" || break; sleep 0.2; done
present "$S0" && li_fail "C0's blob not removed by the store stage"
for _ in $(seq 1 50); do present "$O_NEW" || break; sleep 0.2; done
present "$O_NEW" && li_fail "the new orphan, old by now, not removed by the store stage"
grep -h "cleanup: .* emails purged" "$MAILBUS_STAGES_DIR"/store-*.log | grep -q "1 emails purged" ||
  li_fail "no log line of the store's pass that purged C0"
[[ $(hist a | cut -d' ' -f1,2) == "1 1" ]] || li_fail "history of a after the timer's pass: '$(hist a)'"
li_ok "the store stage's timer purged C0 (deleted from Copies) and removed its blob and the aged orphan"
li_stages stop >/dev/null
echo "PASS test_cleanup.sh"
