/* sync.c — a sync job's folders: what changed on the server since the last
 * completed job, found by the source's changes operation (QRESYNC,
 * CONDSTORE, or a UID-set comparison: sources/source.h) and applied here.
 *
 *   flags     changed flags go to the message's location (and the email);
 *   deleted   a location the server no longer has is removed (job_gone keeps
 *             it for the history); an email left without any location is
 *             marked deleted_at and purged later by the cleanup job;
 *   new       messages (UID >= the folder's last UIDNEXT) go through parse,
 *             store and avscan as in an import (mb_scan_rec), except those
 *             already stored at the same UIDVALIDITY and UID (a UID's content
 *             never changes). A few (MAILBUS_SYNC_INLINE_MAX) are downloaded
 *             here, on the connection that has the folder open, with the
 *             fetch stage's code (download.h); more go to the fetch stage;
 *   folders   LIST each sync: a folder without a row (or without state: its
 *             import never completed) is scanned whole; one whose
 *             UIDVALIDITY changed too, after its old locations are retired;
 *             a folder gone from the server is retired with its locations;
 *             a new name whose UIDVALIDITY equals exactly one vanished
 *             folder's (and whose UIDNEXT did not go back) is that folder
 *             renamed: it keeps its row, so its history and schedule.
 *             A sync of some folders reads only those, unless it asks for
 *             discovery (the scheduler's syncs): then also folders renamed
 *             and folders new on the server (unless the account's import
 *             named its folders: an account imported with --folders keeps
 *             to them), and it retires those gone.
 *
 * Folders that need opening are synced on up to MAILBUS_SYNC_CONNECTIONS
 * connections at once (sync_pool below), largest first.
 *
 * Comparisons happen in Postgres, against job_listing, written in batches as
 * the server's answers stream in: memory stays flat on a 1M-message folder.
 * Each folder's changes are applied in one transaction, which also records
 * the folder in job_folders; the folders' new state is applied only when
 * the job completes (migration 0006). A sync that dies half-way is run
 * again: the folders it recorded are left alone (their new messages are
 * queued or on their way), the others are done as if for the first time.
 * Those transactions and the store's take the account's write lock first
 * (mb_job_account_lock): both update the account's emails. A moved message is a deleted
 * location plus a new one: the email row is the same (it is keyed by its
 * bytes), but IMAP gives a third party no way to know the new UID holds the
 * same bytes before fetching them, so they are fetched again. */
#include "schemas/schema.h"
#include "stages/common/download.h"
#include "stages/common/job.h"
#include "stages/scan/scan.h"
#include "util/env.h"
#include "util/clock.h"
#include "util/log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Entries of job_listing or vanished ranges held before they are written. */
#define LIST_BATCH 5000

