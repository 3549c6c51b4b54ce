#!/usr/bin/env bash
# test_keys.sh — credentials at rest: `mailbus keys rotate --new-key-file F`
# re-seals every stored credential under a new key, crash-safe (killed after
# the first account, run again, it does the rest) and without stopping anything
# (stages given the new key and the old one as MAILBUS_SECRET_OLD_KEY_FILE open
# both meanwhile: an import runs half-way through); a key file or password file
# that its group or other users may read is refused; the password is stored
# sealed (and, checked after every test by lib_import.sh, in no file written).
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_keys
W=$LI_W

li_env k
li_mailbox mbkeys mbkeys-secret-pw --messages 20 --seed 5
(umask 077 && openssl rand -hex 32 >"$W/a.key" && openssl rand -hex 32 >"$W/b.key")
export MAILBUS_SECRET_KEY_FILE=$W/a.key
unset MAILBUS_SECRET_OLD_KEY_FILE
li_account acct1 mbkeys mbkeys-secret-pw
li_account acct2 mbkeys mbkeys-secret-pw

# test_with KEY [OLD] ACCOUNT: `mailbus account test` with those keys; its exit status.
test_with() {
  local key=$1 old=$2 acct=$3
  MAILBUS_SECRET_KEY_FILE=$key MAILBUS_SECRET_OLD_KEY_FILE=$old "$MB" account test "$acct" \
    >>"$W/cli.out" 2>&1
}
test_with "$W/a.key" "" acct1 || li_fail "account test with the key it was sealed with"

# --- files others may read are refused ---------------------------------------------------
chmod 640 "$W/a.key"
test_with "$W/a.key" "" acct1 && li_fail "a key file the group may read was accepted"
grep -q "MAILBUS_SECRET_KEY_FILE '$W/a.key': mode 640 .*chmod 600" "$W/cli.out" ||
  li_fail "refusal of the key file: $(tail -n 1 "$W/cli.out")"
chmod 600 "$W/a.key"
printf 'mbkeys-secret-pw\n' >"$W/open-pw" && chmod 644 "$W/open-pw"
"$MB" account add acct3 --imap "imap://mbkeys@127.0.0.1:$MAILBUS_IMAP_PORT" \
  --password-file "$W/open-pw" >>"$W/cli.out" 2>&1 && li_fail "a world-readable password file was accepted"
grep -q -- "--password-file '$W/open-pw': mode 644" "$W/cli.out" ||
  li_fail "refusal of the password file: $(tail -n 1 "$W/cli.out")"
rm -f "$W/open-pw" # lib_import.sh's cleanup checks that the password is in no file
li_ok "key and password files its group or others may read are refused, naming file and mode"

# --- a rotation killed after the first account --------------------------------------------
set +e
MAILBUS_FAULT_KEYS_ROTATE_EXIT_AFTER=1 "$MB" keys rotate --new-key-file "$W/b.key" >>"$W/cli.out" 2>&1
rc=$?
set -e
((rc != 0)) || li_fail "the interrupted rotation exited 0"
test_with "$W/b.key" "" acct1 || li_fail "acct1 not under the new key after the interrupted rotation"
test_with "$W/b.key" "" acct2 && li_fail "acct2 already under the new key: the rotation was not interrupted half-way"
test_with "$W/a.key" "" acct2 || li_fail "acct2 lost its old key"
test_with "$W/b.key" "$W/a.key" acct1 && test_with "$W/b.key" "$W/a.key" acct2 ||
  li_fail "with the new key and the old one, not every account opens"
li_ok "rotation killed after one account: acct1 under the new key, acct2 under the old, both open with both"

# Stages given both keys import the account still under the old key.
export MAILBUS_SECRET_KEY_FILE=$W/b.key MAILBUS_SECRET_OLD_KEY_FILE=$W/a.key
li_stages start >/dev/null || li_fail "stages start"
li_scan_ready
job=$(li_import acct2)
li_wait_job "$job" 120
[[ $(li_job "$job" stored) == 20 ]] || li_fail "import of acct2 mid-rotation stored $(li_job "$job" stored) of 20"
li_stages stop >/dev/null
li_ok "mid-rotation, stages with both keys imported acct2 (20 messages)"

# --- run again: the rest ------------------------------------------------------------------
"$MB" keys rotate --new-key-file "$W/b.key" >"$W/rotate2.out" 2>&1 || li_fail "rotate again: $(cat "$W/rotate2.out")"
grep -q "^1 credentials re-sealed under the new key, 1 were already" "$W/rotate2.out" ||
  li_fail "second rotation: $(cat "$W/rotate2.out")"
unset MAILBUS_SECRET_OLD_KEY_FILE
for a in acct1 acct2; do
  test_with "$W/b.key" "" "$a" || li_fail "$a does not open with the new key alone"
  test_with "$W/a.key" "" "$a" && li_fail "$a still opens with the old key"
done
"$MB" keys rotate --new-key-file "$W/b.key" >"$W/rotate3.out" 2>&1 || li_fail "rotate a third time"
grep -q "^0 credentials re-sealed under the new key, 2 were already" "$W/rotate3.out" ||
  li_fail "third rotation: $(cat "$W/rotate3.out")"
li_ok "run again it re-sealed the other account; every account opens with the new key alone, none with the old"

# --- the password is nowhere (the files: li_no_leak at the end, as in every test) ----------
[[ $(li_sql "SELECT count(*) FROM accounts WHERE position('mbkeys-secret-pw'::bytea IN secret) > 0") == 0 ]] ||
  li_fail "a credential is stored in the clear"
li_ok "the password is in no accounts row in the clear"
echo "PASS test_keys.sh"
