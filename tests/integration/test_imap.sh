#!/usr/bin/env bash
# test_imap.sh — the IMAP source (sources/imap) against the project's Dovecot:
# folders and roles, EXAMINE state, scan (sizes, dates, flags, exact since/until),
# byte-exact fetch that never sets \Seen, imaps + STARTTLS with certificate
# checks, error classes (auth, not found, config, network), a connection killed
# mid-FETCH, and peak memory fetching a 30 MB message.
# Needs: MB_BIN (built helpers), the services running (scripts/services start).
set -euo pipefail
export LC_ALL=C

: "${MB_BIN:?MB_BIN must point at the build bin directory}"
SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
T=$MB_BIN/mb-test-imap_tool
[[ -x $T ]] || { echo "FAIL: $T not built"; exit 1; }
if [[ -z ${MAILBUS_IMAP_PORT:-} || -z ${MAILBUS_RUN_DIR:-} ]]; then
  eval "$("$SRC/scripts/services" env)"
fi
grep -Eq '^dovecot +up' <("$SRC/scripts/services" status 2>/dev/null || true) ||
  { echo "FAIL: dovecot is not running (scripts/services start)"; exit 1; }

USER_NAME=imaptest1
export MB_IMAP_USER=$USER_NAME MB_IMAP_PASSWORD=imaptest1-pw MAILBUS_LOG_LEVEL=warn
DOVEADM="doveadm -c $MAILBUS_RUN_DIR/dovecot/dovecot.conf"
W=$(mktemp -d /tmp/test_imap.XXXXXX)
trap 'rm -rf "$W"' EXIT

