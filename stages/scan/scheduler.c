/* scheduler.c — who decides what runs next: starts sync jobs by itself for
 * folders whose time has come, on its own thread and Postgres connection.
 *
 * One copy schedules, whatever the number of scan processes: the one holding
 * the lease "scheduler" (stages/common/lease.h); when it dies, another copy
 * takes the lease once it expires (MAILBUS_LEASE_MS) and goes on from the
 * same rows, since everything it knows is in Postgres.
 *
 * When: a folder is scheduled once a job that read it has completed; its
 * interval (a user's `mailbus schedule set`, else the automatic one: the
 * base by role, adapted to activity when each job completes) is kept in
 * Postgres by migration 0007, which states the rule. Each tick (every
 * MAILBUS_SCHEDULE_TICK_MS, 1000), the scheduler
 *   1. gives every folder that has none a next sync time: the end of its
 *      last completed job + interval × MAILBUS_SCHEDULE_SCALE (1; tests
 *      shorten time with it) + up to 10 % jitter, so that folders synced
 *      together drift apart; 'infinity' when scheduling is off;
 *   2. starts one sync job per account with due folders — every due folder
 *      of the account in that job, with discovery (folders created, renamed
 *      or deleted on the server are found: sync.c) — oldest due first, at
 *      most MAILBUS_SCHEDULE_MAX_STARTS (10) per tick and while fewer than
 *      MAILBUS_SCHEDULE_MAX_ACTIVE (100) sync jobs are active, so that
 *      thousands of accounts due at once are spread over minutes instead of
 *      started in one burst. An account with an active job (import, a sync
 *      of any origin) waits for it to end; one whose last job failed or was
 *      cancelled less than MAILBUS_SCHEDULE_RETRY_S (300, scaled) ago waits
 *      too (no retry storm against a broken server).
 * The job's completion reschedules the folders it read (next_sync_at NULL:
 * step 1 again). A job started by a command or by the IDLE watcher counts
 * like the scheduler's own. */
#include "schemas/schema.h"
#include "stages/common/lease.h"
#include "stages/scan/scan.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEASE "scheduler"

struct mb_scheduler {
    mb_scan *sc;
    mb_db *db; /* owned: this thread's connection */
    pthread_t thread;
    double scale;
    long tick_ms, max_starts, max_active, retry_s;
    bool holding; /* holds the lease (for the log line when that changes) */
};

static const mb_db_stmt stmts[] = {
    /* 1: next sync time of folders that have none. */
    {"sched_fill", 1,
     "UPDATE folders f SET next_sync_at = CASE WHEN e.every = interval '0' THEN 'infinity' "
     "ELSE f.synced_at + e.every * $1::float8 * (1 + 0.1 * random()) END "
     "FROM (SELECT f2.id, coalesce(f2.sync_every, a.sync_every, f2.sync_interval, "
     "              mb_sync_base(f2.role)) AS every "
     "      FROM folders f2 JOIN accounts a ON a.id = f2.account_id "
     "      WHERE f2.next_sync_at IS NULL AND f2.synced_at IS NOT NULL "
     "        AND f2.deleted_at IS NULL LIMIT 10000) e "
     "WHERE f.id = e.id"},
    {"sched_active", 0,
     "SELECT count(*) FROM sync_jobs WHERE type = 'sync' "
     "AND status IN ('pending', 'scanning', 'running', 'paused')"},
    /* 2: accounts with due folders, free to sync, oldest due first. */
    {"sched_due", 3,
     "SELECT d.account_id, a.name FROM ("
     "  SELECT account_id, min(next_sync_at) AS t FROM folders "
     "  WHERE next_sync_at <= now() AND deleted_at IS NULL GROUP BY account_id) d "
     "JOIN accounts a ON a.id = d.account_id "
     "WHERE NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.account_id = d.account_id "
     "                  AND j.status IN ('pending', 'scanning', 'running', 'paused')) "
     "AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.id = "
     "      (SELECT max(id) FROM sync_jobs WHERE account_id = d.account_id) "
     "    AND j.status IN ('failed', 'cancelled') "
     "    AND j.finished_at > now() - make_interval(secs => $1::float8 * $2::float8)) "
     "ORDER BY d.t LIMIT $3"},
    {"sched_folders", 1,
     "SELECT coalesce(remote_name, name) FROM folders WHERE account_id = $1::bigint "
     "AND next_sync_at <= now() AND deleted_at IS NULL ORDER BY name"},
};

/* Start the sync of one account's due folders. MB_OK also when a command
 * got there first (the account is busy: its folders stay due). */