static const mb_db_stmt stmts[] = {
    /* Every folder of the account with the state of the last completed job,
     * the server's message count then included (not the locations held:
     * counting those took 40-70 ms at 100,000 messages, and "did messages go
     * since" is a question about the server's count). */
    {"sync_folders", 2,
     "SELECT f.id, coalesce(f.remote_name, f.name), f.name, coalesce(f.uidvalidity, 0), "
     "coalesce(f.uidnext, 0), coalesce(f.highest_modseq, 0), f.deleted_at IS NOT NULL, "
     "f.message_count, EXISTS (SELECT 1 FROM job_folders jf WHERE jf.job_id = $2 "
     "AND jf.folder_id = f.id), EXISTS (SELECT 1 FROM repair_items r WHERE r.folder_id = f.id) "
     "FROM folders f WHERE f.account_id = $1 ORDER BY f.id"},
    /* Did the account's last completed import name its folders? */
    {"sync_import_chose", 1,
     "SELECT coalesce(jsonb_array_length(options->'folders'), 0) > 0 FROM sync_jobs "
     "WHERE account_id = $1 AND type = 'import' AND status = 'completed' "
     "ORDER BY id DESC LIMIT 1"},
    {"sync_listing_clear", 2, "DELETE FROM job_listing WHERE job_id = $1 AND folder_id = $2"},
    {"sync_listing_add", 4,
     "INSERT INTO job_listing (job_id, folder_id, uid, flags) "
     "SELECT DISTINCT ON (u.uid) $1, $2, u.uid, u.flags::text[] "
     "FROM unnest($3::bigint[], $4::text[]) WITH ORDINALITY AS u(uid, flags, i) "
     "ORDER BY u.uid, u.i DESC "
     "ON CONFLICT (job_id, folder_id, uid) DO UPDATE SET flags = EXCLUDED.flags"},
    /* The whole-folder paths compare against what the scan found. */
    {"sync_listing_from_scan", 2,
     "INSERT INTO job_listing (job_id, folder_id, uid, flags) "
     "SELECT job_id, folder_id, uid, flags FROM job_messages WHERE job_id = $1 AND folder_id = $2 "
     "ON CONFLICT (job_id, folder_id, uid) DO UPDATE SET flags = EXCLUDED.flags"},
    /* $3 uidvalidity. Flags are compared as sets. The email's flags follow
     * the location's (the last one written wins for a message in two
     * folders, as in the store). */
    {"sync_flags", 3,
     "WITH u AS (UPDATE email_locations l SET flags = j.flags, synced_at = now() "
     "FROM job_listing j WHERE j.job_id = $1 AND j.folder_id = $2 AND l.folder_id = $2 "
     "AND l.uidvalidity = $3 AND l.uid = j.uid "
     "AND NOT (l.flags @> j.flags AND l.flags <@ j.flags) RETURNING l.email_id, l.flags), "
     "e AS (UPDATE emails SET flags = u.flags FROM u WHERE emails.id = u.email_id) "
     "SELECT count(*) FROM u"},
    /* Locations gone: of another UIDVALIDITY, or below $4 (the last
     * UIDNEXT) and not listed. */
    {"sync_gone_unlisted", 4,
     "WITH d AS (DELETE FROM email_locations l WHERE l.folder_id = $2 AND (l.uidvalidity <> $3 "
     "OR (l.uid < $4 AND NOT EXISTS (SELECT 1 FROM job_listing j WHERE j.job_id = $1 "
     "AND j.folder_id = $2 AND j.uid = l.uid))) RETURNING l.uid, l.email_id) "
     "INSERT INTO job_gone (job_id, folder_id, uid, email_id) SELECT $1, $2, uid, email_id FROM d "
     "ON CONFLICT DO NOTHING"},
    {"sync_gone_ranges", 5,
     "WITH d AS (DELETE FROM email_locations l USING unnest($4::bigint[], $5::bigint[]) AS r(lo, hi) "
     "WHERE l.folder_id = $2 AND l.uidvalidity = $3 AND l.uid BETWEEN r.lo AND r.hi "
     "RETURNING l.uid, l.email_id) "
     "INSERT INTO job_gone (job_id, folder_id, uid, email_id) SELECT $1, $2, uid, email_id FROM d "
     "ON CONFLICT DO NOTHING"},
    {"sync_gone_all", 2,
     "WITH d AS (DELETE FROM email_locations l WHERE l.folder_id = $2 RETURNING l.uid, l.email_id) "
     "INSERT INTO job_gone (job_id, folder_id, uid, email_id) SELECT $1, $2, uid, email_id FROM d "
     "ON CONFLICT DO NOTHING"},
    /* After the locations are gone (a statement of its own: a statement
     * does not see its own deletions). */
    {"sync_mark_deleted", 2,
     "UPDATE emails e SET deleted_at = now() FROM job_gone g WHERE g.job_id = $1 "
     "AND g.folder_id = $2 AND e.id = g.email_id AND e.deleted_at IS NULL "
     "AND NOT EXISTS (SELECT 1 FROM email_locations l WHERE l.email_id = e.id)"},
    /* New messages already stored at this UIDVALIDITY and UID (a run again
     * after a crash, a folder whose import never completed) need no fetch,
     * unless `mailbus verify --repair` asked for them again. */
    {"sync_prune_stored", 3,
     "DELETE FROM job_messages m WHERE m.job_id = $1 AND m.folder_id = $2 AND EXISTS "
     "(SELECT 1 FROM email_locations l WHERE l.folder_id = $2 AND l.uidvalidity = $3 "
     "AND l.uid = m.uid) AND NOT EXISTS (SELECT 1 FROM repair_items r WHERE r.folder_id = $2 "
     "AND r.uidvalidity = $3 AND r.uid = m.uid)"},
    /* The folder's repairs are queued (or of another UIDVALIDITY: moot). */
    {"sync_repair_done", 1, "DELETE FROM repair_items WHERE folder_id = $1"},
    {"sync_rename", 4,
     "WITH old AS (UPDATE folders SET name = name || ' (retired ' || id || ')', remote_name = NULL, "
     "updated_at = now() "
     "WHERE account_id = $4 AND name = $2 AND deleted_at IS NOT NULL AND id <> $1) "
     "UPDATE folders SET name = $2, remote_name = $3, deleted_at = NULL, updated_at = now() "
     "WHERE id = $1"},
    {"sync_retire", 1,
     "UPDATE folders SET deleted_at = now(), updated_at = now() WHERE id = $1"},
    /* The folder's new messages (after pruning): how many, how many bytes. */
    {"sync_new_count", 2,
     "SELECT count(*), coalesce(sum(size), 0) FROM job_messages WHERE job_id = $1 "
     "AND folder_id = $2"},
    {"sync_new_chunks", 2,
     "SELECT id FROM job_chunks WHERE job_id = $1 AND folder_id = $2 AND state = 'pending' "
     "ORDER BY seq"},
};

mb_status mb_sync_prepare(mb_db *db)
{
    return mb_db_prepare_all(db, stmts, MB_ARRAY_LEN(stmts));
}

/* ---- the account's folders as Postgres knows them ----------------------- */

