/* scan.h — the scan stage's three jobs: answering commands (commands.c),
 * scanning an account into chunks (scan.c), and coordinating running jobs:
 * publishing fetch tasks with a bounded number in flight, progress and
 * completion events (coordinator.c). */
#ifndef MB_SCAN_H
#define MB_SCAN_H

#include "stages/common/stage.h"

#include <pthread.h>

/* Most scanner threads one process runs (MAILBUS_SCAN_THREADS). */
#define MB_SCAN_MAX_THREADS 32

/* Threads, each with its own Postgres connection, so that none of them
 * waits for another: commands (a nats.c thread), scanning (scanner threads,
 * MAILBUS_SCAN_THREADS: a large folder takes minutes, and the small accounts
 * imported beside it must not wait for it) and coordination (the main
 * thread, a pass every 100 ms, which alone publishes asynchronously on
 * st->bus). */
typedef struct {
    mb_stage *st;          /* st->db: the coordinator's connection */
    mb_db *cmd_db;         /* commands' connection */
    pthread_mutex_t cmd_mu;
    pthread_mutex_t claim_mu;                /* guards claimed */
    uint64_t claimed[MB_SCAN_MAX_THREADS];   /* job each scanner thread scans, or 0 */
    int scanners;                            /* scanner threads (MAILBUS_SCAN_THREADS, 4) */
    /* Jobs whose scans keep failing for a transient reason (mail server or
     * Postgres unreachable) and since when (monotonic ms), guarded by
     * claim_mu: after MAILBUS_SCAN_GIVE_UP_MS the job fails. In memory: a
     * restarted copy starts counting again. */
    struct { uint64_t job; int64_t since_ms; } failing[64];
    int64_t give_up_ms;
    int max_inflight;      /* chunks published and not done, per job */
    int64_t stall_ms;      /* a published chunk without progress this long is handed out again */
    unsigned pass;         /* coordination passes so far */
} mb_scan;

/* <p>.cmd.> handler (see commands.c for the operations). */
void mb_scan_command(void *ctx, const char *subject, const void *data, size_t len, mb_buf *reply);

/* List, open and scan every selected folder of the job's account, record
 * chunks, and set the job running (or failed, with the reason). Runs on a
 * scanner thread, with that thread's connection db; the job's lease keeps
 * other processes off it, sc->claimed the process's other threads. */
mb_status mb_scan_job(mb_scan *sc, mb_db *db, uint64_t job);

/* One coordination pass over running and paused jobs (main thread). */
mb_status mb_scan_coordinate(mb_scan *sc);

/* "YYYY-MM-DD" (UTC midnight) to unix seconds; NULL/"" is 0. */
mb_status mb_scan_parse_day(const char *s, int64_t *out);

#endif