static mb_status start_sync(mb_scheduler *sd, uint64_t account, const char *name, bool *started)
{
    char a[24];
    const char *p[] = {mb_u64s(a, account)};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(sd->db, "sched_folders", 1, p, &r);
    if (s)
        return s;
    int n = PQntuples(r);
    mb_rec_command c = {.op = "sync.start", .account = a, .discover = true, .origin = "scheduler"};
    char **names = calloc(n ? (size_t)n : 1, sizeof *names);
    if (!names) {
        PQclear(r);
        return mb_errf(MB_ERR_NOMEM, "%d folder names", n);
    }
    for (int i = 0; i < n; i++)
        names[i] = PQgetvalue(r, i, 0);
    c.folders.v = names;
    c.folders.n = (size_t)n;
    mb_buf opts = MB_BUF_INIT;
    uint64_t job = 0;
    s = n ? mb_rec_to_json(&mb_type_command, &c, &opts) : MB_OK;
    if (!s && n) s = mb_job_create(sd->db, account, "sync", mb_buf_cstr(&opts), &job);
    if (s == MB_ERR_BUSY) {
        MB_DEBUG(NULL, name, "scheduled sync waits: %s", mb_err_last());
        s = MB_OK;
    } else if (!s && n) {
        char j[24];
        MB_INFO(mb_u64s(j, job), name, "scheduled sync of %d folder%s: %s", n, n == 1 ? "" : "s",
                mb_buf_cstr(&opts));
        *started = true;
    }
    mb_buf_free(&opts);
    free(names);
    PQclear(r);
    return s;
}

/* One tick: steps 1 and 2 of the header comment. */
static mb_status tick(mb_scheduler *sd)
{
    bool mine;
    mb_status s = mb_lease_take(sd->db, LEASE, &mine);
    if (s)
        return s;
    if (mine != sd->holding)
        MB_INFO(NULL, NULL, mine ? "scheduler: this copy schedules syncs"
                                 : "scheduler: another copy schedules syncs");
    sd->holding = mine;
    if (!mine)
        return MB_OK;
    char scale[32], retry[24], limit[24];
    snprintf(scale, sizeof scale, "%.6g", sd->scale);
    const char *fp[] = {scale};
    if ((s = mb_db_exec_prepared(sd->db, "sched_fill", 1, fp, NULL)))
        return s;
    PGresult *r;
    if ((s = mb_db_exec_prepared(sd->db, "sched_active", 0, NULL, &r)))
        return s;
    long room = sd->max_active - strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (room > sd->max_starts)
        room = sd->max_starts;
    if (room <= 0)
        return MB_OK;
    snprintf(retry, sizeof retry, "%ld", sd->retry_s);
    snprintf(limit, sizeof limit, "%ld", room);
    const char *dp[] = {retry, scale, limit};
    if ((s = mb_db_exec_prepared(sd->db, "sched_due", 3, dp, &r)))
        return s;
    bool started = false;
    for (int i = 0; i < PQntuples(r) && !s && !mb_bus_stopping(); i++)
        s = start_sync(sd, strtoull(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1),
                       &started);
    PQclear(r);
    if (started)
        mb_scan_wake(sd->sc);
    return s;
}

static void *run(void *arg)
{
    mb_scheduler *sd = arg;
    char last[256] = "";
    while (!mb_bus_stopping()) {
        mb_status s = tick(sd);
        if (s && strncmp(last, mb_err_last(), sizeof last - 1)) {
            /* The same failure (Postgres away) once, not every tick. */
            MB_WARN(NULL, NULL, "scheduler: %s", mb_err_last());
            snprintf(last, sizeof last, "%s", mb_err_last());
        } else if (!s) {
            last[0] = '\0';
        }
        for (long t = 0; t < sd->tick_ms && !mb_bus_stopping(); t += 100)
            mb_nap_ms(sd->tick_ms - t < 100 ? sd->tick_ms - t : 100);
    }
    return NULL;
}

mb_status mb_scheduler_start(mb_scan *sc, const char *dsn, mb_scheduler **out)
{
    *out = NULL;
    mb_scheduler *sd = calloc(1, sizeof *sd);
    if (!sd)
        return mb_errf(MB_ERR_NOMEM, "scheduler");
    sd->sc = sc;
    mb_status s = mb_env_double("MAILBUS_SCHEDULE_SCALE", 1, 1e-6, 1000, &sd->scale);
    if (!s) s = mb_env_int("MAILBUS_SCHEDULE_TICK_MS", 1000, 100, 3600000L, &sd->tick_ms);
    if (!s) s = mb_env_int("MAILBUS_SCHEDULE_MAX_STARTS", 10, 1, 100000, &sd->max_starts);
    if (!s) s = mb_env_int("MAILBUS_SCHEDULE_MAX_ACTIVE", 100, 1, 1000000, &sd->max_active);
    if (!s) s = mb_env_int("MAILBUS_SCHEDULE_RETRY_S", 300, 0, 86400L * 30, &sd->retry_s);
    if (!s) s = mb_db_connect(dsn, &sd->db);
    if (!s) s = mb_db_prepare_all(sd->db, stmts, MB_ARRAY_LEN(stmts));
    if (!s) s = mb_job_prepare(sd->db);
    if (!s && pthread_create(&sd->thread, NULL, run, sd))
        s = mb_errf(MB_ERR_INTERNAL, "cannot start the scheduler thread");
    if (s) {
        mb_db_free(sd->db);
        free(sd);
        return s;
    }
    *out = sd;
    return MB_OK;
}

void mb_scheduler_stop(mb_scheduler *sd)
{
    if (!sd)
        return;
    pthread_join(sd->thread, NULL); /* the lease: main's mb_lease_release_all */
    mb_db_free(sd->db);
    free(sd);
}
