#!/usr/bin/env bash
# test_imap_no.sh — a server that answers NO for a while loses no mail.
#
# Real Dovecot answers an unreadable message with BYE, never a tagged NO, so a
# small proxy in front of it (imap_fault_proxy.py) answers NO while a control
# file says so; all bytes still come from Dovecot. One import meets:
#   scan:  every FETCH of a scan window answered NO [SERVERBUG] for a while —
#          the job must wait (problem recorded), not skip the window;
#   fetch: UID FETCH of a chunk holding UIDs X and Y answered NO [UNAVAILABLE]
#          for longer than one delivery's retries — nothing may be marked failed
#          meanwhile; Y's file is deleted from the Maildir during the outage, so
#          afterwards UID SEARCH says Y is gone (failed, "vanished") while X and
#          every other message are stored once, byte-equal to the server's.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_imap_no
W=$LI_W
USER_NAME=mbimapno
command -v python3 >/dev/null || li_fail "python3 is needed for the fault proxy"

li_mailbox "$USER_NAME" "$USER_NAME-pw" --messages 40 --seed 47
li_server_state "$W/server"
total=$(wc -l <"$W/server")
MD=$MAILBUS_MAIL_ROOT/$USER_NAME/Maildir
mapfile -t inbox < <(awk -F'\t' '$1 == "INBOX" {print $2}' "$W/server" | sort -n)
((${#inbox[@]} >= 3)) || li_fail "INBOX has ${#inbox[@]} messages, want >= 3"
X=${inbox[0]} Y=${inbox[1]}
li_log "mailbox: $total messages; INBOX UIDs X=$X (NO, then served) Y=$Y (NO, then deleted)"

li_fault_proxy "$W/ctl"
PPORT=$LI_PPORT

li_env no
(umask 077 && printf '%s\n' "$USER_NAME-pw" >"$W/pw")
"$MB" account add noacct --imap "imap://$USER_NAME@127.0.0.1:$PPORT" --password-file "$W/pw" \
  >"$W/account.log" 2>&1 || { cat "$W/account.log"; li_fail "account add"; }
injected() { local n; n=$(grep -cx "$1" "$W/ctl/injected" 2>/dev/null) || true; echo "${n:-0}"; }
problem_with() { li_sql "SELECT count(*) FROM sync_history WHERE job_id = $1 AND detail->>'detail' LIKE '%$2%'"; }

: >"$W/ctl/scan-no"
echo "$X $Y" >"$W/ctl/fetch-no"
li_stages start >/dev/null || li_fail "stages start"
job=$(li_import noacct)

# --- scan: NO [SERVERBUG] on every window ---------------------------------------------------
deadline=$((SECONDS + 60))
until (($(injected scan) >= 6)) && (($(problem_with "$job" SERVERBUG) >= 1)); do
  ((SECONDS < deadline)) || li_fail "scan: $(injected scan) NOs injected, $(problem_with "$job" SERVERBUG) problems recorded after 60 s"
  li_stages_alive
  sleep 0.2
done
st=$(li_job "$job" status)
[[ $st == scanning ]] || li_fail "job is '$st' while every scan FETCH is refused, want scanning"
[[ $(li_sql "SELECT count(*) FROM job_messages WHERE job_id = $job") == 0 ]] ||
  li_fail "scan recorded messages while its FETCH was refused"
rm "$W/ctl/scan-no"
li_ok "scan: $(injected scan) FETCHes answered NO [SERVERBUG]: job stays scanning, problem recorded, nothing skipped"

# --- fetch: NO [UNAVAILABLE] for the chunk holding X and Y ----------------------------------
deadline=$((SECONDS + 90))
until (($(injected fetch) >= 12)); do
  ((SECONDS < deadline)) || li_fail "fetch: only $(injected fetch) NOs injected after 90 s"
  li_stages_alive
  sleep 0.2
done
nfailed=$(li_count "$job" 8)
[[ $nfailed == 0 ]] || li_fail "fetch: $nfailed messages marked failed while the server only said NO [UNAVAILABLE]"
(($(problem_with "$job" UNAVAILABLE) >= 1)) || li_fail "fetch: the NO [UNAVAILABLE] is not shown on the job"
# Y really goes away meanwhile.
yname=$(awk -v u="$Y" '$1 == u {print $NF}' "$MD/dovecot-uidlist")
yname=${yname#:}
[[ -n $yname ]] || li_fail "UID $Y not in $MD/dovecot-uidlist"
yfiles=$(find "$MD/cur" "$MD/new" -name "$yname*" -print -delete)
[[ -n $yfiles ]] || li_fail "no Maildir file for UID $Y ($yname)"
li_ok "fetch: $(injected fetch) UID FETCHes answered NO [UNAVAILABLE] (more than one delivery's retries): nothing marked failed, problem on the job"
rm "$W/ctl/fetch-no"

li_wait_job "$job" 120

# --- outcome ----------------------------------------------------------------------------------
n_x=$(li_sql "SELECT count(*) FROM email_locations l JOIN folders f ON f.id = l.folder_id WHERE f.name = 'INBOX' AND l.uid = $X")
[[ $n_x == 1 ]] || li_fail "UID $X stored $n_x times, want once"
st_y=$(li_sql "SELECT st FROM job_messages m JOIN folders f ON f.id = m.folder_id WHERE m.job_id = $job AND f.name = 'INBOX' AND m.uid = $Y")
((st_y & 8)) || li_fail "UID $Y (deleted on the server) has progress bits $st_y, want failed (8)"
n_y=$(li_sql "SELECT count(*) FROM email_locations l JOIN folders f ON f.id = l.folder_id WHERE f.name = 'INBOX' AND l.uid = $Y")
[[ $n_y == 0 ]] || li_fail "UID $Y stored although it was deleted before it could be fetched"
(($(problem_with "$job" vanished) >= 1)) || li_fail "the vanished UID $Y is not shown on the job"

awk -F'\t' -v y="$Y" '!($1 == "INBOX" && $2 == y) {print $1 "\t" $2}' "$W/server" | sort >"$W/want.loc"
li_sql "SELECT coalesce(f.remote_name, f.name), l.uid FROM email_locations l JOIN folders f ON f.id = l.folder_id" | sort >"$W/got.loc"
li_diff "$W/want.loc" "$W/got.loc" "stored locations differ from the server's (minus the deleted UID $Y)"
li_server_sha "$W/server_sha" "$W/server"
li_sql "SELECT coalesce(f.remote_name, f.name), l.uid, encode(e.blob_sha256, 'hex')
        FROM email_locations l JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id" | sort >"$W/got.sha"
li_diff "$W/server_sha" "$W/got.sha" "blob hashes differ from the server's bytes"
IFS=$'\t' read -r st tot so er < <(li_sql "SELECT status, total_messages, stored, errors FROM sync_jobs WHERE id = $job")
[[ "$st $tot $so $er" == "completed $total $((total - 1)) 1" ]] ||
  li_fail "job status=$st total=$tot stored=$so errors=$er, want completed $total $((total - 1)) 1"
li_ok "after the outage: job completed, $((total - 1)) of $total stored once with the server's bytes, UID $Y failed as vanished (UID SEARCH)"
