/* cleanup.c — the cleanup job's pass (see cleanup.h for what it does and
 * why a concurrent import never loses a blob to it). */
#include "stages/store/cleanup.h"

#include "stages/common/lease.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PURGE_BATCH "1000"
#define QUEUE_PAGE 500
#define WALK_BATCH 1000
#define LEASE "cleanup"

static const mb_db_stmt stmts[] = {
    {"cleanup_oldest_job", 0,
     "SELECT extract(epoch FROM min(created_at)) FROM sync_jobs "
     "WHERE status IN ('pending', 'scanning', 'running', 'paused')"},
    /* Candidates locked (a row a store is writing right now is skipped),
     * then deleted only if still deleted long enough and without a location:
     * the retention and "no location left" hold at purge time. The
     * emails_deleted trigger queues the blobs. */
    {"cleanup_purge", 2,
     "WITH c AS (SELECT id FROM emails "
     "           WHERE deleted_at < now() - $1::bigint * interval '1 second' "
     "             AND NOT EXISTS (SELECT 1 FROM email_locations l WHERE l.email_id = emails.id) "
     "           ORDER BY deleted_at LIMIT $2::int FOR UPDATE SKIP LOCKED), "
     "d AS (DELETE FROM emails e USING c WHERE e.id = c.id "
     "        AND e.deleted_at < now() - $1::bigint * interval '1 second' "
     "        AND NOT EXISTS (SELECT 1 FROM email_locations l WHERE l.email_id = e.id) "
     "      RETURNING e.account_id) "
     "SELECT account_id, count(*) FROM d GROUP BY 1"},
    {"cleanup_walk_queue", 1,
     "INSERT INTO blob_gc (sha256) SELECT decode(h, 'hex') FROM unnest($1::text[]) h "
     "WHERE NOT EXISTS (SELECT 1 FROM emails e WHERE e.blob_sha256 = decode(h, 'hex')) "
     "ON CONFLICT (sha256) DO NOTHING"},
    {"cleanup_queue_page", 2,
     "SELECT encode(q.sha256, 'hex'), coalesce(q.account_id, 0), q.seq, "
     "EXISTS (SELECT 1 FROM emails e WHERE e.blob_sha256 = q.sha256) "
     "FROM blob_gc q WHERE q.sha256 > decode($1, 'hex') ORDER BY q.sha256 LIMIT $2::int"},
    {"cleanup_referenced", 1,
     "SELECT EXISTS (SELECT 1 FROM emails WHERE blob_sha256 = decode($1, 'hex'))"},
    /* Only entries not queued again since they were read (seq). */
    {"cleanup_dequeue", 2,
     "DELETE FROM blob_gc q USING unnest($1::text[], $2::bigint[]) u(h, seq) "
     "WHERE q.sha256 = decode(u.h, 'hex') AND q.seq = u.seq"},
    {"cleanup_walk_next", 0, "SELECT walk_next FROM cleanup_passes ORDER BY id DESC LIMIT 1"},
    {"cleanup_history", 8,
     "INSERT INTO sync_history (account_id, event, detail) "
     "SELECT u.a, 'cleanup', jsonb_build_object('retention_s', $1::bigint, "
     "'emails_purged', u.p, 'blobs_removed', u.r, 'blobs_kept_referenced', u.kr, "
     "'blobs_kept_recent', u.kn, 'blobs_absent', u.ab, 'duration_ms', $8::bigint) "
     "FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], "
     "$7::bigint[]) u(a, p, r, kr, kn, ab) JOIN accounts ON accounts.id = u.a"},
    {"cleanup_pass", 11,
     "INSERT INTO cleanup_passes (holder, retention_s, started_at, emails_purged, blobs_queued, "
     "blobs_removed, blobs_kept_referenced, blobs_kept_recent, blobs_absent, walk_next, error) "
     "VALUES ($1, $2, to_timestamp($3::double precision), $4, $5, $6, $7, $8, $9, $10, $11)"},
    {"cleanup_due", 1,
     "SELECT NOT EXISTS (SELECT 1 FROM cleanup_passes "
     "WHERE started_at > now() - $1::bigint * interval '1 millisecond')"},
};

mb_status mb_cleanup_retention_env(int64_t *seconds)
{
    double days;
    mb_status s = mb_env_double("MAILBUS_RETENTION_DAYS", 30, 0, 36500, &days);
    if (!s)
        *seconds = (int64_t)llround(days * 86400.0);
    return s;
}

