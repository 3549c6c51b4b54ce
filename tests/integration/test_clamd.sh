#!/usr/bin/env bash
# test_clamd.sh — av/clamd.c against the real local clamd (scripts/services):
# EICAR found (plain, with trailing newline, inside a larger stream, fed in
# 1-7 byte writes with 3-byte chunks so chunk boundaries cut the signature),
# a clean 10 MB stream passes, the size-limit error is a verdict, a missing
# socket fails fast with a message naming it, a garbage reply is rejected,
# a server that never answers times out.
set -euo pipefail

: "${MB_BIN:?MB_BIN must point at the bin directory of a build}"
TOOL=$MB_BIN/mb-test-clamd_tool
SOCK=${MAILBUS_CLAMD_SOCKET:?run with the variables from scripts/services env}

# clamd may still be loading its database right after `scripts/services start`.
for _ in $(seq 60); do
  "$TOOL" --socket "$SOCK" ping >/dev/null 2>&1 && break
  sleep 1
done
"$TOOL" --socket "$SOCK" ping | grep -qx PONG

T=$(mktemp -d)
cleanup() {
  rm -rf "$T"
  if [[ -n ${FAKE_PID:-} ]]; then kill "$FAKE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
fails=0
check() { # name expected-regex actual
  if [[ $3 =~ $2 ]]; then echo "ok   $1"; else echo "FAIL $1: got '$3', want /$2/"; fails=$((fails + 1)); fi
}

EICAR='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
printf '%s' "$EICAR" >"$T/eicar"
printf '%s\n' "$EICAR" >"$T/eicar-nl"
{ head -c 100000 /dev/urandom | base64; printf '%s\r\n' "$EICAR"; head -c 100000 /dev/urandom | base64; } >"$T/eicar-inside"
head -c 10000000 /dev/urandom >"$T/clean"

check "eicar" '^INFECTED .*EICAR' "$("$TOOL" --socket "$SOCK" scan "$T/eicar")"
check "eicar + newline" '^INFECTED .*EICAR' "$("$TOOL" --socket "$SOCK" scan "$T/eicar-nl")"
check "eicar split 1-7 byte writes, 3-byte chunks" '^INFECTED .*EICAR' \
  "$("$TOOL" --socket "$SOCK" --writes 7 --chunk 3 scan "$T/eicar")"
check "eicar+nl split 1-7 byte writes, 5-byte chunks" '^INFECTED .*EICAR' \
  "$("$TOOL" --socket "$SOCK" --writes 7 --chunk 5 scan "$T/eicar-nl")"
check "eicar inside 270 KB, 1-7 byte writes, 7-byte chunks" '^INFECTED .*EICAR' \
  "$("$TOOL" --socket "$SOCK" --writes 7 --chunk 7 scan "$T/eicar-inside")"
check "clean 10 MB" '^CLEAN$' "$("$TOOL" --socket "$SOCK" scan "$T/clean")"
check "clean 10 MB, odd writes" '^CLEAN$' "$("$TOOL" --socket "$SOCK" --writes 100000 scan "$T/clean")"

# Beyond clamd's StreamMaxLength (64M in scripts/services): an ERROR verdict, not a failure.
check "over size limit" '^ERROR .*size limit' \
  "$(head -c 70000000 /dev/zero | "$TOOL" --socket "$SOCK" scan -)"

# clamd down: fast, non-zero, message names the socket.
start=$(date +%s%N)
set +e
err=$("$TOOL" --socket "$T/no-such.sock" --timeout 2000 scan "$T/eicar" 2>&1 >/dev/null)
rc=$?
set -e
ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "missing socket exit code" '^[1-9]' "$rc"
check "missing socket message" "no-such\\.sock.*(No such file|not running)" "$err"
check "missing socket is quick (${ms} ms)" '^ok$' "$([[ $ms -lt 1500 ]] && echo ok || echo slow)"

# A server that is not clamd: the reply is rejected as invalid, not taken as a verdict.
# (python3 is installed by scripts/install-deps.)
python3 - "$T/fake.sock" <<'PY' &
import socket, sys, time
# Connections: PING, scan (garbage reply), PING, scan (never answers), PING,
# scan ("PROTOCOL ERROR", as a clamd being stopped answered in scripts/chaos).
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(6)
held = []
for i in range(6):
    c, _ = s.accept()
    c.settimeout(5)
    try:
        c.recv(65536)
    except Exception:
        pass
    if i == 3:
        held.append(c)  # silent: left open, unanswered
        continue
    c.sendall(b"hello there, I am not clamd\0" if i == 1 else
              b"PROTOCOL ERROR: ancillary data sent without attached file. ERROR\0" if i == 5 else
              b"PONG\0")
    c.close()
time.sleep(1)
PY
FAKE_PID=$!
for _ in $(seq 50); do [[ -S $T/fake.sock ]] && break; sleep 0.1; done
set +e
err=$("$TOOL" --socket "$T/fake.sock" --timeout 3000 scan "$T/eicar" 2>&1 >/dev/null)
rc=$?
set -e
check "garbage reply rejected" '^1$' "$rc"
check "garbage reply message" 'invalid.*unexpected reply' "$err"
set +e
err=$("$TOOL" --socket "$T/fake.sock" --timeout 500 scan "$T/eicar" 2>&1 >/dev/null)
rc=$?
set -e
check "silent server times out" '^1$' "$rc"
check "silent server message" 'timeout.*fake\.sock.*500 ms' "$err"
# Only a size limit is a verdict about the stream; another ERROR is retried later.
set +e
out=$("$TOOL" --socket "$T/fake.sock" --timeout 3000 scan "$T/eicar" 2>&1)
rc=$?
set -e
check "protocol error is not a verdict" '^1$' "$rc"
check "protocol error message" 'net.*PROTOCOL ERROR.*tried again later' "$out"

if ((fails)); then echo "test_clamd: $fails failure(s)"; exit 1; fi
echo "test_clamd: all passed"
