#!/usr/bin/env bash
# test_import_hostile.sh — no single message can hold the pipeline.
#
# Account "hostile": 200 generated messages plus a folder of mail built to
# hurt: the four shapes that once froze or crawled the parser (From: <a><b>,
# 170,000 unclosed <head> tags, 36,000 unterminated encoded words, a header
# section past the 1 MB limit with a Subject after it); a 30 MB message 31
# multiparts deep whose parse runs past the work budget (2.7 s of CPU under
# ASan against a budget of 800 ms; the largest ordinary message takes 75 ms);
# 3,000 attachments with 400-character names, whose parsed record would not
# fit on the bus (0.12 s of CPU under ASan; 1.8 s, past the budget, while its
# attachment list grew one element per realloc); a message on which
# parse spins in a loop no budget checks, and one on which it crashes (test
# faults MAILBUS_FAULT_PARSE_SPIN / _CRASH), so the supervisor's watchdog and
# crash handling must name the record, dead-letter it and restart the worker.
# Account "plain": 300 ordinary messages, imported alone first (in its own
# environment) and then at the same time as "hostile" through the same single
# copy of each stage.
#
# Bounds (stated, checked): the hostile job completes within 60 s of its
# start; the plain job alongside it finishes at most 30 s later than alone.
# Measured here: 8 to 11 s, and 6.5 to 10 s later than alone (1.4 s). Where
# the time goes: the watchdog needs 3 s of CPU (MAILBUS_WATCHDOG_MS=3000),
# each restart of an ASan worker about 0.5 s plus 0.5 s backoff after the
# crash, the budget message 0.8 s and the 3,000-part one 0.12 s of the one
# parse copy both accounts share; the next worker naks the dead worker's
# batch at once, so nothing waits for AckWait or a BackOff step. The margin
# is for a shared 2-core machine.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_import_hostile
W=$LI_W
export MAILBUS_WATCHDOG_MS=3000 MAILBUS_PARSE_BUDGET_MS=800
export MAILBUS_FAULT_PARSE_SPIN="X-Mailbus-Test-Fault: spin" MAILBUS_FAULT_PARSE_CRASH="X-Mailbus-Test-Fault: crash"
JOB_BOUND=60
DELAY_BOUND=30

# --- the hostile folder -----------------------------------------------------------------------
H=$W/hostile
mkdir -p "$H"
crlf() { sed 's/$/\r/'; }
date_hdr="Date: Mon, 02 Nov 2026 10:00:00 +0000"
printf '%s\n' "From: <a><b>" "To: <a@x> <b@y>" "Subject: two angle addresses" "$date_hdr" "" "body" | crlf >"$H/h1-addr.eml"
{ printf '%s\n' "From: h2@x" "Subject: unclosed heads" "$date_hdr" "Content-Type: text/html" "" | crlf
  perl -e 'print "<head>" x 170000; print "visible\r\n"'; } >"$H/h2-heads.eml"
{ printf 'From: h3@x\r\n%s\r\nSubject: ' "$date_hdr"; perl -e 'print "=?x?Q?a" x 36000'; printf '\r\n\r\nbody\r\n'; } >"$H/h3-ew.eml"
{ printf 'From: h4@x\r\n%s\r\n' "$date_hdr"
  perl -e 'print "X-Filler: 0123456789012345678901234567890123456789\r\n" x 21000'
  printf 'Subject: after the limit\r\n\r\nbody\r\n'; } >"$H/h4-header.eml"
perl -e '
  print "From: deep\@x\r\nSubject: deep\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n";
  print "Content-Type: multipart/mixed; boundary=b$_\r\n\r\n--b$_\r\n" for 1..31;
  print "Content-Type: text/plain\r\n\r\n", "abc\r\n" x 6000000;
  print "--b$_--\r\n" for reverse 1..31;' >"$H/h5-budget.eml"
printf '%s\n' "From: h6@x" "Subject: parse spins" "$date_hdr" "$MAILBUS_FAULT_PARSE_SPIN" "" "body" | crlf >"$H/h6-spin.eml"
printf '%s\n' "From: h7@x" "Subject: parse crashes" "$date_hdr" "$MAILBUS_FAULT_PARSE_CRASH" "" "body" | crlf >"$H/h7-crash.eml"
perl -e '
  print "From: parts\@x\r\nSubject: many parts\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\n";
  print "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=P\r\n\r\n";
  printf "--P\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; " .
         "filename=\"%s-%05d.bin\"\r\n\r\nx\r\n", "f" x 400, $_ for 1..3000;
  print "--P--\r\n"' >"$H/h8-parts.eml"
N_HOSTILE=8

li_mailbox mbhostile mbhostile-pw --messages 200 --seed 41 --extra-dir "$H" --extra-folder Hostile
li_mailbox mbplain mbplain-pw --messages 300 --seed 43