void mb_cleanup_result_free(mb_cleanup_result *r)
{
    free(r->accounts);
    r->accounts = NULL;
    r->naccounts = 0;
}

mb_status mb_cleanup_due(mb_db *db, int64_t every_ms, bool *due)
{
    char ms[24];
    snprintf(ms, sizeof ms, "%" PRId64, every_ms);
    const char *p[] = {ms};
    PGresult *r;
    mb_status s = mb_db_prepare_all(db, stmts, sizeof stmts / sizeof stmts[0]);
    if (!s) s = mb_db_exec_prepared(db, "cleanup_due", 1, p, &r);
    if (s)
        return s;
    *due = !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    return MB_OK;
}

/* ---- the pass's state ---------------------------------------------------- */

typedef struct {
    mb_db *db;
    mb_blob_store *blobs;
    const mb_cleanup_opts *o;
    mb_cleanup_result *res;
    struct timespec cutoff; /* blobs modified at or after this are kept */
    size_t last_acct;       /* index of the account counted last (a cache) */
} pass;

/* The counts of account (added if new); NULL when out of memory. */
static mb_cleanup_counts *counts_of(pass *p, uint64_t account)
{
    mb_cleanup_result *r = p->res;
    if (p->last_acct < r->naccounts && r->accounts[p->last_acct].account_id == account)
        return &r->accounts[p->last_acct];
    for (size_t i = 0; i < r->naccounts; i++)
        if (r->accounts[i].account_id == account) {
            p->last_acct = i;
            return &r->accounts[i];
        }
    mb_cleanup_counts *v = mb_grow(r->accounts, r->naccounts, sizeof *v);
    if (!v)
        return NULL;
    r->accounts = v;
    memset(&v[r->naccounts], 0, sizeof *v);
    v[r->naccounts].account_id = account;
    p->last_acct = r->naccounts;
    return &v[r->naccounts++];
}

static bool stopping(const pass *p)
{
    return p->o->stop && p->o->stop();
}

/* Between batches: still ours, still wanted? (A dry run holds no lease.) */
static mb_status keep_going(pass *p)
{
    if (stopping(p))
        return mb_errf(MB_ERR_STOPPED, "cleanup stopped");
    if (p->o->dry_run)
        return MB_OK;
    bool mine;
    mb_status s = mb_lease_take(p->db, LEASE, &mine);
    if (!s && !mine)
        s = mb_errf(MB_ERR_BUSY, "cleanup: lost the lease to another process");
    return s;
}

/* ---- 1. purge ------------------------------------------------------------ */

static mb_status purge(pass *p)
{
    char ret[24];
    snprintf(ret, sizeof ret, "%" PRId64, p->o->retention_s);
    const char *params[] = {ret, PURGE_BATCH};
    for (;;) {
        PGresult *r;
        mb_status s = keep_going(p);
        if (!s) s = mb_db_exec_prepared(p->db, "cleanup_purge", 2, params, &r);
        if (s)
            return mb_err_wrap(s, "cleanup: purge");
        uint64_t batch = 0;
        for (int i = 0; i < PQntuples(r) && !s; i++) {
            uint64_t n = strtoull(PQgetvalue(r, i, 1), NULL, 10);
            mb_cleanup_counts *c = counts_of(p, strtoull(PQgetvalue(r, i, 0), NULL, 10));
            if (!c)
                s = MB_ERR_NOMEM;
            else
                c->emails_purged += n;
            p->res->total.emails_purged += n;
            batch += n;
        }
        PQclear(r);
        if (s)
            return s;
        /* A batch smaller than asked: nothing more (rows skipped because a
         * store holds them are purged by a later pass). A dry run's deletes
         * stay in its transaction, so asking again gives the next ones too. */
        if (batch < (uint64_t)atoi(PURGE_BATCH))
            return MB_OK;
    }
}

/* ---- 2. walk ------------------------------------------------------------- */

static mb_status walk_queue(pass *p, mb_pgarr *batch)
{
    if (!batch->n)
        return MB_OK;
    const char *params[] = {mb_pgarr_cstr(batch)};
    PGresult *r;
    mb_status s = params[0] ? mb_db_exec_prepared(p->db, "cleanup_walk_queue", 1, params, &r)
                            : mb_errf(MB_ERR_NOMEM, "cleanup: walk batch");
    if (s)
        return mb_err_wrap(s, "cleanup: queue walked blobs");
    p->res->blobs_queued += strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    mb_pgarr_reset(batch);
    return keep_going(p);
}

