#!/usr/bin/env bash
# test_genmail.sh — mailbus-genmail writes a deterministic, well-formed Maildir++ tree:
# same seed, same bytes, names and mtimes; the folder layout Dovecot expects; the
# folder and flag mix; ,S=/,W= equal to the file size; mtime equal to the Date header;
# EICAR attachments that decode to exactly the test string; a manifest that matches the
# files; --extra-dir copies bytes unchanged; 10,000 messages are 600–900 MB. Needs no
# services (Dovecot's view of the tree is checked by hand, see the report).
set -u
MB_BIN=${MB_BIN:?MB_BIN must point at the build bin directory}
GEN=$MB_BIN/mailbus-genmail
# The 10k size check generates ~750 MB in memory: use the plain build when available.
GEN_FAST=$GEN
[ -x "${MB_PLAIN_BIN:-}/mailbus-genmail" ] && GEN_FAST=$MB_PLAIN_BIN/mailbus-genmail
EICAR='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
count() { find "$1" -maxdepth 1 -type f | wc -l; }

[ -x "$GEN" ] || { echo "FAIL: $GEN not built" >&2; exit 1; }

# --- determinism -----------------------------------------------------------------------
for run in a b; do
    "$GEN" --maildir "$tmp/$run/Maildir" --messages 200 --seed 7 --eicar 2 \
        --manifest "$tmp/$run.manifest" >"$tmp/$run.out" 2>"$tmp/$run.err" ||
        fail "run $run: exit $?: $(cat "$tmp/$run.err")"
done
M=$tmp/a/Maildir
diff -r "$tmp/a" "$tmp/b" >/dev/null || fail "two runs with the same seed differ"
cmp -s "$tmp/a.manifest" "$tmp/b.manifest" || fail "manifests of the two runs differ"
# Message files keep their Date as mtime; directories and marker files are "now", and a
# directory's size depends on the order threads created its entries in.
meta() {
    (cd "$1" && find . -type d -printf '%P %m\n' && find . -type f -printf '%P %m %s\n' &&
        find . -path '*/cur/*' -printf '%P %T@\n') | sort
}
meta "$tmp/a" >"$tmp/a.meta"
meta "$tmp/b" >"$tmp/b.meta"
cmp -s "$tmp/a.meta" "$tmp/b.meta" || fail "names, modes, sizes or mtimes differ between runs"
grep -q '^genmail: 200 messages, [0-9]* bytes, INBOX=120 Sent=40 Archive=30 Drafts=10, ' \
    "$tmp/a.out" || fail "summary line: $(cat "$tmp/a.out")"

"$GEN" --maildir "$tmp/c/Maildir" --messages 200 --seed 8 --manifest "$tmp/c.manifest" \
    >/dev/null 2>&1 || fail "seed 8 run failed"
cmp -s "$tmp/a.manifest" "$tmp/c.manifest" && fail "a different seed gave the same mailbox"

# --- layout ----------------------------------------------------------------------------
for d in "" .Sent .Archive .Drafts; do
    for s in cur new tmp; do
        [ -d "$M/$d/$s" ] || fail "missing directory ${d:-INBOX}/$s"
    done
    [ -z "$d" ] || [ -f "$M/$d/maildirfolder" ] || fail "missing $d/maildirfolder"
done
[ "$(stat -c %a "$M/cur")" = 700 ] || fail "cur/ mode $(stat -c %a "$M/cur"), want 700"
grep -qx Sent "$M/subscriptions" || fail "subscriptions lacks Sent"
[ "$(count "$M/cur")" -eq 120 ] || fail "INBOX has $(count "$M/cur") messages, want 120"
[ "$(count "$M/.Sent/cur")" -eq 40 ] || fail "Sent has $(count "$M/.Sent/cur"), want 40"
[ "$(count "$M/.Archive/cur")" -eq 30 ] || fail "Archive has $(count "$M/.Archive/cur"), want 30"
[ "$(count "$M/.Drafts/cur")" -eq 10 ] || fail "Drafts has $(count "$M/.Drafts/cur"), want 10"
[ "$(find "$M" -path '*/new/*' -type f | wc -l)" -eq 0 ] || fail "files in new/"
[ -z "$(find "$M" -type f -path '*/cur/*' ! -perm 600)" ] || fail "message file not 0600"

