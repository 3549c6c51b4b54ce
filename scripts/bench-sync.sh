# scripts/bench-sync.sh — `scripts/bench sync`: the sync benchmark. Sourced by
# scripts/bench (which parses the options, builds, starts the services, writes the
# mailbox and defines the helpers used here); not run on its own.
#
# One mailbus instance imports a copy of the benchmark mailbox once and mbsync pulls
# it once (both untimed for the figures), then, timed:
#   R rounds with no change:  `mailbus sync ACCOUNT --wait` and `mbsync -a`
#                             (odd rounds mailbus first, even rounds mbsync first);
#   R rounds with C changes:  another IMAP client (imap_changes.py bench) makes C
#                             mixed changes, then `mailbus sync --wait`, then mbsync.
# Each mailbus sync must report exactly what was changed (history), and each mbsync
# run must leave the server as it found it (every folder's message count, UIDNEXT,
# UIDVALIDITY and HIGHESTMODSEQ), so both tools re-sync the same state. At the end
# Postgres must hold exactly the server's (folder, UID, flags). See docs/benchmark.md.

# clone_mailbox SRC DST: DST's Maildir becomes a copy of SRC's that changes cannot
# reach back into: message files hard-linked (Dovecot never writes a Maildir message
# file in place: a flag change renames it, an expunge unlinks it, a move links it
# anew), Dovecot's own files (indexes, logs, uidlists: written in place) copied.
clone_mailbox() {
  local src=$MAILBUS_MAIL_ROOT/$1/Maildir dst=$MAILBUS_MAIL_ROOT/$2 f
  doveadm -c "$DOVECONF" kick "$2" >/dev/null 2>&1 || true
  rm -rf "$dst"
  mkdir -p "$dst"
  cp -al "$src" "$dst/Maildir"
  while IFS= read -r -d '' f; do
    cp -p "$f" "$f.bench-copy"
    mv -f "$f.bench-copy" "$f"
  done < <(find "$dst/Maildir" -type f ! -path '*/cur/*' ! -path '*/new/*' ! -path '*/tmp/*' -print0)
  "$top/scripts/services" imap-user "$2" "$2-password" >/dev/null
}

# server_status USER: every folder's message count, UIDNEXT, UIDVALIDITY and
# HIGHESTMODSEQ, from Dovecot directly (doveadm, not IMAP).
server_status() {
  doveadm -c "$DOVECONF" -f tab mailbox status -u "$1" 'messages uidnext uidvalidity highestmodseq' '*' | sort
}

# norm_flags: "folder<TAB>uid<TAB>flags" lines with the flags sorted bytewise and
# without \Recent (a per-session flag), the lines sorted.
norm_flags() {
  awk -F'\t' '{
      n = 0; m = split($3, a, " ")
      for (i = 1; i <= m; i++) if (a[i] != "\\Recent") fl[++n] = a[i]
      for (i = 2; i <= n; i++) { v = fl[i]; for (j = i - 1; j >= 1 && fl[j] > v; j--) fl[j + 1] = fl[j]; fl[j + 1] = v }
      s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? " " : "") fl[i]
      printf "%s\t%s\t%s\n", $1, $2, s
    }' | sort
}

# check_state USER: Postgres holds exactly the server's (folder, UID, flags); echoes
# the number of locations.
check_state() {
  doveadm -c "$DOVECONF" -f tab fetch -u "$1" 'mailbox uid flags' mailbox '*' ALL |
    tail -n +2 | norm_flags >"$W/state-server"
  sql "SELECT f.name, l.uid, array_to_string(l.flags, ' ')
       FROM email_locations l JOIN folders f ON f.id = l.folder_id" | norm_flags >"$W/state-db"
  if ! diff "$W/state-server" "$W/state-db" >"$W/state.diff"; then
    head -n 12 "$W/state.diff" >&2
    die "Postgres differs from the server: $(grep -c '^[<>]' "$W/state.diff") lines (< server, > Postgres)"
  fi
  wc -l <"$W/state-server"
}

