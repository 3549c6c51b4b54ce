#!/usr/bin/env bash
# test_store_avscan_parts.sh — avscan walks a message's MIME tree once, not
# once per attachment.
#
# One message with 4,000 small attachments, each with its own content (so
# each is scanned: 4,000 avscan records, 63 batches of 64), next to 5
# generated messages. avscan starts only once everything is stored, so its
# CPU time is the scan alone.
#
# Bound (stated, checked): the avscan worker spends at most 60 s of CPU on
# the whole mailbox, and walks at most 10 MIME trees (its debug log counts
# them). Before the fix each record walked the whole 4,000-part tree again:
# 16 million leaves, several CPU-minutes under ASan. Measured with the fix:
# see the "ok" line (CPU seconds, walks).
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_store_avscan_parts
W=$LI_W
N_PARTS=4000
CPU_BOUND=60
WALK_BOUND=10

P=$W/parts
mkdir -p "$P"
N_PARTS=$N_PARTS perl -e '
  print "From: parts\@x\r\nSubject: many parts\r\nDate: Tue, 03 Nov 2026 10:00:00 +0000\r\n";
  print "Message-ID: <many.parts\@x>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=P\r\n\r\n";
  printf "--P\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; " .
         "filename=\"a%05d.bin\"\r\n\r\ncontent of part %05d\r\n", $_, $_ for 1..$ENV{N_PARTS};
  print "--P--\r\n"' >"$P/parts.eml"
li_mailbox mbparts mbparts-pw --messages 5 --seed 71 --extra-dir "$P" --extra-folder Parts

li_env parts
li_account parts mbparts mbparts-pw
li_stages start avscan=0 >/dev/null || li_fail "stages start (no avscan)"
li_scan_ready
job=$(li_import parts)
li_wait_until 180 "every message stored" \
  "(SELECT status FROM sync_jobs WHERE id = $job) = 'running' AND
   (SELECT count(*) FROM job_messages WHERE job_id = $job AND st & 4 <> 0) =
   (SELECT total_messages FROM sync_jobs WHERE id = $job)"
natt=$(li_sql "SELECT count(*) FROM attachments a JOIN emails e ON e.id = a.email_id WHERE e.subject = 'many parts'")
[[ $natt == "$N_PARTS" ]] || li_fail "the many-parts message has $natt attachment rows, want $N_PARTS"
li_log "stored ($natt attachments on the many-parts message); starting avscan"

MAILBUS_LOG_LEVEL=debug li_stages start >/dev/null || li_fail "start avscan"
worker=$(li_stages status | sed -n 's/^avscan-1 up (pid [0-9]*, worker \([0-9]*\))$/\1/p')
[[ $worker =~ ^[0-9]+$ ]] || li_fail "no avscan worker: $(li_stages status)"
li_wait_job "$job" 300
read -r ut stt < <(awk '{print $14, $15}' "/proc/$worker/stat") || li_fail "avscan worker $worker gone"
cpu_ms=$(( (ut + stt) * 1000 / $(getconf CLK_TCK) ))
[[ $(li_stages status | sed -n 's/^avscan-1 up (pid [0-9]*, worker \([0-9]*\))$/\1/p') == "$worker" ]] ||
  li_fail "the avscan worker was restarted during the scan"

clean=$(li_sql "SELECT count(*) FROM attachments a JOIN emails e ON e.id = a.email_id
                WHERE e.subject = 'many parts' AND a.scan_status = 'clean'")
[[ $clean == "$N_PARTS" ]] || li_fail "$clean of $N_PARTS attachments clean: $(li_sql "SELECT scan_status, count(*) FROM attachments GROUP BY 1")"
[[ $(li_sql "SELECT count(*) FROM av_verdicts WHERE status = 'clean'") -ge $N_PARTS ]] ||
  li_fail "fewer than $N_PARTS verdicts cached"
((cpu_ms <= CPU_BOUND * 1000)) || li_fail "avscan spent ${cpu_ms} ms of CPU (bound ${CPU_BOUND} s)"
walks=$(sed -n 's/.* \([0-9]*\) MIME trees walked so far.*/\1/p' "$MAILBUS_STAGES_DIR"/avscan-1.log | tail -1)
[[ -n $walks ]] || li_fail "avscan logged no walk count"
((walks <= WALK_BOUND)) || li_fail "avscan walked $walks MIME trees (bound $WALK_BOUND)"
li_ok "$N_PARTS attachments of one message scanned clean: avscan ${cpu_ms} ms CPU (bound ${CPU_BOUND} s)," \
  "$walks MIME trees walked (bound $WALK_BOUND)"
echo "PASS test_store_avscan_parts.sh (total $((SECONDS - LI_T0)) s)"
