#!/usr/bin/env bash
# test_dlq_commands.sh — dead letters handled over NATS: <p>.cmd.dlq.list,
# dlq.show, dlq.retry and dlq.purge, answered by the scan stage with the same
# bus/dlq.c functions `mailbus dlq` uses (sent here by mb-test-bus_request,
# as `nats req` would).
#
# Real dead letters: an account of 40 ordinary messages plus one on which
# parse crashes (test fault MAILBUS_FAULT_PARSE_CRASH): the supervisor names
# it, it is dead-lettered and stored raw; and two junk fetch tasks, which
# fetch fails at once. Then, over NATS only:
#   list (all, and by stage) matches `mailbus dlq list --json`;
#   show gives the crash record with its reason and original headers, and a
#     missing id is {"ok":false};
#   bad arguments are refused with the argument named;
#   with parse restarted without the fault, retry {"id":N} puts the crash
#     record back on parse: it is parsed in full, once (no new rows, the one
#     row no longer unparsed), and a second retry of the same id is refused;
#   retry {"all":true,"stage":"fetch"} sends both junk tasks back to fetch,
#     which dead-letters them again (new sequences);
#   purge {"older_than":"1d"} removes nothing, purge {"stage":"fetch"} both,
#     and the DLQ ends empty.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_dlq_commands
W=$LI_W
REQ=$MB_BIN/mb-test-bus_request
[[ -x $REQ ]] || li_fail "$REQ not built"
export MAILBUS_FAULT_PARSE_CRASH="X-Mailbus-Test-Fault: crash"

# req OP JSON: the reply of <p>.cmd.OP (fails the test if nobody answers).
req() { "$REQ" "cmd.$1" "$2" 2>"$W/req.err" || li_fail "request $1 $2: $(cat "$W/req.err")"; }
# req_ok OP JSON: the reply, which must say ok.
req_ok() {
  local r
  r=$(req "$1" "$2")
  [[ $(jq -r .ok <<<"$r") == true ]] || li_fail "$1 $2: $r"
  echo "$r"
}
# req_refused OP JSON PATTERN: the reply must be ok:false with an error matching PATTERN.
req_refused() {
  local r
  r=$(req "$1" "$2")
  [[ $(jq -r .ok <<<"$r") == false ]] && grep -q -- "$3" <<<"$(jq -r .error <<<"$r")" ||
    li_fail "$1 $2: want an error like '$3', got $r"
}

mkdir -p "$W/extra"
printf '%s\r\n' "From: crash@x" "Subject: parse crashes" "Date: Mon, 02 Nov 2026 10:00:00 +0000" \
  "$MAILBUS_FAULT_PARSE_CRASH" "" "body" >"$W/extra/crash.eml"
li_mailbox mbdlqcmd mbdlqcmd-pw --messages 40 --seed 61 --extra-dir "$W/extra" --extra-folder Faults
li_env d
li_account dl mbdlqcmd mbdlqcmd-pw
li_stages start >/dev/null || li_fail "stages start"

# Before anything is dead (and once scan answers): an empty list.
deadline=$((SECONDS + 30))
until r=$("$REQ" cmd.dlq.list '{}' 1000 2>"$W/req.err"); do
  ((SECONDS < deadline)) || li_fail "scan does not answer dlq.list: $(cat "$W/req.err")"
  li_stages_alive
done
[[ $(jq -r .ok <<<"$r") == true ]] || li_fail "dlq.list: $r"
[[ $(jq .count <<<"$r") == 0 ]] || li_fail "fresh DLQ not empty: $r"

job=$(li_import dl)
li_wait_job "$job" 120
[[ $(li_job "$job" stored) == 41 ]] || li_fail "stored $(li_job "$job" stored) of 41"
"$MB_BIN/mb-test-bus_ctl" publish --from 1 --n 2 --account 999 --msgid-prefix junk >/dev/null ||
  li_fail "publish junk fetch tasks"
