#!/usr/bin/env bash
# test_decode.sh — `mailbus decode` turns msgpack records into JSON, the way
# `nats stream view STREAM --translate 'mailbus decode'` runs it (payload on
# stdin, JSON on stdout). Fixture-driven: tests/fixtures/records/
#   NAME.msgpack + NAME.json   decode must print exactly NAME.json
#   NAME.msgpack + NAME.err    decode must exit 1, stderr containing NAME.err
# If `mailbus encode` is registered, every NAME.json must also encode back to
# a record that decodes to the same JSON. Needs no services.
set -u
MB_BIN=${MB_BIN:?MB_BIN must point at the build bin directory}
SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
FIX=$SRC/tests/fixtures/records
MB=$MB_BIN/mailbus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0 checked=0

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

for rec in "$FIX"/*.msgpack; do
    name=${rec%.msgpack}
    checked=$((checked + 1))
    if [ -f "$name.json" ]; then
        if ! "$MB" decode <"$rec" >"$tmp/out" 2>"$tmp/err"; then
            fail "$(basename "$rec"): decode failed: $(cat "$tmp/err")"
        elif ! cmp -s "$tmp/out" "$name.json"; then
            fail "$(basename "$rec"): output differs"
            diff "$name.json" "$tmp/out" >&2
        fi
        # --pretty is the same data, indented.
        if ! "$MB" decode --pretty <"$rec" >"$tmp/pretty" || [ "$(wc -l <"$tmp/pretty")" -lt 3 ]; then
            fail "$(basename "$rec"): --pretty"
        fi
    elif [ -f "$name.err" ]; then
        "$MB" decode <"$rec" >"$tmp/out" 2>"$tmp/err"
        rc=$?
        [ $rc -eq 1 ] || fail "$(basename "$rec"): exit $rc, want 1"
        [ -s "$tmp/out" ] && fail "$(basename "$rec"): printed output for a bad record"
        grep -qF -- "$(cat "$name.err")" "$tmp/err" ||
            fail "$(basename "$rec"): stderr '$(cat "$tmp/err")' lacks '$(cat "$name.err")'"
        grep -q '^mailbus decode: ' "$tmp/err" || fail "$(basename "$rec"): stderr not prefixed"
    else
        fail "$(basename "$rec") has neither .json nor .err"
    fi
done
[ $checked -ge 5 ] || fail "only $checked fixtures found in $FIX"

# Usage and bad input.
"$MB" decode --help >"$tmp/help" && grep -q 'usage: mailbus decode' "$tmp/help" || fail "decode --help"
"$MB" decode </dev/null 2>"$tmp/err"; [ $? -eq 1 ] || fail "empty input must fail"
head -c $((16 * 1024 * 1024 + 1)) /dev/zero | "$MB" decode 2>"$tmp/err"
[ $? -eq 1 ] && grep -q 'exceeds' "$tmp/err" || fail "oversized input: $(cat "$tmp/err")"

# encode <-> decode, when the subcommand is registered.
if "$MB" encode --help >/dev/null 2>&1; then
    for js in "$FIX"/*.json; do
        schema=$(sed -n 's/^{"schema":"\([^"]*\)".*/\1/p' "$js")
        "$MB" encode "$schema" <"$js" >"$tmp/rec" || { fail "encode $(basename "$js")"; continue; }
        "$MB" decode <"$tmp/rec" >"$tmp/out" && cmp -s "$tmp/out" "$js" ||
            fail "encode/decode round trip of $(basename "$js")"
    done
    echo '{"o":"import.start","a":"alice"}' | "$MB" encode cmd/1 | "$MB" decode >"$tmp/out"
    grep -q '"op":"import.start","account":"alice"' "$tmp/out" || fail "short keys via encode"
else
    echo "note: mailbus encode not registered; skipped encode round trips"
fi

if [ $fails -ne 0 ]; then
    echo "test_decode: $fails failure(s)" >&2
    exit 1
fi
echo "test_decode: ok ($checked fixtures)"
