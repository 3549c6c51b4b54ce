#!/usr/bin/env bash
# test_verify.sh — `mailbus verify` reports exactly what differs between the
# server and what mailbus holds, and nothing else.
#
# A 200-message mailbox on Dovecot, imported. verify finds no difference. Then,
# behind mailbus's back: one blob deleted, another corrupted (same size, one
# byte changed), three email_locations rows removed, a keyword added on the
# server to two messages, one message expunged on the server and one
# appended to INBOX. verify must report exactly: blob_missing 1, not_stored 4
# (three "stored by job J, but its location is gone", one "new since the last
# import or sync"), flags 2, gone 1 — the corrupted blob only with --deep
# (blob_corrupt 1) — each at the right folder and UID; exit 1; --folders
# restricts it; `mailbus jobs` shows the result against the import job. Then
# `verify --deep --repair` starts a sync that fetches the 6 messages again
# (4 not stored, the missing and the corrupt blob) and mends the rest, and a
# deep verify afterwards finds no difference.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_verify
W=$LI_W
USER_NAME=mbverify
DOVEADM=(doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf")
li_mailbox "$USER_NAME" "$USER_NAME-pw" --messages 200 --seed 81
li_env v
li_account acc "$USER_NAME" "$USER_NAME-pw"
li_stages start >/dev/null || li_fail "stages start"
job=$(li_import acc)
li_wait_job "$job" 180
li_stages stop >/dev/null
total=$(li_job "$job" total_messages)

# verify_json OUT ARGS...: run verify --json --limit 0, keep its exit status in $vrc.
verify_json() {
  local out=$1; shift
  set +e
  "$MB" verify acc --json --limit 0 "$@" >"$out" 2>"$out.err"
  vrc=$?
  set -e
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$out" ||
    li_fail "verify $* printed no JSON: $(head -c 300 "$out") $(cat "$out.err")"
}
# field FILE EXPR: a value of the JSON (EXPR in Python, the object as j).
field() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# diffs FILE: "kind<TAB>folder<TAB>uid" of every difference, sorted.
diffs() { python3 -c 'import json,sys
for d in json.load(open(sys.argv[1]))["first"]: print("%s\t%s\t%d" % (d["kind"], d["folder"], d["uid"]))' "$1" | LC_ALL=C sort; }

verify_json "$W/v0.json"
((vrc == 0)) || li_fail "verify of a fresh import exited $vrc: $(cat "$W/v0.json")"
read -r nd srv sto < <(field "$W/v0.json" '"%d %d %d" % (j["differences"], j["server_messages"], j["stored_messages"])')
[[ "$nd $srv $sto" == "0 $total $total" ]] || li_fail "fresh import: differences $nd, server $srv, stored $sto; want 0 $total $total"
li_ok "a fresh import: no differences ($total messages on both sides)"

# Targets: 8 locations whose blob no other location shares, in a fixed order.
mapfile -t T < <(li_sql "SELECT f.remote_name || '|' || l.uid || '|' || encode(e.blob_sha256, 'hex') || '|' || l.email_id
  FROM email_locations l JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id
  WHERE (SELECT count(*) FROM email_locations x WHERE x.email_id = l.email_id) = 1
  ORDER BY e.blob_sha256 LIMIT 8")
((${#T[@]} == 8)) || li_fail "want 8 target messages, have ${#T[@]}"
IFS='|' read -r f_miss u_miss sha_miss _ <<<"${T[0]}"
IFS='|' read -r f_bad u_bad sha_bad _ <<<"${T[1]}"
rm "$MAILBUS_BLOB_DIR/${sha_miss:0:2}/$sha_miss"
blob_bad=$MAILBUS_BLOB_DIR/${sha_bad:0:2}/$sha_bad
chmod u+w "$blob_bad" 2>/dev/null || true
printf 'X' | dd of="$blob_bad" bs=1 seek=10 conv=notrunc status=none
: >"$W/expect"
printf 'blob_missing\t%s\t%s\n' "$f_miss" "$u_miss" >>"$W/expect"
for i in 2 3 4; do
  IFS='|' read -r f u _ eid <<<"${T[$i]}"
  li_sql "DELETE FROM email_locations WHERE email_id = $eid" >/dev/null
  printf 'not_stored\t%s\t%s\n' "$f" "$u" >>"$W/expect"
done
for i in 5 6; do
  IFS='|' read -r f u _ _ <<<"${T[$i]}"
  "${DOVEADM[@]}" flags add -u "$USER_NAME" '$VerifyTest' mailbox "$f" uid "$u" || li_fail "doveadm flags $f $u"
  printf 'flags\t%s\t%s\n' "$f" "$u" >>"$W/expect"
done
IFS='|' read -r f u _ _ <<<"${T[7]}"
"${DOVEADM[@]}" expunge -u "$USER_NAME" mailbox "$f" uid "$u" || li_fail "doveadm expunge $f $u"
printf 'gone\t%s\t%s\n' "$f" "$u" >>"$W/expect"
new_uid=$(li_sql "SELECT uidnext FROM folders WHERE name = 'INBOX'")
printf 'From: a@b.test\r\nTo: c@d.test\r\nSubject: new after the import\r\n\r\nhello\r\n' |
  "${DOVEADM[@]}" save -u "$USER_NAME" -m INBOX || li_fail "doveadm save"
printf 'not_stored\tINBOX\t%s\n' "$new_uid" >>"$W/expect"
LC_ALL=C sort -o "$W/expect" "$W/expect"

verify_json "$W/v1.json"
((vrc == 1)) || li_fail "verify with differences exited $vrc, want 1"
diffs "$W/v1.json" >"$W/got1"
li_diff "$W/expect" "$W/got1" "verify did not report exactly the differences made"
read -r nd mis < <(field "$W/v1.json" '"%d %d" % (j["differences"], j["missing"])')
[[ "$nd $mis" == "8 5" ]] || li_fail "differences $nd, missing $mis; want 8 5"
python3 - "$W/v1.json" "$job" <<'EOF' || li_fail "the reasons for not_stored are wrong"
import json, sys
j = json.load(open(sys.argv[1]))
why = sorted(d["detail"] for d in j["first"] if d["kind"] == "not_stored")
want = ["new since the last import or sync"] + ["stored by job %s, but its location is gone" % sys.argv[2]] * 3
assert why == sorted(want), why
EOF
li_ok "after 8 changes: exactly blob_missing 1, not_stored 4 (reasons right), flags 2, gone 1; exit 1"

verify_json "$W/v2.json" --deep
diffs "$W/v2.json" >"$W/got2"
{ cat "$W/expect"; printf 'blob_corrupt\t%s\t%s\n' "$f_bad" "$u_bad"; } | LC_ALL=C sort >"$W/expect2"
li_diff "$W/expect2" "$W/got2" "verify --deep did not add exactly the corrupted blob"
li_ok "--deep: also the corrupted blob ($f_bad UID $u_bad), nothing else"

verify_json "$W/v3.json" --folders INBOX
diffs "$W/v3.json" >"$W/got3"
awk -F'\t' '$2 == "INBOX"' "$W/expect" >"$W/expect3"
li_diff "$W/expect3" "$W/got3" "verify --folders INBOX reported other folders or missed some"
[[ $(field "$W/v3.json" 'j["folders"]') == 1 ]] || li_fail "--folders INBOX compared $(field "$W/v3.json" 'j["folders"]') folders"
li_ok "--folders INBOX: only INBOX's $(wc -l <"$W/expect3") differences"

# The text form and the record in `mailbus jobs`.
set +e
"$MB" verify acc >"$W/text.out" 2>&1
rc=$?
"$MB" verify >/dev/null 2>&1
urc=$?
set -e
((rc == 1 && urc == 2)) || li_fail "exit statuses: differences $rc (want 1), usage $urc (want 2)"
grep -q "^8 differences (not_stored 4, gone 1, flags 2, blob_missing 1); 5 of them" "$W/text.out" ||
  li_fail "text summary: $(tail -n 3 "$W/text.out")"
"$MB" jobs >"$W/jobs.out"
awk -v j="$job" '$1 == j {print $NF, $(NF-1)}' "$W/jobs.out" | grep -qx 'diff 8' ||
  li_fail "mailbus jobs does not show '8 diff' for job $job: $(cat "$W/jobs.out")"
v=$("$MB" jobs --json "$job" | python3 -c 'import json,sys; v=json.loads(sys.stdin.read())["verified"]; print(v["differences"], v["missing"], v["deep"])')
[[ $v == "8 5 False" ]] || li_fail "jobs --json verified: '$v', want '8 5 False'"
li_ok "text summary, exit statuses 1 and 2, and 'mailbus jobs' shows the latest verify (8 diff)"
# --repair: one sync that fetches exactly what is missing or damaged and mends
# the rest; then a deep verify finds nothing.
li_stages start >/dev/null || li_fail "stages start"
verify_json "$W/v4.json" --deep --repair
((vrc == 1)) || li_fail "verify --repair exited $vrc: $(cat "$W/v4.json.err")"
read -r queued rjob < <(field "$W/v4.json" '"%d %d" % (j["repair"]["queued"], j["repair"]["job"])')
[[ $queued == 6 ]] || li_fail "repair queued $queued messages, want 6 (4 not stored, 1 blob missing, 1 corrupt)"
li_wait_job "$rjob" 120
[[ -f $blob_bad && $(sha256sum "$blob_bad" | cut -d' ' -f1) == "$sha_bad" ]] || li_fail "the corrupt blob was not written again"
verify_json "$W/v5.json" --deep
((vrc == 0)) || li_fail "after the repair, verify --deep exited $vrc: $(diffs "$W/v5.json" | head -5)"
li_ok "--repair: sync job $rjob fetched the 6 messages again and mended the rest; a deep verify then finds nothing"
echo "PASS test_verify.sh (total $((SECONDS - LI_T0)) s)"
