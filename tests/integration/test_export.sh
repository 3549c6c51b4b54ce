#!/usr/bin/env bash
# test_export.sh — `mailbus export` (cli/cmd_export.c) against the real services.
#
# A genmail mailbox (200 messages) is given more shapes in Dovecot's Maildir: a
# hierarchy (Projects, Projects/2024), a folder whose name is not ASCII
# (Entw&APw-rfe, "Entwürfe"), \Flagged \Answered \Deleted, keywords in INBOX and
# Archive, and two hand-made messages with body lines that start with "From ",
# ">From " and ">>From ", one of them not ending with a newline. It is imported, then:
#  1. exported as Maildir++ straight into a second Dovecot user's Maildir: per folder,
#     the (size, internal date, flags, sha256) of every message the server gives for
#     the second user equals the first user's (UIDs may differ);
#  2. as mbox: Python's mailbox.mbox reads every file with the index's message count,
#     and each message, its mboxrd quoting undone, is the stored .eml byte for byte;
#  3. as .eml: every file hashes to the index and to its blob;
#     and in each case the index lists exactly what `mailbus messages` lists;
#  4. resume: the Maildir export again writes nothing; 3 Maildir and 3 .eml files
#     deleted and an mbox cut in the middle of a message: a run again writes exactly
#     those back, and every check above passes again;
#     a run that fails after cutting mboxes (its cuts journaled) resumed just as well;
#  5. a blob deleted: the export exits 1 naming it and writes everything else.
set -euo pipefail
. "$(dirname "$0")/lib_import.sh"
li_init test_export
W=$LI_W
U1=mbexport1 U2=mbexport2
N_GEN=200
li_mailbox "$U1" "$U1-pw" --messages "$N_GEN" --seed 61
MD=$MAILBUS_MAIL_ROOT/$U1/Maildir