deadline=$((SECONDS + 60))
until [[ $("$MB_BIN/mb-test-bus_ctl" count DLQ) == 3 ]]; do
  ((SECONDS < deadline)) || li_fail "DLQ holds $("$MB_BIN/mb-test-bus_ctl" count DLQ) dead letters, want 3"
  li_stages_alive
  sleep 0.2
done
li_ok "three real dead letters: a parse crash and two junk fetch tasks"

# --- list and show ----------------------------------------------------------------------------
r=$(req_ok dlq.list '{}')
[[ $(jq .count <<<"$r") == 3 && $(jq .truncated <<<"$r") == false ]] || li_fail "dlq.list: $r"
[[ $(jq -r '[.dead_letters[].stage] | sort | join(",")' <<<"$r") == fetch,fetch,parse ]] ||
  li_fail "dlq.list stages: $r"
"$MB" dlq list --json >"$W/cli.json" || li_fail "mailbus dlq list --json"
diff <(jq -r '.dead_letters[] | [.dlq_seq, .stage, .reason, .data_bytes] | @tsv' <<<"$r") \
  <(jq -r '[.dlq_seq, .stage, .reason, .data_bytes] | @tsv' "$W/cli.json") >"$W/list.diff" ||
  li_fail "dlq.list differs from mailbus dlq list --json: $(cat "$W/list.diff")"
r=$(req_ok dlq.list '{"stage":"parse"}')
[[ $(jq .count <<<"$r") == 1 ]] || li_fail "dlq.list parse: $r"
crash=$(jq '.dead_letters[0].dlq_seq' <<<"$r")
grep -q 'signal 6' <<<"$(jq -r '.dead_letters[0].reason' <<<"$r")" || li_fail "crash reason: $r"
r=$(req_ok dlq.show "{\"id\":$crash}")
[[ $(jq -r .dead_letter.stage <<<"$r") == parse && $(jq .dead_letter.dlq_seq <<<"$r") == "$crash" ]] ||
  li_fail "dlq.show $crash: $r"
jq -r '.dead_letter.headers[]' <<<"$r" | grep -qx "Mailbus-Job: $job" || li_fail "dlq.show headers: $r"
# The payload comes along (base64) and is the record the CLI shows.
[[ $(jq -r .dead_letter.data <<<"$r" | base64 -d | wc -c) == $(jq .dead_letter.data_bytes <<<"$r") ]] ||
  li_fail "dlq.show payload: $r"
li_ok "dlq.list (all: 3, parse: 1, same as the CLI) and dlq.show $crash (reason, headers, payload)"

req_refused dlq.show '{"id":999999}' 'no dead letter 999999'
req_refused dlq.show '{}' 'needs "id"'
req_refused dlq.retry '{}' '"id" (a dlq_seq) or "all"'
req_refused dlq.retry "{\"id\":$crash,\"all\":true}" '"id" (a dlq_seq) or "all"'
req_refused dlq.purge '{"older_than":"7x"}' "age '7x'"
req_refused dlq.list '{"stage":"no such"}' "only a-z"
req_refused dlq.frobnicate '{}' "unknown command 'dlq.frobnicate'"
r=$(req_ok dlq.purge '{"older_than":"1d"}')
[[ $(jq .purged <<<"$r") == 0 ]] || li_fail "purge older_than 1d: $r"
[[ $("$MB_BIN/mb-test-bus_ctl" count DLQ) == 3 ]] || li_fail "refused commands changed the DLQ"
li_ok "missing ids and bad arguments refused, named; purge older_than 1d removed nothing"

# --- retry one: parsed in full, once ----------------------------------------------------------
crash_size=$(stat -c %s "$W/extra/crash.eml")
[[ $(li_sql "SELECT unparsed FROM emails WHERE size = $crash_size") == t ]] ||
  li_fail "crash message not stored raw: $(li_sql "SELECT unparsed, defects FROM emails WHERE size = $crash_size")"