# new_mail: the messages the change rounds append, $n_new per round, written by genmail
# with another seed (so they are new content, not copies of stored messages) and split
# into one directory per round, $W/new/rROUND.
new_mail() {
  local r k
  mkdir -p "$W/new"
  ((n_new > 0)) || { for ((r = 1; r <= runs; r++)); do mkdir -p "$W/new/r$r"; done; return 0; }
  "$BIN/mailbus-genmail" --maildir "$W/new/maildir" --messages $((runs * n_new)) \
    --seed $((seed + 1000)) >"$W/new/genmail.log" 2>&1 || { cat "$W/new/genmail.log" >&2; die "genmail (new mail)"; }
  local -a files
  mapfile -t files < <(find "$W/new/maildir" -type f -path '*/cur/*' | sort)
  ((${#files[@]} == runs * n_new)) || die "genmail wrote ${#files[@]} new messages, expected $((runs * n_new))"
  for ((r = 1; r <= runs; r++)); do
    mkdir -p "$W/new/r$r"
    for ((k = (r - 1) * n_new; k < r * n_new; k++)); do ln "${files[k]}" "$W/new/r$r/"; done
  done
}

# make_changes ROUND: the round's C changes by another IMAP client; their lines (as
# imap_changes.py prints them) in $W/changes-ROUND, checked against the counts asked.
make_changes() {
  local r=$1 f=$W/changes-$1 what n want
  MB_IMAP_USER=$acct MB_IMAP_PASSWORD=$acct-password \
    python3 "$top/tests/integration/imap_changes.py" --host 127.0.0.1 --port "$MAILBUS_IMAP_PORT" \
    bench --seed $((seed * 1000 + r)) --eml-dir "$W/new/r$r" \
    --new "$n_new" --flag "$n_flag" --expunge "$n_expunge" --move "$n_move" >"$f" 2>"$f.err" ||
    die "imap_changes.py bench: $(cat "$f.err")"
  for what in append:$n_new flag:$n_flag expunge:$n_expunge move:$n_move; do
    want=${what#*:} what=${what%%:*}
    n=$(grep -c "^$what " "$f" || true)
    ((n == want)) || die "round $r: imap_changes made $n '$what' changes, asked for $want"
  done
  R[folders_touched,$r]=$(awk '{print $2} $1 == "move" {print $4}' "$f" | sort -u | tr '\n' ' ')
}

# history_of JOB: "added flags_changed deleted moved events slowest_folder_ms" of JOB's
# history entry (`mailbus history --json`, summed over its folders).
history_of() {
  "$MB" history "$acct" --json --limit 1 >"$W/history.json" || die "mailbus history"
  jq -r --argjson job "$1" 'select(.job == $job) | [
      ([.folders[].added] | add // 0), ([.folders[].flags_changed] | add // 0),
      ([.folders[].deleted] | add // 0), ([.folders[].moved] | add // 0),
      ([.folders[] | select(.event != null)] | length),
      ([.folders[].duration_ms] | max // 0)] | @tsv' "$W/history.json"
}

# job_timeline JOB: where JOB's time went, in ms after it was created (the command
# accepted): started (scan took it), last chunk of new messages published, last new
# location stored, last of their attachments scanned, completed (the coordinator's
# verdict, written on one of its passes); "-" where the job had nothing of that kind.
job_timeline() {
  sql "WITH j AS (SELECT * FROM sync_jobs WHERE id = $1),
            l AS (SELECT l.email_id, l.synced_at FROM email_locations l
                  JOIN job_messages m ON m.folder_id = l.folder_id AND m.uid = l.uid
                  WHERE m.job_id = $1)
       SELECT coalesce(round(extract(epoch FROM x - j.created_at) * 1000)::text, '-')
       FROM j, LATERAL (VALUES (1, j.started_at),
                               (2, (SELECT max(published_at) FROM job_chunks WHERE job_id = $1)),
                               (3, (SELECT max(synced_at) FROM l)),
                               (4, (SELECT max(a.scanned_at) FROM attachments a
                                    WHERE a.email_id IN (SELECT email_id FROM l))),
                               (5, j.finished_at)) v(k, x)
       ORDER BY k" | paste -sd' '
}

# mailbus_sync KEY ROUND EXPECTED: one timed `mailbus sync ACCOUNT --wait` (wall time
# into R[KEY,ROUND], the job's own created -> finished into R[KEY_job,ROUND], its slowest
# folder into R[KEY_fold,ROUND]); its history must read EXPECTED ("added flags deleted
# moved events").
mailbus_sync() {
  local key=$1 r=$2 want=$3 t0 t1 job found
  sync
  t0=$EPOCHREALTIME
  timeout 600 "$MB" sync "$acct" --wait >"$W/sync.out" 2>"$W/sync.err" ||
    die "mailbus sync (exit $?): $(cat "$W/sync.err")"
  t1=$EPOCHREALTIME
  job=$(<"$W/sync.out")
  [[ $job =~ ^[0-9]+$ ]] || die "mailbus sync printed '$job'"
  stages_alive
  R[$key,$r]=$(fsub "$t0" "$t1")
  R[${key}_job,$r]=$(sql "SELECT round(extract(epoch FROM finished_at - created_at)::numeric, 3)
                          FROM sync_jobs WHERE id = $job")
  found=$(history_of "$job")
  [[ -n $found ]] || die "no history entry for sync job $job"
  R[${key}_fold,$r]=$(awk -v ms="${found##*$'\t'}" 'BEGIN {printf "%.3f", ms / 1000}')
  local tl
  read -r -a tl < <(job_timeline "$job")
  R[${key}_timeline,$r]="started +${tl[0]}, last chunk published +${tl[1]}, last stored +${tl[2]}, last attachment scanned +${tl[3]}, completed +${tl[4]} ms"
  found=$(cut -f1-5 <<<"$found" | tr '\t' ' ')
  [[ $found == "$want" ]] ||
    die "sync job $job found (added flags deleted moved events) '$found', expected '$want': $(cat "$W/history.json")"
  LAST_FOUND=$found
}

# mbsync_sync KEY ROUND: one timed re-sync of the pulled Maildir, into R[KEY,ROUND]; the
# server must be as mbsync found it.
mbsync_sync() {
  local before
  before=$(server_status "$acct")
  sync
  mbsync_timed "$W/mss"
  R[$1,$2]=$MBSYNC_S
  [[ $(server_status "$acct") == "$before" ]] || die "mbsync changed the server's state (round $2)"
}

bench_sync() {
  local i q r
  acct=${imap_user}sync
  q=$((changes / 4)) r=$((changes % 4))
  n_new=$((q + (r > 0))) n_flag=$((q + (r > 1))) n_expunge=$((q + (r > 2))) n_move=$q

  hdr "mailbus sync benchmark  $(date -u '+%Y-%m-%d %H:%M:%SZ')  $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$top" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
  hdr "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  hdr "mailbox: $messages messages, $mb_bytes bytes ($(awk -v b="$mb_bytes" 'BEGIN {printf "%.1f MB", b / 1e6}')), folders: ${mb_folders% }; genmail seed $seed; synced: a hard-linked copy (IMAP user $acct)"
  hdr "stage copies: $copies_txt; mailbus: $build_dir (RelWithDebInfo), account on 127.0.0.1 (QRESYNC, CONDSTORE)"
  hdr "changes per round: $changes = $n_new new (appended by the seed to any folder), $n_flag flagged, $n_expunge expunged, $n_move moved (UID MOVE to another folder), drawn uniformly over every message of every folder (imap_changes.py bench)"
  hdr "timed: wall time of \`mailbus sync ACCOUNT --wait\` (exits when the job is completed: new messages stored and scanned; the CLI polls every 20 ms) and of \`mbsync -a -q\` re-syncing a Maildir it pulled before (default settings, plain IMAP)"
  hdr "order: $runs rounds without change (odd: mailbus first, even: mbsync first), then $runs rounds of changes -> mailbus -> mbsync (mbsync syncs both ways: run second, so mailbus sees exactly the changed state; every mbsync run is checked to leave the server as it found it); settle ${settle}s once after the import and the pull, \`sync\` before each timing$( ((quick)) && echo ' (--quick: NOT COMPARABLE)')"
  hdr "units: RSS = VmHWM in MiB (reset after the import, so: the peak while syncing), max over copies; CPU s = utime+stime of the stages over all the rounds"

  STEP="sync: copy of the mailbox"
  CLONE_USER=$acct
  clone_mailbox "$imap_user" "$acct"
  new_mail

  STEP="sync: mailbus import"
  mb_env s "$acct"
  stage_procs
  mb_import "$acct"
  local stored locs
  IFS=$'\t' read -r stored locs < <(sql "SELECT stored, (SELECT count(*) FROM email_locations)
                                         FROM sync_jobs WHERE id = $JOB")
  ((stored == messages && locs == messages)) || die "import: $stored stored, $locs locations, the mailbox has $messages"
  stage_figures import
  say "mailbus import: ${IMPORT_S}s"

  STEP="sync: mbsync pull"
  mbsync_conf "$W/mss" "$acct"
  mbsync_timed "$W/mss"
  local pull_s=$MBSYNC_S n
  read -r n _ < <(near_files "$W/mss")
  ((n == messages)) || die "mbsync pulled $n message files, the mailbox has $messages"
  say "mbsync pull: ${pull_s}s"

  sync
  if ((settle > 0)); then say "settling ${settle}s"; sleep "$settle"; fi
  # From here on, peak RSS is the syncs' (clear_refs 5 resets VmHWM) and CPU counts anew.
  for i in "${PIDS[@]}"; do echo 5 >"/proc/$i/clear_refs"; done
  stage_procs

  for ((i = 1; i <= runs; i++)); do
    STEP="sync: round $i without change"
    if ((i % 2 == 1)); then
      mailbus_sync nochange_s "$i" "0 0 0 0 0"
      mbsync_sync mbsync_nochange_s "$i"
    else
      mbsync_sync mbsync_nochange_s "$i"
      mailbus_sync nochange_s "$i" "0 0 0 0 0"
    fi
    printf 'no change, round %d: mailbus %ss (job %ss, slowest folder %ss)  mbsync %ss\n    job: %s\n' "$i" \
      "${R[nochange_s,$i]}" "${R[nochange_s_job,$i]}" "${R[nochange_s_fold,$i]}" "${R[mbsync_nochange_s,$i]}" \
      "${R[nochange_s_timeline,$i]}"
  done
  for ((i = 1; i <= runs; i++)); do
    STEP="sync: round $i with $changes changes"
    make_changes "$i"
    # A moved message counts as deleted from its folder and added to another: added =
    # new + moved, deleted = expunged (moves apart), moved = moved.
    mailbus_sync sync_s "$i" "$((n_new + n_move)) $n_flag $n_expunge $n_move 0"
    mbsync_sync mbsync_sync_s "$i"
    printf '%d changes, round %d: mailbus %ss (job %ss, slowest folder %ss; found added/flags/deleted/moved %s)  mbsync %ss  folders: %s\n    job: %s\n' \
      "$changes" "$i" "${R[sync_s,$i]}" "${R[sync_s_job,$i]}" "${R[sync_s_fold,$i]}" "${LAST_FOUND% *}" \
      "${R[mbsync_sync_s,$i]}" "${R[folders_touched,$i]% }" "${R[sync_s_timeline,$i]}"
  done
  STEP="sync: check"
  stage_figures syncs
  psql_close
  local nlocs
  nlocs=$(check_state "$acct")
  say "Postgres == server: $nlocs locations (folder, UID, flags)"
  if [[ -n ${MAILBUS_BENCH_LOGS:-} ]]; then
    mkdir -p "$MAILBUS_BENCH_LOGS"
    cp "$CUR_STAGES"/*.log "$MAILBUS_BENCH_LOGS/"
    # With MAILBUS_BENCH_PG_LOG_MS: the database's slow statements.
    grep -a "@$MB_DB " "$MAILBUS_RUN_DIR/log/postgres.log" >"$MAILBUS_BENCH_LOGS/postgres.log" || true
    say "stage logs copied to $MAILBUS_BENCH_LOGS"
  fi
  mb_env_drop

  STEP="report"
  for ((i = 1; i <= runs; i++)); do
    R[ratio_nochange,$i]=$(awk -v a="${R[nochange_s,$i]}" -v b="${R[mbsync_nochange_s,$i]}" 'BEGIN {printf "%.3f", a / b}')
    R[ratio_sync,$i]=$(awk -v a="${R[sync_s,$i]}" -v b="${R[mbsync_sync_s,$i]}" 'BEGIN {printf "%.3f", a / b}')
  done
  echo
  printf 'import (untimed setup): mailbus %ss, mbsync pull %ss; state checked: Postgres == server, %s locations\n' \
    "$IMPORT_S" "$pull_s" "$nlocs"
  printf '%-34s %10s %10s %10s\n' "($runs rounds each)" median min max
  row "mailbus nochange_sync_s" nochange_s %.3f
  row "  job created->finished s" nochange_s_job %.3f
  row "  slowest folder s" nochange_s_fold %.3f
  row "mbsync nochange s" mbsync_nochange_s %.3f
  row "ratio nochange*" ratio_nochange %.3f
  row "mailbus sync_s ($changes changes)" sync_s %.3f
  row "  job created->finished s" sync_s_job %.3f
  row "  slowest folder s" sync_s_fold %.3f
  row "mbsync sync s ($changes changes)" mbsync_sync_s %.3f
  row "ratio sync*" ratio_sync %.3f
  echo "* ratio: median of the per-round ratios (mailbus over mbsync)"
  local st rss= cpus= imp=
  for st in $all_stages; do
    rss+="$st ${R[rss_$st,syncs]} " imp+="$st ${R[rss_$st,import]} "
    cpus+="$st ${R[cpu_$st,syncs]} "
  done
  echo "peak RSS MiB while syncing: ${rss% }  (import: ${imp% })"
  echo "CPU s of the stages over the $((2 * runs)) rounds: ${cpus% }"

  local json sep=
  json="{\"messages\":$messages,\"changes\":$changes,\"nochange_sync_s\":$(med nochange_s %.3f)"
  json+=",\"sync_s\":$(med sync_s %.3f),\"mbsync_nochange_s\":$(med mbsync_nochange_s %.3f)"
  json+=",\"mbsync_sync_s\":$(med mbsync_sync_s %.3f),\"runs\":$runs"
  json+=",\"last_sync\":{\"added\":$(cut -d' ' -f1 <<<"$LAST_FOUND"),\"flags_changed\":$(cut -d' ' -f2 <<<"$LAST_FOUND")"
  json+=",\"deleted\":$(cut -d' ' -f3 <<<"$LAST_FOUND"),\"moved\":$(cut -d' ' -f4 <<<"$LAST_FOUND")}"
  json+=",\"peak_rss_mb\":{"
  for st in $all_stages; do json+="$sep\"$st\":${R[rss_$st,syncs]}"; sep=,; done
  json+="}}"
  echo
  echo "$json"
}
