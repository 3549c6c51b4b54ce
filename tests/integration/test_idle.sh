#!/usr/bin/env bash
# test_idle.sh — push (mailbus-idle), the issue's "IDLE test", against the real services:
# after an import, a message APPENDed to INBOX by another IMAP client is in `mailbus
# messages ACCOUNT --json` (same SHA-256) within 5 s, and no sync command was issued:
# the sync jobs that brought it were started by the watcher (origin "idle"). Two
# accounts of one Dovecot user are watched by one process: through 127.0.0.1 (QRESYNC)
# and through 127.0.0.2 (no CONDSTORE, no QRESYNC; IDLE). Then:
#  - the watcher has held INBOX for a while and started no sync (keepalives and the
#    state compared at connect are not changes);
#  - a drop: `doveadm kick` closes the IDLE connections; a message appended at once,
#    during the reconnect, arrives within 6 s (reconnect backoff 0.5 s, plus the 5 s),
#    found by comparing INBOX's state at reconnect; one appended after the watcher idles
#    again arrives within 5 s;
#  - renewal: with MAILBUS_IDLE_RENEW_S=2, after at least 3 renewals (DONE + IDLE) a
#    message still arrives within 5 s;
#  - two copies: each account is watched by one copy (its lease); kill -9 of the copy
#    watching an account (MAILBUS_LEASE_MS=3000) hands it to the other, and a message
#    appended then arrives within the lease TTL + 5 s;
#  - a server without IDLE (imap_fault_proxy.py takes it out of the capabilities): the
#    account is skipped with one log line, no connection kept;
#  - memory: one watcher's VmRSS before and after it takes MEM more accounts over plain
#    IMAP, then MEM more over TLS (imaps): the cost of one IDLE connection, asserted
#    below 512 KiB and printed (the README's figure); measured on the plain build
#    ($MB_PLAIN_BIN, default build/bin: sanitizers multiply memory), or on $MB_BIN
#    without the bound if there is none.
#
#   test_idle.sh [--memory MEM]   (MEM defaults to 50; accounts of several Dovecot users
#                                  of 150 connections each)
set -euo pipefail
MEM=50
[[ ${1:-} == --memory && ${2:-} =~ ^[0-9]+$ ]] && MEM=$2
. "$(dirname "$0")/lib_import.sh"
li_init test_idle
W=$LI_W
CHANGES=("python3" "$LI_SRC/tests/integration/imap_changes.py")
DOVEADM=(doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf")
[[ -x $MB_BIN/mailbus-idle ]] || li_fail "$MB_BIN/mailbus-idle not built"
export MAILBUS_LEASE_MS=3000

li_env a
user=mbidle
li_mailbox "$user" "$user-pw" --messages 40 --seed 5
li_account acct "$user" "$user-pw" 127.0.0.1
li_account acctp "$user" "$user-pw" 127.0.0.2
li_stages start >/dev/null || li_fail "stages start"
li_scan_ready
li_wait_job "$(li_import acct)" 120
li_wait_job "$(li_import acctp)" 120
IDLELOG=$MAILBUS_STAGES_DIR/idle-1.log

# idle_lines PATTERN: how many lines of the watcher's logs match.
idle_lines() { cat "$MAILBUS_STAGES_DIR"/idle-*.log 2>/dev/null | grep -c -- "$1" || true; }
# wait_lines PATTERN N SECONDS: until at least N lines match.
wait_lines() {
  local deadline=$((SECONDS + $3))
  until (($(idle_lines "$1") >= $2)); do
    li_stages_alive
    ((SECONDS < deadline)) || li_fail "no $2 watcher log lines '$1' after $3 s"
    sleep 0.1
  done
}
syncs() { li_sql "SELECT count(*) FROM sync_jobs WHERE type = 'sync'"; }

N=0
# append: a new message (CRLF, unique subject) to INBOX over IMAP; sets MSG_SHA, T0 (the
# client starts) and T1 (it has had the server's OK and logged out: the message was
# committed in between; the Python client alone takes 0.2 s, over 1 s on a busy machine).
append() {
  N=$((N + 1))
  local f=$W/new-$N.eml
  printf 'From: Push Test <push@example.org>\r\nTo: %s@example.org\r\nSubject: idle %s %s\r\nMessage-ID: <idle-%s-%s@example.org>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\nbody %s\r\n' \
    "$user" "$N" "$$" "$N" "$$" "$N" >"$f"
  MSG_SHA=$(sha256sum "$f" | cut -d' ' -f1)
  T0=$(date +%s%3N)
  "${CHANGES[@]}" --host 127.0.0.1 append INBOX "$f" >/dev/null || li_fail "append $N"
  T1=$(date +%s%3N)
}
# arrives ACCOUNT BOUND_MS WHAT: until the appended message is in `mailbus messages
# ACCOUNT --json` (by SHA-256); fail if it took more than BOUND_MS from the APPEND's
# completion (T1).
arrives() {
  local acct=$1 bound=$2 ms
  while :; do
    [[ -n $("$MB" messages "$acct" --json | jq -r --arg s "$MSG_SHA" 'select(.sha256 == $s and .folder == "INBOX") | .uid') ]] && break
    ms=$(($(date +%s%3N) - T1))
    ((ms < bound + 20000)) || li_fail "[$3] message $N not in $acct after $ms ms; INBOX holds: $("$MB" messages "$acct" --json | jq -c 'select(.folder == "INBOX") | [.uid, .subject, .size, .sha256]' | tail -n 3)"
    sleep 0.1
  done
  local now
  now=$(date +%s%3N)
  ms=$((now - T1))
  ((ms <= bound)) || li_fail "[$3] message $N reached $acct's messages $ms ms after its APPEND (bound $bound ms)"
  li_ok "[$3] message $N (sha256 ${MSG_SHA:0:12}) in \`mailbus messages $acct\` $ms ms after its APPEND completed, $((now - T0)) ms after the client started (bound $bound ms)"
}

# --- watching, and no sync without a change --------------------------------------------
li_stages start idle=1 >/dev/null || li_fail "stages start idle"
wait_lines "idling on INBOX" 2 20
sleep 2
[[ $(syncs) == 0 ]] || li_fail "the watcher started a sync with nothing changed: $(li_sql "SELECT id, options FROM sync_jobs WHERE type = 'sync'")"
who=$("${DOVEADM[@]}" who -1 "$user" 2>/dev/null | tail -n +2 | wc -l)
((who >= 2)) || li_fail "doveadm who shows $who connections of $user, expected the 2 IDLE connections"
li_ok "one watcher holds INBOX of both accounts ($who connections of $user), no sync started with nothing changed"

# --- a new message, pushed --------------------------------------------------------------
append
arrives acct 5000 push
arrives acctp 5000 "push, 127.0.0.2 (no CONDSTORE/QRESYNC)"

# --- a drop: the connections are kicked -------------------------------------------------
idled=$(idle_lines "idling on INBOX")
"${DOVEADM[@]}" kick "$user" >/dev/null 2>&1 || li_fail "doveadm kick"
append # at once: most likely while the watcher reconnects
arrives acct 6000 "drop, appended during the reconnect"
arrives acctp 6000 "drop, appended during the reconnect, 127.0.0.2"
wait_lines "idling on INBOX" $((idled + 2)) 10
(($(idle_lines "connecting again in") >= 2)) || li_fail "no reconnect logged after the kick"
append
arrives acct 5000 "after the reconnect"
arrives acctp 5000 "after the reconnect, 127.0.0.2"

# --- renewal: DONE + IDLE every 2 s -----------------------------------------------------
li_stages stop idle >/dev/null
renewed=$(idle_lines "renewed")
idled=$(idle_lines "idling on INBOX")
MAILBUS_IDLE_RENEW_S=2 MAILBUS_LOG_LEVEL=debug li_stages start idle=1 >/dev/null || li_fail "start idle (renew 2 s)"
wait_lines "idling on INBOX" $((idled + 2)) 20
wait_lines "IDLE on INBOX renewed" $((renewed + 6)) 15
# Wait for the syncs the restart may have started (none expected: nothing changed).
li_wait_until 30 "syncs finished" "NOT EXISTS (SELECT 1 FROM sync_jobs WHERE status NOT IN ('completed', 'failed', 'cancelled'))"
append
arrives acct 5000 "after $(($(idle_lines "IDLE on INBOX renewed") - renewed)) renewals"
arrives acctp 5000 "renewals, 127.0.0.2"

# --- no sync came from a command; every one completed -----------------------------------
li_wait_until 30 "syncs finished" "NOT EXISTS (SELECT 1 FROM sync_jobs WHERE status NOT IN ('completed', 'failed', 'cancelled'))"
[[ $(li_sql "SELECT count(*) FROM sync_jobs WHERE type = 'sync' AND (options->>'origin' IS DISTINCT FROM 'idle' OR status <> 'completed' OR options->'folders' <> '[\"INBOX\"]'::jsonb)") == 0 ]] ||
  li_fail "a sync not started by the watcher for INBOX, or not completed: $(li_sql "SELECT id, status, options FROM sync_jobs WHERE type = 'sync'")"
li_ok "$(syncs) sync jobs, every one of INBOX, started by the watcher (origin idle), completed"
[[ $(li_sql "SELECT count(*) FROM sync_jobs WHERE type = 'sync' AND options->>'origin' = 'idle'") -ge 4 ]] ||
  li_fail "fewer sync jobs than pushed messages per account"

# --- two copies: one watcher per account, fail-over -------------------------------------
li_stages stop idle >/dev/null
li_stages start idle=2 >/dev/null || li_fail "start two watchers"
sleep 4 # a few roster passes of both copies
held=$(li_sql "SELECT count(*) FROM leases WHERE name LIKE 'idle:%' AND expires_at > clock_timestamp()")
[[ $held == 2 ]] || li_fail "$held idle leases held, expected 2"
who=$("${DOVEADM[@]}" who -1 "$user" 2>/dev/null | tail -n +2 | wc -l)
((who == 2)) || li_fail "two watchers hold $who connections of $user, expected 2 (one per account)"
li_ok "two watchers: each account watched once ($who connections, 2 leases)"
id=$(li_sql "SELECT id FROM accounts WHERE name = 'acct'")
holder=$(li_sql "SELECT holder FROM leases WHERE name = 'idle:$id'")
pid=$(cut -d: -f2 <<<"$holder")
[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" || li_fail "lease holder '$holder' is no live process"
kill -9 "$pid" # the worker; its supervisor starts a new one (a new holder)
li_log "killed the watcher worker $pid holding idle:$id"
append
arrives acct $((MAILBUS_LEASE_MS + 5000)) "fail-over after kill -9 of its watcher"
holder2=$(li_sql "SELECT holder FROM leases WHERE name = 'idle:$id'")
[[ -n $holder2 && $holder2 != "$holder" ]] || li_fail "lease idle:$id still '$holder2'"
li_ok "lease idle:$id passed from $holder to $holder2"

# --- memory per IDLE connection ---------------------------------------------------------
li_stages stop idle >/dev/null
# watcher_kib: VmRSS of the watcher's worker (the supervisor's child), KiB.
watcher_kib() {
  local sup w
  sup=$(cat "$MAILBUS_STAGES_DIR/idle-1.pid")
  w=$(cut -d' ' -f1 "/proc/$sup/task/$sup/children")
  awk '/^VmRSS/ {print $2}' "/proc/$w/status"
}
# more_accounts SCHEME PORT: MEM accounts more (several Dovecot users, each well under
# its 200 connections), marked imported (a completed import is all the watcher asks).
k=0
more_accounts() {
  local i u
  for ((i = 0; i < MEM; i++, k++)); do
    u=mbidlem$((k / 150))
    if [[ ! -e $W/pw-$u ]]; then
      "$LI_SRC/scripts/services" imap-user "$u" "$u-pw" >/dev/null || li_fail "imap-user $u"
      LI_USERS+=("$u")
      (umask 077 && printf '%s\n' "$u-pw" >"$W/pw-$u")
    fi
    "$MB" account add "m$k" --imap "$1://$u@127.0.0.1:$2" --password-file "$W/pw-$u" \
      >"$W/account-m$k.log" 2>&1 || { cat "$W/account-m$k.log"; li_fail "account add m$k"; }
  done
  li_sql "INSERT INTO sync_jobs (account_id, type, status, finished_at) SELECT a.id, 'import',
          'completed', now() FROM accounts a WHERE a.name LIKE 'm%' AND NOT EXISTS
          (SELECT 1 FROM sync_jobs j WHERE j.account_id = a.id)" >/dev/null
}
PLAIN=${MB_PLAIN_BIN:-$LI_SRC/build/bin}
[[ -x $PLAIN/mailbus-idle ]] || PLAIN=
idled=$(idle_lines "idling on INBOX")
MAILBUS_BIN=${PLAIN:-$MB_BIN} li_stages start idle=1 >/dev/null || li_fail "start idle (memory)"
wait_lines "idling on INBOX" $((idled + 2)) 20
sleep 2
rss0=$(watcher_kib)
more_accounts imap "$MAILBUS_IMAP_PORT"
wait_lines "idling on INBOX" $((idled + 2 + MEM)) 120
sleep 2
rss1=$(watcher_kib)
more_accounts imaps "$MAILBUS_IMAPS_PORT"
wait_lines "idling on INBOX" $((idled + 2 + 2 * MEM)) 120
sleep 2
rss2=$(watcher_kib)
plain=$(((rss1 - rss0) * 1000 / MEM)) tls=$(((rss2 - rss1) * 1000 / MEM))
li_log "watcher VmRSS: $rss0 KiB with 2 IDLE connections, $rss1 KiB with $((2 + MEM)), $rss2 KiB with $((2 + 2 * MEM))"
[[ -z $PLAIN ]] || ((plain < 512000 && tls < 512000)) || li_fail "an IDLE connection costs over 512 KiB: plain $((plain / 1000)) KiB, TLS $((tls / 1000)) KiB"
li_ok "one IDLE connection costs the watcher $((plain / 1000)).$((plain % 1000 / 100)) KiB (plain IMAP), $((tls / 1000)).$((tls % 1000 / 100)) KiB (TLS) of RSS (MEM=$MEM each; ${PLAIN:-$MB_BIN, no bound: no plain build})"
echo "{\"idle_connections\":$((2 + 2 * MEM)),\"rss_kib\":[$rss0,$rss1,$rss2],\"kib_per_plain\":$((plain / 1000)).$((plain % 1000 / 100)),\"kib_per_tls\":$((tls / 1000)).$((tls % 1000 / 100))}"

# --- a server without IDLE: skipped, one log line ---------------------------------------
mkdir -p "$W/ctl"
: >"$W/ctl/no-idle"
li_fault_proxy "$W/ctl"
"$MB" account add noidle --imap "imap://$user@127.0.0.1:$LI_PPORT" --password-file "$W/pw-$user" \
  >"$W/account-noidle.log" 2>&1 || { cat "$W/account-noidle.log"; li_fail "account add noidle"; }
li_sql "INSERT INTO sync_jobs (account_id, type, status, finished_at) SELECT id, 'import',
        'completed', now() FROM accounts WHERE name = 'noidle'" >/dev/null
wait_lines "account=noidle not watched: .*does not offer IDLE" 1 20
sleep 3 # several roster passes: still one line, and no watch
(($(idle_lines "account=noidle not watched") == 1)) || li_fail "the account without IDLE was logged $(idle_lines "account=noidle not watched") times"
(($(idle_lines "account=noidle idling") == 0)) || li_fail "an account without IDLE is watched"
li_ok "a server without IDLE: $(grep -h "account=noidle not watched" "$MAILBUS_STAGES_DIR"/idle-*.log | sed 's/.*account=noidle //')"

li_stages stop >/dev/null
grep -q -- "$user-pw" "$MAILBUS_STAGES_DIR"/idle-*.log && li_fail "a watcher log mentions the password"
echo "PASS test_idle.sh"
