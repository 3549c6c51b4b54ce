# lib_chaos.sh — helpers for scripts/chaos, test_chaos.sh and test_total_stop.sh: a
# PRIVATE set of services (own run directory and ports, so restarting nats-server,
# Postgres, Dovecot or clamd disturbs nobody else), faults injected into it and into the
# stages, and an exact comparison of an import's result with an undisturbed one's.
# Sourced, not run.
#
# Order: source this file, call lc_private_services (it exports the private set's
# settings), then source lib_import.sh, li_init NAME, lc_trap (replaces li_init's EXIT
# trap: li_cleanup, then the private services are stopped).

export LC_ALL=C
LC_SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
LC_SERVICES_LOG=
LC_STARTED=0

# lc_private_services RUN_DIR NATS_PORT NATS_MONITOR_PORT PG_PORT IMAP_PORT IMAPS_PORT:
# start (or reuse) the private set and export its `scripts/services env`. Any
# MAILBUS_* settings of the shared services in the environment are replaced.
lc_private_services() {
  export MAILBUS_RUN_DIR=$1 MAILBUS_NATS_PORT=$2 MAILBUS_NATS_MONITOR_PORT=$3 \
    MAILBUS_PG_PORT=$4 MAILBUS_IMAP_PORT=$5 MAILBUS_IMAPS_PORT=$6
  mkdir -p "$MAILBUS_RUN_DIR"
  chmod 755 "$MAILBUS_RUN_DIR"
  LC_SERVICES_LOG=$MAILBUS_RUN_DIR/services-calls.log
  LC_STARTED=1
  if ! "$LC_SRC/scripts/services" start >>"$LC_SERVICES_LOG" 2>&1; then
    tail -n 40 "$LC_SERVICES_LOG" >&2
    echo "FAIL: the private services in $MAILBUS_RUN_DIR did not start (ports $2 $3 $4 $5 $6 taken?)" >&2
    exit 1
  fi
  unset LI_ADMIN_DSN MAILBUS_PREFIX MAILBUS_BLOB_DIR MAILBUS_STAGES_DIR
  eval "$("$LC_SRC/scripts/services" env)"
}

# lc_services ARGS...: scripts/services on the private set, its output in the calls log.
lc_services() { "$LC_SRC/scripts/services" "$@" >>"$LC_SERVICES_LOG" 2>&1; }

# lc_trap: at exit, li_cleanup (stages, streams, databases, mail) then stop the private set.
lc_trap() { trap 'lc_exit' EXIT; }
lc_exit() {
  local rc=$?
  set +e
  (
    (exit $rc)
    li_cleanup
  )
  if ((LC_STARTED)) && [[ -z ${LC_KEEP_SERVICES:-} ]]; then
    "$LC_SRC/scripts/services" stop >>"$LC_SERVICES_LOG" 2>&1 ||
      echo "warning: stopping the private services in $MAILBUS_RUN_DIR failed (see $LC_SERVICES_LOG)" >&2
  fi
  exit $rc
}

# lc_sql SQL: like li_sql but quiet and allowed to fail (Postgres may be down on purpose).
lc_sql() { psql -X -q -v ON_ERROR_STOP=1 -tA -F $'\t' "$MAILBUS_PG_DSN" -c "$1" 2>/dev/null; }

# lc_job_state JOB: "status<TAB>stored<TAB>total" or "unknown" while Postgres is away.
lc_job_state() {
  lc_sql "SELECT status, stored, total_messages FROM sync_jobs WHERE id = $1" || echo unknown
}