# --- plain alone ------------------------------------------------------------------------------
li_env alone
li_account plain mbplain mbplain-pw
li_stages start >/dev/null || li_fail "stages start (alone)"
t0=$(date +%s%3N)
job=$(li_import plain)
li_wait_job "$job" 300
alone=$(($(date +%s%3N) - t0))
[[ $(li_job "$job" stored) == 300 ]] || li_fail "plain alone: stored $(li_job "$job" stored) of 300"
li_stages stop >/dev/null
li_ok "plain account alone: 300 messages in ${alone} ms"

# --- hostile and plain together ---------------------------------------------------------------
li_env both
li_account hostile mbhostile mbhostile-pw
li_account plain mbplain mbplain-pw
MB_IMAP_USER=mbhostile MB_IMAP_PASSWORD=mbhostile-pw li_server_state "$W/server.txt"
MB_IMAP_USER=mbhostile MB_IMAP_PASSWORD=mbhostile-pw li_server_sha "$W/server-sha.txt" "$W/server.txt"
li_stages start >/dev/null || li_fail "stages start"
t0=$(date +%s%3N)
hjob=$(li_import hostile)
pjob=$(li_import plain)
li_wait_job "$pjob" 300
with=$(($(date +%s%3N) - t0))
li_wait_job "$hjob" "$JOB_BOUND"
hosttime=$(($(date +%s%3N) - t0))
delay=$((with - alone))
li_ok "plain account alongside: ${with} ms (alone ${alone} ms, delay ${delay} ms, bound ${DELAY_BOUND} s)"
((delay <= DELAY_BOUND * 1000)) || li_fail "plain import delayed by ${delay} ms (bound ${DELAY_BOUND} s)"
li_ok "hostile job $hjob completed after ${hosttime} ms (bound ${JOB_BOUND} s)"

# --- what was stored --------------------------------------------------------------------------
read -r tot st pa fa <<<"$(li_job "$hjob" "total_messages, stored, parsed, errors" | tr '\t' ' ')"
[[ $tot == $((200 + N_HOSTILE)) && $st == "$tot" && $pa == "$tot" && $fa == 0 ]] ||
  li_fail "hostile job: total=$tot stored=$st parsed=$pa errors=$fa, want $((200 + N_HOSTILE)) each and 0 errors"
[[ $(li_job "$pjob" stored) == 300 ]] || li_fail "plain job stored $(li_job "$pjob" stored) of 300"
# Every message of the hostile account, byte-exact: stored sha256 = the server's bytes.
li_sql "SELECT f.name, l.uid, encode(e.blob_sha256, 'hex') FROM email_locations l
        JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id
        JOIN accounts a ON a.id = e.account_id WHERE a.name = 'hostile' ORDER BY 1, 2" |
  sort >"$W/stored-sha.txt"
li_diff "$W/server-sha.txt" "$W/stored-sha.txt" "stored messages differ from the server's"
while IFS=$'\t' read -r _ _ sha; do
  [[ -f $MAILBUS_BLOB_DIR/${sha:0:2}/$sha ]] || li_fail "blob $sha missing"