typedef struct {
    uint64_t id;
    char *remote, *name;     /* owned */
    mb_folder_state state;   /* of the last completed job; uidvalidity 0: none */
    bool retired;
    bool matched;            /* a server folder is this one (by name, or renamed) */
    bool done;               /* synced by this job already, before a crash: left alone
                                (its changes applied, its new messages queued or on
                                their way; a second look would queue them again) */
    bool repair;             /* messages to fetch again (repair_items): read it whole */
} known_folder;

typedef struct {
    known_folder *v;
    size_t n;
} known_list;

static void known_free(known_list *k)
{
    for (size_t i = 0; i < k->n; i++) {
        free(k->v[i].remote);
        free(k->v[i].name);
    }
    free(k->v);
    k->v = NULL;
    k->n = 0;
}

/* The account's folders, and which of them job already synced. */
static mb_status known_load(mb_db *db, uint64_t account, uint64_t job, known_list *k)
{
    char a[24], j[24];
    const char *p[] = {mb_u64s(a, account), mb_u64s(j, job)};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(db, "sync_folders", 2, p, &r);
    if (s)
        return s;
    int rows = PQntuples(r);
    k->v = calloc(rows ? (size_t)rows : 1, sizeof *k->v);
    if (!k->v)
        s = mb_errf(MB_ERR_NOMEM, "%d folders", rows);
    for (int i = 0; i < rows && !s; i++) {
        known_folder *f = &k->v[k->n++];
        f->id = strtoull(PQgetvalue(r, i, 0), NULL, 10);
        f->remote = mb_strdup(PQgetvalue(r, i, 1));
        f->name = mb_strdup(PQgetvalue(r, i, 2));
        f->state.uidvalidity = strtoull(PQgetvalue(r, i, 3), NULL, 10);
        f->state.uidnext = strtoull(PQgetvalue(r, i, 4), NULL, 10);
        f->state.highest_modseq = strtoull(PQgetvalue(r, i, 5), NULL, 10);
        f->retired = PQgetvalue(r, i, 6)[0] == 't';
        uint64_t count = strtoull(PQgetvalue(r, i, 7), NULL, 10);
        f->state.exists = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        f->done = PQgetvalue(r, i, 8)[0] == 't';
        f->repair = PQgetvalue(r, i, 9)[0] == 't';
        if (!f->remote || !f->name)
            s = MB_ERR_NOMEM;
    }
    PQclear(r);
    if (s)
        known_free(k);
    return s;
}

static known_folder *known_by_remote(known_list *k, const char *remote)
{
    for (size_t i = 0; i < k->n; i++)
        if (!strcmp(k->v[i].remote, remote))
            return &k->v[i];
    return NULL;
}

/* ---- the folders of one sync, on up to MAILBUS_SYNC_CONNECTIONS ------------ */

/* A sync's folders that need more than a STATUS are shared out to up to
 * MAILBUS_SYNC_CONNECTIONS connections (the scanner thread's own, plus
 * helper threads, each with its own IMAP connection, connection slot and
 * Postgres connection), the largest folders first: opening a folder is the
 * server's slow part (Dovecot reads a 60,000-message Maildir in 200-300 ms
 * right after a change), and folders do not wait for each other. The
 * first error stops the others and is the sync's. */
typedef struct {
    size_t i;               /* index into fl */
    uint64_t weight;        /* messages at the last sync; UINT64_MAX: to be read whole */
} sync_item;

typedef struct sync_pool {
    pthread_mutex_t mu;
    sync_item *busy;        /* the folders to open, in the order to sync */
    size_t n, next;
    mb_status first;        /* guarded by mu */
    bool first_retryable;   /* a Postgres failure worth retrying (mb_db_retryable) */
    char err[600];
    atomic_int seq;         /* chunk numbers, shared by every connection */
    /* read-only while the pool runs */
    mb_stage *st;
    const mb_account *a;
    const char *secret, *jobs, *lease;
    uint64_t job;
    const mb_folder_info *fl;
    known_folder **match;
    char **old_names;
    long inline_max;        /* MAILBUS_SYNC_INLINE_MAX */
    long conns;             /* MAILBUS_SYNC_CONNECTIONS */
    bool spawned;           /* helpers started (guarded by mu) */
    int helpers;
    pthread_t th[16];
} sync_pool;

/* A folder's new messages are downloaded on the connection that found them
 * (it has the folder open) when there are at most MAILBUS_SYNC_INLINE_MAX
 * of them and at most this many bytes; more go to the fetch stage. */
#define INLINE_MAX_BYTES (32u * 1024 * 1024)

/* The few new messages of the folder just synced, downloaded over src (the
 * folder is open on it) by the fetch stage's own code (download.h): into
 * the blob store, durable, their parse records published, marked fetched.
 * A chunk downloaded whole is marked published, so the coordinator never
 * hands it to the fetch stage; one with messages missing (expunged since)
 * stays pending: the fetch stage settles it after the scan, as any chunk.
 * Lost half-way, the job's scan runs again and the folder with it. */