# lc_copies_dead: names of stage copies whose pid file names a process that is gone
# (a supervisor that exited by itself; copies killed on purpose have no pid file).
lc_copies_dead() {
  local f p
  for f in "$MAILBUS_STAGES_DIR"/*.pid; do
    [[ -f $f ]] || continue
    p=$(cat "$f" 2>/dev/null)
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null || basename "$f" .pid
  done
}

# lc_kill_copy STAGE-N: kill -9 one copy's supervisor (its worker dies with it, PDEATHSIG)
# and remove its pid file, as `scripts/stages kill` does for every copy of a stage.
lc_kill_copy() {
  local f=$MAILBUS_STAGES_DIR/$1.pid p
  [[ -f $f ]] || return 1
  p=$(cat "$f")
  kill -KILL "$p" 2>/dev/null || true
  rm -f "$f"
}

# lc_kill_all: kill -9 every stage copy of the current stage dir at once (one kill call,
# so no stage gets further while the others are being killed); pid files removed.
lc_kill_all() {
  local f pids=()
  for f in "$MAILBUS_STAGES_DIR"/*.pid; do
    [[ -f $f ]] && pids+=("$(cat "$f")")
  done
  ((${#pids[@]})) && kill -KILL "${pids[@]}" 2>/dev/null
  rm -f "$MAILBUS_STAGES_DIR"/*.pid
}

# lc_kill_worker STAGE-N: kill -9 only the worker of one copy; its supervisor restarts it.
lc_kill_worker() {
  local f=$MAILBUS_STAGES_DIR/$1.pid p w
  [[ -f $f ]] || return 1
  p=$(cat "$f")
  w=$(cut -d' ' -f1 "/proc/$p/task/$p/children" 2>/dev/null)
  [[ -n $w ]] || return 1
  kill -KILL "$w" 2>/dev/null
}

# lc_imap_kill USER: kill -9 USER's Dovecot imap processes; prints how many.
lc_imap_kill() {
  local pids
  pids=$(doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf" who "$1" 2>/dev/null |
    sed -n 's/.*imap *(\([0-9 ]*\)).*/\1/p' | tr '\n' ' ')
  # shellcheck disable=SC2086
  [[ -z ${pids// /} ]] || kill -KILL $pids 2>/dev/null || true
  set -- $pids
  echo $#
}

# lc_dump OUT: everything an import leaves behind that an undisturbed import must equal,
# one line per row ("table<TAB>row as JSON", sorted), ids replaced by natural keys
# (blob hash, folder name, chunk seq) and timestamps of the work itself (every *_at
# column) left out: emails, email_locations, addresses, attachments, av_verdicts,
# folders, the job's counters, its chunks (layout, state, stored count: not the
# bookkeeping of leases and sweeps), per-message progress bits, the number of dead
# letters.
# Files: OUT.blobs (sorted blob paths), OUT.files (blob files whose bytes do not hash to
# their name, then every file that is not a blob: temp files left behind).
lc_dump() {
  local out=$1
  lc_sql "
    WITH rows(t, j) AS (
    SELECT 'emails', (to_jsonb(e) - '{id,account_id,synced_at}'::text[])::text FROM emails e
    UNION ALL
    SELECT 'email_locations', (to_jsonb(l) - '{email_id,folder_id,synced_at}'::text[]
           || jsonb_build_object('email', encode(e.blob_sha256, 'hex'), 'folder', f.name))::text
      FROM email_locations l JOIN emails e ON e.id = l.email_id JOIN folders f ON f.id = l.folder_id
    UNION ALL
    SELECT 'addresses', (to_jsonb(a) - 'email_id'
           || jsonb_build_object('email', encode(e.blob_sha256, 'hex')))::text
      FROM addresses a JOIN emails e ON e.id = a.email_id
    UNION ALL
    SELECT 'attachments', (to_jsonb(a) - '{email_id,scanned_at,job_id}'::text[]
           || jsonb_build_object('email', encode(e.blob_sha256, 'hex')))::text
      FROM attachments a JOIN emails e ON e.id = a.email_id
    UNION ALL
    SELECT 'av_verdicts', (to_jsonb(v) - 'scanned_at')::text FROM av_verdicts v
    UNION ALL
    SELECT 'folders', (to_jsonb(f) - '{id,account_id,updated_at,next_sync_at}'::text[])::text FROM folders f
    UNION ALL
    SELECT 'sync_jobs', jsonb_build_object('status', status, 'total_messages', total_messages,
             'total_bytes', total_bytes, 'scanned', scanned, 'fetched', fetched, 'parsed', parsed,
             'stored', stored, 'bytes_fetched', bytes_fetched, 'av_scanned', av_scanned,
             'av_pending', av_pending, 'av_infected', av_infected, 'errors', errors)::text
      FROM sync_jobs
    UNION ALL
    SELECT 'job_chunks', jsonb_build_object('seq', c.seq, 'folder', f.name, 'uid_first', c.uid_first,
             'uid_last', c.uid_last, 'message_count', c.message_count, 'bytes', c.bytes,
             'state', c.state, 'stored_count', c.stored_count)::text
      FROM job_chunks c JOIN folders f ON f.id = c.folder_id
    UNION ALL
    SELECT 'job_messages', (to_jsonb(m) - '{job_id,folder_id,chunk_id}'::text[]
           || jsonb_build_object('folder', f.name, 'chunk', c.seq))::text
      FROM job_messages m JOIN folders f ON f.id = m.folder_id LEFT JOIN job_chunks c ON c.id = m.chunk_id
    UNION ALL
    SELECT 'dead_letters', jsonb_build_object('count', count(*))::text FROM dead_letters)
    SELECT t, (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(j::jsonb) AS e(k, v)
               WHERE k !~ '_at$')::text FROM rows" >"$out.tmp" ||
    { echo "lc_dump: query failed" >&2; return 1; }
  sort "$out.tmp" >"$out"
  rm -f "$out.tmp"
  (cd "$MAILBUS_BLOB_DIR" && find . -path './??/*' -type f | sort) >"$out.blobs"
  (
    cd "$MAILBUS_BLOB_DIR" &&
      find . -path './??/*' -type f -print0 | xargs -0 -r sha256sum |
      awk '{ n = split($2, p, "/"); if (p[n] != $1) print "bad-content " $2 }'
    cd "$MAILBUS_BLOB_DIR" && find . -type f ! -path './??/*' | sed 's/^/not-a-blob /'
  ) | sort >"$out.files"
}

# lc_compare BASE RUN: compare two lc_dump outputs. Prints "identical", or the
# differences per table as "table -X/+Y" (X rows only in BASE, Y only in RUN) plus
# "blobs -X/+Y", "bad-content N", "temp-files N"; full differences in RUN.diff.
# Returns 0 only if identical.
lc_compare() {
  local base=$1 run=$2 parts=() t a b
  {
    diff "$base" "$run"
    diff "$base.blobs" "$run.blobs" | sed 's/^\([<>]\) /\1 blob\t/'
    sed 's/^/> /' "$run.files"
  } >"$run.diff"
  for t in emails email_locations addresses attachments av_verdicts folders sync_jobs job_chunks job_messages dead_letters blob; do
    a=$(grep -c "^< $t"$'\t' "$run.diff" || true)
    b=$(grep -c "^> $t"$'\t' "$run.diff" || true)
    ((a + b == 0)) || parts+=("${t/blob/blobs} -$a/+$b")
  done
  a=$(grep -c '^> bad-content ' "$run.diff" || true)
  ((a == 0)) || parts+=("bad-content $a")
  a=$(grep -c '^> not-a-blob ' "$run.diff" || true)
  ((a == 0)) || parts+=("temp-files $a")
  if ((${#parts[@]} == 0)); then
    echo identical
    return 0
  fi
  local IFS=,
  echo "${parts[*]}" | sed 's/,/, /g'
  return 1
}

# lc_bus_left: "stream/consumer pending=P ack_pending=A redelivered=R" for every consumer
# of the current prefix's streams with work left (from the NATS monitor); empty if none.
lc_bus_left() {
  curl -fsS --max-time 5 "$MAILBUS_NATS_MONITOR_URL/jsz?accounts=true&streams=true&consumers=true" 2>/dev/null |
    jq -r --arg p "${MAILBUS_PREFIX^^}_" '
      .account_details[]?.stream_detail[]? | select(.name | startswith($p)) | . as $s
      | .consumer_detail[]? | select(.num_pending > 0 or .num_ack_pending > 0)
      | "\($s.name)/\(.name) pending=\(.num_pending) ack_pending=\(.num_ack_pending) redelivered=\(.num_redelivered)"' 2>/dev/null || true
}

# lc_server_list OUT: "folder<TAB>uid" of every message of every selectable folder, as
# the server reports it, sorted (li_server_state's flag normalisation forks per message:
# about a minute per 1,000 messages here; li_server_sha only needs these two columns).
# Leaves $LI_W/folders.txt for li_server_sha.
lc_server_list() {
  local out=$1 name noselect
  : >"$out"
  li_imapt 120 folders >"$LI_W/folders.txt" || li_fail "imap_tool folders"
  while IFS=$'\t' read -r name _ _ _ noselect; do
    [[ ${noselect:-0} == 1 ]] && continue
    li_imapt 300 scan "$name" | awk -v f="$name" '{print f "\t" $1}' >>"$out" ||
      li_fail "imap_tool scan $name"
  done <"$LI_W/folders.txt"
  sort -o "$out" "$out"
}

# lc_check_against_server JOB SERVER_SHA: the job's stored locations are exactly the
# server's messages with the server's bytes, and its counters are exact. Prints what is
# wrong; returns 0 if nothing.
lc_check_against_server() {
  local job=$1 server=$2 total n
  total=$(wc -l <"$server")
  lc_sql "SELECT coalesce(f.remote_name, f.name), l.uid, encode(e.blob_sha256, 'hex')
          FROM email_locations l JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id" |
    sort >"$server.db"
  if ! diff "$server" "$server.db" >"$server.db.diff"; then
    echo "stored locations/bytes differ from the server's: $(grep -c '^<' "$server.db.diff") only on the server, $(grep -c '^>' "$server.db.diff") only in the database"
    return 1
  fi
  n=$(lc_sql "SELECT status, total_messages, fetched, parsed, stored, errors, av_pending FROM sync_jobs WHERE id = $job" | tr '\t' ' ')
  if [[ $n != "completed $total $total $total $total 0 0" ]]; then
    echo "job counters status/total/fetched/parsed/stored/errors/av_pending = $n, want completed $total $total $total $total 0 0"
    return 1
  fi
}
