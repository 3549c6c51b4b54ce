#!/usr/bin/env bash
# test_bus.sh — the bus against a real nats-server (JetStream): work sharing,
# retry delay, dead-lettering, deduplication and graceful SIGTERM, driven
# through the helper programs mb-test-bus_ctl and mb-test-bus_worker.
#
# Needs MB_BIN (helper binaries and `mailbus`) and MAILBUS_NATS_URL (from
# `scripts/services env`). Uses its own subject prefix and deletes its
# streams at the end, so it never touches another run's data.
set -euo pipefail

: "${MB_BIN:?MB_BIN must point at the bin directory of a build}"
export MAILBUS_PREFIX="tbus$$"
export MAILBUS_LOG_LEVEL="${MAILBUS_LOG_LEVEL:-warn}"
CTL="$MB_BIN/mb-test-bus_ctl"
WORKER="$MB_BIN/mb-test-bus_worker"
CLI="$MB_BIN/mailbus"
T=$(mktemp -d /tmp/test_bus.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    "$CTL" destroy 2>/dev/null || echo "warning: could not delete streams of $MAILBUS_PREFIX" >&2
    rm -rf "$T"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    for f in "$T"/*.err; do [ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
    exit 1
}
pass() { echo "ok: $*"; }

# Wait for a background pid to exit within $2 seconds; its status in $WAITED.
wait_exit() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 10; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            WAITED=0
            wait "$pid" || WAITED=$?
            return 0
        fi
        sleep 0.1
    done
    fail "process $pid did not exit within ${secs}s"
}

count() { "$CTL" count "$1"; }

# Short AckWait and no BackOff schedule so redeliveries happen within the test.
"$CTL" provision --ack-wait 2000 --max-deliver 3 --no-backoff 2>"$T/prov.err" \
    || fail "provision (is nats-server with JetStream at ${MAILBUS_NATS_URL:-default}?)"
# Provisioning twice is a no-op that still verifies the config.
"$CTL" provision --ack-wait 2000 --max-deliver 3 --no-backoff 2>>"$T/prov.err" \
    || fail "second provision (not idempotent)"
pass "provisioned (twice) prefix $MAILBUS_PREFIX"

# (a) 10,000 records, 3 competing workers on one durable: each exactly once.
N=10000
for w in 1 2 3; do
    "$WORKER" --out "$T/a$w.out" --batch 64 --idle-exit 4000 2>"$T/a$w.err" &
    PIDS+=($!)
done
sleep 0.5
"$CTL" publish --from 1 --n $N --async --flush-every 1000 --msgid-prefix a >"$T/pub_a.txt" \
    2>"$T/pub_a.err" || fail "(a) async publish"
grep -q "published=$N " "$T/pub_a.txt" || fail "(a) publisher output: $(cat "$T/pub_a.txt")"
for p in "${PIDS[@]}"; do
    wait_exit "$p" 60
    [ "$WAITED" = 0 ] || fail "(a) worker exited with $WAITED"
done
PIDS=()
total=$(cat "$T"/a[123].out | wc -l)
distinct=$(cat "$T"/a[123].out | sort -u | wc -l)
inrange=$(cat "$T"/a[123].out | sort -u | awk -v n=$N '$1 >= 1 && $1 <= n' | wc -l)
[ "$distinct" -eq $N ] || fail "(a) $distinct distinct ids handled, want $N"
[ "$inrange" -eq $N ] || fail "(a) ids outside 1..$N handled"
[ "$total" -eq $N ] || fail "(a) $total handlings for $N records: some handled twice"
for w in 1 2 3; do
    got=$(wc -l <"$T/a$w.out")
    [ "$got" -gt 0 ] || fail "(a) worker $w handled nothing: work was not shared"
done
[ "$(count FETCH)" -eq 0 ] || fail "(a) work stream not empty: $(count FETCH)"
pass "(a) $N records, 3 workers ($(wc -l <"$T/a1.out")/$(wc -l <"$T/a2.out")/$(wc -l <"$T/a3.out")), each exactly once, stream empty"

# (b) RETRY with a delay comes back no sooner than the delay.
DELAY=1500
"$CTL" publish --from 20001 --n 1 --msgid-prefix b >/dev/null 2>"$T/pub_b.err" || fail "(b) publish"
"$WORKER" --out "$T/b.out" --log "$T/b.log" --retry-id 20001 --retry-delay $DELAY \
    --idle-exit 3500 2>"$T/b.err" &
pid=$!
PIDS=($pid)
wait_exit "$pid" 30
PIDS=()
[ "$WAITED" = 0 ] || fail "(b) worker exited with $WAITED"
t1=$(awk '$1 == 20001 && $2 == 1 { print $3 }' "$T/b.log")
t2=$(awk '$1 == 20001 && $2 == 2 { print $3 }' "$T/b.log")
dc2=$(awk '$1 == 20001' "$T/b.log" | wc -l)
[ -n "$t1" ] && [ -n "$t2" ] || fail "(b) deliveries 1 and 2 not both logged: $(cat "$T/b.log")"
[ "$dc2" -eq 2 ] || fail "(b) $dc2 deliveries logged, want 2: $(cat "$T/b.log")"
gap=$((t2 - t1))
[ "$gap" -ge $DELAY ] || fail "(b) redelivered after ${gap} ms, before the ${DELAY} ms delay"
grep -qx 20001 "$T/b.out" || fail "(b) record not handled on the second delivery"
[ "$(count FETCH)" -eq 0 ] || fail "(b) work stream not empty"
pass "(b) RETRY ${DELAY} ms: second delivery (count 2) after ${gap} ms"

# (c) RETRY forever -> DLQ after MaxDeliver (3); FAIL -> DLQ at once.
"$CTL" publish --from 30001 --n 2 --msgid-prefix c >/dev/null 2>"$T/pub_c.err" || fail "(c) publish"
"$WORKER" --out "$T/c.out" --log "$T/c.log" --always-retry-id 30001 --fail-id 30002 \
    --idle-exit 3000 2>"$T/c.err" &
pid=$!
PIDS=($pid)
wait_exit "$pid" 30
PIDS=()
[ "$WAITED" = 0 ] || fail "(c) worker exited with $WAITED"
[ "$(awk '$1 == 30001' "$T/c.log" | wc -l)" -eq 3 ] \
    || fail "(c) always-retry record delivered $(awk '$1 == 30001' "$T/c.log" | wc -l) times, want 3"
[ "$(awk '$1 == 30002' "$T/c.log" | wc -l)" -eq 1 ] || fail "(c) FAIL record delivered more than once"
[ ! -s "$T/c.out" ] || fail "(c) a failing record was reported handled"
[ "$(count FETCH)" -eq 0 ] || fail "(c) failed records still in the work stream: $(count FETCH)"
[ "$(count DLQ)" -eq 2 ] || fail "(c) DLQ holds $(count DLQ) messages, want 2"
"$CLI" dlq list --json >"$T/dlq.json" 2>"$T/dlq.err" || fail "(c) mailbus dlq list --json failed"
[ "$(wc -l <"$T/dlq.json")" -eq 2 ] || fail "(c) dlq list printed $(wc -l <"$T/dlq.json") lines"
grep '"reason":"transient failure of 30001 (gave up after 3 deliveries)"' "$T/dlq.json" \
    | grep -q '"deliveries":3' || fail "(c) retry-exhausted dead letter wrong: $(cat "$T/dlq.json")"
grep '"reason":"poison record 30002"' "$T/dlq.json" | grep '"deliveries":1' \
    | grep '"stage":"fetch"' | grep -q '"Nats-Msg-Id: c-30002"' \
    || fail "(c) FAIL dead letter wrong: $(cat "$T/dlq.json")"
"$CLI" dlq list >"$T/dlq.txt" 2>>"$T/dlq.err" || fail "(c) mailbus dlq list failed"
grep -q "poison record 30002" "$T/dlq.txt" || fail "(c) table lacks the reason: $(cat "$T/dlq.txt")"
[ "$("$CLI" dlq list --json --stage parse 2>>"$T/dlq.err" | wc -l)" -eq 0 ] \
    || fail "(c) --stage parse should list nothing"
# Listing does not consume.
[ "$(count DLQ)" -eq 2 ] || fail "(c) listing consumed dead letters"
pass "(c) retry-exhausted (3 deliveries) and FAIL records in the DLQ, work stream empty, dlq list shows both"

# (d) Same Nats-Msg-Id again is dropped and reported as a duplicate.
"$CTL" publish --from 40001 --n 10 --msgid-prefix d >"$T/d1.txt" 2>"$T/pub_d.err" || fail "(d) publish"
grep -q "duplicates=0" "$T/d1.txt" || fail "(d) fresh ids reported duplicate: $(cat "$T/d1.txt")"
[ "$(count FETCH)" -eq 10 ] || fail "(d) stream holds $(count FETCH), want 10"
"$CTL" publish --from 40001 --n 10 --msgid-prefix d >"$T/d2.txt" 2>>"$T/pub_d.err" || fail "(d) republish"
grep -q "duplicates=10" "$T/d2.txt" || fail "(d) republish not reported duplicate: $(cat "$T/d2.txt")"
[ "$(count FETCH)" -eq 10 ] || fail "(d) duplicates were stored: $(count FETCH)"
"$WORKER" --out "$T/d.out" --idle-exit 1500 2>"$T/d.err" || fail "(d) drain worker"
[ "$(sort -u "$T/d.out" | wc -l)" -eq 10 ] || fail "(d) drained $(wc -l <"$T/d.out") records, want 10"
[ "$(count FETCH)" -eq 0 ] || fail "(d) stream not empty after drain"
pass "(d) republished ids dropped as duplicates (count stayed 10)"

# (e) SIGTERM in the middle of a slow batch loses nothing.
N=200
"$CTL" publish --from 50001 --n $N --async --msgid-prefix e >/dev/null 2>"$T/pub_e.err" || fail "(e) publish"
"$WORKER" --out "$T/e1.out" --batch 50 --sleep-ms 20 2>"$T/e1.err" &
pid=$!
PIDS=($pid)
for ((i = 0; i < 200; i++)); do
    [ -s "$T/e1.out" ] && [ "$(wc -l <"$T/e1.out")" -ge 60 ] && break
    sleep 0.05
done
# The file grows a batch at a time (50 x 20 ms = 1 s): once two batches are
# on disk, 0.3 s later the worker is in the middle of the third.
sleep 0.3
kill -TERM "$pid"
t0=$(date +%s%N)
wait_exit "$pid" 20
PIDS=()
[ "$WAITED" = 0 ] || fail "(e) worker did not exit cleanly on SIGTERM ($WAITED)"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
first=$(wc -l <"$T/e1.out")
grep -q "finished a batch of 50 after stop was requested" "$T/e1.err" \
    || fail "(e) SIGTERM did not land mid-batch (or the batch was cut short)"
[ "$first" -lt $N ] || fail "(e) worker finished everything before SIGTERM; test proves nothing"
[ $((first % 50)) -eq 0 ] || fail "(e) stopped mid-batch: $first handled, not a whole number of batches"
"$WORKER" --out "$T/e2.out" --batch 50 --idle-exit 2500 2>"$T/e2.err" || fail "(e) restarted worker"
total=$(cat "$T/e1.out" "$T/e2.out" | wc -l)
distinct=$(cat "$T/e1.out" "$T/e2.out" | sort -u | wc -l)
[ "$distinct" -eq $N ] || fail "(e) $distinct of $N records handled: records lost"
[ "$total" -eq $N ] || fail "(e) $total handlings for $N records: the interrupted batch was redone"
[ "$(count FETCH)" -eq 0 ] || fail "(e) stream not empty"
pass "(e) SIGTERM mid-batch: batch finished ($first handled, exit in ${ms} ms), restart handled the rest, $N distinct, none twice"

# (f) With a BackOff schedule (the default one: AckWait 2 s x {1, 2}), a record
# retried twice with a delay of 5 s comes back 5 s after each retry. The server
# brings a nak'ed record back after BackOff[redeliveries] - AckWait + delay:
# without the bus's correction (consume.c nak_delay) the second retry takes 7 s.
# The upper bound leaves 1.5 s for scheduling on a loaded machine.
"$CTL" provision --ack-wait 2000 --max-deliver 3 2>>"$T/prov.err" || fail "(f) provision with a schedule"
DELAY=5000
"$CTL" publish --from 60001 --n 1 --msgid-prefix f >/dev/null 2>"$T/pub_f.err" || fail "(f) publish"
"$WORKER" --out "$T/f.out" --log "$T/f.log" --retry-id 60001 --retry-delay $DELAY --retries 2 \
    --idle-exit 9000 2>"$T/f.err" &
pid=$!
PIDS=($pid)
wait_exit "$pid" 40
PIDS=()
[ "$WAITED" = 0 ] || fail "(f) worker exited with $WAITED"
[ "$(awk '$1 == 60001' "$T/f.log" | wc -l)" -eq 3 ] || fail "(f) want 3 deliveries: $(cat "$T/f.log")"
grep -qx 60001 "$T/f.out" || fail "(f) record not handled on the third delivery"
gaps=""
for k in 2 3; do
    g=$(awk -v k=$k '$1 == 60001 && $2 == k - 1 { a = $3 } $1 == 60001 && $2 == k { b = $3 } END { print b - a }' "$T/f.log")
    [ "$g" -ge $DELAY ] && [ "$g" -lt $((DELAY + 1500)) ] ||
        fail "(f) delivery $k came ${g} ms after the retry, want ${DELAY} ms: $(cat "$T/f.log")"
    gaps+="${g} "
done
pass "(f) BackOff schedule: a record retried twice (${DELAY} ms each) came back after ${gaps}ms"

echo "PASS test_bus"
