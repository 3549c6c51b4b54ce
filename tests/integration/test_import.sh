#!/usr/bin/env bash
# test_import.sh — the import issue's done-when, end to end against the real
# services: a generated mailbox of 1,000+ messages in 5 folders (genmail, 2
# EICAR attachments, plus the real-world MIME fixtures in a "Corpus" folder)
# imported by the five stages; every server message stored exactly once per
# location, blob bytes equal to what the server returns (checked with an
# independent IMAP fetch, and by hashing the blob files), flags mirrored,
# folder roles, EICAR infected and everything else clean, exact job counters,
# and the server's \Seen flags untouched.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_import
li_env m
W=$LI_W
N_GEN=${MB_IMPORT_MESSAGES:-1000}

li_corpus "$W/corpus"
n_corpus=$(find "$W/corpus" -type f | wc -l)
li_mailbox mbimport1 mbimport1-pw --messages "$N_GEN" --seed 11 --eicar 2 \
  --extra-dir "$W/corpus" --extra-folder Corpus --manifest "$W/manifest"
li_log "mailbox: $N_GEN generated + $n_corpus corpus messages"

li_server_state "$W/before"
total=$(wc -l <"$W/before")
nfolders=$(cut -f1 "$W/before" | sort -u | wc -l)
((total == N_GEN + n_corpus)) || li_fail "server has $total messages, genmail wrote $((N_GEN + n_corpus))"
((total >= 1000 && nfolders >= 3)) || li_fail "mailbox too small: $total messages in $nfolders folders"
li_server_sha "$W/server_sha" "$W/before"
[[ $(wc -l <"$W/server_sha") == "$total" ]] || li_fail "imap_tool fetched $(wc -l <"$W/server_sha") of $total"
li_ok "server: $total messages in $nfolders folders, raw bytes hashed independently"

li_account acct1 mbimport1 mbimport1-pw
li_stages start >/dev/null || li_fail "stages start"
t0=$SECONDS
job=$(li_import acct1)
li_wait_job "$job" 220
li_log "job $job completed in $((SECONDS - t0)) s"

# --- exactly once per location --------------------------------------------------------
li_sql "SELECT coalesce(f.remote_name, f.name), l.uid, encode(e.blob_sha256, 'hex')
        FROM email_locations l JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id
        ORDER BY 1, 2" | sort >"$W/db_sha"
dups=$(cut -f1,2 "$W/db_sha" | uniq -d | wc -l)
((dups == 0)) || li_fail "$dups duplicate (folder, uid) locations"
[[ $(wc -l <"$W/db_sha") == "$total" ]] || li_fail "email_locations has $(wc -l <"$W/db_sha") rows, server $total"
cut -f1 "$W/before" | uniq -c >"$W/per_folder_srv"
cut -f1 "$W/db_sha" | uniq -c >"$W/per_folder_db"
li_diff "$W/per_folder_srv" "$W/per_folder_db" "per-folder counts differ"
li_ok "every server message stored exactly once per location ($total)"

# --- bytes ------------------------------------------------------------------------------
li_diff "$W/server_sha" "$W/db_sha" "blob sha256 in the db != server raw bytes"
"$MB" messages acct1 --json >"$W/messages.json" || li_fail "mailbus messages --json"
jq -r '.folder + "\t" + (.uid|tostring) + "\t" + .sha256' "$W/messages.json" | sort >"$W/cli_sha"
# messages --json shows the display name; every folder here is ASCII so it equals the remote name.
li_diff "$W/server_sha" "$W/cli_sha" "messages --json sha256 != server raw bytes"
bad=0
while read -r sha; do
  f=$MAILBUS_BLOB_DIR/${sha:0:2}/$sha
  [[ -f $f ]] || { echo "missing blob $f"; bad=$((bad + 1)); continue; }
  [[ $(sha256sum "$f" | cut -d' ' -f1) == "$sha" ]] || { echo "blob $f has other content"; bad=$((bad + 1)); }
done < <(cut -f3 "$W/db_sha" | sort -u)
((bad == 0)) || li_fail "$bad blob files missing or wrong"
nblobs=$(cd "$MAILBUS_BLOB_DIR" && find . -path './??/*' -type f | wc -l)
[[ $nblobs == "$(cut -f3 "$W/db_sha" | sort -u | wc -l)" ]] || li_fail "$nblobs blob files for $(cut -f3 "$W/db_sha" | sort -u | wc -l) distinct messages"
li_ok "blob SHA-256 (db, messages --json, sha256sum of the files) == server bytes, all $total"

# --- flags ------------------------------------------------------------------------------
li_sql "SELECT coalesce(f.remote_name, f.name), l.uid, array_to_string(ARRAY(SELECT unnest(l.flags) ORDER BY 1), ' ')
        FROM email_locations l JOIN folders f ON f.id = l.folder_id" | sort >"$W/db_flags"