static mb_status download_new(mb_scan_rec *rec, const sync_pool *pool, mb_source *src,
                              uint64_t folder_id)
{
    char j[24], f[24];
    const char *q[] = {mb_u64s(j, rec->job), mb_u64s(f, folder_id)};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(rec->db, "sync_new_chunks", 2, q, &r);
    if (s)
        return s;
    for (int i = 0; i < PQntuples(r) && !s; i++) {
        uint64_t chunk = strtoull(PQgetvalue(r, i, 0), NULL, 10);
        mb_rec_fetch t;
        int republished;
        if ((s = mb_job_chunk_task(rec->db, chunk, &t, &republished)))
            break;
        mb_dl dl;
        s = mb_dl_init(&dl, pool->st, rec->db, &t, false);
        uint64_t uids[MB_DL_GROUP_MAX_MSGS];
        size_t pos = 0, k;
        while (!s && (k = mb_dl_group(&dl, &pos, uids)) > 0) {
            s = mb_dl_fetch(&dl, src, uids, k);
            if (!s) s = mb_dl_hand_on(&dl);
            if (!s) s = mb_scan_keep_lease(rec);
        }
        if (!s && mb_dl_missing(&dl) == 0)
            s = mb_job_chunk_published(rec->db, chunk);
        mb_dl_free(&dl);
        mb_rec_free(&mb_type_fetch, &t);
    }
    PQclear(r);
    return s;
}

/* ---- one folder ---------------------------------------------------------- */

/* The changes of one folder, on their way to Postgres. */
typedef struct {
    mb_scan_rec *rec;      /* new messages */
    uint64_t job, folder_id, uidvalidity;
    char j[24], f[24], v[24];
    mb_pgarr uids, flags, one;   /* listing batch (changed or present) */
    mb_pgarr lo, hi;             /* vanished batch */
} folder_sync;

static mb_status flush_listing(folder_sync *fs)
{
    if (fs->uids.n == 0)
        return MB_OK;
    mb_status s = mb_scan_keep_lease(fs->rec);
    const char *p[] = {fs->j, fs->f, mb_pgarr_cstr(&fs->uids), mb_pgarr_cstr(&fs->flags)};
    if (!s) s = mb_db_exec_prepared(fs->rec->db, "sync_listing_add", 4, p, NULL);
    mb_pgarr_reset(&fs->uids);
    mb_pgarr_reset(&fs->flags);
    return s;
}

static mb_status flush_vanished(folder_sync *fs)
{
    if (fs->lo.n == 0)
        return MB_OK;
    const char *p[] = {fs->j, fs->f, fs->v, mb_pgarr_cstr(&fs->lo), mb_pgarr_cstr(&fs->hi)};
    mb_status s = mb_db_exec_prepared(fs->rec->db, "sync_gone_ranges", 5, p, NULL);
    mb_pgarr_reset(&fs->lo);
    mb_pgarr_reset(&fs->hi);
    return s;
}

/* changed and present: the message's current flags, into job_listing. */
static mb_status on_listed(void *ctx, const mb_msg_info *m)
{
    folder_sync *fs = ctx;
    mb_pgarr_reset(&fs->one);
    mb_status s = mb_pgarr_add_u64(&fs->uids, m->uid);
    for (size_t i = 0; i < m->nflags && !s; i++)
        s = mb_pgarr_add_str(&fs->one, m->flags[i]);
    if (!s) s = mb_pgarr_add_str(&fs->flags, mb_pgarr_cstr(&fs->one));
    if (!s && fs->uids.n >= LIST_BATCH)
        s = flush_listing(fs);
    return s;
}

static mb_status on_vanished(void *ctx, uint64_t lo, uint64_t hi)
{
    folder_sync *fs = ctx;
    mb_status s = mb_pgarr_add_u64(&fs->lo, lo);
    if (!s) s = mb_pgarr_add_u64(&fs->hi, hi);
    if (!s && fs->lo.n >= LIST_BATCH)
        s = flush_vanished(fs);
    return s;
}

static mb_status on_added(void *ctx, const mb_msg_info *m)
{
    folder_sync *fs = ctx;
    return mb_scan_rec_msg(fs->rec, m);
}

static void folder_sync_free(folder_sync *fs)
{
    mb_pgarr_free(&fs->uids);
    mb_pgarr_free(&fs->flags);
    mb_pgarr_free(&fs->one);
    mb_pgarr_free(&fs->lo);
    mb_pgarr_free(&fs->hi);
}

