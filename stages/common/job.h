/* job.h — import and sync jobs in Postgres: creation, chunking, per-message progress
 * bits, counters, completion. Every stage records its progress here; the scan
 * stage's coordinator reads it to keep a bounded number of chunks in flight
 * and to publish progress and completion events.
 *
 * Exactness under redelivery: each message of a job has a row in
 * job_messages with a bit set (st) per stage that finished it. Setting a bit
 * is idempotent, and the job's counters are recounted from these bits, so a
 * record handled twice is counted once. */
#ifndef MB_STAGE_JOB_H
#define MB_STAGE_JOB_H

#include "db/db.h"
#include "schemas/records.h"

#include <stdatomic.h>

enum {
    MB_JOB_FETCHED = 1,
    MB_JOB_PARSED = 2,
    MB_JOB_STORED = 4,
    MB_JOB_FAILED = 8, /* given up on: counted as an error, not stored */
};

/* Chunk limits of the design: at most this many messages and bytes. */
#define MB_CHUNK_MAX_MSGS 500
#define MB_CHUNK_MAX_BYTES (32ull * 1024 * 1024)

typedef struct {
    uint64_t id;
    uint64_t account_id;
    char status[16];
    bool defer_attachments;
    bool sync;             /* type 'sync' (else 'import') */
} mb_job_info;

/* Prepare every statement this module uses on db (call once per connection;
 * idempotent). */
mb_status mb_job_prepare(mb_db *db);

/* New job of type ("import", "sync") in state 'scanning'. options_json is
 * stored as given. MB_ERR_BUSY, naming it, while the account has another
 * active job (one per account: migration 0006). */
mb_status mb_job_create(mb_db *db, uint64_t account_id, const char *type,
                        const char *options_json, uint64_t *job_out);

/* What a job's scan found in a folder: the state the folder is in now, to be
 * remembered when the job completes (the next sync starts from it; a job
 * that fails or is cancelled leaves the folder's old state), and what
 * history shows. uidvalidity 0: no state (a folder deleted on the server).
 * Strings may be NULL. Upsert: a scan run again replaces it. */
typedef struct {
    uint64_t uidvalidity, uidnext, highest_modseq, message_count;
    const char *method;   /* "scan" (import, new folder), "qresync", "condstore", "full",
                             "unchanged", "reset" */
    const char *event;    /* "created", "renamed", "deleted", "reset" or NULL */
    const char *old_name; /* renamed: the name it had */
    uint64_t added;       /* messages scanned for fetching */
    uint64_t flags_changed; /* locations whose flags this run changed (added up) */
    int64_t duration_ms;
} mb_job_folder;
mb_status mb_job_folder_state(mb_db *db, uint64_t job, uint64_t folder_id,
                              const mb_job_folder *f);
mb_status mb_job_get(mb_db *db, uint64_t job, mb_job_info *out);
/* Set status (and error text if non-NULL); 'completed', 'failed' and
 * 'cancelled' also set finished_at. Only moves a job that is not finished
 * already, unless force. */
mb_status mb_job_set_status(mb_db *db, uint64_t job, const char *status, const char *error);
/* Record a problem: counts in sync_history and shows as the job's last
 * error text, without failing the job. The same problem again (same what
 * and detail as the job's last one: an outage met by every retry) is
 * recorded once. */
mb_status mb_job_problem(mb_db *db, uint64_t job, uint64_t account_id, const char *what,
                         const char *detail);

/* Inside a transaction: wait for, and hold until it ends, the account's
 * write lock. A sync's folder transactions and the store's batches take it
 * before touching the account's emails rows: both update several rows of
 * one account in their own orders (a moved message is deleted from one
 * folder by the sync while the store adds it to another), and side by side
 * they deadlocked, each held up to Postgres's deadlock timeout. Take the
 * locks of several accounts in ascending order. */
mb_status mb_job_account_lock(mb_db *db, uint64_t account_id);

/* A folder's scan, streamed so memory stays bounded: begin drops whatever
 * an earlier, interrupted scan of this job recorded for the folder; add
 * records a batch of scanned messages (any order, any batch size); cut, once
 * the folder is scanned, cuts its messages into chunks of at most
 * MB_CHUNK_MAX_MSGS / MB_CHUNK_MAX_BYTES, newest first — one page of
 * messages per call, while *more. The coordinator publishes nothing before
 * the job's scan is done, so an interrupted scan is simply run again (a
 * sync's, which hands on a few messages itself, skips the folders it
 * finished): no transaction needs to span a folder, and the caller renews
 * its lease between calls. */
