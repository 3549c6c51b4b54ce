#!/usr/bin/env bash
# test_import_large.sh — a 30 MB message in the mailbox: it is imported byte for
# byte, its 23 MB attachment is measured and scanned, and every stage's peak
# memory stays under 64 MB. The stages run from the plain build
# ($MB_PLAIN_BIN, default build/bin): ASan's allocator quarantine would
# measure the sanitizer, not mailbus.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_import_large
W=$LI_W
export MAILBUS_BIN=${MB_PLAIN_BIN:-$LI_SRC/build/bin}
[[ -x $MAILBUS_BIN/mailbus-fetch ]] || li_fail "no plain build at $MAILBUS_BIN (cmake --build build)"
LIMIT_KB=$((64 * 1024))

USER_NAME=mbimportlarge
li_mailbox "$USER_NAME" "$USER_NAME-pw" --messages 20 --seed 41

# The large message: 23,000,000 random bytes as a base64 attachment, CRLF lines.
head -c 23000000 /dev/urandom >"$W/payload"
att_sha=$(sha256sum "$W/payload" | cut -d' ' -f1)
{
  printf 'From: Big Sender <big@example.org>\r\nTo: someone@example.org\r\n'
  printf 'Subject: a thirty megabyte message\r\nDate: Tue, 03 Jan 2023 10:00:00 +0000\r\n'
  printf 'Message-ID: <large-1@example.org>\r\nMIME-Version: 1.0\r\n'
  printf 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
  printf 'Content-Type: text/plain; charset=us-ascii\r\n\r\nThe attachment is large.\r\n--b1\r\n'
  printf 'Content-Type: application/octet-stream; name="big.bin"\r\n'
  printf 'Content-Disposition: attachment; filename="big.bin"\r\n'
  printf 'Content-Transfer-Encoding: base64\r\n\r\n'
  base64 -w 76 "$W/payload" | sed 's/$/\r/'
  printf -- '--b1--\r\n'
} >"$W/large.eml"
size=$(stat -c %s "$W/large.eml")
msg_sha=$(sha256sum "$W/large.eml" | cut -d' ' -f1)
((size > 30000000)) || li_fail "large message is only $size bytes"
cp "$W/large.eml" "$MAILBUS_MAIL_ROOT/$USER_NAME/Maildir/cur/1672740000.Mlarge.mailbus,S=$size:2,"
touch -d '2023-01-03 10:00:00 UTC' "$MAILBUS_MAIL_ROOT/$USER_NAME/Maildir/cur/1672740000.Mlarge.mailbus,S=$size:2,"
"$LI_SRC/scripts/services" imap-user "$USER_NAME" "$USER_NAME-pw" >/dev/null || li_fail "imap-user"

li_env big
li_account big "$USER_NAME" "$USER_NAME-pw"
li_stages start >/dev/null || li_fail "stages start"
job=$(li_import big)
li_wait_job "$job" 180

[[ $(li_sql "SELECT count(*) FROM email_locations") == 21 ]] || li_fail "$(li_sql "SELECT count(*) FROM email_locations") locations, want 21"
[[ $(li_sql "SELECT size FROM emails WHERE blob_sha256 = decode('$msg_sha', 'hex')") == "$size" ]] ||
  li_fail "the large message is not stored with its SHA-256 $msg_sha and size $size"
blob=$MAILBUS_BLOB_DIR/${msg_sha:0:2}/$msg_sha
[[ $(sha256sum "$blob" | cut -d' ' -f1) == "$msg_sha" ]] || li_fail "blob $blob differs from the server's bytes"
read -r asize asha astatus <<<"$(li_sql "SELECT a.size, encode(a.sha256, 'hex'), a.scan_status FROM attachments a
  JOIN emails e ON e.id = a.email_id WHERE e.blob_sha256 = decode('$msg_sha', 'hex') AND a.filename = 'big.bin'" | tr '\t' ' ')"
[[ $asize == 23000000 && $asha == "$att_sha" && $astatus == clean ]] ||
  li_fail "attachment: size=$asize sha=$asha status=$astatus, want 23000000 $att_sha clean"
li_ok "30 MB message ($size bytes) stored byte-exact; its 23 MB attachment measured and scanned clean"

# Peak memory of every stage process, read before they stop.
report=
while read -r name _ _ _ _ pid; do
  pid=${pid%)}   # the worker, not its supervisor
  kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  report+="$name ${kb} kB, "
  ((kb < LIMIT_KB)) || li_fail "$name peaked at $kb kB (limit $LIMIT_KB kB)"
done < <(li_stages status)
li_ok "peak RSS: ${report%, }"
echo "PASS test_import_large.sh (total $((SECONDS - LI_T0)) s)"
