/* scan.h — the scan stage's jobs: answering commands (commands.c),
 * deciding when each folder is synced next (scheduler.c), scanning an
 * account into chunks (scan.c) or syncing it (sync.c: what changed since
 * the last job), and coordinating running jobs:
 * publishing fetch tasks with a bounded number in flight, progress and
 * completion events (coordinator.c). */
#ifndef MB_SCAN_H
#define MB_SCAN_H

#include "sources/account.h"
#include "sources/connlimit.h"
#include "sources/source.h"
#include "stages/common/job.h"
#include "stages/common/stage.h"

#include <pthread.h>

/* Most scanner threads one process runs (MAILBUS_SCAN_THREADS). */
#define MB_SCAN_MAX_THREADS 32

/* Threads, each with its own Postgres connection, so that none of them
 * waits for another: commands (a nats.c thread), scanning (scanner threads,
 * MAILBUS_SCAN_THREADS: a large folder takes minutes, and the small accounts
 * imported beside it must not wait for it), the scheduler (one thread) and
 * coordination (the main
 * thread, a pass every 100 ms, which alone publishes asynchronously on
 * st->bus). */
typedef struct {
    mb_stage *st;          /* st->db: the coordinator's connection */
    mb_db *cmd_db;         /* commands' connection */
    pthread_mutex_t cmd_mu;
    pthread_mutex_t claim_mu;                /* guards claimed */
    uint64_t claimed[MB_SCAN_MAX_THREADS];   /* job each scanner thread scans, or 0 */
    int scanners;                            /* scanner threads (MAILBUS_SCAN_THREADS, 4) */
    /* A job created by this process's commands wakes the scanner threads
     * at once (others poll every 500 ms); guarded by claim_mu. */
    pthread_cond_t wake_cv;
    unsigned wake_seq;
    /* A scan done wakes the coordinator (which else passes every 100 ms),
     * so that its chunks are published at once; guarded by claim_mu. */
    pthread_cond_t coord_cv;
    unsigned coord_seq;
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

/* A folder's scanned messages on their way into job_messages (scan.c):
 * held SCAN_BATCH at a time, written as they come, the job's scan lease and
 * the connection's slot renewed on the way, then cut into chunks. Used by
 * the import (every folder) and the sync (new messages, new and reset
 * folders). */
typedef struct {
    mb_db *db;
    uint64_t job;
    const char *lease;
    mb_conn_slot *slot;   /* the connection's slot, renewed with the lease */
    int64_t renewed_ms;   /* when the lease was last renewed */
    mb_fetch_item *v;     /* owned: the batch not yet written */
    size_t n;
    uint64_t folder_id;
    size_t total;         /* messages of the folder so far */
    mb_job_cut cut;       /* chunk numbers go on across folders */
} mb_scan_rec;

mb_status mb_scan_rec_init(mb_scan_rec *r, mb_db *db, uint64_t job, const char *lease,
                           mb_conn_slot *slot);
/* Start (again) on a folder: drops what an interrupted run recorded for it. */
mb_status mb_scan_rec_folder(mb_scan_rec *r, uint64_t folder_id);
/* An mb_scan_cb: one message (ctx is the mb_scan_rec). */
mb_status mb_scan_rec_msg(void *ctx, const mb_msg_info *m);
/* Write what is held. */
mb_status mb_scan_rec_flush(mb_scan_rec *r);
/* Write what is held and cut the folder's messages into chunks. */
mb_status mb_scan_rec_cut(mb_scan_rec *r);
void mb_scan_rec_free(mb_scan_rec *r);
/* Renew the lease (a third of its TTL gone) and the slot; MB_ERR_STOPPED if
 * another copy took the job over. Call in any long loop. */
mb_status mb_scan_keep_lease(mb_scan_rec *r);

/* Test-only: MAILBUS_FAULT_SCAN_FOLDER_DELAY_MS=N sleeps N ms after each
 * folder of an import or a sync, so a test can kill the scan in between. */
void mb_scan_fault_folder_delay(void);

/* Whether the job's options select the folder (not \Noselect; --folders). */
bool mb_scan_selected(const mb_rec_command *opt, const mb_folder_info *f);
/* Upsert the folder's row (names, role; live again if it was retired). */
mb_status mb_scan_save_folder(mb_db *db, uint64_t account, const mb_folder_info *f, uint64_t *id);

/* Prepare sync.c's statements on db (idempotent). */
mb_status mb_sync_prepare(mb_db *db);
/* What a sync needs besides its scan: the stage (bus and blob store, for
 * the new messages it downloads) and the account with its secret (for more
 * connections); all borrowed. */
typedef struct {
    mb_stage *st;
    const mb_account *a;
    const char *secret;
    const char *jobs;     /* the job id, for logs */
} mb_sync_ctx;
/* A sync job's folders (sync.c): what changed in each since the last
 * completed job, applied, new messages downloaded (a few) or queued. */
mb_status mb_sync_folders(mb_scan_rec *r, const mb_sync_ctx *cx, mb_source *src,
                          const mb_rec_command *opt, const mb_folder_info *fl, size_t nf);

/* Wake the scanner threads: a job is waiting to be scanned. */
void mb_scan_wake(mb_scan *sc);

/* Wake the coordinator (main thread) before its next 100 ms pass. */
void mb_scan_wake_coordinator(mb_scan *sc);
/* The coordinator's pause between passes: until woken, at most ms. */
void mb_scan_coordinator_nap(mb_scan *sc, int64_t ms);

/* The scheduler (scheduler.c): its own thread and connection to dsn,
 * started after the bus; stop joins it once mb_bus_stopping(). */
typedef struct mb_scheduler mb_scheduler;
mb_status mb_scheduler_start(mb_scan *sc, const char *dsn, mb_scheduler **out);
void mb_scheduler_stop(mb_scheduler *sd);

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