typedef struct {
    int seq;               /* next chunk number of the job (mb_job_cut_init), on across folders */
    atomic_int *shared_seq; /* instead of seq when set: one job's folders cut by several threads */
    /* private */
    bool started;
    uint64_t below, hi, lo, bytes;
    size_t count;
} mb_job_cut;
/* A cut whose chunk numbers follow those the job already has. */
mb_status mb_job_cut_init(mb_db *db, uint64_t job, mb_job_cut *c);
mb_status mb_job_folder_begin(mb_db *db, uint64_t job, uint64_t folder_id);
mb_status mb_job_folder_add(mb_db *db, uint64_t job, uint64_t folder_id,
                            const mb_fetch_item *items, size_t n);
mb_status mb_job_folder_cut(mb_db *db, uint64_t job, uint64_t folder_id, mb_job_cut *c,
                            bool *more);
/* Scan finished: totals from the chunks, status 'running'. */
mb_status mb_job_scan_done(mb_db *db, uint64_t job);

/* Coordinator: mark the published chunks whose messages every stage has
 * recorded (or that failed) as done. */
mb_status mb_job_chunks_mark_done(mb_db *db, uint64_t job);
/* Up to max ids of pending chunks to publish so that at most max_inflight
 * are published and not done (call mb_job_chunks_mark_done first). ids_out
 * has room for max. */
mb_status mb_job_chunks_to_publish(mb_db *db, uint64_t job, int max_inflight, uint64_t *ids_out,
                                   size_t max, size_t *n_out);
/* The fetch task for one chunk (caller frees with mb_rec_free), and how
 * often the sweep handed the chunk back (*republished, for the task's
 * Nats-Msg-Id: a republished task must not be dropped as a duplicate). */
mb_status mb_job_chunk_task(mb_db *db, uint64_t chunk_id, mb_rec_fetch *out, int *republished);
mb_status mb_job_chunk_published(mb_db *db, uint64_t chunk_id);
/* The sweep. stalled: note which published chunks of job made progress
 * (any stage bit of any of its messages changed) since the last call, and
 * count those without progress for stall_ms. hand_back: each of those loses
 * the bits of its messages that are neither stored nor failed (so fetch
 * downloads them again and the stages after it see them again) and goes back
 * to 'pending' for the next publish; *n_out: how many. */
mb_status mb_job_chunks_stalled(mb_db *db, uint64_t job, int64_t stall_ms, size_t *n_out);
mb_status mb_job_chunks_hand_back(mb_db *db, uint64_t job, int64_t stall_ms, size_t *n_out);

/* Set bit on the given messages of job (folder_ids[i], uids[i]). */
mb_status mb_job_mark(mb_db *db, uint64_t job, int bit, const uint64_t *folder_ids,
                      const uint64_t *uids, size_t n);
/* Which of the given uids of one folder already have bit set: out[i]. */
mb_status mb_job_marked(mb_db *db, uint64_t job, uint64_t folder_id, int bit,
                        const uint64_t *uids, size_t n, bool *out);

/* Recount the job's counters into sync_jobs and fill ev (kind "progress").
 * The recount reads every job_messages row of the job: the coordinator's,
 * once a second per job. */
mb_status mb_job_refresh(mb_db *db, uint64_t job, mb_rec_event *ev);
/* ev from the counters as last recounted (at most about a second old), at
 * the cost of one row: what commands answer with. */
mb_status mb_job_read(mb_db *db, uint64_t job, mb_rec_event *ev);
/* If every chunk is done (see mb_job_chunks_mark_done)
 * and no attachment scan is pending, move a running job to 'completed';
 * *done_out says whether it did. */
mb_status mb_job_try_complete(mb_db *db, uint64_t job, bool *done_out);

/* Jobs in one of the given states, oldest first (ids_out room for max). */
mb_status mb_job_list_status(mb_db *db, const char *status, uint64_t *ids_out, size_t max,
                             size_t *n_out);

#endif
