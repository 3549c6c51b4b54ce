#!/usr/bin/env bash
# test_store_avscan_isolate.sh — one record Postgres refuses does not hold
# the store or avscan batch it arrives in.
#
# Account "isol": 200 generated messages plus a folder "Crafted" with two
# messages store writes with a value Postgres refuses (test fault
# MAILBUS_FAULT_STORE_BADROW: a record whose subject contains the text gets
# size -1, a CHECK violation) and two messages with five distinct attachments,
# one of whose verdicts avscan writes with a status Postgres refuses (test
# fault MAILBUS_FAULT_AVSCAN_BADROW, matched against the attachment's SHA-256,
# read from the database before avscan starts).
# Store starts only once every message is parsed, and avscan only once every
# message is stored, so the refused records sit in full batches with the good
# ones (store batches of 256, avscan batches of 64).
#
# Checked: the job completes; every other message is stored, byte-exact
# against the server; the two refused ones are counted as errors, marked
# failed, with the reason on the job, and are the only store dead letters
# (first delivery); the refused attachment is the only avscan dead letter,
# its rows carry an error, every other attachment is clean; and the store and
# avscan consumers delivered each record exactly once (no good record was
# retried). Before the fix, the whole batch was retried on every delivery and
# finally every record of it dead-lettered (MAILBUS_MAX_DELIVER=3 here, so
# that takes seconds, not minutes).
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_store_avscan_isolate
W=$LI_W
export MAILBUS_MAX_DELIVER=3
export MAILBUS_FAULT_STORE_BADROW="REFUSED-BY-STORE"

C=$W/crafted
mkdir -p "$C"
crlf() { sed 's/$/\r/'; }
date_hdr="Date: Tue, 03 Nov 2026 10:00:00 +0000"
for i in 1 2; do
  printf '%s\n' "From: bad$i@x" "To: h1@x" "Subject: row $i $MAILBUS_FAULT_STORE_BADROW" "$date_hdr" \
    "Message-ID: <bad$i.isolate@x>" "" "store refuses this one" | crlf >"$C/bad$i.eml"
done
# att MESSAGE NAME...: a message with one text attachment per NAME (its content
# names it and the test run, so no earlier verdict is reused).
att() {
  local f=$1; shift
  { printf '%s\n' "From: att@x" "To: h1@x" "Subject: attachments $f" "$date_hdr" \
      "Message-ID: <$f.isolate@x>" "MIME-Version: 1.0" "Content-Type: multipart/mixed; boundary=B" "" \
      "--B" "Content-Type: text/plain" "" "see attached"
    for n in "$@"; do
      printf '%s\n' "--B" "Content-Type: text/plain" "Content-Disposition: attachment; filename=\"$n.txt\"" \
        "" "attachment $n of $f"
    done
    printf '%s\n' "--B--"; } | crlf >"$C/$f.eml"
}
att att1 good-a good-b avscan-refused
att att2 good-c good-d
N_CRAFTED=4
TOTAL=$((200 + N_CRAFTED))
li_mailbox mbisol mbisol-pw --messages 200 --seed 51 --extra-dir "$C" --extra-folder Crafted

li_log "mailbox written"
li_env isol
li_account isol mbisol mbisol-pw
MB_IMAP_USER=mbisol MB_IMAP_PASSWORD=mbisol-pw li_server_state "$W/server.txt"
li_log "server folders scanned"
MB_IMAP_USER=mbisol MB_IMAP_PASSWORD=mbisol-pw li_server_sha "$W/server-sha.txt" "$W/server.txt"
bad_shas=$(sha256sum "$C"/bad1.eml "$C"/bad2.eml | cut -d' ' -f1)
[[ $(grep -cFf <(echo "$bad_shas") "$W/server-sha.txt") == 2 ]] ||
  li_fail "the server does not hold the two crafted messages byte for byte"

li_log "server state read"
li_stages start store=0 avscan=0 >/dev/null || li_fail "stages start (no store, no avscan)"
li_scan_ready
job=$(li_import isol)
li_wait_until 180 "every message parsed" \
  "(SELECT total_messages FROM sync_jobs WHERE id = $job) = $TOTAL AND
   (SELECT count(*) FROM job_messages WHERE job_id = $job AND st & 2 <> 0) = $TOTAL"
li_log "all $TOTAL messages parsed; starting store"
li_stages start avscan=0 >/dev/null || li_fail "start store"
li_wait_until 120 "every message stored or failed" \
  "(SELECT count(*) FROM job_messages WHERE job_id = $job AND st & 12 <> 0) = $TOTAL"
bad_att=$(li_sql "SELECT encode(sha256, 'hex') FROM attachments WHERE filename = 'avscan-refused.txt'")
[[ $bad_att =~ ^[0-9a-f]{64}$ ]] || li_fail "no attachment row for avscan-refused.txt ('$bad_att')"
li_log "all stored; starting avscan (refusing the verdict of ${bad_att:0:12})"
MAILBUS_FAULT_AVSCAN_BADROW=$bad_att li_stages start >/dev/null || li_fail "start avscan"
li_wait_job "$job" 120
li_ok "job $job completed"

# --- store: every good message stored, the two refused ones failed ------------------------------
read -r tot st fa <<<"$(li_job "$job" "total_messages, stored, errors" | tr '\t' ' ')"
[[ $tot == "$TOTAL" && $st == $((TOTAL - 2)) && $fa == 2 ]] ||
  li_fail "job: total=$tot stored=$st errors=$fa, want $TOTAL, $((TOTAL - 2)), 2"
