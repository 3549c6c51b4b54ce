/* main.c — mailbus-scan: serves the commands, schedules syncs (scheduler
 * thread), scans or syncs accounts into chunks (scanner threads), and
 * coordinates running jobs (main thread). */
#include "bus/serve.h"
#include "stages/common/job.h"
#include "stages/common/lease.h"
#include "stages/scan/scan.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "Serves <prefix>.cmd.> (import.start, sync.start, import.pause, import.resume,\n"
    "import.cancel, import.status, schedule.set, dlq.*; JSON or msgpack cmd/1\n"
    "payloads, JSON replies),\n"
    "scans IMAP accounts (an import: every message; a sync: what changed since the last\n"
    "completed job) into chunks of at most 500 messages / 32 MB, and keeps MAILBUS_MAX_INFLIGHT\n"
    "(default 8) chunks per job in flight, newest first. Publishes progress every\n"
    "second. A published chunk without progress for MAILBUS_CHUNK_STALL_MS (600000)\n"
    "is handed out again. Any number of copies may run: scanning and coordinating a\n"
    "job are leases in Postgres (MAILBUS_LEASE_MS, 15000), taken over from a copy\n"
    "that died once its lease expires. MAILBUS_SCAN_THREADS (default 4) accounts are\n"
    "scanned at once, each on its own connection. A scan that fails because the mail\n"
    "server or Postgres is unreachable is tried again every 5 s for\n"
    "MAILBUS_SCAN_GIVE_UP_MS (3600000), then its job fails with the reason.\n"
    "A sync opens its changed folders on MAILBUS_SYNC_CONNECTIONS (2) connections and\n"
    "downloads a folder's new messages itself (into MAILBUS_BLOB_DIR, then parse/1\n"
    "records) when there are at most MAILBUS_SYNC_INLINE_MAX (200) of them.\n"
    "One copy (lease \"scheduler\") starts syncs by itself: each folder every interval\n"
    "after its last completed job (by role, adapted to activity, or as set with\n"
    "`mailbus schedule set`), every MAILBUS_SCHEDULE_TICK_MS (1000) at most\n"
    "MAILBUS_SCHEDULE_MAX_STARTS (10) jobs, while fewer than MAILBUS_SCHEDULE_MAX_ACTIVE\n"
    "(100) syncs are active; an account whose last job failed waits\n"
    "MAILBUS_SCHEDULE_RETRY_S (300). MAILBUS_SCHEDULE_SCALE (1) multiplies every\n"
    "interval (tests shorten time with it).";

/* Coordination failures, so that the same one, pass after pass (every
 * 100 ms), is logged once a minute. */
typedef struct {
    char last[256];
    int64_t logged_ms;
    unsigned repeats;
} failures;

static void log_failure(failures *f)
{
    int64_t t = mb_mono_ms();
    if (!strncmp(f->last, mb_err_last(), sizeof f->last - 1) && t - f->logged_ms < 60000) {
        f->repeats++;
        return;
    }
    if (f->repeats && f->last[0])
        MB_WARN(NULL, NULL, "coordinating: the last failure came %u times more", f->repeats);
    MB_WARN(NULL, NULL, "coordinating: %s", mb_err_last());
    snprintf(f->last, sizeof f->last, "%s", mb_err_last());
    f->logged_ms = t;
    f->repeats = 0;
}

static void nap_on(mb_scan *sc, pthread_cond_t *cv, unsigned *seq, int64_t ms);

/* One scanner thread and its Postgres connection. */
typedef struct {
    mb_scan *sc;
    int index;   /* its entry in sc->claimed */
    mb_db *db;   /* owned */
    pthread_t thread;
    bool running;
} scanner;

/* Claim job for scanner k unless another thread of this process scans it. */
static bool claim(mb_scan *sc, int k, uint64_t job)
{
    bool free_ = true;
    pthread_mutex_lock(&sc->claim_mu);
    for (int i = 0; i < sc->scanners && free_; i++)
        free_ = sc->claimed[i] != job;
    if (free_)
        sc->claimed[k] = job;
    pthread_mutex_unlock(&sc->claim_mu);
    return free_;
}

/* A scanner thread: jobs waiting to be scanned (new, or interrupted by a
 * crash), oldest first, each taken by the first thread (of any process) that
 * gets to it, so that several accounts are scanned at once. */
static void *scan_loop(void *arg)
{
    scanner *t = arg;
    mb_scan *sc = t->sc;
    while (!mb_bus_stopping()) {
        uint64_t ids[64];
        size_t n = 0;
        mb_status ls = mb_job_list_status(t->db, "scanning", ids, MB_ARRAY_LEN(ids), &n);
        if (ls)
            MB_WARN(NULL, NULL, "listing jobs to scan: %s", mb_err_last());
        for (size_t i = 0; !ls && i < n && !mb_bus_stopping(); i++) {
            char j[24];
            if (!claim(sc, t->index, ids[i]))
                continue;
            if (mb_scan_job(sc, t->db, ids[i]))
                MB_ERROR(mb_u64s(j, ids[i]), NULL, "scan: %s", mb_err_last());
            pthread_mutex_lock(&sc->claim_mu);
            sc->claimed[t->index] = 0;
            pthread_mutex_unlock(&sc->claim_mu);
        }
        if (ls) {
            for (int k = 0; k < 20 && !mb_bus_stopping(); k++)
                mb_nap_ms(250);
            continue;
        }
        /* Until woken by a new job, or 500 ms (jobs created by another copy,
         * or waiting for a retry). */
        nap_on(sc, &sc->wake_cv, &sc->wake_seq, 500);
    }
    return NULL;
}