pass=0
fail() { echo "FAIL: $*"; exit 1; }
ok() { pass=$((pass + 1)); echo "ok   $*"; }
# run EXPECTED_RC CMD...: run with a hard timeout, capture stdout/stderr in $W/out, $W/err
run() {
  local want=$1; shift
  local rc=0
  timeout 120 "$@" >"$W/out" 2>"$W/err" || rc=$?
  [[ $rc == "$want" ]] || { echo "--- stdout"; head -20 "$W/out"; echo "--- stderr"; cat "$W/err"; fail "exit $rc, wanted $want: $*"; }
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# A clean mailbox for this user every run (nothing else uses this user).
$DOVEADM kick "$USER_NAME" >/dev/null 2>&1 || true
rm -rf "${MAILBUS_MAIL_ROOT:?}/$USER_NAME"
"$SRC/scripts/services" imap-user "$USER_NAME" "$MB_IMAP_PASSWORD" >/dev/null

# ---- seed messages (all via IMAP APPEND through the source) -----------------
crlf() { sed 's/$/\r/'; }
D1=1705312800 D2=1705399200 D3=1705399201 D4=1705485600 D5=1705572000
printf 'From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: plain one\nDate: Mon, 15 Jan 2024 10:00:00 +0000\nMessage-ID: <m1@example.com>\n\nHello Bob.\n' | crlf >"$W/m1.eml"
printf 'From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>\nTo: Zoë <zoe@example.com>\nSubject: Grüße aus Köln — ünïcödé\nDate: Tue, 16 Jan 2024 10:00:00 +0000\nMessage-ID: <m2@example.com>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nSchöne Grüße, 日本語のテキスト.\n' | crlf >"$W/m2.eml"
{ printf 'From: bin@example.com\r\nSubject: 8bit\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
  { head -c 20000 /dev/urandom | tr -d '\000\r\n' | fold -w 200; echo; } | crlf; } >"$W/m3.eml"
{ printf 'From: big@example.com\r\nSubject: five megabytes\r\nMessage-ID: <m4@example.com>\r\n\r\n'
  head -c 3800000 /dev/urandom | base64 -w 76 | crlf; } >"$W/m4.eml"
# NUL bytes and bare LFs: Dovecot may normalise these, so the reference is what
# an independent client receives, not the file.
printf 'From: nul@example.com\nSubject: nul and bare LF\n\nline\000with NUL\nbare LF\r\nCRLF\n\200\377 high bytes\n' >"$W/m5.eml"

run 0 "$T" append INBOX "$W/m1.eml" $D1 '\Seen' '$Label1'
run 0 "$T" append INBOX "$W/m2.eml" $D2
run 0 "$T" append INBOX "$W/m3.eml" $D3 '\Flagged'
run 0 "$T" append INBOX "$W/m4.eml" $D4
run 0 "$T" append INBOX "$W/m5.eml" $D5
run 0 "$T" create 'Entw&APw-rfe'
run 0 "$T" create 'Projects/2024'
run 0 "$T" create 'R&-D &2D3eAA-'
run 0 "$T" append 'Entw&APw-rfe' "$W/m2.eml" $D2 '\Seen'
run 0 "$T" append 'Entw&APw-rfe' "$W/m1.eml" $D1
ok "seeded INBOX (5) and Entw&APw-rfe (2) via APPEND"

# ---- folders and roles -----------------------------------------------------
run 0 "$T" folders
for want in $'INBOX\tINBOX\tinbox' $'Sent\tSent\tsent' $'Drafts\tDrafts\tdrafts' $'Trash\tTrash\ttrash' \
            $'Junk\tJunk\tjunk' $'Archive\tArchive\tarchive' $'Entw&APw-rfe\tEntwürfe\t-' \
            $'Projects/2024\tProjects/2024\t-\t/' $'R&-D &2D3eAA-\tR&D \xf0\x9f\x98\x80\t-'; do
  grep -qF "$want" "$W/out" || { cat "$W/out"; fail "folders: no line starting '$want'"; }
done
ok "folders listed with SPECIAL-USE roles, modified UTF-7 decoded for display"

# ---- open_folder -----------------------------------------------------------
run 0 "$T" status INBOX
read -r uv un ex hm < <(sed -E 's/[a-z]+=//g' "$W/out")
[[ $uv -gt 0 && $hm -gt 0 && $un == 6 && $ex == 5 ]] || fail "status INBOX: $(cat "$W/out")"
ok "EXAMINE INBOX: uidvalidity=$uv uidnext=$un exists=$ex highestmodseq=$hm"
run 19 "$T" status 'No/Such/Folder'
grep -q "not found" "$W/err" && grep -q "No/Such/Folder" "$W/err" && grep -q EXAMINE "$W/err" ||
  fail "missing folder message: $(cat "$W/err")"
ok "missing folder -> MB_ERR_NOTFOUND naming folder and command"

# ---- byte-exact fetch; \Seen untouched --------------------------------------
run 0 "$T" scan INBOX
cp "$W/out" "$W/scan_before"
[[ $(wc -l <"$W/scan_before") == 5 ]] || fail "scan: $(cat "$W/scan_before")"
run 0 "$T" fetch INBOX 1 2 3 4 5
cp "$W/out" "$W/fetch"
for i in 1 2 3 4; do
  line=$(awk -v u=$i '$1 == u' "$W/fetch")
  [[ $line == "$i $(size "$W/m$i.eml") $(sha "$W/m$i.eml")" ]] || fail "fetch uid $i: '$line' vs file $(size "$W/m$i.eml") $(sha "$W/m$i.eml")"
done
ok "fetch: SHA-256 of UIDs 1-4 (ASCII, UTF-8 headers, 8-bit, 5 MB) equals the APPENDed bytes"
if command -v python3 >/dev/null 2>&1; then
  cat >"$W/raw_fetch.py" <<'EOF'
import hashlib, imaplib, sys
h, p, u, pw = sys.argv[1:5]
m = imaplib.IMAP4(h, int(p)); m.login(u, pw); m.select("INBOX", readonly=True)
typ, data = m.uid("FETCH", "5", "(BODY.PEEK[])")
body = [d[1] for d in data if isinstance(d, tuple)][0]
print(len(body), hashlib.sha256(body).hexdigest()); m.logout()
EOF
  ref=$(python3 "$W/raw_fetch.py" "$MAILBUS_IMAP_HOST" "$MAILBUS_IMAP_PORT" "$MB_IMAP_USER" "$MB_IMAP_PASSWORD")
  ours=$(awk '$1 == 5 {print $2, $3}' "$W/fetch")
  [[ $ours == "$ref" ]] || fail "uid 5 with NUL and bare LF: ours '$ours' vs raw client '$ref'"
  ok "fetch: message with NUL bytes / bare LF byte-identical to an independent raw client ($ref)"
else
  echo "skip python3 missing: no independent raw-client comparison for uid 5"
fi
# Scan sizes equal the fetched lengths (RFC822.SIZE is what FETCH BODY[] returns).
for i in 1 2 3 4 5; do
  s=$(awk -v u=$i '$1 == u {print $2}' "$W/scan_before"); f=$(awk -v u=$i '$1 == u {print $2}' "$W/fetch")
  [[ -n $s && $s == "$f" ]] || fail "uid $i: scan size $s, fetched $f"
done
ok "scan: every UID with RFC822.SIZE equal to the fetched length"
run 0 "$T" scan INBOX
cmp -s "$W/out" "$W/scan_before" || { diff "$W/scan_before" "$W/out"; fail "flags changed by fetch"; }
awk '$1 == 2' "$W/out" | grep -q 'Seen' && fail "uid 2 became \\Seen"
ok "flags identical before/after fetch (uid 2 still unseen)"

# ---- scan details ------------------------------------------------------------
expect_scan() { # expect_scan "UIDS" ARGS...: the UIDs scan returns
  local want=$1; shift
  run 0 "$T" scan INBOX "$@"
  local got; got=$(awk '{print $1}' "$W/out" | xargs)
  [[ $got == "$want" ]] || fail "scan INBOX $*: got '$got', wanted '$want'"
}
want_dates="1 $D1|2 $D2|3 $D3|4 $D4|5 $D5"
got_dates=$(awk '{print $1, $3}' "$W/scan_before" | paste -sd'|')
[[ $got_dates == "$want_dates" ]] || fail "internal dates: $got_dates vs $want_dates"
grep -q '^1 .* \\Seen' "$W/scan_before" && grep -q '^1 .*\$Label1' "$W/scan_before" &&
  grep -q '^3 .*\\Flagged' "$W/scan_before" || fail "flags: $(cat "$W/scan_before")"
ok "scan: INTERNALDATEs exactly as APPENDed, flags \\Seen \$Label1 \\Flagged reported"
expect_scan "2" $D2 $D3            # until is exclusive, one second apart on the same day
expect_scan "2 3" $D2 $((D3 + 1))
expect_scan "3 4 5" $((D2 + 1)) 0
expect_scan "1" 0 $D2
expect_scan "" $((D5 + 1)) 0
ok "scan since/until: exact to the second on INTERNALDATE"

# ---- TLS modes and certificate checks -----------------------------------------
run 0 "$T" --tls imaps fetch INBOX 2 4
diff <(awk '$1 == 2 || $1 == 4' "$W/fetch") "$W/out" >/dev/null || fail "imaps fetch differs"
run 0 "$T" --tls starttls --tls-name localhost fetch 'Entw&APw-rfe' 1
[[ $(cat "$W/out") == "1 $(size "$W/m2.eml") $(sha "$W/m2.eml")" ]] || fail "starttls fetch: $(cat "$W/out")"
ok "imaps and STARTTLS both work, certificate verified against MAILBUS_IMAP_CA_FILE (IP and DNS name)"
run 16 "$T" --tls imaps --ca /etc/ssl/certs/ca-certificates.crt folders
grep -q "not trusted" "$W/err" || fail "untrusted cert: $(cat "$W/err")"
run 16 "$T" --tls starttls --tls-name mail.example.org folders
grep -q "not trusted" "$W/err" || fail "wrong name: $(cat "$W/err")"
ok "untrusted CA and wrong host name -> MB_ERR_NET before any credential is sent"
run 22 "$T" --tls plain --host 192.0.2.1 folders
ok "plain text to a non-loopback host refused (MB_ERR_CONFIG)"

# ---- error classes ---------------------------------------------------------------
start=$(date +%s%N)
MB_IMAP_PASSWORD=wrong-password run 21 "$T" folders
ms=$(( ($(date +%s%N) - start) / 1000000 ))
grep -q "LOGIN" "$W/err" && grep -q "$MAILBUS_IMAP_PORT" "$W/err" || fail "auth message: $(cat "$W/err")"
grep -q wrong-password "$W/err" && fail "password leaked into the error message"
[[ $ms -lt 5000 ]] || fail "wrong password took ${ms} ms"
ok "wrong password -> MB_ERR_AUTH in ${ms} ms, password not in the message"
run 16 "$T" --tls plain --port 1 folders
ok "connection refused -> MB_ERR_NET"

# ---- connection killed mid-FETCH -----------------------------------------------------
# The user's live imap server processes (anvil may still list killed ones).
user_imap_pids() {
  $DOVEADM who 2>/dev/null | awk -v u="$USER_NAME" '$1 == u' | grep -o '([0-9 ]*)' | head -1 | tr -d '()' |
    tr ' ' '\n' | while read -r p; do [[ -n $p ]] && kill -0 "$p" 2>/dev/null && echo "$p"; done || true
}
kill_mid_fetch() { # kill_mid_fetch SIGNAL TLS
  local sig=$1 tls=$2 rc=0 pids
  timeout 120 "$T" --tls "$tls" --repeat 3000 fetch INBOX 4 >"$W/kout" 2>"$W/kerr" &
  local tool=$!
  for _ in $(seq 300); do [[ -s $W/kout ]] && break; sleep 0.1; done
  [[ -s $W/kout ]] || fail "kill test ($sig): fetch never started: $(cat "$W/kerr")"
  pids=$(user_imap_pids)
  [[ -n $pids ]] || fail "no live imap process for $USER_NAME in doveadm who"
  kill -"$sig" $pids
  wait $tool || rc=$?
  [[ $rc == 16 ]] || { cat "$W/kerr"; fail "kill test ($sig, $tls): exit $rc, wanted 16 (MB_ERR_NET)"; }
  grep -q "UID FETCH" "$W/kerr" || fail "kill test: message does not name the command: $(cat "$W/kerr")"
  local n; n=$(wc -l <"$W/kout")
  [[ $n -lt 3000 ]] || fail "kill test: the fetch finished before the kill"
  ok "imap server process sent SIG$sig mid-FETCH over $tls after $n complete messages -> MB_ERR_NET, no crash or hang"
}
kill_mid_fetch KILL starttls
kill_mid_fetch TERM imaps

# ---- a folder bigger than one scan window (10000), written as a Maildir ------------
BULK=imaptest2 N=21000 HALF=10500 DA=1600000000 DB=1650000000
export MB_IMAP_USER=$BULK
$DOVEADM kick "$BULK" >/dev/null 2>&1 || true
rm -rf "${MAILBUS_MAIL_ROOT:?}/$BULK"
md=$MAILBUS_MAIL_ROOT/$BULK/Maildir
mkdir -p "$md"/{cur,new,tmp}
for ((k = 1; k <= N; k++)); do
  printf -v body 'From: bulk@example.com\nSubject: bulk %d\nMessage-ID: <b%d@example.com>\n\nmessage %d\n' $k $k $k
  d=$((k <= HALF ? DA + k : DB + k))
  printf '%s' "$body" >"$md/cur/$d.M${k}P1.bulk:2,S"
done
# Maildir INTERNALDATE is the file's mtime.
python3 - "$md/cur" <<'EOF' 2>/dev/null || (cd "$md/cur" && for f in *; do t=${f%%.*}; touch -d "@$t" "$f"; done)
import os, sys
d = sys.argv[1]
for f in os.listdir(d):
    t = int(f.split(".")[0]); os.utime(os.path.join(d, f), (t, t))
EOF
"$SRC/scripts/services" imap-user "$BULK" "$MB_IMAP_PASSWORD" >/dev/null
start=$(date +%s%N)
run 0 "$T" scan INBOX
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[[ $(wc -l <"$W/out") == "$N" ]] || fail "bulk scan: $(wc -l <"$W/out") lines, wanted $N"
[[ $(awk '{print $1}' "$W/out" | sort -un | wc -l) == "$N" ]] || fail "bulk scan: duplicate UIDs"
[[ $(awk '{print $1}' "$W/out" | sort -n | tail -1) == "$N" ]] || fail "bulk scan: UIDs not 1..$N"
[[ $(awk '$4 == "\\Seen"' "$W/out" | wc -l) == "$N" ]] || fail "bulk scan: flags"
ok "scan of $N messages across 3 windows: every UID once, in ${ms} ms"
run 0 "$T" scan INBOX $DB 0
[[ $(wc -l <"$W/out") == $((N - HALF)) ]] || fail "bulk since: $(wc -l <"$W/out")"
run 0 "$T" scan INBOX $((DA + 10001)) $((DA + 10011))
[[ $(wc -l <"$W/out") == 10 ]] || fail "bulk window-crossing range: $(wc -l <"$W/out") lines"
ok "since/until across window boundaries exact ($((N - HALF)) and 10 messages)"
export MB_IMAP_USER=$USER_NAME

# ---- a server that accepts and never answers: timeout, no hang ------------------------
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(1); print(s.getsockname()[1], flush=True); c,_=s.accept(); time.sleep(30)' >"$W/port" &
  silent=$!
  for _ in $(seq 50); do [[ -s $W/port ]] && break; sleep 0.1; done
  start=$(date +%s%N)
  run 16 "$T" --tls plain --port "$(cat "$W/port")" --timeout 2 folders
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  kill $silent 2>/dev/null || true; wait $silent 2>/dev/null || true
  [[ $ms -lt 10000 ]] || fail "silent server: gave up after ${ms} ms"
  ok "silent server -> MB_ERR_NET after ${ms} ms (timeout 2 s)"
fi

# ---- memory: a 30 MB message ------------------------------------------------------
{ printf 'From: huge@example.com\r\nSubject: thirty megabytes\r\n\r\n'
  head -c 23000000 /dev/urandom | base64 -w 76 | crlf; } >"$W/m30.eml"
run 0 "$T" create Big
run 0 "$T" append Big "$W/m30.eml" $D1
# The literal is read into one allocation of its size and handed over without
# a copy: a plain build peaks at the message plus ~10 MB of process (measured
# 40 MB for 30 MB; heaptrack: 33.9 MB heap). Under ASan, freed TLS buffers sit
# in the quarantine (RSS ~230 MB), so it is switched off for this measurement
# (then ~55 MB: shadow memory on top). Either bound fails on a second copy.
asan=$(ldd "$T" 2>/dev/null | grep -c libasan || true)
if [[ -x /usr/bin/time ]]; then
  ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0" timeout 120 /usr/bin/time -v "$T" fetch Big 1 >"$W/out" 2>"$W/err" ||
    { cat "$W/err"; fail "fetch 30 MB"; }
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$W/err")
else
  run 0 "$T" fetch Big 1; rss_kb=0
fi
[[ $(cat "$W/out") == "1 $(size "$W/m30.eml") $(sha "$W/m30.eml")" ]] || fail "30 MB fetch: $(cat "$W/out")"
mb=$(( $(size "$W/m30.eml") / 1048576 ))
if [[ $asan -gt 0 ]]; then build=asan; limit_kb=$(( (mb + 45) * 1024 )); else build=plain; limit_kb=$(( (mb + 25) * 1024 )); fi
[[ $rss_kb -le $limit_kb ]] || fail "peak RSS ${rss_kb} kB fetching a ${mb} MB message ($build build, limit ${limit_kb} kB)"
ok "fetch of a ${mb} MB message: byte-exact, peak RSS $((rss_kb / 1024)) MB ($build build)"

echo "PASS test_imap ($pass checks)"
