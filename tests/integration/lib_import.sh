# lib_import.sh — shared helpers for the import integration tests
# (test_import.sh, test_import_kill.sh, test_import_faults.sh). Sourced, not run.
#
# Each test gets its own NATS subject prefix, Postgres database, blob dir, stage
# pid/log dir and IMAP user, so tests never see each other's state; li_cleanup
# (installed as the EXIT trap by li_init) stops the test's stages, destroys its
# streams, drops its databases and removes its temp dir. Shared services are
# never stopped here.
#
# Needs: MB_BIN, the variables of `scripts/services env` (loaded if missing).

export LC_ALL=C
: "${MB_BIN:?MB_BIN must point at the build bin directory}"
LI_SRC=${MB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
if [[ -z ${MAILBUS_RUN_DIR:-} || -z ${MAILBUS_PG_DSN:-} ]]; then
  eval "$("$LI_SRC/scripts/services" env)"
fi
MB=$MB_BIN/mailbus
IMAPT=$MB_BIN/mb-test-imap_tool
# li_imapt SECONDS ARGS...: the independent IMAP client, quiet, with a hard timeout.
li_imapt() { local t=$1; shift; timeout "$t" env MAILBUS_LOG_LEVEL=warn "$IMAPT" "$@"; }
GENMAIL=$MB_BIN/mailbus-genmail
# A killed stage's unacked records come back after this; every process of a test
# must use the same value (the consumer config is created with it).
export MAILBUS_ACK_WAIT_MS=${MAILBUS_ACK_WAIT_MS:-5000}
export MAILBUS_LOG_LEVEL=${MAILBUS_LOG_LEVEL:-info}
# The scheduler starts syncs by itself 5 min after an import at the latest: in a
# test about something else, a sync nobody asked for would take the account (one
# active job per account). Stretched 1000 times (INBOX every 3.5 days) unless the
# test is about it (test_schedule.sh).
export MAILBUS_SCHEDULE_SCALE=${MAILBUS_SCHEDULE_SCALE:-1000}
export MAILBUS_BIN=$MB_BIN
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
LI_ADMIN_DSN=${LI_ADMIN_DSN:-$MAILBUS_PG_DSN}
LI_DBS=()
LI_PREFIXES=()
LI_STAGE_DIRS=()
LI_USERS=()
LI_T0=$SECONDS

li_log() { echo "[$(date +%T) +$((SECONDS - LI_T0))s] $*"; }
li_fail() {
  echo "FAIL: $*" >&2
  li_stage_logs >&2
  exit 1
}
li_ok() { echo "ok   $*"; }
# li_diff EXPECTED ACTUAL WHAT: fail showing the first differences (< expected, > actual).
li_diff() {
  diff "$1" "$2" >"$2.diff" && return 0
  echo "--- first differences (< $(basename "$1"), > $(basename "$2")), $(grep -c '^[<>]' "$2.diff") lines"
  sed -n 1,12p "$2.diff"
  li_fail "$3"
}

# li_stage_logs: tails of every stage log of the current stage dir.
li_stage_logs() {
  local f d
  for d in "${LI_STAGE_DIRS[@]}"; do
    for f in "$d"/*.log; do
      [[ -f $f ]] || continue
      echo "--- tail $f"
      tail -n 15 "$f"
    done
  done
}

# SQL against the test's current database: li_sql "SELECT ..." prints -tA output.
li_sql() { psql -X -q -v ON_ERROR_STOP=1 -tA -F $'\t' "$MAILBUS_PG_DSN" -c "$1"; }
li_admin_sql() { psql -X -q -v ON_ERROR_STOP=1 -tA "$LI_ADMIN_DSN" -c "$1"; }

# li_init NAME: temp dir $LI_W, cleanup trap. Call once per test script.
li_init() {
  LI_NAME=$1
  LI_W=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$LI_W"
  trap li_cleanup EXIT
  trap 'exit 130' INT TERM
  for b in "$MB" "$IMAPT" "$GENMAIL" "$MB_BIN"/mailbus-{scan,fetch,parse,store,avscan}; do
    [[ -x $b ]] || { echo "FAIL: $b not built" >&2; exit 1; }
  done
  "$LI_SRC/scripts/services" status >/dev/null 2>&1 ||
    { "$LI_SRC/scripts/services" status; echo "FAIL: services not all up (scripts/services start)" >&2; exit 1; }
}

# li_env TAG: a fresh isolated environment (prefix, database, blob dir, stage
# dir) under the tag; exports the MAILBUS_* variables the stages read.
li_env() {
  local tag=$1
  local base="${LI_NAME//[^a-z0-9]/}"
  export MAILBUS_PREFIX="${base:0:6}${tag}$$"
  local db="mbt_${MAILBUS_PREFIX}"
  li_admin_sql "DROP DATABASE IF EXISTS $db" >/dev/null
  li_admin_sql "CREATE DATABASE $db" >/dev/null || li_fail "createdb $db"
  LI_DBS+=("$db")
  LI_PREFIXES+=("$MAILBUS_PREFIX")
  export MAILBUS_PG_DSN="${LI_ADMIN_DSN%/*}/$db"
  export MAILBUS_BLOB_DIR=$LI_W/$tag/blobs
  export MAILBUS_STAGES_DIR=$LI_W/$tag/stages
  mkdir -p "$MAILBUS_BLOB_DIR" "$MAILBUS_STAGES_DIR"
  LI_STAGE_DIRS+=("$MAILBUS_STAGES_DIR")
  "$MB" migrate >"$LI_W/$tag/migrate.log" 2>&1 || { cat "$LI_W/$tag/migrate.log"; li_fail "mailbus migrate"; }
}

# li_no_leak: no password of the test's accounts (its $LI_W/pw-* files) appears in
# the stage logs or any other file the test wrote to $LI_W, in any bus record of
# its streams (the JetStream store's files), in any row of its databases (dead
# letters, job problems, history; pg_dump, bytea as hex so the hex form is
# searched too), or in `mailbus jobs --json`. Run with the stages stopped,
# before the streams and databases go.
li_no_leak() {
  local f pw hex hits ok=0 i p d
  local -a where=("$LI_W" "${LI_STAGE_DIRS[@]}")
  mkdir -p "$LI_W/leakcheck"
  for i in "${!LI_DBS[@]}"; do
    pg_dump -a "${LI_ADMIN_DSN%/*}/${LI_DBS[$i]}" >"$LI_W/leakcheck/db-$i.sql" 2>&1 ||
      { echo "FAIL: pg_dump ${LI_DBS[$i]}: $(tail -n 1 "$LI_W/leakcheck/db-$i.sql")" >&2; ok=1; }
    MAILBUS_PG_DSN="${LI_ADMIN_DSN%/*}/${LI_DBS[$i]}" "$MB" jobs --json >"$LI_W/leakcheck/jobs-$i.json" 2>&1 ||
      { echo "FAIL: mailbus jobs --json on ${LI_DBS[$i]}: $(tail -n 1 "$LI_W/leakcheck/jobs-$i.json")" >&2; ok=1; }
  done
  for p in "${LI_PREFIXES[@]}"; do
    for d in "${MAILBUS_RUN_DIR:-$LI_SRC/run}"/nats/js/jetstream/*/streams/"${p^^}"_*; do
      [[ -d $d ]] && where+=("$d")
    done
  done
  for f in "$LI_W"/pw-*; do
    [[ -f $f ]] || continue
    pw=$(head -n 1 "$f")
    [[ -n $pw ]] || continue
    hex=$(printf '%s' "$pw" | od -An -tx1 | tr -d ' \n')
    hits=$(grep -rlaF -e "$pw" -e "$hex" "${where[@]}" 2>/dev/null | grep -v '/pw-[^/]*$' || true)
    if [[ -n $hits ]]; then
      echo "FAIL: the password in $(basename "$f") appears in: $hits" >&2
      ok=1
    fi
  done
  return $ok
}

li_cleanup() {
  local rc=$? i
  set +e
  [[ -n ${LI_PROXY:-} ]] && kill "$LI_PROXY" 2>/dev/null
  for i in "${!LI_STAGE_DIRS[@]}"; do
    MAILBUS_STAGES_DIR=${LI_STAGE_DIRS[$i]} "$LI_SRC/scripts/stages" stop >/dev/null 2>&1
  done
  li_no_leak || rc=1
  for i in "${!LI_PREFIXES[@]}"; do
    MAILBUS_PREFIX=${LI_PREFIXES[$i]} "$MB_BIN/mb-test-bus_ctl" destroy >/dev/null 2>&1
  done
  for db in "${LI_DBS[@]}"; do
    li_admin_sql "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
  done
  for u in "${LI_USERS[@]}"; do
    doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf" kick "$u" >/dev/null 2>&1
    [[ -n ${LI_KEEP:-} ]] || rm -rf "${MAILBUS_MAIL_ROOT:?}/$u"
  done
  [[ -n ${LI_KEEP:-} ]] || rm -rf "$LI_W"
  exit $rc
}

# li_stages ARGS...: scripts/stages, except that `start` leaves the IDLE watcher out
# (idle=0) unless the arguments name it (idle=1): the syncs it starts by itself would
# race the syncs and the state a test checks.
li_stages() {
  if [[ ${1:-} == start && " $* " != *" idle="* ]]; then
    "$LI_SRC/scripts/stages" "$@" idle=0
  else
    "$LI_SRC/scripts/stages" "$@"
  fi
}

# li_mailbox USER PASSWORD GENMAIL-ARGS...: a fresh Maildir for USER written by
# genmail, handed to Dovecot.
li_mailbox() {
  local user=$1 pw=$2; shift 2
  doveadm -c "$MAILBUS_RUN_DIR/dovecot/dovecot.conf" kick "$user" >/dev/null 2>&1 || true
  rm -rf "${MAILBUS_MAIL_ROOT:?}/$user"
  LI_USERS+=("$user")
  mkdir -p "$MAILBUS_MAIL_ROOT/$user"
  "$GENMAIL" --maildir "$MAILBUS_MAIL_ROOT/$user/Maildir" "$@" >"$LI_W/genmail-$user.out" 2>&1 ||
    { cat "$LI_W/genmail-$user.out"; li_fail "genmail $*"; }
  "$LI_SRC/scripts/services" imap-user "$user" "$pw" >/dev/null || li_fail "imap-user $user"
  export MB_IMAP_USER=$user MB_IMAP_PASSWORD=$pw
}

# li_fault_proxy CTL_DIR: imap_fault_proxy.py in front of the local Dovecot, its control
# files in CTL_DIR; sets LI_PPORT (its port) and LI_PROXY (its pid; li_cleanup kills it).
li_fault_proxy() {
  mkdir -p "$1"
  python3 "$LI_SRC/tests/integration/imap_fault_proxy.py" 127.0.0.1 "$MAILBUS_IMAP_PORT" "$1" \
    >"$1/proxy.port" 2>"$1/proxy.err" &
  LI_PROXY=$!
  for _ in $(seq 50); do [[ -s $1/proxy.port ]] && break; sleep 0.1; done
  LI_PPORT=$(cat "$1/proxy.port")
  [[ $LI_PPORT =~ ^[0-9]+$ ]] || li_fail "proxy did not start: $(cat "$1/proxy.err")"
}

# li_corpus DIR: the real-world fixture messages (those with an .expect) in DIR.
li_corpus() {
  mkdir -p "$1"
  local e
  for e in "$LI_SRC"/tests/fixtures/mime/*/*.expect; do
    cp "${e%.expect}" "$1/"
  done
}

# li_account NAME USER PASSWORD [HOST]: add the account to the current database
# (HOST 127.0.0.1; 127.0.0.2 is the same Dovecot without CONDSTORE and QRESYNC,
# 127.0.0.3 with CONDSTORE but no QRESYNC).
li_account() {
  (umask 077 && printf '%s\n' "$3" >"$LI_W/pw-$2")
  "$MB" account add "$1" --imap "imap://$2@${4:-127.0.0.1}:$MAILBUS_IMAP_PORT" \
    --password-file "$LI_W/pw-$2" >"$LI_W/account-$1.log" 2>&1 ||
    { cat "$LI_W/account-$1.log"; li_fail "account add $1"; }
}

# li_server_state OUT: "folder<TAB>uid<TAB>internaldate<TAB>size<TAB>flags(sorted, space)"
# for every message of every selectable folder, as the server reports it.
li_server_state() {
  local out=$1 f
  : >"$out"
  li_imapt 120 folders >"$LI_W/folders.txt" || li_fail "imap_tool folders"
  while IFS=$'\t' read -r name _ _ _ noselect; do
    [[ ${noselect:-0} == 1 ]] && continue
    li_imapt 120 scan "$name" >"$LI_W/scan.txt" || li_fail "imap_tool scan $name"
    # One awk for the folder (a fork per message took minutes on a busy machine):
    # flags without \Recent, sorted bytewise (LC_ALL=C), joined by spaces.
    awk -v f="$name" '{
        n = 0
        for (i = 4; i <= NF; i++) if ($i != "\\Recent") fl[++n] = $i
        for (i = 2; i <= n; i++) { v = fl[i]; for (j = i - 1; j >= 1 && fl[j] > v; j--) fl[j + 1] = fl[j]; fl[j + 1] = v }
        s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? " " : "") fl[i]
        printf "%s\t%s\t%s\t%s\t%s\n", f, $1, $3, $2, s
      }' "$LI_W/scan.txt" >>"$out"
  done <"$LI_W/folders.txt"
  sort -o "$out" "$out"
}

# li_server_sha OUT: "folder<TAB>uid<TAB>sha256" of the raw bytes the server
# returns for every message (fetched independently of the pipeline).
li_server_sha() {
  local out=$1 f
  : >"$out"
  for f in $(cut -f1 "$LI_W/folders.txt"); do
    mapfile -t uids < <(awk -F'\t' -v f="$f" '$1 == f {print $2}' "$2")
    ((${#uids[@]})) || continue
    li_imapt 300 fetch "$f" "${uids[@]}" >"$LI_W/fetch.txt" || li_fail "imap_tool fetch $f"
    awk -v f="$f" '{print f "\t" $1 "\t" $3}' "$LI_W/fetch.txt" >>"$out"
  done
  sort -o "$out" "$out"
}

# li_import ACCOUNT ARGS...: start an import, echo the job id.
li_import() {
  local job
  job=$("$MB" import start "$@" 2>"$LI_W/import.err") || { cat "$LI_W/import.err" >&2; li_fail "import start $*"; }
  [[ $job =~ ^[0-9]+$ ]] || li_fail "import start printed '$job'"
  echo "$job"
}

li_job() { li_sql "SELECT $2 FROM sync_jobs WHERE id = $1"; }

# li_scan_ready: until scan serves commands (its subscription is seen by the
# server's monitor); for tests that must start an import at a known moment.
li_scan_ready() {
  local i
  for i in $(seq 1 150); do
    curl -sf "$MAILBUS_NATS_MONITOR_URL/connz?subs=1&limit=4096" |
      jq -e --arg s "$MAILBUS_PREFIX.cmd.>" '[.connections[].subscriptions_list[]?] | index($s) != null' >/dev/null && return 0
    sleep 0.2
  done
  li_fail "scan does not serve commands after 30 s"
}

# li_stages_alive: fail at once if a started stage of this env has died (a crash
# would otherwise show up only as a wait timing out). Stages stopped or killed on
# purpose have no pid file and are not checked.
li_stages_alive() {
  local out
  out=$(li_stages status 2>&1) || li_fail "a stage died: $(grep down <<<"$out" | tr '\n' ' ')"
}

# li_wait_job JOB TIMEOUT: until the job is completed (0) or failed/cancelled (fail).
li_wait_job() {
  local job=$1 deadline=$((SECONDS + $2)) st
  while :; do
    st=$(li_job "$job" status)
    case $st in
      completed) return 0 ;;
      failed|cancelled) li_fail "job $job $st: $(li_job "$job" error)" ;;
    esac
    li_stages_alive
    ((SECONDS < deadline)) || li_fail "job $job not completed after $2 s: $(li_job "$job" "status, scanned, fetched, parsed, stored, av_scanned, av_pending, errors")"
    sleep 0.5
  done
}

# li_kill_at_progress JOB TARGET: with TARGET's input queued (the other stages
# running), start every stage and kill -9 TARGET (fetch, parse or store) at the first
# message of JOB it finishes; echoes how many it had finished then. `scripts/stages
# start` pauses 0.5 s to check its children, too long here, so it runs in the
# background; store commits a few hundred messages in a blink, so it pauses 300 ms
# after each batch here.
li_kill_at_progress() {
  local job=$1 target=$2 bit starter deadline
  case $target in fetch) bit=1 ;; parse) bit=2 ;; store) bit=4 ;; *) li_fail "li_kill_at_progress $target" ;; esac
  MAILBUS_FAULT_STORE_BATCH_DELAY_MS=$([[ $target == store ]] && echo 300 || echo 0) \
    li_stages start >"$LI_W/start-$target.log" 2>&1 &
  starter=$!
  deadline=$((SECONDS + 60))
  until (($(li_count "$job" "$bit") > 0)); do
    ((SECONDS < deadline)) || li_fail "$target made no progress in 60 s"
    sleep 0.02
  done
  li_stages kill "$target" >&2
  # The starter may still be checking its children when the kill lands: then it
  # reports the target dead at start, which is the kill, not a failure.
  wait "$starter" || grep -q "$target-1 exited at start" "$LI_W/start-$target.log" ||
    { cat "$LI_W/start-$target.log" >&2; li_fail "stages start $target"; }
  li_stages kill "$target" >&2 # in case the pid file was written after the first kill
  li_count "$job" "$bit"
}

# li_wait_until TIMEOUT WHAT SQL-CONDITION: poll until the SELECT prints t.
li_wait_until() {
  local deadline=$((SECONDS + $1)) what=$2
  while [[ $(li_sql "SELECT ($3)") != t ]]; do
    li_stages_alive
    ((SECONDS < deadline)) || li_fail "timeout ($1 s) waiting for $what"
    sleep 0.2
  done
}

# li_count JOB BIT: messages of the job whose stage bit (1 fetched, 2 parsed,
# 4 stored, 8 failed) is set, read live from job_messages.
li_count() { li_sql "SELECT count(*) FROM job_messages WHERE job_id = $1 AND st & $2 <> 0"; }

# li_dump OUT: the stored result, independent of ids and timestamps: one line
# per location (folder, uid, blob sha, flags, attachments sha:status), then
# table counts; the sorted blob file list goes to OUT.blobs.
li_dump() {
  li_sql "
    SELECT f.name, l.uid, encode(e.blob_sha256, 'hex'),
           array_to_string(ARRAY(SELECT unnest(l.flags) ORDER BY 1), ' '),
           coalesce((SELECT string_agg(a.part || ':' || coalesce(encode(a.sha256, 'hex'), '-') || ':' || a.scan_status, ',' ORDER BY a.part)
                     FROM attachments a WHERE a.email_id = e.id), '')
    FROM email_locations l JOIN folders f ON f.id = l.folder_id JOIN emails e ON e.id = l.email_id
    ORDER BY 1, 2" >"$1"
  li_sql "SELECT 'emails', count(*) FROM emails UNION ALL
          SELECT 'email_locations', count(*) FROM email_locations UNION ALL
          SELECT 'addresses', count(*) FROM addresses UNION ALL
          SELECT 'attachments', count(*) FROM attachments" >>"$1"
  (cd "$MAILBUS_BLOB_DIR" && find . -path './??/*' -type f | sort) >"$1.blobs"
}