done <"$W/stored-sha.txt"
li_ok "all $tot messages of the hostile account stored, blobs byte-exact"
ord=$(li_sql "SELECT count(*) FROM emails e JOIN accounts a ON a.id = e.account_id
              JOIN email_locations l ON l.email_id = e.id JOIN folders f ON f.id = l.folder_id
              WHERE a.name = 'hostile' AND f.name <> 'Hostile' AND NOT e.unparsed")
[[ $ord == 200 ]] || li_fail "ordinary messages parsed: $ord of 200"

# defect SUBJECT-OR-FROM LIKE-PATTERN UNPARSED: one hostile message and how it was kept.
check() {
  local who=$1 pat=$2 want=$3 got
  got=$(li_sql "SELECT e.unparsed FROM emails e JOIN email_locations l ON l.email_id = e.id
                JOIN folders f ON f.id = l.folder_id WHERE f.name = 'Hostile'
                AND e.size = $(stat -c %s "$H/$who") AND array_to_string(e.defects, '|') LIKE '$pat'")
  [[ $got == "$want" ]] || li_fail "$who: want one message with unparsed=$want and a defect like '$pat', got '$got' ($(li_sql "SELECT e.unparsed, e.defects FROM emails e WHERE e.size = $(stat -c %s "$H/$who")"))"
}
check h1-addr.eml '%more than one <address> in one mailbox of From%' f
check h2-heads.eml '%unclosed <head>%' f
check h3-ew.eml '%unterminated encoded word in Subject%' f
check h4-header.eml '%truncated at 1048576 bytes%' f
[[ $(li_sql "SELECT subject FROM emails WHERE size = $(stat -c %s "$H/h4-header.eml")") == "" ]] ||
  li_fail "h4: the Subject after the header limit was parsed"
check h5-budget.eml '%parse abandoned: work budget of 800 ms CPU exceeded%' t
check h8-parts.eml '%exceeds the bus limit of % only the first of 3000 attachments recorded%' f
natt=$(li_sql "SELECT count(*) FROM attachments a JOIN emails e ON e.id = a.email_id
               WHERE e.size = $(stat -c %s "$H/h8-parts.eml")")
((natt >= 1000 && natt < 3000)) || li_fail "h8: $natt attachments recorded, want the first half or quarter"
check h6-spin.eml '%watchdog: 3000 ms of CPU without progress%' t
check h7-crash.eml '%worker killed by signal 6%' t
li_ok "each hostile message stored with its defect (3 raw, flagged unparsed; $natt of 3000 attachments of h8)"

# The two records that stopped a worker are dead letters, with the reason; the
# job shows its problems.
"$MB" dlq list --json >"$W/dlq.json" 2>"$W/dlq.err" || li_fail "dlq list: $(cat "$W/dlq.err")"
[[ $(grep -c '"stage":"parse"' "$W/dlq.json") == 2 ]] || li_fail "want 2 parse dead letters: $(cat "$W/dlq.json")"
grep -q 'watchdog' "$W/dlq.json" && grep -q 'signal 6' "$W/dlq.json" || li_fail "dead letters lack the reasons: $(cat "$W/dlq.json")"
"$MB" jobs "$hjob" >"$W/jobs.out" 2>&1 || li_fail "jobs $hjob"
grep -q 'completed' "$W/jobs.out" || li_fail "jobs $hjob: $(cat "$W/jobs.out")"
[[ $(li_sql "SELECT count(*) FROM sync_history WHERE job_id = $hjob AND event = 'parse'") -ge 3 ]] ||
  li_fail "parse problems on the job: $(li_sql "SELECT event, detail FROM sync_history WHERE job_id = $hjob")"
grep -q 'supervisor: watchdog' "$MAILBUS_STAGES_DIR"/parse-1.log || li_fail "no watchdog line in the parse log"
grep -q 'marked poison' "$MAILBUS_STAGES_DIR"/parse-1.log || li_fail "no poison line in the parse log"
[[ $(li_sql "SELECT count(*) FROM job_messages WHERE st & 8 <> 0") == 0 ]] || li_fail "messages marked failed"
li_ok "spin and crash records dead-lettered with their reasons, workers restarted, problems on the job"

# --- the dead letters, retried after the "fix" ------------------------------------------------
# Parse restarted without the faults: a retried record goes back to parse with
# its original headers, is parsed in full, and store fills in the raw rows.
spin_seq=$(grep 'watchdog' "$W/dlq.json" | sed 's/^{"dlq_seq":\([0-9]*\),.*/\1/')
"$MB" dlq show "$spin_seq" >"$W/show.out" 2>&1 || li_fail "dlq show $spin_seq: $(cat "$W/show.out")"
grep -q "Mailbus-Job: $hjob" "$W/show.out" && grep -q 'watchdog' "$W/show.out" ||
  li_fail "dlq show: $(cat "$W/show.out")"
"$MB" dlq show 999999 >/dev/null 2>&1 && li_fail "dlq show of a missing id succeeded"
li_stages stop parse >/dev/null
MAILBUS_FAULT_PARSE_SPIN= MAILBUS_FAULT_PARSE_CRASH= li_stages start >/dev/null || li_fail "restart parse"
before=$(li_sql "SELECT count(*) FROM emails") ; locs=$(li_sql "SELECT count(*) FROM email_locations")
out=$("$MB" dlq retry --all --stage parse) || li_fail "dlq retry --all: $out"
[[ $out == "retried 2 dead letters" ]] || li_fail "dlq retry printed '$out'"
li_wait_until 60 "retried records parsed and stored" "(SELECT count(*) FROM emails WHERE unparsed) = 1"
[[ $(li_sql "SELECT subject FROM emails WHERE size = $(stat -c %s "$H/h6-spin.eml")") == "parse spins" ]] ||
  li_fail "retried h6 not parsed in full"
[[ $(li_sql "SELECT count(*) FROM emails") == "$before" && $(li_sql "SELECT count(*) FROM email_locations") == "$locs" ]] ||
  li_fail "retry duplicated rows: emails $before -> $(li_sql "SELECT count(*) FROM emails"), locations $locs -> $(li_sql "SELECT count(*) FROM email_locations")"
[[ $("$MB" dlq list --stage parse) == "no dead letters" ]] || li_fail "parse dead letters left after retry"
out=$("$MB" dlq purge --older-than 1d) || li_fail "dlq purge: $out"
[[ $out == "purged 0 dead letters" ]] || li_fail "purge --older-than 1d: $out"
li_ok "dlq show, retry --all (2 records parsed in full, no duplicate rows) and purge"
echo "PASS test_import_hostile.sh (total $((SECONDS - LI_T0)) s)"
