#!/usr/bin/env bash
# test_bench_sync.sh — `scripts/bench sync` end to end on a small mailbox (300
# messages, 20 changes, 2 rounds, --quick), on its own IMAP user: it passes its own
# checks (each sync's history equals the changes made, mbsync leaves the server as it
# found it, Postgres == server at the end), its last line is the documented JSON with
# the last sync's findings equal to what imap_changes.py made (5 new + 5 moved added,
# 5 flagged, 5 expunged, 5 moved), and the mailbox it synced was a copy: the generated
# one is untouched. Runs the benchmark on the plain build ($MB_PLAIN_BIN).
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_bench_sync
: "${MB_PLAIN_BIN:?MB_PLAIN_BIN must point at the bin directory of the plain (RelWithDebInfo) build}"
W=$LI_W
user=tbs$$
# li_cleanup removes both mail trees; the benchmark's state dir (manifest) goes here.
LI_USERS+=("$user" "${user}sync")
trap 'rc=$?; set +e; rm -rf "${MAILBUS_RUN_DIR:?}/$user"; (exit $rc); li_cleanup' EXIT

li_log "scripts/bench sync --messages 300 --changes 20 --runs 2 --quick (user $user)"
MAILBUS_BENCH_USER=$user MAILBUS_BENCH_BUILD_DIR=$(dirname "$MB_PLAIN_BIN") \
  "$LI_SRC/scripts/bench" sync --messages 300 --changes 20 --runs 2 --quick \
  >"$W/bench.out" 2>"$W/bench.err" || { tail -n 40 "$W/bench.err" >&2; li_fail "scripts/bench sync failed"; }
grep -E '^(no change|20 changes), round' "$W/bench.out"

json=$(tail -n 1 "$W/bench.out")
jq -e . <<<"$json" >/dev/null || li_fail "last line is not JSON: $json"
jq -e '.messages == 300 and .changes == 20 and .runs == 2' <<<"$json" >/dev/null ||
  li_fail "messages/changes/runs: $json"
jq -e '[.nochange_sync_s, .sync_s, .mbsync_nochange_s, .mbsync_sync_s] | all(type == "number" and . > 0 and . < 60)' \
  <<<"$json" >/dev/null || li_fail "timings: $json"
jq -e '.last_sync == {"added": 10, "flags_changed": 5, "deleted": 5, "moved": 5}' <<<"$json" >/dev/null ||
  li_fail "the last sync did not find exactly the 20 changes: $json"
jq -e '.peak_rss_mb | (keys == (["avscan", "fetch", "parse", "scan", "store"])) and all(.[]; . > 0)' \
  <<<"$json" >/dev/null || li_fail "peak_rss_mb: $json"
li_ok "JSON: $json"

# Both rounds of each kind ran; each round adds 5 and expunges 5, so 300 locations
# remain, and Postgres held exactly the server's.
[[ $(grep -c '^no change, round ' "$W/bench.out") == 2 && $(grep -c '^20 changes, round ' "$W/bench.out") == 2 ]] ||
  li_fail "rounds: $(grep 'round ' "$W/bench.out")"
grep -q 'state checked: Postgres == server, 300 locations' "$W/bench.out" ||
  li_fail "state check line: $(grep 'state checked' "$W/bench.out")"
li_ok "2 + 2 rounds; $(grep -o 'state checked: .*' "$W/bench.out")"

# The generated mailbox is intact: exactly the files genmail wrote (its manifest), under
# the same names — a Maildir file name carries the flags, so the 10 flagged, 10
# expunged and 10 moved messages of the copy would show — and the copy is gone.
cut -f2 "$MAILBUS_RUN_DIR/$user/manifest.tsv" | sort >"$W/files-genmail"
find "$MAILBUS_MAIL_ROOT/$user/Maildir" -type f \( -path '*/cur/*' -o -path '*/new/*' \) -printf '%f\n' |
  sort >"$W/files-now"
[[ $(wc -l <"$W/files-genmail") == 300 ]] || li_fail "the manifest lists $(wc -l <"$W/files-genmail") messages"
li_diff "$W/files-genmail" "$W/files-now" "the generated mailbox changed: the copy was not a copy"
[[ ! -e $MAILBUS_MAIL_ROOT/${user}sync ]] || li_fail "the benchmark left its copy ${user}sync behind"
li_ok "the generated mailbox is untouched (its 300 files, same names); the copy was removed"
echo "PASS test_bench_sync.sh"
