#!/usr/bin/env bash
# test_imap_limits.sh — MAILBUS_IMAP_MAX_CONN_PER_ACCOUNT=1 holds across three
# fetch processes and scan: two accounts import completely with exact counts, and the
# number of IMAP connections per user that Dovecot reports (doveadm who,
# sampled every 0.2 s while the jobs run) never exceeds 1.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_imap_limits
W=$LI_W
li_mailbox mblimita mblimita-pw --messages 1000 --seed 61
li_server_state "$W/server_a"
li_mailbox mblimitb mblimitb-pw --messages 1000 --seed 62
li_server_state "$W/server_b"
na=$(wc -l <"$W/server_a") nb=$(wc -l <"$W/server_b")
li_env lim
li_account acca mblimita mblimita-pw
li_account accb mblimitb mblimitb-pw
export MAILBUS_IMAP_MAX_CONN_PER_ACCOUNT=1
li_stages start fetch=3 >/dev/null || li_fail "stages start"
ja=$(li_import acca)
jb=$(li_import accb)
# Sampled from the start: scan takes a slot for its connection too.
: >"$W/who"
while [[ $(li_sql "SELECT count(*) FROM sync_jobs WHERE status NOT IN ('completed','failed','cancelled')") != 0 ]]; do
  doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf" who -1 2>/dev/null | awk '$1 ~ /^mblimit[ab]$/ {print $1}' | sort | uniq -c >>"$W/who" || true
  li_sql "SELECT scope, count(*) FROM imap_slots WHERE holder IS NOT NULL AND expires_at > now() GROUP BY 1" >>"$W/slots" 2>/dev/null || true
  li_stages_alive
  ((SECONDS < 400)) || li_fail "jobs not done"
  sleep 0.2
done
li_wait_job "$ja" 10
li_wait_job "$jb" 10
for j in "$ja:$na" "$jb:$nb"; do
  IFS=$'\t' read -r st tot so er < <(li_sql "SELECT status, total_messages, stored, errors FROM sync_jobs WHERE id = ${j%%:*}")
  [[ "$st $tot $so $er" == "completed ${j#*:} ${j#*:} 0" ]] || li_fail "job ${j%%:*}: $st $tot $so $er, want completed ${j#*:} ${j#*:} 0"
done
samples=$(wc -l <"$W/who")
max=$(awk 'BEGIN {m = 0} $1 > m {m = $1} END {print m}' "$W/who")
smax=$(awk -F'\t' '$1 ~ /^account:/ && $2 > m {m = $2} END {print m + 0}' "$W/slots" 2>/dev/null || echo 0)
samples=$(grep -c . "$W/who" || true)
# 2 x 1,000 messages through one connection per account take several seconds:
# enough samples that a limit not kept would show.
((samples >= 3)) || li_fail "only $samples samples with a connection seen by doveadm who while the jobs ran"
((max <= 1)) || li_fail "Dovecot saw $max simultaneous connections of one user (limit 1): $(sort -rn "$W/who" | head -3 | tr '\n' ' ')"
((smax <= 1)) || li_fail "slot table: $smax slots of one account held at once"
li_ok "3 fetchers, limit 1 per account: $na + $nb messages stored, max $max connection per user in $samples doveadm samples, max $smax slot held per account"
