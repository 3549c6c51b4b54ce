/* download.h — the download core of a fetch task (mb_rec_fetch: a chunk of
 * one folder), over a source connection the caller holds with the task's
 * folder open: the fetch stage's whole task, and a few messages of a folder
 * the scan stage has open (a sync's new messages). Connecting, opening the
 * folder, retries and verdicts stay with the caller.
 *
 * Order of effects, so a crash anywhere loses nothing: after each FETCH group
 * (at most MB_DL_GROUP_MAX_BYTES / MB_DL_GROUP_MAX_MSGS) its blobs are made
 * durable with one batched sync, their parse records are published and
 * acknowledged by JetStream, and the messages are marked fetched in Postgres
 * (mb_dl_hand_on); the caller acks its task when every group is through.
 * Handing each group on at once keeps parse and store busy while the rest of
 * the chunk downloads. A redelivered task skips messages already marked
 * fetched (mb_dl_init); a message fetched twice lands on the same blob
 * (content addressing) and the same Nats-Msg-Id.
 *
 * The caller's loop:
 *     mb_dl_init;
 *     while ((k = mb_dl_group(&dl, &pos, uids))): mb_dl_fetch, mb_dl_hand_on;
 *     mb_dl_give_up on what is missing, if it must; mb_dl_free.
 *
 * Threads: an mb_dl is used by one thread; st->bus may be shared unless
 * async (bus.h), st->blobs is thread-safe, db is the thread's own. */
#ifndef MB_STAGE_DOWNLOAD_H
#define MB_STAGE_DOWNLOAD_H

#include "sources/source.h"
#include "stages/common/stage.h"

#include <stdbool.h>
#include <stdint.h>

/* One message of a download (one per item of the task, same order). */
typedef struct {
    uint64_t uid;
    bool done;        /* fetched earlier (marked in Postgres) or now */
    bool got;         /* received in this run */
    bool sent;        /* parse record published, marked fetched */
    char sha[65];
    uint64_t size;
} mb_dl_msg;

/* A FETCH command carries at most this many bytes or messages, so memory
 * stays bounded (libetpan holds a whole response) with large messages. */
#define MB_DL_GROUP_MAX_BYTES (4u * 1024 * 1024)
#define MB_DL_GROUP_MAX_MSGS 100

typedef struct {
    mb_stage *st;            /* st->db, st->bus, st->blobs (borrowed) */
    mb_db *db;               /* the Postgres connection to use (borrowed; fetch passes st->db, a scanner thread its own) */
    const mb_rec_fetch *t;   /* the task (borrowed) */
    mb_dl_msg *ms;           /* owned: one per t->items, ms[i].uid = t->items.v[i].uid */
    size_t n;
    bool async;              /* publish parse records with mb_bus_publish_async + flush (the bus's one
                                async batch belongs to the caller's thread) rather than mb_bus_publish */
    mb_status werr;          /* blob store failure inside the fetch callback */
} mb_dl;

/* Start a download of t: ms allocated, done = already marked fetched in
 * Postgres (mb_job_marked). Even when this fails, dl is fit for the calls
 * below and must be freed: after MB_ERR_NOMEM it has no messages, otherwise
 * none is done (mb_dl_give_up marks them all). */
mb_status mb_dl_init(mb_dl *dl, mb_stage *st, mb_db *db, const mb_rec_fetch *t, bool async);
/* The next group of messages not done, from index *pos on: their uids into uids (room for
 * MB_DL_GROUP_MAX_MSGS), bounded by MB_DL_GROUP_MAX_BYTES/MSGS (sizes from the task's items);
 * returns how many; *pos moves past the group. 0: nothing left from *pos. */
size_t mb_dl_group(const mb_dl *dl, size_t *pos, uint64_t *uids);
/* UID FETCH of uids over src (its open folder) into the blob store (not yet
 * durable). Messages the server does not send stay not done. */
mb_status mb_dl_fetch(mb_dl *dl, mb_source *src, const uint64_t *uids, size_t k);
/* Make what was received durable (mb_blob_sync), publish its parse records, mark it fetched. */
mb_status mb_dl_hand_on(mb_dl *dl);
/* Give up on the messages not done: marked failed, the reason as a job problem (logged as now, with the account name given). */
void mb_dl_give_up(mb_dl *dl, const char *account_name, const char *why);
size_t mb_dl_missing(const mb_dl *dl);   /* not done */
size_t mb_dl_got(const mb_dl *dl);       /* received in this run */
void mb_dl_free(mb_dl *dl);              /* frees ms; dl reusable after init */

#endif