[[ $(li_sql "SELECT count(*) FROM job_messages WHERE job_id = $job AND st & 8 <> 0 AND st & 4 = 0") == 2 ]] ||
  li_fail "want 2 messages marked failed (and not stored)"
li_sql "SELECT f.name, l.uid, encode(e.blob_sha256, 'hex') FROM email_locations l
        JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id" | sort >"$W/stored-sha.txt"
grep -vFf <(echo "$bad_shas") "$W/server-sha.txt" >"$W/want-sha.txt"
[[ $(wc -l <"$W/want-sha.txt") == $((TOTAL - 2)) ]] || li_fail "server list: $(wc -l <"$W/want-sha.txt") good messages"
li_diff "$W/want-sha.txt" "$W/stored-sha.txt" "stored messages differ from the server's good ones"
[[ $(li_sql "SELECT count(*) FROM emails WHERE subject LIKE '%$MAILBUS_FAULT_STORE_BADROW%'") == 0 ]] ||
  li_fail "a refused message has an emails row"
nprob=$(li_sql "SELECT count(*) FROM sync_history WHERE job_id = $job AND event = 'store'
                AND detail->>'detail' LIKE '%violates check constraint%'")
[[ $nprob == 2 ]] || li_fail "store problems with the reason on the job: $nprob, want 2: $(li_sql "SELECT event, detail FROM sync_history WHERE job_id = $job")"
li_ok "$((TOTAL - 2)) messages stored byte-exact, the 2 refused ones failed with the reason on the job"

# --- avscan: the refused verdict alone -----------------------------------------------------------
read -r nclean nerr nother <<<"$(li_sql "SELECT count(*) FILTER (WHERE scan_status = 'clean'),
    count(*) FILTER (WHERE scan_status = 'error'), count(*) FILTER (WHERE scan_status NOT IN ('clean', 'error'))
    FROM attachments" | tr '\t' ' ')"
[[ $(li_sql "SELECT scan_status FROM attachments WHERE filename = 'avscan-refused.txt'") == error ]] ||
  li_fail "the refused attachment: $(li_sql "SELECT scan_status, scan_signature FROM attachments WHERE filename = 'avscan-refused.txt'")"
[[ $nerr == 1 && $nother == 0 && $nclean -ge 5 ]] ||
  li_fail "attachments: clean=$nclean error=$nerr other=$nother, want every one but the refused one clean"
[[ $(li_sql "SELECT count(*) FROM av_verdicts WHERE status = 'clean'") == \
   $(li_sql "SELECT count(DISTINCT sha256) FROM attachments WHERE scan_status = 'clean'") ]] ||
  li_fail "av_verdicts: $(li_sql "SELECT status, count(*) FROM av_verdicts GROUP BY 1")"
[[ $(li_sql "SELECT count(*) FROM sync_history WHERE job_id = $job AND event = 'avscan'
             AND detail->>'detail' LIKE '%${bad_att}%violates check constraint%'") -ge 1 ]] ||
  li_fail "avscan problem with the reason on the job: $(li_sql "SELECT event, detail FROM sync_history WHERE job_id = $job AND event = 'avscan'")"
li_ok "$nclean attachments clean, the refused one error with the reason on the job"

# --- dead letters and deliveries -----------------------------------------------------------------
"$MB" dlq list --json >"$W/dlq.json" 2>"$W/dlq.err" || li_fail "dlq list: $(cat "$W/dlq.err")"
nstore=$(jq -s '[.[] | select(.stage == "store")] | length' "$W/dlq.json")
nav=$(jq -s '[.[] | select(.stage == "avscan")] | length' "$W/dlq.json")
[[ $nstore == 2 && $nav == 1 ]] || li_fail "dead letters: store $nstore (want 2), avscan $nav (want 1): $(head -c 2000 "$W/dlq.json")"
[[ $(jq -s '[.[] | select(.deliveries != 1)] | length' "$W/dlq.json") == 0 ]] ||
  li_fail "a dead letter took more than one delivery: $(jq -c '{stage, deliveries}' "$W/dlq.json")"
jq -r 'select(.stage == "store") | .reason' "$W/dlq.json" | grep -c 'violates check constraint' | grep -qx 2 ||
  li_fail "store dead letters without the reason: $(jq -r .reason "$W/dlq.json")"
# Each work stream's durable consumer delivered every record once: no retries.
jsz=$(curl -sf "$MAILBUS_NATS_MONITOR_URL/jsz?consumers=true") || li_fail "NATS monitor unreachable"
deliveries() { # STAGE -> "published delivered"
  jq -r --arg s "${MAILBUS_PREFIX^^}_$1" '.account_details[].stream_detail[]? | select(.name == $s)
    | "\(.state.last_seq) \(.consumer_detail[0].delivered.consumer_seq)"' <<<"$jsz"
}
read -r spub sdel <<<"$(deliveries STORE)"
read -r apub adel <<<"$(deliveries AVSCAN)"
[[ $spub == "$TOTAL" && $sdel == "$TOTAL" ]] || li_fail "store stream: $spub records, $sdel deliveries; want $TOTAL each"
[[ $apub -ge 5 && $adel == "$apub" ]] || li_fail "avscan stream: $apub records, $adel deliveries; want one each"
grep -q 'splitting it' "$MAILBUS_STAGES_DIR"/store-1.log || li_fail "store log: no split"
li_ok "dead letters: the 2 refused store records and the refused avscan record, first delivery;" \
  "store delivered $sdel of $spub records, avscan $adel of $apub (no retries)"
echo "PASS test_store_avscan_isolate.sh (total $((SECONDS - LI_T0)) s)"