static uint64_t count_of(PGresult *r)
{
    uint64_t n = PQntuples(r) == 1 ? strtoull(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return n;
}

/* After the server's answers are in: flags from the listing; with a
 * complete listing below `below` (or a whole-folder scan), every location
 * not in it is gone, as is every location of another UIDVALIDITY; emails
 * left without a location are deleted; new messages already stored are not
 * fetched again. */
static mb_status reconcile(folder_sync *fs, bool listed, uint64_t below, uint64_t *flags_changed)
{
    mb_db *db = fs->rec->db;
    char b[24];
    const char *p[] = {fs->j, fs->f, fs->v, mb_u64s(b, below)};
    PGresult *r;
    mb_status s = flush_listing(fs);
    if (!s) s = flush_vanished(fs);
    if (!s) s = mb_db_exec_prepared(db, "sync_flags", 3, p, &r);
    if (!s)
        *flags_changed = count_of(r);
    if (!s && listed)
        s = mb_db_exec_prepared(db, "sync_gone_unlisted", 4, p, NULL);
    if (!s) s = mb_db_exec_prepared(db, "sync_mark_deleted", 2, p, NULL);
    if (!s) s = mb_db_exec_prepared(db, "sync_prune_stored", 3, p, NULL);
    if (!s) s = mb_db_exec_prepared(db, "sync_listing_clear", 2, p, NULL);
    return s;
}

static const char *method_name(int m)
{
    switch (m) {
    case MB_CHANGES_UNCHANGED: return "unchanged";
    case MB_CHANGES_QRESYNC: return "qresync";
    case MB_CHANGES_CONDSTORE: return "condstore";
    case MB_CHANGES_FULL: return "full";
    default: return "reset";
    }
}

/* Sync one server folder: its changes since k's state, or, without a usable
 * state (new folder, import never completed, UIDVALIDITY reset), the whole
 * folder compared with what is held. */
static mb_status sync_folder(mb_scan_rec *rec, const sync_pool *pool, mb_source *src,
                             const mb_folder_info *fi, known_folder *k, const char *event,
                             const char *old_name, const mb_folder_state *unchanged)
{
    uint64_t account = pool->a->id;
    const char *jobs = pool->jobs, *acct = pool->a->name;
    int64_t t0 = mb_mono_ms();
    mb_db *db = rec->db;
    const char *shown = fi->display ? fi->display : fi->name;
    uint64_t folder_id = k ? k->id : 0;
    mb_status s = MB_OK;
    if (!k || k->retired)
        s = mb_scan_save_folder(db, account, fi, &folder_id);
    if (!s && fi->problem)
        mb_job_problem(db, rec->job, account, "sync", fi->problem);
    folder_sync fs = {.rec = rec, .job = rec->job, .folder_id = folder_id};
    mb_u64s(fs.j, rec->job);
    mb_u64s(fs.f, folder_id);
    const char *p[] = {fs.j, fs.f};
    if (!s) s = mb_scan_rec_folder(rec, folder_id);
    if (!s) s = mb_db_exec_prepared(db, "sync_listing_clear", 2, p, NULL);

    mb_folder_state known = {0};
    if (k && !k->retired && k->state.uidvalidity)
        known = k->state;
    mb_changes_cb cb = {.changed = on_listed, .present = on_listed, .added = on_added,
                        .vanished = on_vanished, .ctx = &fs};
    mb_changes_info ci = {0};
    bool repair = k && !k->retired && k->repair;
    if (unchanged) {
        ci.method = MB_CHANGES_UNCHANGED;
        ci.now = *unchanged;
    } else if (!s && repair) {
        /* Messages to fetch again: the folder is read whole, as after a
         * reset, so that they are listed with what the fetch needs. */
        s = mb_source_open_folder(src, fi->name, &ci.now);
        ci.method = MB_CHANGES_RESET;
    } else if (!s) {
        s = mb_source_changes(src, fi->name, &known, &cb, &ci);
    }
    bool whole = !s && (ci.method == MB_CHANGES_RESET || !known.uidvalidity);
    const char *method = whole && !known.uidvalidity ? "scan" : method_name(ci.method);
    if (whole) {
        /* The folder read again: every message is compared with what is
         * held (locations of another UIDVALIDITY all go). */
        if (!event && known.uidvalidity && ci.now.uidvalidity != known.uidvalidity)
            event = "reset";
        else if (repair)
            method = "repair";
        else if (!event && (!k || k->retired))
            event = "created";
        fs.uidvalidity = ci.now.uidvalidity;
        s = mb_source_scan(src, 0, 0, mb_scan_rec_msg, rec);
    } else {
        fs.uidvalidity = known.uidvalidity;
    }
    mb_u64s(fs.v, fs.uidvalidity);
    uint64_t flags_changed = 0;
    if (!s) s = mb_scan_rec_flush(rec);
    if (!s && whole) s = mb_db_exec_prepared(db, "sync_listing_from_scan", 2, p, NULL);
    /* The server's answers are in; what follows is a few short statements:
     * one transaction, one commit (a WAL flush, 5-30 ms on a slow disk)
     * instead of eight. Lost half-way, the job's scan is run again. */
    bool tx = !s && !(s = mb_db_begin(db));
    /* Unchanged: nothing was listed, nothing vanished, nothing is new; and
     * nothing of the account's emails is touched, so no lock either. */
    if (tx && ci.method != MB_CHANGES_UNCHANGED)
        s = mb_job_account_lock(db, account);
    if (!s && ci.method != MB_CHANGES_UNCHANGED)
        s = reconcile(&fs, whole || ci.listed, whole ? UINT64_MAX >> 1 : known.uidnext,
                      &flags_changed);
    if (!s && repair) s = mb_db_exec_prepared(db, "sync_repair_done", 1, p + 1, NULL);
    /* rec->total counts what was scanned; the pruned ones are not added. */
    uint64_t added = 0, added_bytes = 0;
    if (!s) s = mb_scan_rec_cut(rec);
    if (!s && ci.method != MB_CHANGES_UNCHANGED) {
        PGresult *r;
        s = mb_db_exec_prepared(db, "sync_new_count", 2, p, &r);
        if (!s) {
            added_bytes = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
            added = count_of(r);
        }
    }
    if (!s) {
        mb_job_folder jf = {.uidvalidity = ci.now.uidvalidity, .uidnext = ci.now.uidnext,
                            .highest_modseq = ci.now.highest_modseq,
                            .message_count = ci.now.exists,
                            .method = method,
                            .event = event, .old_name = old_name, .added = added,
                            .flags_changed = flags_changed, .duration_ms = mb_mono_ms() - t0};
        s = mb_job_folder_state(db, rec->job, folder_id, &jf);
    }
    if (tx && s)
        mb_db_rollback(db);
    else if (tx)
        s = mb_db_commit(db);
    folder_sync_free(&fs);
    bool inl = !s && added && added <= (uint64_t)pool->inline_max && added_bytes <= INLINE_MAX_BYTES;
    if (inl)
        s = download_new(rec, pool, src, folder_id);
    if (s)
        return mb_err_wrap(s, "folder '%s'", shown);
    MB_INFO(jobs, acct, "synced %s (%s%s%s): %" PRIu64 " new%s, %" PRIu64 " flags changed",
            shown, method,
            event ? ", " : "", event ? event : "", added, inl ? " (downloaded)" : "",
            flags_changed);
    return MB_OK;
}

/* A folder the server no longer has: its locations go, the row is retired. */
static mb_status retire_folder(mb_scan_rec *rec, uint64_t account, known_folder *k,
                               const char *jobs, const char *acct)
{
    char j[24], f[24];
    const char *p[] = {mb_u64s(j, rec->job), mb_u64s(f, k->id)};
    mb_status s = mb_db_begin(rec->db);
    bool tx = !s;
    if (!s) s = mb_job_account_lock(rec->db, account);
    if (!s) s = mb_db_exec_prepared(rec->db, "sync_gone_all", 2, p, NULL);
    if (!s) s = mb_db_exec_prepared(rec->db, "sync_mark_deleted", 2, p, NULL);
    mb_job_folder jf = {.method = "deleted", .event = "deleted"};
    if (!s) s = mb_job_folder_state(rec->db, rec->job, k->id, &jf);
    if (!s) s = mb_db_exec_prepared(rec->db, "sync_retire", 1, p + 1, NULL);
    if (tx && s)
        mb_db_rollback(rec->db);
    else if (tx)
        s = mb_db_commit(rec->db);
    if (s)
        return mb_err_wrap(s, "retiring folder '%s'", k->name);
    MB_INFO(jobs, acct, "folder %s is gone from the server: retired", k->name);
    return MB_OK;
}

/* A selectable server folder without a row of its name: is it a known
 * folder renamed? Exactly one live, unmatched folder with a state must have
 * its UIDVALIDITY, and the UIDNEXT must not have gone back. */
static known_folder *renamed_from(mb_source *src, known_list *k, const mb_folder_info *fi,
                                  mb_status *st)
{
    size_t cands = 0;
    for (size_t i = 0; i < k->n; i++)
        cands += !k->v[i].matched && !k->v[i].retired && k->v[i].state.uidvalidity;
    if (!cands)
        return NULL;
    mb_folder_state none = {0};
    mb_changes_cb cb = {0};
    mb_changes_info ci = {0};
    /* Nothing is known: only the open, which reports the state. */
    if ((*st = mb_source_changes(src, fi->name, &none, &cb, &ci)))
        return NULL;
    known_folder *hit = NULL;
    for (size_t i = 0; i < k->n; i++) {
        known_folder *c = &k->v[i];
        if (c->matched || c->retired || c->state.uidvalidity != ci.now.uidvalidity ||
            ci.now.uidnext < c->state.uidnext)
            continue;
        if (hit)
            return NULL; /* two candidates: cannot tell */
        hit = c;
    }
    return hit;
}

/* A server folder a sync of some folders with discovery (the scheduler's)
 * reads although it was not asked for: one renamed from a known folder, or
 * one that has no row yet (created on the server) — unless the account's
 * import chose its folders: then a folder never imported is not one. */
static bool discovered(const mb_rec_command *opt, const mb_folder_info *f, bool renamed,
                       bool known, bool new_ok)
{
    return opt->discover && opt->folders.n && !f->noselect &&
           (renamed || (!known && new_ok));
}

/* Whether folders new on the server are imported by a sync with discovery:
 * not when the account's last completed import named its folders. */
static mb_status new_folders_wanted(mb_db *db, uint64_t account, bool *out)
{
    char a[24];
    const char *p[] = {mb_u64s(a, account)};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(db, "sync_import_chose", 1, p, &r);
    if (s)
        return s;
    *out = PQntuples(r) == 0 || PQgetvalue(r, 0, 0)[0] != 't';
    PQclear(r);
    return MB_OK;
}

/* The next folder of the pool for a connection, unless one failed. */
static bool pool_take(sync_pool *p, size_t *i)
{
    pthread_mutex_lock(&p->mu);
    bool ok = !p->first && p->next < p->n && !mb_bus_stopping();
    if (ok)
        *i = p->busy[p->next++].i;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

static void pool_fail(sync_pool *p, mb_db *db, mb_status s)
{
    pthread_mutex_lock(&p->mu);
    if (!p->first) {
        p->first = s;
        p->first_retryable = s == MB_ERR_DB && mb_db_retryable(db);
        snprintf(p->err, sizeof p->err, "%s", mb_err_last());
    }
    pthread_mutex_unlock(&p->mu);
}

static void *helper_main(void *arg);

/* The first folder that needs opening starts the helpers, as many as
 * there are folders left (a sync where nothing changed starts none). */
static void pool_spawn(sync_pool *p)
{
    pthread_mutex_lock(&p->mu);
    if (!p->spawned) {
        p->spawned = true;
        size_t left = p->n - p->next;
        for (long i = 1; i < p->conns && (size_t)i <= left; i++) {
            if (pthread_create(&p->th[p->helpers], NULL, helper_main, p))
                break; /* fewer connections, same result */
            p->helpers++;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

/* Sync folders of the pool over src until none is left: a folder a STATUS
 * shows unchanged is recorded without opening it. */
static void pool_run(sync_pool *p, mb_scan_rec *rec, mb_source *src)
{
    size_t i;
    while (pool_take(p, &i)) {
        known_folder *kf = p->match[i];
        bool same = false;
        mb_folder_state now;
        mb_status s = MB_OK;
        if (kf && !kf->retired && kf->state.uidvalidity && !p->old_names[i] && !kf->repair &&
            (s = mb_source_unchanged(src, p->fl[i].name, &kf->state, &same, &now)))
            s = mb_err_wrap(s, "folder '%s'", p->fl[i].display ? p->fl[i].display : p->fl[i].name);
        if (!s && !same)
            pool_spawn(p);
        if (!s) s = sync_folder(rec, p, src, &p->fl[i], kf, p->old_names[i] ? "renamed" : NULL,
                                p->old_names[i], same ? &now : NULL);
        if (!s)
            mb_scan_fault_folder_delay();
        if (s) {
            pool_fail(p, rec->db, s);
            return;
        }
    }
}

static bool helper_tick(void *ctx)
{
    (void)ctx;
    return !mb_bus_stopping();
}

/* A helper connection: its own Postgres connection, connection slot (only
 * a free one: the sync does not wait for it) and IMAP connection. One that
 * cannot start leaves the folders to the others. */
static void *helper_main(void *arg)
{
    sync_pool *p = arg;
    mb_db *db = NULL;
    mb_source *src = NULL;
    mb_conn_slot slot = {.account_slot = -1, .host_slot = -1};
    mb_scan_rec rec = {0};
    mb_status s = mb_db_connect(mb_env("MAILBUS_PG_DSN", MB_DEFAULT_PG_DSN), &db);
    if (!s) s = mb_job_prepare(db);
    if (!s) s = mb_sync_prepare(db);
    if (!s) s = mb_conn_slot_take(db, p->a->id, p->a->host, p->a->port, 0, helper_tick, NULL, &slot);
    if (!s) s = mb_account_source(p->a, p->secret, &src);
    if (!s) s = mb_source_connect(src);
    if (!s) s = mb_scan_rec_init(&rec, db, p->job, p->lease, &slot);
    if (!s) {
        rec.cut.shared_seq = &p->seq;
        pool_run(p, &rec, src);
    } else {
        MB_DEBUG(p->jobs, p->a->name, "sync: no extra connection: %s", mb_err_last());
    }
    mb_scan_rec_free(&rec);
    mb_source_free(src);
    mb_conn_slot_release(&slot); /* after the connection is dropped */
    mb_db_free(db);
    return NULL;
}

/* Sync the pool's folders: on this thread's connection and, once one
 * needs opening, up to MAILBUS_SYNC_CONNECTIONS - 1 helpers. */
static mb_status pool_sync(sync_pool *p, mb_scan_rec *rec, mb_source *src)
{
    atomic_init(&p->seq, rec->cut.seq);
    rec->cut.shared_seq = &p->seq;
    pool_run(p, rec, src);
    for (int i = 0; i < p->helpers; i++)
        pthread_join(p->th[i], NULL);
    rec->cut.shared_seq = NULL;
    rec->cut.seq = atomic_load(&p->seq);
    /* A helper's Postgres connection failing for a retryable reason is a
     * transient failure of the sync, as this thread's would be (scan.c
     * asks mb_db_retryable of this thread's connection only). */
    if (p->first)
        return mb_errf(p->first_retryable ? MB_ERR_NET : p->first, "%s", p->err);
    return MB_OK;
}

/* Largest folder first (the server's count at the last sync; a folder
 * without a state, to be read whole, before all). */
static int by_size(const void *x, const void *y)
{
    const sync_item *a = x, *b = y;
    return a->weight < b->weight ? 1 : a->weight > b->weight ? -1 : 0;
}

mb_status mb_sync_folders(mb_scan_rec *rec, const mb_sync_ctx *cx, mb_source *src,
                          const mb_rec_command *opt, const mb_folder_info *fl, size_t nf)
{
    mb_db *db = rec->db;
    const mb_account *a = cx->a;
    const char *jobs = cx->jobs;
    known_list k = {0};
    mb_status s = mb_sync_prepare(db);
    if (!s) s = known_load(db, a->id, rec->job, &k);
    if (s)
        return s;
    /* Which server folder is which row: by name, then renames. */
    known_folder **match = calloc(nf ? nf : 1, sizeof *match);
    char **old_names = calloc(nf ? nf : 1, sizeof *old_names);
    sync_item *busy = calloc(nf ? nf : 1, sizeof *busy);
    if (!match || !old_names || !busy)
        s = mb_errf(MB_ERR_NOMEM, "%zu folders", nf);
    for (size_t i = 0; i < nf && !s; i++) {
        if ((match[i] = known_by_remote(&k, fl[i].name)))
            match[i]->matched = true;
    }
    bool new_ok = true;
    if (!s && opt->discover)
        s = new_folders_wanted(db, a->id, &new_ok);
    size_t chosen = 0;
    for (size_t i = 0; i < nf && !s && !mb_bus_stopping(); i++) {
        if (match[i] || !(mb_scan_selected(opt, &fl[i]) || discovered(opt, &fl[i], true, false, true)))
            continue;
        known_folder *was = renamed_from(src, &k, &fl[i], &s);
        if (!was || s)
            continue;
        char id[24];
        const char *p[] = {mb_u64s(id, was->id), fl[i].display ? fl[i].display : fl[i].name,
                           fl[i].name, NULL};
        char ac[24];
        p[3] = mb_u64s(ac, a->id);
        s = mb_db_exec_prepared(db, "sync_rename", 4, p, NULL);
        if (!s && !(old_names[i] = mb_strdup(was->name)))
            s = MB_ERR_NOMEM;
        if (!s) {
            MB_INFO(jobs, a->name, "folder %s was renamed %s", was->name,
                    fl[i].display ? fl[i].display : fl[i].name);
            was->matched = true;
            match[i] = was;
        }
    }
    sync_pool pool = {.st = cx->st, .a = a, .secret = cx->secret, .jobs = jobs,
                      .lease = rec->lease, .job = rec->job, .fl = fl, .match = match,
                      .old_names = old_names, .busy = busy};
    pthread_mutex_init(&pool.mu, NULL);
    if (!s) s = mb_env_int("MAILBUS_SYNC_INLINE_MAX", 200, 0, 100000, &pool.inline_max);
    if (!s) s = mb_env_int("MAILBUS_SYNC_CONNECTIONS", 2, 1, (long)MB_ARRAY_LEN(pool.th),
                           &pool.conns);
    /* The folders to sync, largest first. */
    for (size_t i = 0; i < nf && !s && !mb_bus_stopping(); i++) {
        if (mb_scan_selected(opt, &fl[i]))
            chosen++;
        else if (!discovered(opt, &fl[i], old_names[i] != NULL, match[i] != NULL, new_ok))
            continue;
        const known_folder *kf = match[i];
        if (kf && kf->done)
            continue;
        busy[pool.n++] = (sync_item){i, kf && kf->state.uidvalidity && !kf->retired
                                            ? kf->state.exists : UINT64_MAX};
    }
    if (!s && pool.n) {
        qsort(busy, pool.n, sizeof *busy, by_size);
        s = pool_sync(&pool, rec, src);
    }
    pthread_mutex_destroy(&pool.mu);
    if (!s && opt->folders.n && chosen < opt->folders.n && !opt->discover)
        s = mb_errf(MB_ERR_NOTFOUND, "%zu of the %zu requested folders do not exist on the server",
                    opt->folders.n - chosen, opt->folders.n);
    /* Folders gone from the server (only a sync that saw every folder can
     * tell: all of them, or some with discovery). */
    bool every = !opt->folders.n || opt->discover;
    for (size_t i = 0; i < k.n && !s && every && !mb_bus_stopping(); i++)
        if (!k.v[i].matched && !k.v[i].retired)
            s = retire_folder(rec, a->id, &k.v[i], jobs, a->name);
    for (size_t i = 0; old_names && i < nf; i++)
        free(old_names[i]);
    free(old_names);
    free(busy);
    free(match);
    known_free(&k);
    return s;
}