# --- flags -----------------------------------------------------------------------------
unseen=$(find "$M/cur" "$M/.Archive/cur" -name '*:2,' | wc -l)
seen=$(find "$M/cur" "$M/.Archive/cur" -name '*:2,S' | wc -l)
flagged=$(find "$M/cur" "$M/.Archive/cur" -name '*:2,FS' | wc -l)
[ "$unseen" -gt 10 ] && [ "$seen" -gt 50 ] && [ "$flagged" -gt 2 ] ||
    fail "flag mix unseen=$unseen seen=$seen flagged=$flagged"
[ "$(find "$M/.Sent/cur" -name '*:2,S' | wc -l)" -eq 40 ] || fail "Sent messages not all \\Seen"
[ "$(find "$M/.Drafts/cur" -name '*:2,DS' | wc -l)" -eq 10 ] || fail "Drafts not all \\Draft \\Seen"
"$GEN" --maildir "$tmp/r0" --messages 200 --seen-ratio 0 >/dev/null || fail "--seen-ratio 0"
[ "$(find "$tmp/r0/cur" -name '*S' | wc -l)" -eq 0 ] || fail "--seen-ratio 0 left \\Seen in INBOX"

# --- every file: name, size, CRLF, mtime, manifest ----------------------------------------
bad=0
# read with IFS=tab would merge the empty flags field away: make it "-" first.
while IFS=$'\t' read -r folder name size sum flags att eicar; do
    [ "$flags" = - ] && flags=
    dir=$M
    [ "$folder" = INBOX ] || dir=$M/.$folder
    f=$dir/cur/$name
    [ -f "$f" ] || { fail "manifest names missing file $folder/$name"; bad=1; break; }
    real=$(stat -c %s "$f")
    [[ $name == *",S=$real,W=$real:2,$flags" ]] || { fail "$name: S/W/flags vs size $real"; bad=1; }
    [ "$size" = "$real" ] || { fail "$name: manifest size $size, file $real"; bad=1; }
    [ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$sum" ] || { fail "$name: sha256 mismatch"; bad=1; }
    [ $bad -eq 0 ] || break
done < <(awk -F'\t' -v OFS='\t' '$5 == "" {$5 = "-"} {print}' "$tmp/a.manifest")
[ "$(wc -l <"$tmp/a.manifest")" -eq 200 ] || fail "manifest has $(wc -l <"$tmp/a.manifest") lines"
[ "$(awk -F'\t' '$6 == 1' "$tmp/a.manifest" | wc -l)" -ge 10 ] || fail "too few attachments"
# CRLF only: no LF without a CR before it.
if grep -rlzP '(?<!\r)\n' "$M" --include='*:2,*' >/dev/null 2>&1; then
    fail "a message has a bare LF line ending"
fi
# mtime equals the Date header (Dovecot's INTERNALDATE for maildir).
for f in $(find "$M" -path '*/cur/*' -type f | sort | head -20); do
    d=$(grep -m1 -a '^Date: ' "$f" | sed 's/^Date: //; s/\r$//')
    [ "$(date -d "$d" +%s)" = "$(stat -c %Y "$f")" ] || fail "$f: mtime != Date '$d'"
done
# Threads: replies point at messages that exist.
ids=$(grep -rha '^Message-ID: ' "$M" | sed 's/^Message-ID: //; s/\r$//' | sort -u | wc -l)
[ "$ids" -eq 200 ] || fail "$ids distinct Message-IDs, want 200"
irt=$(grep -rha '^In-Reply-To: ' "$M" | sed 's/^In-Reply-To: //; s/\r$//' | sort -u)
[ -n "$irt" ] || fail "no replies"
for id in $irt; do
    grep -rqaF "Message-ID: $id" "$M" || { fail "In-Reply-To $id matches no message"; break; }
done
grep -rqa '^Subject: =?UTF-8?B?' "$M" || fail "no UTF-8 B-encoded subject"
grep -rqa '^Subject: =?UTF-8?Q?' "$M" || fail "no UTF-8 Q-encoded subject"
grep -rqa '=?ISO-8859-1?Q?' "$M" || fail "no ISO-8859-1 encoded-word"
grep -rqa "filename\*=UTF-8''" "$M" || fail "no RFC 2231 filename"

# --- EICAR -----------------------------------------------------------------------------
awk -F'\t' '$7 == 1 {print $1 "\t" $2}' "$tmp/a.manifest" >"$tmp/eicar.list"
[ "$(wc -l <"$tmp/eicar.list")" -eq 2 ] || fail "manifest lists $(wc -l <"$tmp/eicar.list") EICAR messages, want 2"
while IFS=$'\t' read -r folder name; do
    dir=$M
    [ "$folder" = INBOX ] || dir=$M/.$folder
    # The base64 body after the eicar.com part headers, up to the closing boundary.
    tr -d '\r' <"$dir/cur/$name" | awk '
        /filename="eicar.com"/ {part = 1; next}
        part == 1 && /^$/ {part = 2; next}
        part == 2 && /^--/ {exit}
        part == 2 {print}' | base64 -d >"$tmp/eicar.bin" 2>/dev/null
    printf '%s' "$EICAR" | cmp -s - "$tmp/eicar.bin" ||
        fail "$name: attachment does not decode to the EICAR string"
done <"$tmp/eicar.list"

# --- extra corpus: bytes copied unchanged ------------------------------------------------
mkdir -p "$tmp/corpus"
printf 'From: a@example.com\nDate: Tue, 1 Mar 2022 14:03:22 +0100\nSubject: lf\n\nbody\n' \
    >"$tmp/corpus/01-lf.eml"
printf 'From: b@example.com\r\nSubject: no date\r\n\r\nbody\r\n' >"$tmp/corpus/02-crlf.eml"
printf 'ignored' >"$tmp/corpus/.hidden"
"$GEN" --maildir "$tmp/x/Maildir" --messages 10 --extra-dir "$tmp/corpus" \
    --extra-folder Corpus --manifest "$tmp/x.manifest" >"$tmp/x.out" 2>&1 ||
    fail "--extra-dir run: $(cat "$tmp/x.out")"
[ "$(count "$tmp/x/Maildir/.Corpus/cur")" -eq 2 ] || fail "Corpus has $(count "$tmp/x/Maildir/.Corpus/cur") files, want 2"
for src in 01-lf 02-crlf; do
    found=0
    for f in "$tmp/x/Maildir/.Corpus/cur"/*; do
        cmp -s "$f" "$tmp/corpus/$src.eml" && found=1
    done
    [ $found -eq 1 ] || fail "corpus file $src.eml not copied byte for byte"
done
lf=$(find "$tmp/x/Maildir/.Corpus/cur" -name '1646139802.*' | head -1)
[ -n "$lf" ] || fail "corpus file's name/mtime does not follow its Date header"
[ "$(grep -c '^Corpus' "$tmp/x.manifest")" -eq 2 ] || fail "manifest lacks the corpus files"

# --- errors ----------------------------------------------------------------------------
"$GEN" --maildir "$tmp/e" --messages 5 --eicar 6 >/dev/null 2>"$tmp/err" && fail "--eicar > --messages accepted"
grep -q -- '--eicar' "$tmp/err" || fail "error does not name --eicar: $(cat "$tmp/err")"
"$GEN" --maildir "$tmp/e" --messages x >/dev/null 2>&1 && fail "--messages x accepted"
"$GEN" --maildir "$tmp/e" --messages 5 --extra-folder .bad --extra-dir "$tmp" >/dev/null 2>&1 &&
    fail "folder .bad accepted"
"$GEN" --maildir "$M" --messages 200 --seed 7 >/dev/null 2>"$tmp/err" &&
    fail "generating over an existing mailbox did not fail"
grep -q 'empty Maildir' "$tmp/err" || fail "overwrite error unclear: $(cat "$tmp/err")"

# --- size mix of 10,000 messages (dry run: generated and counted, not written) -----------
out=$("$GEN_FAST" --maildir "$tmp/big" --messages 10000 --dry-run) || fail "10k dry run failed"
bytes=$(sed -n 's/^genmail: 10000 messages (dry run), \([0-9]*\) bytes.*/\1/p' <<<"$out")
if [ -z "$bytes" ] || [ "$bytes" -lt 600000000 ] || [ "$bytes" -gt 900000000 ]; then
    fail "10,000 messages are ${bytes:-?} bytes, want 600-900 MB ($out)"
fi
[ ! -e "$tmp/big" ] || fail "--dry-run created $tmp/big"

if [ $fails -ne 0 ]; then
    echo "test_genmail: $fails failure(s)" >&2
    exit 1
fi
echo "test_genmail: ok (${bytes} bytes for 10k messages)"