# --- more shapes in the source Maildir ----------------------------------------------------
# add_flags FILE LETTERS: the Maildir file with these info letters added (sorted, C locale).
add_flags() {
  local base=${1%%:2,*} fl=${1##*:2,}
  mv "$1" "$base:2,$(printf '%s%s' "$fl" "$2" | fold -w1 | sort -u | tr -d '\n')"
}
mapfile -t inbox < <(cd "$MD/cur" && ls | sort)
((${#inbox[@]} > 30)) || li_fail "INBOX has ${#inbox[@]} messages"
mkdir -p "$MD"/.Projects/{cur,new,tmp} "$MD"/.Projects.2024/{cur,new,tmp} "$MD"/.Entw\&APw-rfe/{cur,new,tmp}
for i in 0 1 2; do mv "$MD/cur/${inbox[i]}" "$MD/.Projects/cur/"; done
for i in 3 4 5 6; do mv "$MD/cur/${inbox[i]}" "$MD/.Projects.2024/cur/"; done
for i in 7 8 9; do mv "$MD/cur/${inbox[i]}" "$MD/.Entw&APw-rfe/cur/"; done
printf '0 $Important\n1 project-x\n' >"$MD/dovecot-keywords"
for i in 10 11 12; do add_flags "$MD/cur/${inbox[i]}" a; done
for i in 13 14; do add_flags "$MD/cur/${inbox[i]}" ab; done
for i in 15 16 17; do add_flags "$MD/cur/${inbox[i]}" F; done
for i in 18 19; do add_flags "$MD/cur/${inbox[i]}" RF; done
add_flags "$MD/cur/${inbox[20]}" T
mapfile -t archive < <(cd "$MD/.Archive/cur" && ls | sort)
printf '0 $Later\n' >"$MD/.Archive/dovecot-keywords"
for i in 0 1; do add_flags "$MD/.Archive/cur/${archive[i]}" a; done
# Body lines an mbox must quote; the second message does not end with a newline.
hand() { # hand FILE DATE BODY: a small message, mtime DATE (its internal date)
  printf 'From: Quoting Test <q@example.org>\nTo: me@example.org\nSubject: %s\nDate: %s\nMessage-ID: <%s@example.org>\n\n%b' \
    "${1##*/}" "$(date -u -R -d "@$2")" "${1##*/}" "$3" >"$1"
  touch -d "@$2" "$1"
}
hand "$MD/cur/1719828000.M1P1Q1.hand:2,S" 1719828000 'From the first line of the body\n>From a quoted line\n>>From a twice quoted line\n From not at the start\nFrom\nFrom \nthe end\nFrom the last line\n'
hand "$MD/.Entw&APw-rfe/cur/1719831600.M2P1Q2.hand:2," 1719831600 'hello\n>>>From deep\nno newline at the end'
"$LI_SRC/scripts/services" imap-user "$U1" "$U1-pw" >/dev/null || li_fail "imap-user $U1"

li_server_state "$W/s1"
li_server_sha "$W/sha1" "$W/s1"
total=$(wc -l <"$W/s1")
nfolders=$(cut -f1 "$W/s1" | sort -u | wc -l)
((total == N_GEN + 2 && nfolders >= 7)) || li_fail "server has $total messages in $nfolders folders"
grep -q $'^Projects/2024\t' "$W/s1" && grep -q $'^Entw&APw-rfe\t' "$W/s1" || li_fail "folders missing: $(cut -f1 "$W/s1" | sort -u | tr '\n' ' ')"
nkw=$(grep -c 'project-x\|\$Later' "$W/s1" || true)
((nkw == 4)) || li_fail "$nkw messages with keywords project-x / \$Later, want 4"
li_ok "server: $total messages in $nfolders folders, hierarchy, non-ASCII name, keywords, From lines"

li_env ex
li_account exacct "$U1" "$U1-pw"
li_stages start >/dev/null || li_fail "stages start"
job=$(li_import exacct)
li_wait_job "$job" 120
li_stages stop >/dev/null
"$MB" messages exacct --json | jq -r '[.folder, .uid, .sha256] | @tsv' | sort >"$W/db.loc"
[[ $(wc -l <"$W/db.loc") == "$total" ]] || li_fail "$(wc -l <"$W/db.loc") stored locations, server $total"
li_ok "imported: job $job, $total locations"

# check.py DIR FORMAT: the index against `mailbus messages` ($W/db.loc) and every
# file against the index and the blob store; prints the index's line count.
cat >"$W/check.py" <<'EOF'
import hashlib, mailbox, os, re, sys
d, fmt, dbloc, blobs = sys.argv[1:5]
def blob(sha):
    with open(os.path.join(blobs, sha[:2], sha), 'rb') as f:
        return f.read()
def die(msg):
    sys.exit('check.py %s: %s' % (fmt, msg))
with open(os.path.join(d, 'mailbus-export.tsv'), 'rb') as f:
    lines = f.read().decode('utf-8').split('\n')
if lines[0] != 'path\tsha256\tsize\tfolder\tuidvalidity\tuid\tflags\tmbox_offset\tmbox_end' or lines[-1] != '':
    die('bad index header or end')
rows = [l.split('\t') for l in lines[1:-1]]
if any(len(r) != 9 for r in rows):
    die('an index line without 9 fields')
with open(dbloc, encoding='utf-8') as f:
    want = sorted(tuple(l.rstrip('\n').split('\t')) for l in f)
got = sorted((r[3], r[5], r[1]) for r in rows)
if got != want:
    die('index (folder, uid, sha256) != mailbus messages: %d vs %d lines, first diff %s' % (
        len(got), len(want), next(((a, b) for a, b in zip(got, want) if a != b), None)))
if fmt in ('maildir', 'eml'):
    for r in rows:
        with open(os.path.join(d, r[0]), 'rb') as f:
            data = f.read()
        h = hashlib.sha256(data).hexdigest()
        if h != r[1] or len(data) != int(r[2]) or hashlib.sha256(blob(r[1])).hexdigest() != h:
            die('%s: sha256 %s size %d, index %s %s' % (r[0], h, len(data), r[1], r[2]))
else:
    paths = {}
    for r in rows:
        paths.setdefault(r[0], []).append(r)
    quoted = re.compile(rb'(?m)^>(>*From )')
    for path, rs in paths.items():
        full = os.path.join(d, path)
        box = mailbox.mbox(full, create=False)
        msgs = [box.get_bytes(k) for k in box.keys()]
        box.close()
        if len(msgs) != len(rs):
            die('%s: mailbox.mbox reads %d messages, the index lists %d' % (path, len(msgs), len(rs)))
        with open(full, 'rb') as f:
            raw = f.read()
        pos = 0
        for m, r in zip(msgs, rs):
            b = blob(r[1])
            if len(b) != int(r[2]) or hashlib.sha256(b).hexdigest() != r[1]:
                die('blob %s differs from the index' % r[1])
            if quoted.sub(rb'\1', m) != (b if b.endswith(b'\n') else b + b'\n'):
                die('%s uid %s: the message read back is not the stored .eml' % (path, r[5]))
            off, end = int(r[7]), int(r[8])
            if off != pos or not raw[off:end].startswith(b'From mailbus@localhost ') or not raw[off:end].endswith(b'\n\n'):
                die('%s uid %s: offsets %d-%d do not frame the message' % (path, r[5], off, end))
            pos = end
        if pos != len(raw):
            die('%s: %d bytes, the index ends at %d' % (path, len(raw), pos))
print(len(rows))
EOF
check() { python3 "$W/check.py" "$1" "$2" "$W/db.loc" "$MAILBUS_BLOB_DIR" || li_fail "$2 export in $1 fails the checks"; }
# export FORMAT DIR [ARGS]: run it, the JSON summary in $W/last.json; sets ex_rc.
export_run() {
  local fmt=$1 dir=$2; shift 2
  ex_rc=0
  "$MB" export exacct --format "$fmt" "$dir" --json "$@" >"$W/last.json" 2>"$W/last.err" || ex_rc=$?
}
# summary: "written skipped failed" of the last run.
summary() { jq -r '"\(.written) \(.skipped) \(.failed)"' "$W/last.json"; }
# per_folder STATE SHA: folder, size, internal date, flags, sha256 — without UIDs.
per_folder() {
  awk -F'\t' 'NR == FNR { sha[$1 "\t" $2] = $3; next } { print $1 "\t" $4 "\t" $3 "\t" $5 "\t" sha[$1 "\t" $2] }' "$2" "$1" | sort
}
per_folder "$W/s1" "$W/sha1" >"$W/want.pf"
# user2_state TAG: the second user's server state, compared with the first's.
user2_state() {
  "$LI_SRC/scripts/services" imap-user "$U2" "$U2-pw" >/dev/null || li_fail "imap-user $U2"
  MB_IMAP_USER=$U2 MB_IMAP_PASSWORD=$U2-pw li_server_state "$W/s2.$1"
  MB_IMAP_USER=$U2 MB_IMAP_PASSWORD=$U2-pw li_server_sha "$W/sha2.$1" "$W/s2.$1"
  per_folder "$W/s2.$1" "$W/sha2.$1" >"$W/got.pf.$1"
  li_diff "$W/want.pf" "$W/got.pf.$1" "user $U2 (exported Maildir, $1) differs from $U1 (folder, size, date, flags, sha256)"
}

# --- 1. Maildir into a second Dovecot user ---------------------------------------------
doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf" kick "$U2" >/dev/null 2>&1 || true
rm -rf "${MAILBUS_MAIL_ROOT:?}/$U2"
LI_USERS+=("$U2")
M2=$MAILBUS_MAIL_ROOT/$U2/Maildir
t0=$(date +%s%N)
export_run maildir "$M2"
t_maildir=$((($(date +%s%N) - t0) / 1000000))
((ex_rc == 0)) || li_fail "export maildir exited $ex_rc: $(cat "$W/last.err")"
[[ $(summary) == "$total 0 0" ]] || li_fail "maildir summary $(cat "$W/last.json"), want $total written"
[[ -d $M2/.Projects.2024/cur && -d "$M2/.Entw&APw-rfe/cur" && -s $M2/dovecot-keywords ]] ||
  li_fail "Maildir++ layout: $(cd "$M2" && ls -a | tr '\n' ' ')"
[[ -z $(cd "$M2" && find . -path '*/tmp/*' -type f) ]] || li_fail "files left in tmp/"
check "$M2" maildir >/dev/null
user2_state first
li_ok "maildir: $total messages in ${t_maildir} ms; Dovecot serves $U2 the same folders, sizes, dates, flags, keywords and bytes as $U1"

# --- 2. mbox ------------------------------------------------------------------------------
t0=$(date +%s%N)
export_run mbox "$W/mbox"
t_mbox=$((($(date +%s%N) - t0) / 1000000))
((ex_rc == 0)) || li_fail "export mbox exited $ex_rc: $(cat "$W/last.err")"
[[ $(summary) == "$total 0 0" ]] || li_fail "mbox summary $(cat "$W/last.json")"
[[ -f $W/mbox/Projects/2024.mbox && -f $W/mbox/Entwürfe.mbox && -f $W/mbox/INBOX.mbox ]] ||
  li_fail "mbox files: $(cd "$W/mbox" && find . -type f | tr '\n' ' ')"
grep -q '^>From the first line of the body' "$W/mbox/INBOX.mbox" && grep -q '^>>>>From deep' "$W/mbox/Entwürfe.mbox" ||
  li_fail "mboxrd quoting not applied"
check "$W/mbox" mbox >/dev/null
li_ok "mbox: $total messages in ${t_mbox} ms; mailbox.mbox reads each back, unquoted, as the stored .eml"

# --- 3. eml -------------------------------------------------------------------------------
t0=$(date +%s%N)
export_run eml "$W/eml"
t_eml=$((($(date +%s%N) - t0) / 1000000))
((ex_rc == 0)) || li_fail "export eml exited $ex_rc: $(cat "$W/last.err")"
[[ $(summary) == "$total 0 0" ]] || li_fail "eml summary $(cat "$W/last.json")"
[[ $(find "$W/eml" -name '*.eml' | wc -l) == "$total" ]] || li_fail "$(find "$W/eml" -name '*.eml' | wc -l) .eml files"
check "$W/eml" eml >/dev/null
li_ok "eml: $total files in ${t_eml} ms, each hashing to the index and its blob"

# --folders and --since; usage errors.
export_run eml "$W/eml-sub" --folders Sent,Projects/2024 --since 2024-01-01
want=$(li_sql "SELECT count(*) FROM email_locations l JOIN folders f ON f.id = l.folder_id
               WHERE f.name IN ('Sent', 'Projects/2024') AND l.internal_date >= '2024-01-01 00:00:00+00'")
((ex_rc == 0)) && [[ $(summary) == "$want 0 0" ]] || li_fail "--folders --since: rc $ex_rc $(cat "$W/last.json"), want $want"
((want > 0)) || li_fail "--since 2024-01-01 leaves no message in Sent and Projects/2024: pick another date"
[[ $(find "$W/eml-sub" -name '*.eml' | wc -l) == "$want" &&
   -z $(cd "$W/eml-sub" && find . -name '*.eml' | grep -v '^\./Sent/[0-9]*\.eml$\|^\./Projects/2024/[0-9]*\.eml$') ]] ||
  li_fail "--folders wrote $(cd "$W/eml-sub" && find . -name '*.eml' | head -5)"
export_run eml "$W/x" --folders Nope
((ex_rc == 1)) && grep -q "no folder 'Nope'" "$W/last.err" || li_fail "unknown folder: rc $ex_rc $(cat "$W/last.err")"
export_run tar "$W/x"
((ex_rc == 2)) || li_fail "--format tar: rc $ex_rc"
li_ok "--folders Sent,Projects/2024 --since 2024-01-01: $want messages; unknown folder 1, bad format 2"

# --- 4. resume ----------------------------------------------------------------------------
export_run maildir "$M2"
((ex_rc == 0)) && [[ $(summary) == "0 $total 0" ]] || li_fail "maildir again: rc $ex_rc $(cat "$W/last.json"), want all skipped"
export_run mbox "$W/mbox"
((ex_rc == 0)) && [[ $(summary) == "0 $total 0" ]] || li_fail "mbox again: rc $ex_rc $(cat "$W/last.json"), want all skipped"
li_ok "run again: 0 written, $total skipped (Maildir after Dovecot read it, mbox)"

mapfile -t gone < <(cd "$M2" && find . -path '*/cur/*' -type f | sort | awk 'NR % 60 == 7' | head -3)
((${#gone[@]} == 3)) || li_fail "picking Maildir files"
(cd "$M2" && rm -- "${gone[@]}")
mapfile -t gone < <(cd "$W/eml" && find . -name '*.eml' | sort | awk 'NR % 50 == 3' | head -3)
(cd "$W/eml" && rm -- "${gone[@]}")
# Cut INBOX.mbox 10 bytes into its middle message: that one and every later one go.
read -r n_in cut n_after < <(awk -F'\t' '$1 == "INBOX.mbox" { o[++n] = $8 } END { k = int(n / 2); print n, o[k] + 10, n - k + 1 }' "$W/mbox/mailbus-export.tsv")
truncate -s "$cut" "$W/mbox/INBOX.mbox"
export_run maildir "$M2"
((ex_rc == 0)) && [[ $(summary) == "3 $((total - 3)) 0" ]] || li_fail "maildir resume: rc $ex_rc $(cat "$W/last.json"), want 3 written"
export_run eml "$W/eml"
((ex_rc == 0)) && [[ $(summary) == "3 $((total - 3)) 0" ]] || li_fail "eml resume: rc $ex_rc $(cat "$W/last.json"), want 3 written"
export_run mbox "$W/mbox"
((ex_rc == 0)) && [[ $(summary) == "$n_after $((total - n_after)) 0" ]] ||
  li_fail "mbox resume: rc $ex_rc $(cat "$W/last.json"), want $n_after written (INBOX.mbox: $n_in messages, cut at $cut)"
check "$M2" maildir >/dev/null
check "$W/eml" eml >/dev/null
check "$W/mbox" mbox >/dev/null
user2_state resumed
li_ok "3 Maildir and 3 .eml files deleted, INBOX.mbox cut inside message $((n_in - n_after + 1)) of $n_in: exactly those written again, all checks pass"

# A run that dies after cutting mboxes: a full mbox export, then one with --since (every
# folder's mbox cut and rewritten with fewer messages) that fails at Sent.mbox (a
# directory there), leaving the full export's index. The cut journal must keep the next
# run from taking the rewritten files for what that index describes.
export_run mbox "$W/mboxk"
((ex_rc == 0)) || li_fail "mbox into mboxk: rc $ex_rc"
mv "$W/mboxk/Sent.mbox" "$W/Sent.mbox.away" && mkdir "$W/mboxk/Sent.mbox"
export_run mbox "$W/mboxk" --since 2024-06-01
((ex_rc == 1)) && grep -q 'Sent.mbox' "$W/last.err" || li_fail "the run meant to die at Sent.mbox: rc $ex_rc $(cat "$W/last.err")"
[[ -s $W/mboxk/mailbus-export.tsv.cuts && ! -e $W/mboxk/mailbus-export.tsv.tmp ]] ||
  li_fail "after the failed run: no cut journal, or its unfinished index left"
rmdir "$W/mboxk/Sent.mbox" && mv "$W/Sent.mbox.away" "$W/mboxk/Sent.mbox"
export_run mbox "$W/mboxk"
((ex_rc == 0)) || li_fail "mbox after the failed run: rc $ex_rc $(cat "$W/last.err")"
check "$W/mboxk" mbox >/dev/null
[[ ! -e $W/mboxk/mailbus-export.tsv.cuts ]] || li_fail "the cut journal outlived a completed run"
li_ok "a run failing after cutting mboxes (--since, then Sent.mbox unwritable): the next one rebuilds them right ($(summary) written/skipped/failed)"

# --- 5. a missing blob --------------------------------------------------------------------
IFS=$'\t' read -r mfolder muid msha < <(li_sql "SELECT f.name, l.uid, encode(e.blob_sha256, 'hex')
  FROM email_locations l JOIN emails e ON e.id = l.email_id JOIN folders f ON f.id = l.folder_id
  WHERE (SELECT count(*) FROM email_locations l2 WHERE l2.email_id = e.id) = 1 ORDER BY f.name, l.uid LIMIT 1")
rm "$MAILBUS_BLOB_DIR/${msha:0:2}/$msha"
export_run eml "$W/eml-missing"
((ex_rc == 1)) || li_fail "missing blob: export exited $ex_rc, want 1"
grep -q "folder '$mfolder' uid $muid: blob $msha is missing" "$W/last.err" || li_fail "the error does not name the blob: $(cat "$W/last.err")"
[[ $(summary) == "$((total - 1)) 0 1" ]] || li_fail "missing blob summary $(cat "$W/last.json")"
[[ $(find "$W/eml-missing" -name '*.eml' | wc -l) == $((total - 1)) && ! -e $W/eml-missing/$mfolder/$muid.eml ]] ||
  li_fail "missing blob: $(find "$W/eml-missing" -name '*.eml' | wc -l) files written"
[[ $(($(wc -l <"$W/eml-missing/mailbus-export.tsv") - 1)) == $((total - 1)) ]] || li_fail "missing blob: index lines"
li_ok "blob $msha deleted: exit 1 naming it ($mfolder uid $muid), the other $((total - 1)) written and indexed"
li_log "export timings for $total messages: maildir ${t_maildir} ms, mbox ${t_mbox} ms, eml ${t_eml} ms"