li_stages stop parse >/dev/null
MAILBUS_FAULT_PARSE_CRASH= li_stages start >/dev/null || li_fail "restart parse"
emails=$(li_sql "SELECT count(*) FROM emails") locs=$(li_sql "SELECT count(*) FROM email_locations")
r=$(req_ok dlq.retry "{\"id\":$crash}")
[[ $(jq .retried <<<"$r") == 1 ]] || li_fail "dlq.retry $crash: $r"
li_wait_until 60 "the retried record parsed in full" \
  "(SELECT NOT unparsed AND subject = 'parse crashes' FROM emails WHERE size = $crash_size)"
sleep 1 # a second handling of the record would land within this
[[ $(li_sql "SELECT count(*) FROM emails") == "$emails" && $(li_sql "SELECT count(*) FROM email_locations") == "$locs" ]] ||
  li_fail "retry added rows: emails $emails -> $(li_sql "SELECT count(*) FROM emails"), locations $locs -> $(li_sql "SELECT count(*) FROM email_locations")"
[[ $(li_sql "SELECT count(*) FROM emails WHERE unparsed") == 0 ]] || li_fail "messages left unparsed"
[[ $("$MB_BIN/mb-test-bus_ctl" count PARSE) == 0 && $("$MB_BIN/mb-test-bus_ctl" count STORE) == 0 ]] ||
  li_fail "work left on the bus after the retry"
req_refused dlq.retry "{\"id\":$crash}" "no dead letter $crash"
r=$(req_ok dlq.list '{"stage":"parse"}')
[[ $(jq .count <<<"$r") == 0 ]] || li_fail "parse dead letter left after retry: $r"
li_ok "dlq.retry $crash: back on parse with its headers, parsed in full once, no new rows; a second retry refused"

# --- retry all of a stage, purge by stage -----------------------------------------------------
old=$(req_ok dlq.list '{"stage":"fetch"}' | jq -c '[.dead_letters[].dlq_seq]')
r=$(req_ok dlq.retry '{"all":true,"stage":"fetch"}')
[[ $(jq .retried <<<"$r") == 2 ]] || li_fail "dlq.retry all fetch: $r"
deadline=$((SECONDS + 60))
while :; do
  r=$(req_ok dlq.list '{"stage":"fetch"}')
  [[ $(jq .count <<<"$r") == 2 ]] && break
  ((SECONDS < deadline)) || li_fail "retried junk not dead-lettered again: $r"
  sleep 0.2
done
new=$(jq -c '[.dead_letters[].dlq_seq]' <<<"$r")
[[ $(jq -n --argjson a "$old" --argjson b "$new" '[$a[] as $x | $b[] | select(. == $x)] | length') == 0 ]] ||
  li_fail "retried junk kept its old sequences: $old -> $new"
# The CLI runs the same code: its retry --all sends them round once more.
out=$("$MB" dlq purge --older-than 1d) && [[ $out == "purged 0 dead letters" ]] ||
  li_fail "mailbus dlq purge --older-than 1d: $out"
out=$("$MB" dlq retry --all --stage fetch) && [[ $out == "retried 2 dead letters" ]] ||
  li_fail "mailbus dlq retry --all --stage fetch: $out"
deadline=$((SECONDS + 60))
until [[ $(req_ok dlq.list '{"stage":"fetch"}' | jq .count) == 2 ]]; do
  ((SECONDS < deadline)) || li_fail "junk retried by the CLI not dead-lettered again"
  sleep 0.2
done
r=$(req_ok dlq.purge '{"stage":"fetch"}')
[[ $(jq .purged <<<"$r") == 2 ]] || li_fail "dlq.purge fetch: $r"
r=$(req_ok dlq.list '{}')
[[ $(jq .count <<<"$r") == 0 && $("$MB_BIN/mb-test-bus_ctl" count DLQ) == 0 ]] || li_fail "DLQ not empty: $r"
[[ $("$MB" dlq list) == "no dead letters" ]] || li_fail "CLI still lists dead letters"
li_ok "dlq.retry all of fetch (2 back on fetch, dead again as $new), again by the CLI, dlq.purge of fetch (2): DLQ empty"
echo "PASS test_dlq_commands.sh (total $((SECONDS - LI_T0)) s)"