/* Until woken through cv (seq moved), the bus stops, or ms have passed. */
static void nap_on(mb_scan *sc, pthread_cond_t *cv, unsigned *seq, int64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&sc->claim_mu);
    unsigned seen = *seq;
    while (seen == *seq && !mb_bus_stopping() &&
           pthread_cond_timedwait(cv, &sc->claim_mu, &until) == 0)
        ;
    pthread_mutex_unlock(&sc->claim_mu);
}

void mb_scan_coordinator_nap(mb_scan *sc, int64_t ms)
{
    nap_on(sc, &sc->coord_cv, &sc->coord_seq, ms);
}

void mb_scan_wake_coordinator(mb_scan *sc)
{
    pthread_mutex_lock(&sc->claim_mu);
    sc->coord_seq++;
    pthread_cond_broadcast(&sc->coord_cv);
    pthread_mutex_unlock(&sc->claim_mu);
}

void mb_scan_wake(mb_scan *sc)
{
    pthread_mutex_lock(&sc->claim_mu);
    sc->wake_seq++;
    pthread_cond_broadcast(&sc->wake_cv);
    pthread_mutex_unlock(&sc->claim_mu);
}

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "scan", usage, MB_STAGE_KEY | MB_STAGE_BLOBS, 1, argc, argv);
    if (rc >= 0)
        return rc;
    mb_scan sc = {.st = &st};
    /* The store takes a sync's few new messages per folder (sync.c), from
     * several threads at once: each batch syncs its own files, so its cost
     * follows its own few blobs, not everything dirty on the disk (syncfs
     * also flushes Postgres's and NATS's writes, and an import of another
     * account may be writing beside it). On the sync benchmark's mailbox
     * no slower than syncfs: median 0.87 s against 0.86 s, 4 syncs each. */
    mb_blob_set_sync_mode(st.blobs, MB_BLOB_SYNC_FILES);
    long inflight, stall, threads = 1;
    mb_status s = mb_env_int("MAILBUS_MAX_INFLIGHT", 8, 1, 10000, &inflight);
    if (!s) s = mb_env_int("MAILBUS_CHUNK_STALL_MS", 600000, 1000, 86400000L, &stall);
    if (!s) s = mb_env_int("MAILBUS_SCAN_THREADS", 4, 1, MB_SCAN_MAX_THREADS, &threads);
    long give_up = 0;
    if (!s) s = mb_env_int("MAILBUS_SCAN_GIVE_UP_MS", 3600000L, 1000, 30L * 86400000L, &give_up);
    sc.give_up_ms = give_up;
    sc.max_inflight = (int)inflight;
    sc.stall_ms = stall;
    sc.scanners = (int)threads;
    pthread_mutex_init(&sc.cmd_mu, NULL);
    pthread_mutex_init(&sc.claim_mu, NULL);
    pthread_cond_init(&sc.wake_cv, NULL);
    pthread_cond_init(&sc.coord_cv, NULL);
    mb_bus_sub *sub = NULL;
    const char *dsn = mb_env("MAILBUS_PG_DSN", MB_DEFAULT_PG_DSN);
    if (!s) s = mb_db_connect(dsn, &sc.cmd_db);
    if (!s) s = mb_job_prepare(sc.cmd_db);
    if (!s) s = mb_bus_serve(st.bus, "cmd.>", "mailbus-scan", mb_scan_command, &sc, &sub);
    scanner scanners[MB_SCAN_MAX_THREADS] = {0};
    for (int i = 0; !s && i < sc.scanners; i++) {
        scanners[i].sc = &sc;
        scanners[i].index = i;
        s = mb_db_connect(dsn, &scanners[i].db);
        if (!s) s = mb_job_prepare(scanners[i].db);
        if (!s && pthread_create(&scanners[i].thread, NULL, scan_loop, &scanners[i]))
            s = mb_errf(MB_ERR_INTERNAL, "cannot start scanner thread %d", i + 1);
        scanners[i].running = !s;
    }
    mb_scheduler *sched = NULL;
    if (!s) s = mb_scheduler_start(&sc, dsn, &sched);
    failures f = {0};
    while (!s && !mb_bus_stopping()) {
        mb_status cs = mb_scan_coordinate(&sc);
        if (cs) {
            log_failure(&f);
            /* A lost JetStream store: the scan stage provisions too. */
            if (cs == MB_ERR_BUS && mb_bus_check(st.bus))
                MB_DEBUG(NULL, NULL, "bus check: %s", mb_err_last());
            /* Postgres or NATS away: quietly until back. */
            mb_stage_wait_up(&st, cs);
        } else {
            f.last[0] = '\0';
        }
        /* Short passes: a finished chunk is replaced, and a finished job
         * completed, within 100 ms; a finished scan is published at once. */
        mb_scan_coordinator_nap(&sc, 100);
    }
    if (s)
        mb_bus_stop(); /* scanner threads started before the failure end too */
    mb_scan_wake(&sc);
    mb_scan_wake_coordinator(&sc);
    mb_scheduler_stop(sched);
    for (int i = 0; i < sc.scanners; i++) {
        if (scanners[i].running)
            pthread_join(scanners[i].thread, NULL);
        mb_db_free(scanners[i].db);
    }
    mb_bus_unsubscribe(sub);
    /* Leases go to another copy at once instead of after they expire. */
    if (st.db && mb_lease_release_all(st.db))
        MB_WARN(NULL, NULL, "%s", mb_err_last());
    mb_db_free(sc.cmd_db);
    pthread_mutex_destroy(&sc.cmd_mu);
    pthread_mutex_destroy(&sc.claim_mu);
    pthread_cond_destroy(&sc.wake_cv);
    pthread_cond_destroy(&sc.coord_cv);
    return mb_stage_finish(&st, s);
}
