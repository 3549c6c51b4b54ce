#!/usr/bin/env bash
# test_imap_names.sh — names and keywords that are not UTF-8 do not fail a job.
#
# Through the real Dovecot: an 8-bit keyword ("caf\xe9", written into the
# Maildir's dovecot-keywords, which Dovecot then sends as it is in FLAGS) on two
# INBOX messages, next to a clean one ($Clean). The import must complete with
# every message stored byte-equal to the server and the 8-bit keyword kept in
# its escaped form (U+FFFD "caf\xE9", valid UTF-8). Folder names that are not
# valid modified UTF-7 cannot be made through Dovecot (it refuses them in
# commands and renames an 8-bit directory on disk to "Caf&,,0-"):
# tests/unit/test_imap_names.c covers those conversions on hostile input.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_imap_names
W=$LI_W
USER_NAME=mbimapnames
li_mailbox "$USER_NAME" "$USER_NAME-pw" --messages 30 --seed 53
MD=$MAILBUS_MAIL_ROOT/$USER_NAME/Maildir

# Two INBOX messages get keywords a (8-bit) and b (clean).
printf '0 caf\xe9\n1 $Clean\n' >"$MD/dovecot-keywords"
mapfile -t files < <(cd "$MD/cur" && ls | sort | head -2)
((${#files[@]} == 2)) || li_fail "INBOX has fewer than 2 messages"
for f in "${files[@]}"; do mv "$MD/cur/$f" "$MD/cur/${f}ab"; done
"$LI_SRC/scripts/services" imap-user "$USER_NAME" "$USER_NAME-pw" >/dev/null || li_fail "imap-user"

li_server_state "$W/server"
total=$(wc -l <"$W/server")
li_log "mailbox: $total messages, keyword caf\\xe9 on ${#files[@]} INBOX messages"

li_env names
li_account nacct "$USER_NAME" "$USER_NAME-pw"
li_stages start >/dev/null || li_fail "stages start"
job=$(li_import nacct)
li_wait_job "$job" 120

li_sql "SELECT coalesce(f.remote_name, f.name), l.uid FROM email_locations l JOIN folders f ON f.id = l.folder_id" | sort >"$W/got.loc"
cut -f1,2 "$W/server" | sort >"$W/want.loc"
li_diff "$W/want.loc" "$W/got.loc" "stored locations differ from the server's"
li_server_sha "$W/server_sha" "$W/server"
li_sql "SELECT coalesce(f.remote_name, f.name), l.uid, encode(e.blob_sha256, 'hex')
        FROM email_locations l JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id" | sort >"$W/got.sha"
li_diff "$W/server_sha" "$W/got.sha" "blob hashes differ from the server's bytes"
IFS=$'\t' read -r st tot so er < <(li_sql "SELECT status, total_messages, stored, errors FROM sync_jobs WHERE id = $job")
[[ "$st $tot $so $er" == "completed $total $total 0" ]] || li_fail "job status=$st total=$tot stored=$so errors=$er, want completed $total $total 0"
li_ok "job completed: $total messages stored with the server's bytes"

want_kw=$'\xef\xbf\xbdcaf\\xE9'
n=$(li_sql "SELECT count(*) FROM email_locations l JOIN folders f ON f.id = l.folder_id
            WHERE f.name = 'INBOX' AND '$want_kw' = ANY (l.flags) AND '\$Clean' = ANY (l.flags)")
[[ $n == 2 ]] || li_fail "INBOX locations with the escaped keyword and \$Clean: $n, want 2 ($(li_sql "SELECT l.uid, l.flags FROM email_locations l WHERE array_length(l.flags, 1) > 1" | head -3))"
li_ok "8-bit keyword stored as U+FFFD 'caf\\xE9' (valid UTF-8) next to \$Clean on both messages"

