/* cleanup.h — the cleanup job: purge emails deleted for longer than the
 * retention, and remove blobs no email references any more.
 *
 * One pass (mb_cleanup_pass), run by the store stage's timer
 * (cleanup_timer.h, every MAILBUS_CLEANUP_EVERY_MS) and by `mailbus cleanup`:
 *
 *   1. purge: emails whose deleted_at is older than the retention AND that
 *      still have no location — both checked in the DELETE itself, at purge
 *      time — in batches of 1000 (addresses and attachments go with them:
 *      ON DELETE CASCADE). The emails' trigger (migration 0008) queues each
 *      deleted row's blob in blob_gc, in the same transaction;
 *   2. walk: one of the 256 blob directories (the next one each pass, all
 *      with walk_dirs = 256) is listed and the blobs no email references are
 *      queued too (fetched for a job that was cancelled, or given up on);
 *   3. blobs: each queued blob that no emails row (of any account)
 *      references is removed with mb_blob_gc_remove (blob/blob.h), with
 *      cutoff = the earlier of (the blob store's clock at the pass start -
 *      the retention) and (the oldest active job's created_at - 5 min of
 *      clock skew allowance);
 *   4. record: a sync_history row (event 'cleanup') per account touched, a
 *      cleanup_passes row, one log line.
 *
 * WHY A CONCURRENT IMPORT NEVER LOSES A BLOB IT IS ABOUT TO REFERENCE. Its
 * fetch commits the blob before parse and store, which write the emails row
 * that references it, possibly much later (records wait in JetStream through
 * an outage). A commit either publishes the file or, finding it there,
 * touches its mtime (blob.h). The job stays active until the message is
 * stored or given up, and was created before the fetch, so until the emails
 * row exists the blob's mtime is after the job's created_at, which is after
 * the cutoff: the blob is kept (MB_BLOB_GC_RECENT, still queued, looked at
 * again next pass). Once the row is committed the reference check sees it.
 * The last window — a touch or a reference landing between this pass's look
 * and the unlink — is closed by mb_blob_gc_remove: it moves the blob out of
 * sight first (a fetch after that writes a fresh copy), then reads the mtime
 * and asks Postgres again (the check callback), and only then unlinks.
 * The retention in the cutoff also covers records not tied to an active job
 * (a cancelled job's records still in flight, a dead letter retried): their
 * blob is kept until nothing touched it for the whole retention.
 *
 * One pass at a time across every process: the lease "cleanup"
 * (stages/common/lease.h), renewed after every batch. */
#ifndef MB_STORE_CLEANUP_H
#define MB_STORE_CLEANUP_H

#include "blob/blob.h"
#include "db/db.h"

#include <stdbool.h>
#include <stdint.h>

/* The active-job bound of the cutoff allows this much difference between
 * Postgres's clock and the blob store's. */
#define MB_CLEANUP_CLOCK_SKEW_S 300
/* Blob directories: ab/ for the 256 values of the first hash byte. */
#define MB_CLEANUP_DIRS 256

typedef struct {
    int64_t retention_s; /* purge emails deleted longer ago than this */
    bool dry_run;        /* report what a pass would do; change nothing (one
                            transaction, rolled back; no file touched) */
    int walk_dirs;       /* blob directories walked, from where the last pass
                            stopped (0..MB_CLEANUP_DIRS) */
    bool (*stop)(void);  /* asked between batches (NULL: never) */
} mb_cleanup_opts;

typedef struct {
    uint64_t account_id; /* 0 in the totals, and for blobs of no known account */
    uint64_t emails_purged;
    uint64_t blobs_removed;         /* dry run: would be */
    uint64_t blobs_kept_referenced; /* another email references it */
    uint64_t blobs_kept_recent;     /* touched after the cutoff: stays queued */
    uint64_t blobs_absent;          /* already gone */
} mb_cleanup_counts;

typedef struct {
    bool ran;                   /* false: another process holds the lease */
    mb_cleanup_counts total;
    uint64_t blobs_queued;      /* unreferenced blobs the walk found */
    int dirs_walked;
    mb_cleanup_counts *accounts; /* owned (mb_cleanup_result_free); per account touched */
    size_t naccounts;
    int64_t duration_ms;
} mb_cleanup_result;

/* MAILBUS_RETENTION_DAYS (default 30, fractions allowed: 0.5 is 12 hours)
 * in seconds. */
mb_status mb_cleanup_retention_env(int64_t *seconds);

/* One pass (above) on db (a connection of its own: the pass uses
 * transactions) and blobs. *out is filled (free it) whatever the status; on
 * failure what was done so far is recorded and logged. */
mb_status mb_cleanup_pass(mb_db *db, mb_blob_store *blobs, const mb_cleanup_opts *o,
                          mb_cleanup_result *out);
void mb_cleanup_result_free(mb_cleanup_result *r);

/* Whether no pass started within the last every_ms (any process). */
mb_status mb_cleanup_due(mb_db *db, int64_t every_ms, bool *due);

#endif