static bool is_hex64(const char *n)
{
    size_t i = 0;
    for (; n[i]; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f')))
            return false;
    return i == 64;
}

/* Queue the blobs of directory `dir` (0..255) that no email references. */
static mb_status walk_dir(pass *p, int dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%02x", mb_blob_store_root(p->blobs), dir);
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? MB_OK
                               : mb_errf(MB_ERR_IO, "cleanup: walk %s: %s", path, strerror(errno));
    mb_pgarr batch = MB_PGARR_INIT;
    mb_status s = MB_OK;
    struct dirent *de;
    char prefix[3];
    snprintf(prefix, sizeof prefix, "%02x", dir);
    while (!s && (de = readdir(d)) != NULL) {
        if (!is_hex64(de->d_name) || strncmp(de->d_name, prefix, 2))
            continue;
        s = mb_pgarr_add_str(&batch, de->d_name);
        if (!s && batch.n >= WALK_BATCH)
            s = walk_queue(p, &batch);
    }
    closedir(d);
    if (!s) s = walk_queue(p, &batch);
    mb_pgarr_free(&batch);
    return s;
}

static mb_status walk(pass *p, int first, int *next)
{
    int n = p->o->walk_dirs < 0 ? 0 : p->o->walk_dirs > MB_CLEANUP_DIRS ? MB_CLEANUP_DIRS
                                                                           : p->o->walk_dirs;
    *next = first;
    for (int i = 0; i < n; i++) {
        mb_status s = walk_dir(p, (first + i) % MB_CLEANUP_DIRS);
        if (s)
            return s;
        *next = (first + i + 1) % MB_CLEANUP_DIRS;
        p->res->dirs_walked++;
    }
    return MB_OK;
}

/* ---- 3. blobs ------------------------------------------------------------ */

/* mb_blob_gc_check_fn: is the blob referenced now (asked with it out of sight)? */
static mb_status referenced_now(void *ctx, const char *hex, bool *referenced)
{
    pass *p = ctx;
    const char *params[] = {hex};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(p->db, "cleanup_referenced", 1, params, &r);
    if (s)
        return mb_err_wrap(s, "cleanup: is blob %.12s referenced", hex);
    *referenced = !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    return MB_OK;
}

static void count_blob(mb_cleanup_counts *c, mb_blob_gc_result what)
{
    switch (what) {
    case MB_BLOB_GC_REMOVED: c->blobs_removed++; break;
    case MB_BLOB_GC_ABSENT: c->blobs_absent++; break;
    case MB_BLOB_GC_RECENT: c->blobs_kept_recent++; break;
    case MB_BLOB_GC_REFERENCED: c->blobs_kept_referenced++; break;
    }
}

/* One page of the queue: decide each blob; entries settled for good
 * (removed, absent, referenced) are dequeued once the removals are durable.
 * *last: the page's last hash ("" when the queue is done). */
static mb_status blob_page(pass *p, char last[65])
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", QUEUE_PAGE);
    const char *params[] = {last, lim};
    PGresult *r;
    mb_status s = mb_db_exec_prepared(p->db, "cleanup_queue_page", 2, params, &r);
    if (s)
        return mb_err_wrap(s, "cleanup: read the blob queue");
    int n = PQntuples(r);
    mb_pgarr done_h = MB_PGARR_INIT, done_seq = MB_PGARR_INIT;
    for (int i = 0; i < n && !s; i++) {
        const char *hex = PQgetvalue(r, i, 0);
        mb_blob_gc_result what = MB_BLOB_GC_REFERENCED;
        if (strcmp(PQgetvalue(r, i, 3), "t"))
            s = p->o->dry_run ? mb_blob_gc_probe(p->blobs, hex, &p->cutoff, &what)
                              : mb_blob_gc_remove(p->blobs, hex, &p->cutoff, referenced_now, p,
                                                  &what);
        if (s == MB_ERR_IO) {
            /* This blob only (a file the store cannot move, say): it stays
             * queued, the pass goes on. */
            MB_WARN(NULL, NULL, "cleanup: blob %s kept: %s", hex, mb_err_last());
            s = MB_OK;
            continue;
        }
        if (s)
            break;
        mb_cleanup_counts *c = counts_of(p, strtoull(PQgetvalue(r, i, 1), NULL, 10));
        if (!c) {
            s = MB_ERR_NOMEM;
            break;
        }
        count_blob(c, what);
        count_blob(&p->res->total, what);
        if (what != MB_BLOB_GC_RECENT) {
            s = mb_pgarr_add_str(&done_h, hex);
            if (!s) s = mb_pgarr_add_str(&done_seq, PQgetvalue(r, i, 2));
        }
        if (stopping(p))
            s = mb_errf(MB_ERR_STOPPED, "cleanup stopped");
    }
    snprintf(last, 65, "%s", n == QUEUE_PAGE ? PQgetvalue(r, n - 1, 0) : "");
    PQclear(r);
    /* Settled entries go, even after an error in the page: what was removed
     * is removed. Durable first, so a power cut cannot bring back a blob
     * whose entry is gone. */
    mb_status ds = MB_OK;
    if (!p->o->dry_run && done_h.n) {
        ds = mb_blob_sync(p->blobs);
        const char *dp[] = {mb_pgarr_cstr(&done_h), mb_pgarr_cstr(&done_seq)};
        if (!ds && (!dp[0] || !dp[1]))
            ds = mb_errf(MB_ERR_NOMEM, "cleanup: dequeue");
        if (!ds) ds = mb_db_exec_prepared(p->db, "cleanup_dequeue", 2, dp, NULL);
    }
    mb_pgarr_free(&done_h);
    mb_pgarr_free(&done_seq);
    if (!s) s = ds;
    if (!s && *last) s = keep_going(p);
    return s;
}

