#!/usr/bin/env bash
# test_services: checks that the local services started by scripts/services answer the
# way the rest of mailbus relies on: NATS JetStream health, Postgres DDL/DML as the mailbus
# role, Dovecot IMAP (login, capabilities, SPECIAL-USE folders, CONDSTORE, APPEND, TLS
# with the generated CA, immediate password reset) and clamd (EICAR anywhere in a stream,
# clean stream OK, PING).
#
# Runs against services that are already started, with `scripts/services env` exported
# (it exports it itself if MAILBUS_RUN_DIR is unset). Needs root for `imap-user`.
set -uo pipefail

SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if [[ -z ${MAILBUS_RUN_DIR:-} ]]; then
  eval "$("$SRC/scripts/services" env)"
fi

passed=0
failed=0
ok() { echo "ok   - $1"; passed=$((passed + 1)); }
bad() { echo "FAIL - $1${2:+: $2}"; failed=$((failed + 1)); }
check() { # check NAME COMMAND...
  local name=$1
  shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

# --- status ----------------------------------------------------------------------------
out=$("$SRC/scripts/services" status 2>&1)
rc=$?
if ((rc == 0)) && [[ $(grep -c ' up ' <<<"$out") == 4 ]]; then
  ok "services status: 4 up"
else
  bad "services status" "rc=$rc: $out"
fi

# --- nats ------------------------------------------------------------------------------
h=$(curl -fsS --max-time 5 "$MAILBUS_NATS_MONITOR_URL/healthz" 2>&1)
if [[ $h == *'"status":"ok"'* || $h == *'"status": "ok"'* ]]; then ok "nats healthz ok"; else bad "nats healthz" "$h"; fi
js=$(curl -fsS --max-time 5 "$MAILBUS_NATS_MONITOR_URL/jsz" 2>&1)
if [[ $js == *'"config"'* && $js != *'"disabled": true'* ]]; then ok "nats jetstream enabled"; else bad "nats jetstream" "$js"; fi
# The client port speaks the NATS protocol (INFO line first).
hostport=${MAILBUS_NATS_URL#nats://}
info=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"; IFS= read -r l <&3; echo "$l"' _ \
  "${hostport%:*}" "${hostport##*:}" 2>/dev/null)
if [[ $info == INFO* && $info == *'"jetstream":true'* ]]; then ok "nats client port INFO with jetstream"; else bad "nats INFO" "${info:0:200}"; fi

# --- postgres --------------------------------------------------------------------------
tbl=svc_test_$$
sql_out=$(psql "$MAILBUS_PG_DSN" -X -q -v ON_ERROR_STOP=1 -tA 2>&1 <<EOF
CREATE TABLE $tbl (id bigint PRIMARY KEY, v text);
INSERT INTO $tbl VALUES (1, 'a'), (2, 'b') ON CONFLICT (id) DO NOTHING;
SELECT count(*) FROM $tbl;
SELECT current_user || ' ' || (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)::text;
SHOW max_connections;
SHOW fsync;
DROP TABLE $tbl;
EOF
)
expect=$'2\nmailbus true\n200\non'
if [[ $sql_out == "$expect" ]]; then ok "psql create/insert/select/drop as superuser mailbus"; else bad "psql" "$sql_out"; fi

# --- imap ------------------------------------------------------------------------------
user=mbtest-services
pass=pw-$RANDOM-$$
if "$SRC/scripts/services" imap-user "$user" "$pass" >/dev/null; then ok "imap-user create"; else bad "imap-user create"; fi

# A tiny IMAP client on fd 3: cmd TAG LINE sends a line and collects the reply up to the
# tagged response into $reply.
imap_open() {
  exec 3<>"/dev/tcp/$MAILBUS_IMAP_HOST/$MAILBUS_IMAP_PORT" || return 1
  IFS= read -r -t 5 greeting <&3 || return 1
  [[ $greeting == "* OK"* ]]
}
cmd() {
  printf '%s %s\r\n' "$1" "$2" >&3
  await "$1"
}
# await TAG: read untagged lines into $reply until the tagged response.
await() {
  local tag=$1 l
  reply=
  while IFS= read -r -t 10 l <&3; do
    reply+=${l%$'\r'}$'\n'
    [[ $l == "$tag "* ]] && return 0
  done
  return 1
}
tagged_ok() { [[ $(grep "^$1 " <<<"$reply") == "$1 OK"* ]]; }

if imap_open; then
  ok "imap greeting"
  cmd a "LOGIN $user $pass"
  if tagged_ok a; then ok "imap LOGIN"; else bad "imap LOGIN" "$reply"; fi
  cmd b CAPABILITY
  caps=$(grep '^\* CAPABILITY' <<<"$reply")
  for c in CONDSTORE QRESYNC IDLE SPECIAL-USE UIDPLUS LITERAL+ MOVE; do
    if [[ " $caps " == *" $c "* ]]; then ok "capability $c"; else bad "capability $c" "$caps"; fi
  done
  cmd c 'LIST (SPECIAL-USE) "" "*"'
  for m in 'Sent:\Sent' 'Drafts:\Drafts' 'Trash:\Trash' 'Junk:\Junk' 'Archive:\Archive'; do
    name=${m%%:*} flag=${m#*:}
    if grep -qF -- "$flag" <<<"$(grep -E "^\\* LIST .* \"?$name\"?\$" <<<"$reply")"; then
      ok "special-use $name $flag"
    else
      bad "special-use $name" "$reply"
    fi
  done
  msg=$'Subject: services test\r\nFrom: a@example.org\r\n\r\nhello\r\n'
  printf 'd APPEND INBOX {%d+}\r\n%s\r\n' "${#msg}" "$msg" >&3
  await d
  if tagged_ok d && [[ $reply == *APPENDUID* ]]; then ok "imap APPEND"; else bad "imap APPEND" "$reply"; fi
  cmd e 'EXAMINE INBOX (CONDSTORE)'
  if tagged_ok e && [[ $reply == *HIGHESTMODSEQ* ]]; then ok "imap EXAMINE (CONDSTORE) has HIGHESTMODSEQ"; else bad "imap EXAMINE CONDSTORE" "$reply"; fi
  cmd f 'UID FETCH 1:* (UID RFC822.SIZE FLAGS MODSEQ)'
  if tagged_ok f && [[ $reply == *MODSEQ* && $reply == *RFC822.SIZE* ]]; then ok "imap UID FETCH with MODSEQ"; else bad "imap UID FETCH" "$reply"; fi
  cmd g LOGOUT
  exec 3<&- 3>&-
else
  bad "imap greeting" "${greeting:-no answer}"
fi

# Password reset takes effect at once; the old password stops working.
pass2=pw2-$RANDOM-$$
"$SRC/scripts/services" imap-user "$user" "$pass2" >/dev/null
if imap_open; then
  cmd a "LOGIN $user $pass"
  if [[ $(grep '^a ' <<<"$reply") == "a NO"* ]]; then ok "old password rejected after reset"; else bad "old password after reset" "$reply"; fi
  cmd b "LOGIN $user $pass2"
  if tagged_ok b; then ok "new password works at once"; else bad "new password" "$reply"; fi
  cmd c LOGOUT
  exec 3<&- 3>&-
else
  bad "imap reconnect"
fi

# Implicit TLS and STARTTLS, verified against the generated certificate.
tls_login() { # tls_login extra-s_client-args...
  (printf 'a LOGIN %s %s\r\nb LOGOUT\r\n' "$user" "$pass2"; sleep 1) |
    timeout 10 openssl s_client -quiet -verify_return_error -CAfile "$MAILBUS_IMAP_CA_FILE" \
      -verify_ip 127.0.0.1 "$@" 2>/dev/null | grep -q '^a OK'
}
check "imaps login with CA verification" tls_login -connect "127.0.0.1:$MAILBUS_IMAPS_PORT"
check "STARTTLS login with CA verification" tls_login -starttls imap -connect "127.0.0.1:$MAILBUS_IMAP_PORT"

# --- clamd -----------------------------------------------------------------------------
# INSTREAM: "zINSTREAM\0", then <4-byte big-endian length><data> chunks, then 4 zero bytes.
be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
instream() {
  local data=$1
  {
    printf 'zINSTREAM\0'
    be32 "${#data}"
    printf '%s' "$data"
    printf '\0\0\0\0'
  } | timeout 10 nc -U -w 5 "$MAILBUS_CLAMD_SOCKET" | tr -d '\0'
}
eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
r=$(instream "$eicar"$'\n')
if [[ $r == "stream: "*" FOUND" && $r == *EICAR* ]]; then ok "clamd EICAR + newline: $r"; else bad "clamd EICAR + newline" "$r"; fi
r=$(instream "some text before the signature "$'\r\n'"$eicar"$'\r\n'"and after")
if [[ $r == "stream: "*" FOUND" ]]; then ok "clamd EICAR inside a larger stream"; else bad "clamd EICAR in stream" "$r"; fi
r=$(instream $'Subject: clean\r\n\r\nnothing to see here\r\n')
if [[ $r == "stream: OK" ]]; then ok "clamd clean stream OK"; else bad "clamd clean stream" "$r"; fi
r=$(printf 'zPING\0' | timeout 5 nc -U -w 3 "$MAILBUS_CLAMD_SOCKET" | tr -d '\0')
if [[ $r == PONG ]]; then ok "clamd PING"; else bad "clamd PING" "$r"; fi

# --- files -----------------------------------------------------------------------------
if [[ -f $MAILBUS_SECRET_KEY_FILE && $(stat -c '%s %a' "$MAILBUS_SECRET_KEY_FILE") == "32 600" ]]; then
  ok "secret key 32 bytes mode 600"
else
  bad "secret key" "$(stat -c '%s %a' "$MAILBUS_SECRET_KEY_FILE" 2>&1)"
fi
check "blob dir exists" test -d "$MAILBUS_BLOB_DIR"
check "maildir of test user under MAILBUS_MAIL_ROOT" test -d "$MAILBUS_MAIL_ROOT/$user/Maildir"

echo "$passed passed, $failed failed"
((failed == 0))
