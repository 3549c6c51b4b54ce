#!/usr/bin/env bash
# test_store_avscan_verdicts.sh — an `error` scan verdict is not cached: a
# later import scans the attachment again.
#
# One message with two attachments, in two IMAP accounts ("first" and
# "second", plus a few generated messages each). The first import runs with
# the test fault MAILBUS_FAULT_AVSCAN_ERROR naming one attachment's SHA-256
# (read from the database before avscan starts): its scan comes back as an
# error verdict without asking clamd, as clamd's size limit or an outage on
# the last attempt would. Then avscan restarts without the fault and the
# second account is imported, within the NATS duplicate window.
#
# Checked: after the first job, the attachment's row is `error` with the
# reason (also on the job), and av_verdicts holds the other attachment's
# clean verdict but nothing for this one; after the second job, the
# attachment has a real (clean) verdict in both accounts, cached once.
# Before the fix the error went into av_verdicts, the second account's row
# copied it at insert, and its scan record was dropped as a duplicate.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_store_avscan_verdicts
W=$LI_W

C=$W/crafted
mkdir -p "$C"
{ printf '%s\n' "From: att@x" "To: h1@x" "Subject: two attachments" "Date: Tue, 03 Nov 2026 10:00:00 +0000" \
    "Message-ID: <two.verdicts@x>" "MIME-Version: 1.0" "Content-Type: multipart/mixed; boundary=B" "" \
    "--B" "Content-Type: text/plain" "" "see attached"
  for n in scan-fails scans-clean; do
    printf '%s\n' "--B" "Content-Type: text/plain" "Content-Disposition: attachment; filename=\"$n.txt\"" \
      "" "attachment $n"
  done
  printf '%s\n' "--B--"; } | sed 's/$/\r/' >"$C/two.eml"
li_mailbox mbverd1 mbverd1-pw --messages 20 --seed 61 --extra-dir "$C" --extra-folder Crafted
li_mailbox mbverd2 mbverd2-pw --messages 20 --seed 62 --extra-dir "$C" --extra-folder Crafted

li_env verd
li_account first mbverd1 mbverd1-pw
li_account second mbverd2 mbverd2-pw

# row ACCOUNT FILE: scan_status and signature of that attachment in that account.
row() {
  li_sql "SELECT a.scan_status, coalesce(a.scan_signature, '') FROM attachments a
          JOIN emails e ON e.id = a.email_id JOIN accounts c ON c.id = e.account_id
          WHERE c.name = '$1' AND a.filename = '$2'"
}

# --- first import: the scan of one attachment fails ---------------------------------------------
li_stages start avscan=0 >/dev/null || li_fail "stages start (no avscan)"
li_scan_ready
job1=$(li_import first)
li_wait_until 120 "first import stored" \
  "(SELECT status FROM sync_jobs WHERE id = $job1) = 'running' AND
   (SELECT count(*) FROM job_messages WHERE job_id = $job1 AND st & 12 <> 0) =
   (SELECT total_messages FROM sync_jobs WHERE id = $job1)"
sha=$(li_sql "SELECT encode(sha256, 'hex') FROM attachments WHERE filename = 'scan-fails.txt'")
[[ $sha =~ ^[0-9a-f]{64}$ ]] || li_fail "no attachment row for scan-fails.txt ('$sha')"
MAILBUS_FAULT_AVSCAN_ERROR=$sha li_stages start >/dev/null || li_fail "start avscan with the fault"
li_wait_job "$job1" 120
[[ $(row first scan-fails.txt) == $'error\tscan error injected by a test fault' ]] ||
  li_fail "first account, failed scan: '$(row first scan-fails.txt)'"
[[ $(row first scans-clean.txt) == $'clean\t' ]] || li_fail "first account, other attachment: '$(row first scans-clean.txt)'"
[[ $(li_sql "SELECT count(*) FROM sync_history WHERE job_id = $job1 AND event = 'avscan'
             AND detail->>'detail' LIKE '%scan error injected%'") -ge 1 ]] ||
  li_fail "the scan error is not on job $job1: $(li_sql "SELECT event, detail FROM sync_history WHERE job_id = $job1")"
cached=$(li_sql "SELECT status FROM av_verdicts WHERE sha256 = decode('$sha', 'hex')")
[[ -z $cached ]] || li_fail "the error verdict was cached in av_verdicts ('$cached')"
[[ $(li_sql "SELECT count(*) FROM av_verdicts v JOIN attachments a ON a.sha256 = v.sha256
             WHERE a.filename = 'scans-clean.txt' AND v.status = 'clean'") -ge 1 ]] ||
  li_fail "the clean verdict was not cached"
li_ok "job $job1: scan-fails.txt error with the reason (not cached), scans-clean.txt clean (cached)"

# --- second import: the attachment is scanned again ------------------------------------------------
li_stages stop avscan >/dev/null
li_stages start >/dev/null || li_fail "restart avscan without the fault"
job2=$(li_import second)
li_wait_job "$job2" 120
[[ $(row second scan-fails.txt) == $'clean\t' ]] ||
  li_fail "second account: scan-fails.txt is '$(row second scan-fails.txt)', want clean (scanned again)"
[[ $(row second scans-clean.txt) == $'clean\t' ]] || li_fail "second account, other attachment: '$(row second scans-clean.txt)'"
[[ $(li_sql "SELECT status FROM av_verdicts WHERE sha256 = decode('$sha', 'hex')") == clean ]] ||
  li_fail "no clean verdict cached after the rescan"
[[ $(row first scan-fails.txt) == $'clean\t' ]] ||
  li_fail "first account: the error row was not replaced by the new verdict: '$(row first scan-fails.txt)'"
[[ $(li_job "$job2" "av_pending") == 0 ]] || li_fail "job $job2: attachments pending"
li_ok "job $job2: scan-fails.txt scanned again and clean in both accounts"
echo "PASS test_store_avscan_verdicts.sh (total $((SECONDS - LI_T0)) s)"