static mb_status blobs(pass *p)
{
    char last[65] = "";
    do {
        mb_status s = blob_page(p, last);
        if (s)
            return s;
    } while (*last);
    return MB_OK;
}

/* ---- the cutoff, the record ---------------------------------------------- */

/* The earlier of (store clock - retention) and (oldest active job - skew). */
static mb_status cutoff(pass *p, struct timespec *fs_now)
{
    mb_status s = mb_blob_gc_clock(p->blobs, fs_now);
    if (s)
        return mb_err_wrap(s, "cleanup: blob store clock");
    p->cutoff = *fs_now;
    p->cutoff.tv_sec -= (time_t)p->o->retention_s;
    PGresult *r;
    if ((s = mb_db_exec_prepared(p->db, "cleanup_oldest_job", 0, NULL, &r)))
        return mb_err_wrap(s, "cleanup: oldest active job");
    if (!PQgetisnull(r, 0, 0)) {
        double oldest = atof(PQgetvalue(r, 0, 0)) - MB_CLEANUP_CLOCK_SKEW_S;
        if (oldest < (double)p->cutoff.tv_sec) {
            p->cutoff.tv_sec = (time_t)floor(oldest);
            p->cutoff.tv_nsec = 0;
        }
    }
    PQclear(r);
    return MB_OK;
}

static mb_status record(pass *p, const struct timespec *start, int walk_next, const char *error)
{
    mb_cleanup_result *res = p->res;
    char ret[24], dur[24], started[48], nums[6][24], walk[16];
    snprintf(ret, sizeof ret, "%" PRId64, p->o->retention_s);
    snprintf(dur, sizeof dur, "%" PRId64, res->duration_ms);
    mb_pgarr col[6];
    memset(col, 0, sizeof col);
    mb_status s = MB_OK;
    for (size_t i = 0; i < res->naccounts && !s; i++) {
        const mb_cleanup_counts *c = &res->accounts[i];
        if (!c->account_id)
            continue;
        s = mb_pgarr_add_u64(&col[0], c->account_id);
        if (!s) s = mb_pgarr_add_u64(&col[1], c->emails_purged);
        if (!s) s = mb_pgarr_add_u64(&col[2], c->blobs_removed);
        if (!s) s = mb_pgarr_add_u64(&col[3], c->blobs_kept_referenced);
        if (!s) s = mb_pgarr_add_u64(&col[4], c->blobs_kept_recent);
        if (!s) s = mb_pgarr_add_u64(&col[5], c->blobs_absent);
    }
    if (!s && col[0].n) {
        const char *hp[8] = {ret};
        for (int i = 0; i < 6; i++)
            if (!(hp[i + 1] = mb_pgarr_cstr(&col[i])))
                s = mb_errf(MB_ERR_NOMEM, "cleanup: history");
        hp[7] = dur;
        if (!s) s = mb_db_exec_prepared(p->db, "cleanup_history", 8, hp, NULL);
    }
    for (int i = 0; i < 6; i++)
        mb_pgarr_free(&col[i]);
    snprintf(started, sizeof started, "%lld.%09ld", (long long)start->tv_sec, start->tv_nsec);
    const uint64_t v[6] = {res->total.emails_purged, res->blobs_queued, res->total.blobs_removed,
                           res->total.blobs_kept_referenced, res->total.blobs_kept_recent,
                           res->total.blobs_absent};
    for (int i = 0; i < 6; i++)
        snprintf(nums[i], sizeof nums[i], "%" PRIu64, v[i]);
    snprintf(walk, sizeof walk, "%d", walk_next);
    const char *pp[] = {mb_lease_holder(), ret, started, nums[0], nums[1], nums[2], nums[3],
                        nums[4], nums[5], walk, error};
    mb_status ps = mb_db_exec_prepared(p->db, "cleanup_pass", 11, pp, NULL);
    return s ? s : ps;
}