awk -F'\t' '{print $1 "\t" $2 "\t" $5}' "$W/before" | sort >"$W/srv_flags"
li_diff "$W/srv_flags" "$W/db_flags" "flags differ from the server's"
jq -r '.folder + "\t" + (.uid|tostring) + "\t" + ((.flags // []) | sort | join(" "))' "$W/messages.json" | sort >"$W/cli_flags"
li_diff "$W/srv_flags" "$W/cli_flags" "messages --json flags differ from the server's"
nseen=$(grep -c '\\Seen' "$W/srv_flags" || true)
((nseen > 0 && nseen < total)) || li_fail "flag mix not exercised ($nseen of $total \\Seen)"
li_ok "flags mirrored per location ($nseen \\Seen of $total)"

# --- folder roles -----------------------------------------------------------------------
for fr in INBOX:inbox Sent:sent Drafts:drafts Archive:archive Trash:trash Junk:junk; do
  r=$(li_sql "SELECT role FROM folders WHERE coalesce(remote_name, name) = '${fr%%:*}'")
  [[ $r == "${fr#*:}" ]] || li_fail "folder ${fr%%:*} has role '$r', want ${fr#*:}"
done
r=$(li_sql "SELECT coalesce(role, 'NULL') FROM folders WHERE name = 'Corpus'")
[[ $r == NULL ]] || li_fail "folder Corpus has role '$r', want none"
li_ok "folder roles (INBOX, Sent, Drafts, Archive, Trash, Junk; Corpus none)"

# --- antivirus --------------------------------------------------------------------------
eicar_msgs=$(awk -F'\t' '$7 == 1' "$W/manifest" | wc -l)
((eicar_msgs == 2)) || li_fail "manifest lists $eicar_msgs EICAR messages, want 2"
li_sql "SELECT scan_status, count(*) FROM attachments GROUP BY 1 ORDER BY 1" >"$W/av"
infected=$(li_sql "SELECT count(*) FROM attachments WHERE scan_status = 'infected'")
notclean=$(li_sql "SELECT count(*) FROM attachments WHERE scan_status NOT IN ('clean', 'infected')")
natt=$(li_sql "SELECT count(*) FROM attachments")
((infected == 2)) || { cat "$W/av"; li_fail "$infected infected attachments, want 2"; }
((notclean == 0)) || { cat "$W/av"; li_fail "$notclean attachments neither clean nor infected"; }
((natt > 20)) || li_fail "only $natt attachments"
bad=$(li_sql "SELECT count(*) FROM attachments WHERE scan_status = 'infected' AND (filename IS DISTINCT FROM 'eicar.com' OR size <> 68)")
((bad == 0)) || li_fail "an infected attachment is not the 68-byte eicar.com"
ninf_json=$(jq '[.attachments[]? | select(.scan_status == "infected")] | length' "$W/messages.json" | awk '{s += $1} END {print s}')
((ninf_json == 2)) || li_fail "messages --json shows $ninf_json infected attachments"
li_ok "antivirus: exactly 2 infected (eicar.com), $((natt - 2)) clean"

# --- job counters -----------------------------------------------------------------------
IFS=$'\t' read -r st tot sc fe pa so avs avp avi er < <(li_sql "SELECT status, total_messages, scanned, fetched, parsed, stored, av_scanned, av_pending, av_infected, errors FROM sync_jobs WHERE id = $job")
[[ $st == completed ]] || li_fail "job status $st"
for v in tot sc fe pa so; do
  [[ ${!v} == "$total" ]] || li_fail "job counter $v = ${!v}, want $total"
done
((er == 0 && avp == 0)) || li_fail "job errors=$er av_pending=$avp, want 0"
((avi == 2)) || li_fail "job av_infected=$avi, want 2"
((avs >= natt - 1)) || li_fail "job av_scanned=$avs for $natt attachments"
"$MB" jobs --json "$job" >"$W/job.json" || li_fail "mailbus jobs --json"
jq -e --arg t "$total" '(.status == "completed") and ((.total|tostring) == $t) and ((.stored|tostring) == $t)' "$W/job.json" >/dev/null ||
  { cat "$W/job.json"; li_fail "jobs --json does not show the completed job"; }
li_ok "job completed, counters exact (total=scanned=fetched=parsed=stored=$total, errors 0, av_pending 0, av_scanned $avs)"

# --- the server is untouched ------------------------------------------------------------
li_server_state "$W/after"
li_diff "$W/before" "$W/after" "server state (flags/dates/sizes) changed by the import"
li_ok "server flags (\\Seen) unchanged by the import"

echo "PASS test_import.sh ($total messages, import $((SECONDS - t0)) s, total $((SECONDS - LI_T0)) s)"