/* ---- the pass ------------------------------------------------------------ */

/* Steps 1-3; *walk_next: where the next pass's walk starts. */
static mb_status run(pass *p, int *walk_next)
{
    PGresult *r;
    mb_status s = mb_db_exec_prepared(p->db, "cleanup_walk_next", 0, NULL, &r);
    if (s)
        return s;
    int first = PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    *walk_next = first;
    if (!s) s = purge(p);
    if (!s) s = walk(p, first, walk_next);
    if (!s) s = blobs(p);
    return s;
}

mb_status mb_cleanup_pass(mb_db *db, mb_blob_store *blobs, const mb_cleanup_opts *o,
                          mb_cleanup_result *out)
{
    memset(out, 0, sizeof *out);
    int64_t t0 = mb_mono_ms();
    pass p = {.db = db, .blobs = blobs, .o = o, .res = out};
    mb_status s = mb_db_prepare_all(db, stmts, sizeof stmts / sizeof stmts[0]);
    bool mine = o->dry_run;
    if (!s && !o->dry_run) s = mb_lease_take(db, LEASE, &mine);
    if (s || !mine)
        return s;
    out->ran = true;
    struct timespec start = {0};
    int walk_next = 0;
    /* A dry run is one transaction, rolled back: its purge's deletes (and
     * the blobs they queue) are seen by its own reference checks only. */
    if (o->dry_run) s = mb_db_begin(db);
    if (!s) s = cutoff(&p, &start);
    if (!s) s = run(&p, &walk_next);
    out->duration_ms = mb_mono_ms() - t0;
    char err[512] = "";
    if (s)
        snprintf(err, sizeof err, "%s", mb_err_last());
    if (o->dry_run) {
        mb_db_rollback(db);
    } else {
        if (start.tv_sec == 0)
            clock_gettime(CLOCK_REALTIME, &start);
        if (record(&p, &start, walk_next, s ? err : NULL))
            MB_WARN(NULL, NULL, "cleanup: recording the pass: %s", mb_err_last());
        if (mb_lease_release(db, LEASE))
            MB_WARN(NULL, NULL, "cleanup: %s", mb_err_last());
    }
    const mb_cleanup_counts *t = &out->total;
    size_t accounts = 0;
    for (size_t i = 0; i < out->naccounts; i++)
        accounts += out->accounts[i].account_id != 0;
    mb_log(s ? MB_LOG_WARN : MB_LOG_INFO, NULL, NULL,
           "cleanup%s: %" PRIu64 " emails purged (retention %" PRId64 " s, %zu accounts); blobs: "
           "%" PRIu64 " removed, %" PRIu64 " kept referenced, %" PRIu64 " kept recent, %" PRIu64
           " absent, %" PRIu64 " queued by the walk of %d dirs; %" PRId64 " ms%s%s",
           o->dry_run ? " (dry run)" : "", t->emails_purged, o->retention_s, accounts,
           t->blobs_removed, t->blobs_kept_referenced, t->blobs_kept_recent, t->blobs_absent,
           out->blobs_queued, out->dirs_walked, out->duration_ms, s ? "; stopped: " : "", err);
    return s ? mb_errf(s, "%s", err) : MB_OK;
}
