/* job.c — import jobs in Postgres (see job.h). All writes are idempotent;
 * batches go through unnest() of array parameters. */
#include "stages/common/job.h"

#include "schemas/schema.h"
#include "util/buf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mb_db_stmt stmts[] = {
    /* The unique index sync_jobs_one_active_idx refuses a second active
     * job of an account (SQLSTATE 23505): mb_job_create names the one. */
    {"job_create", 3,
     "INSERT INTO sync_jobs (account_id, type, status, options, started_at) "
     "VALUES ($1, $3, 'scanning', $2::jsonb, now()) RETURNING id"},
    {"job_active", 1,
     "SELECT id, type, status FROM sync_jobs WHERE account_id = $1 "
     "AND status IN ('pending', 'scanning', 'running', 'paused') ORDER BY id LIMIT 1"},
    {"job_get", 1,
     "SELECT account_id, status, coalesce((options->>'defer_attachments')::bool, false), type "
     "FROM sync_jobs WHERE id = $1"},
    /* What a job found in a folder: the state to remember once it
     * completes (applied by the trigger of migration 0006) and counters. */
    /* flags_changed adds up: a scan run again finds the flags set already. */
    {"job_folder_state", 12,
     "INSERT INTO job_folders (job_id, folder_id, uidvalidity, uidnext, highest_modseq, "
     "message_count, method, event, old_name, added, duration_ms, flags_changed) "
     "VALUES ($1, $2, $3, $4, nullif($5::numeric, 0), $6, $7, $8, $9, $10, $11, $12) "
     "ON CONFLICT (job_id, folder_id) DO UPDATE SET uidvalidity = EXCLUDED.uidvalidity, "
     "uidnext = EXCLUDED.uidnext, highest_modseq = EXCLUDED.highest_modseq, "
     "message_count = EXCLUDED.message_count, method = EXCLUDED.method, "
     "event = coalesce(EXCLUDED.event, job_folders.event), "
     "old_name = coalesce(EXCLUDED.old_name, job_folders.old_name), added = EXCLUDED.added, "
     "duration_ms = EXCLUDED.duration_ms, "
     "flags_changed = job_folders.flags_changed + EXCLUDED.flags_changed"},
    {"job_set_status", 3,
     "UPDATE sync_jobs SET status = $2, error = coalesce($3, error), updated_at = now(), "
     "finished_at = CASE WHEN $2 IN ('completed','failed','cancelled') THEN now() END "
     "WHERE id = $1 AND status NOT IN ('completed','failed','cancelled')"},
    /* A problem identical to the job's last one (an outage seen by each
     * retry, each record) is recorded once. */
    {"job_problem", 4,
     "WITH j AS (SELECT id FROM sync_jobs WHERE id = $1::bigint "
     "AND error IS DISTINCT FROM $3::text || ': ' || $4::text), "
     "h AS (INSERT INTO sync_history (account_id, job_id, event, detail) "
     "SELECT $2::bigint, j.id, $3::text, jsonb_build_object('detail', $4::text) FROM j RETURNING 1) "
     "UPDATE sync_jobs SET error = $3 || ': ' || $4, updated_at = now() FROM j "
     "WHERE sync_jobs.id = j.id"},
    {"job_folder_clear", 2,
     "WITH d AS (DELETE FROM job_messages WHERE job_id = $1 AND folder_id = $2) "
     "DELETE FROM job_chunks WHERE job_id = $1 AND folder_id = $2"},
    /* A scanned batch, not yet cut into chunks (chunk_id 0). A server that
     * reports a UID twice must not fail the insert: the last report wins. */
    {"job_messages_insert", 6,
     "INSERT INTO job_messages (job_id, folder_id, chunk_id, uid, size, internal_date, flags) "
     "SELECT DISTINCT ON (u.uid) $1, $2, 0, u.uid, u.size, u.idate, u.flags::text[] "
     "FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::text[]) "
     "WITH ORDINALITY AS u(uid, size, idate, flags, i) ORDER BY u.uid, u.i DESC "
     "ON CONFLICT (job_id, folder_id, uid) DO UPDATE SET chunk_id = 0, "
     "size = EXCLUDED.size, internal_date = EXCLUDED.internal_date, flags = EXCLUDED.flags"},
    /* The cut reads a folder's messages newest first, a page at a time. */
    {"job_messages_page", 4,
     "SELECT uid, size FROM job_messages WHERE job_id = $1 AND folder_id = $2 AND uid < $3 "
     "ORDER BY uid DESC LIMIT $4"},
    {"job_chunk_insert", 7,
     "WITH c AS (INSERT INTO job_chunks (job_id, folder_id, seq, uid_first, uid_last, "
     "message_count, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7) "
     "ON CONFLICT (job_id, seq) DO UPDATE SET folder_id = EXCLUDED.folder_id, "
     "uid_first = EXCLUDED.uid_first, uid_last = EXCLUDED.uid_last, "
     "message_count = EXCLUDED.message_count, bytes = EXCLUDED.bytes, state = 'pending' "
     "RETURNING id) "
     "UPDATE job_messages SET chunk_id = c.id FROM c WHERE job_id = $1 AND folder_id = $2 "
     "AND uid BETWEEN $4 AND $5"},
    /* min(messages of the job, 2000): how mb_job_scan_done tells a big job. */
    /* Where a scan's chunk numbers start: after those an interrupted run
     * of the job left (a sync run again keeps the folders it finished). */
    {"job_next_seq", 1, "SELECT coalesce(max(seq) + 1, 0) FROM job_chunks WHERE job_id = $1"},
    {"job_size_at_least", 1,
     "SELECT count(*) FROM (SELECT 1 FROM job_messages WHERE job_id = $1 LIMIT 2000) t"},
    {"job_scan_done", 1,
     "UPDATE sync_jobs j SET status = 'running', updated_at = now(), "
     "total_messages = t.n, total_bytes = t.b, scanned = t.n "
     "FROM (SELECT count(*) AS n, coalesce(sum(size), 0) AS b FROM job_messages "
     "WHERE job_id = $1) t WHERE j.id = $1 AND j.status = 'scanning'"},
    /* A chunk is done when every stage has recorded each of its messages (or
     * it failed): a fetch task redelivered after a crash may still be marking
     * messages that parse and store already finished. */
    {"job_chunks_done", 1,
     "UPDATE job_chunks c SET state = 'done', updated_at = now(), stored_count = "
     "(SELECT count(*) FROM job_messages m WHERE m.chunk_id = c.id AND m.st & 4 <> 0) "
     "WHERE c.job_id = $1 AND c.state = 'published' AND NOT EXISTS "
     "(SELECT 1 FROM job_messages m WHERE m.chunk_id = c.id AND m.st & 8 = 0 AND m.st & 7 <> 7)"},
    {"job_chunks_next", 2,
     "SELECT id FROM job_chunks WHERE job_id = $1 AND state = 'pending' ORDER BY seq "
     "LIMIT greatest(0, $2::int - (SELECT count(*) FROM job_chunks "
     "WHERE job_id = $1 AND state = 'published'))"},
    /* The folder's UIDVALIDITY as this job's scan saw it (job_folders):
     * folders holds the last completed job's, which a reset has replaced. */
    {"job_chunk_head", 1,
     "SELECT c.job_id, j.account_id, c.folder_id, coalesce(f.remote_name, f.name), "
     "coalesce(jf.uidvalidity, f.uidvalidity), "
     "coalesce((j.options->>'defer_attachments')::bool, false), c.republished "
     "FROM job_chunks c JOIN sync_jobs j ON j.id = c.job_id JOIN folders f ON f.id = c.folder_id "
     "LEFT JOIN job_folders jf ON jf.job_id = c.job_id AND jf.folder_id = c.folder_id "
     "WHERE c.id = $1"},
    {"job_chunk_items", 1,
     "SELECT uid, size, internal_date, flags FROM job_messages WHERE chunk_id = $1 "
     "ORDER BY uid DESC"},
    {"job_chunk_published", 1,
     "UPDATE job_chunks SET state = 'published', published_at = now(), updated_at = now() "
     "WHERE id = $1 AND state = 'pending'"},
    /* The sweep (job.h): record progress of published chunks, then hand
     * back those without progress for $2 ms. */
    {"job_chunks_progress", 1,
     "UPDATE job_chunks c SET progress = p.v, progress_at = now() FROM "
     "(SELECT m.chunk_id, sum(m.st)::bigint AS v FROM job_messages m JOIN job_chunks k "
     "ON k.id = m.chunk_id WHERE k.job_id = $1 AND k.state = 'published' AND m.job_id = $1 "
     "GROUP BY m.chunk_id) p WHERE c.id = p.chunk_id AND c.progress IS DISTINCT FROM p.v"},
    {"job_chunks_stalled", 2,
     "SELECT count(*) FROM job_chunks WHERE job_id = $1 AND state = 'published' "
     "AND coalesce(progress_at, published_at) < now() - $2::bigint * interval '1 millisecond'"},
    {"job_chunks_sweep", 2,
     "WITH s AS (SELECT id FROM job_chunks WHERE job_id = $1 AND state = 'published' "
     "AND coalesce(progress_at, published_at) < now() - $2::bigint * interval '1 millisecond'), "
     "m AS (UPDATE job_messages m SET st = 0 FROM s WHERE m.job_id = $1 AND m.chunk_id = s.id "
     "AND m.st <> 0 AND m.st & 12 = 0) "
     "UPDATE job_chunks c SET state = 'pending', republished = c.republished + 1, "
     "progress = NULL, progress_at = NULL, updated_at = now() FROM s WHERE c.id = s.id "
     "RETURNING c.id"},
    {"job_mark", 4,
     "UPDATE job_messages m SET st = m.st | $2::smallint FROM unnest($3::bigint[], $4::bigint[]) "
     "AS u(f, uid) WHERE m.job_id = $1 AND m.folder_id = u.f AND m.uid = u.uid "
     "AND m.st & $2::smallint = 0"},
    {"job_marked", 4,
     "SELECT uid FROM job_messages WHERE job_id = $1 AND folder_id = $2 "
     "AND uid = ANY($4::bigint[]) AND st & $3::smallint <> 0"},
    {"job_refresh", 1,
     "WITH m AS (SELECT count(*) FILTER (WHERE st & 1 <> 0) AS f, "
     "count(*) FILTER (WHERE st & 2 <> 0) AS p, count(*) FILTER (WHERE st & 4 <> 0) AS s, "
     "count(*) FILTER (WHERE st & 8 <> 0) AS e, "
     "coalesce(sum(size) FILTER (WHERE st & 1 <> 0), 0) AS b FROM job_messages WHERE job_id = $1), "
     "a AS (SELECT count(*) FILTER (WHERE scan_status = 'pending') AS pend, "
     "count(*) FILTER (WHERE scan_status <> 'pending') AS done, "
     "count(*) FILTER (WHERE scan_status = 'infected') AS inf FROM attachments WHERE job_id = $1) "
     "UPDATE sync_jobs j SET fetched = m.f, parsed = m.p, stored = m.s, errors = m.e, "
     "bytes_fetched = m.b, av_pending = a.pend, av_scanned = a.done, av_infected = a.inf "
     "FROM m, a WHERE j.id = $1 RETURNING j.status, j.total_messages, j.total_bytes, j.scanned, "
     "j.fetched, j.parsed, j.stored, j.bytes_fetched, j.av_scanned, j.av_pending, "
     "j.av_infected, j.errors, j.error"},
    {"job_read", 1,
     "SELECT status, total_messages, total_bytes, scanned, fetched, parsed, stored, "
     "bytes_fetched, av_scanned, av_pending, av_infected, errors, error "
     "FROM sync_jobs WHERE id = $1"},
    {"job_try_complete", 1,
     "UPDATE sync_jobs SET status = 'completed', finished_at = now(), updated_at = now() "
     "WHERE id = $1 AND status = 'running' "
     "AND NOT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $1 AND state <> 'done') "
     "AND NOT EXISTS (SELECT 1 FROM attachments WHERE job_id = $1 AND scan_status = 'pending') "
     "RETURNING id"},
    {"job_list_status", 2,
     "SELECT id FROM sync_jobs WHERE status = $1 ORDER BY id LIMIT $2"},
};

mb_status mb_job_prepare(mb_db *db)
{
    return mb_db_prepare_all(db, stmts, MB_ARRAY_LEN(stmts));
}

#define U64STR(var, v) char var[24]; snprintf(var, sizeof var, "%" PRIu64, (uint64_t)(v))

static mb_status exec(mb_db *db, const char *name, int n, const char *const *p, PGresult **out)
{
    return mb_db_exec_prepared(db, name, n, p, out);
}

/* Run a statement whose only parameter is the job id. */
static mb_status exec_job(mb_db *db, const char *name, uint64_t job, PGresult **out)
{
    U64STR(j, job);
    const char *p[] = {j};
    return exec(db, name, 1, p, out);
}

/* Same, for a statement that returns the job's one row. */
static mb_status job_row(mb_db *db, const char *name, uint64_t job, PGresult **out)
{
    mb_status s = exec_job(db, name, job, out);
    if (!s && PQntuples(*out) != 1) {
        PQclear(*out);
        *out = NULL;
        s = mb_errf(MB_ERR_NOTFOUND, "job %" PRIu64 " does not exist", job);
    }
    return s;
}

static uint64_t col_u64(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return strtoull(PQgetvalue(r, row, col), NULL, 10);
}

mb_status mb_job_create(mb_db *db, uint64_t account_id, const char *type,
                        const char *options_json, uint64_t *job_out)
{
    U64STR(a, account_id);
    const char *p[] = {a, options_json ? options_json : "{}", type};
    PGresult *r;
    mb_status s = exec(db, "job_create", 3, p, &r);
    if (s && !strcmp(mb_db_sqlstate(db), "23505")) {
        const char *q[] = {a};
        if (exec(db, "job_active", 1, q, &r))
            return mb_errf(MB_ERR_BUSY, "the account already has an active job");
        if (PQntuples(r) == 1)
            s = mb_errf(MB_ERR_BUSY, "the account already has an active job: %s %s is %s "
                        "(wait for it to end, or cancel it)", PQgetvalue(r, 0, 1),
                        PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 2));
        else /* it ended meanwhile */
            s = mb_errf(MB_ERR_BUSY, "the account had an active job a moment ago: try again");
        PQclear(r);
        return s;
    }
    if (s)
        return s;
    *job_out = col_u64(r, 0, 0);
    PQclear(r);
    return MB_OK;
}

mb_status mb_job_folder_state(mb_db *db, uint64_t job, uint64_t folder_id,
                              const mb_job_folder *f)
{
    U64STR(j, job);
    U64STR(fo, folder_id);
    U64STR(v, f->uidvalidity);
    U64STR(n, f->uidnext);
    U64STR(m, f->highest_modseq);
    U64STR(c, f->message_count);
    U64STR(ad, f->added);
    U64STR(fc, f->flags_changed);
    char ms[24];
    snprintf(ms, sizeof ms, "%" PRId64, f->duration_ms);
    const char *p[] = {j, fo, f->uidvalidity ? v : NULL, f->uidvalidity ? n : NULL, m, c,
                       f->method, f->event, f->old_name, ad, ms, fc};
    return exec(db, "job_folder_state", 12, p, NULL);
}

mb_status mb_job_get(mb_db *db, uint64_t job, mb_job_info *out)
{
    PGresult *r;
    mb_status s = job_row(db, "job_get", job, &r);
    if (s)
        return s;
    memset(out, 0, sizeof *out);
    out->id = job;
    out->account_id = col_u64(r, 0, 0);
    snprintf(out->status, sizeof out->status, "%s", PQgetvalue(r, 0, 1));
    out->defer_attachments = PQgetvalue(r, 0, 2)[0] == 't';
    out->sync = !strcmp(PQgetvalue(r, 0, 3), "sync");
    PQclear(r);
    return MB_OK;
}

mb_status mb_job_set_status(mb_db *db, uint64_t job, const char *status, const char *error)
{
    U64STR(j, job);
    const char *p[] = {j, status, error};
    return exec(db, "job_set_status", 3, p, NULL);
}

mb_status mb_job_account_lock(mb_db *db, uint64_t account_id)
{
    U64STR(a, account_id);
    const char *p[] = {a};
    /* Key: ('m'<<8|'b', the account id's low 31 bits): two accounts sharing a
     * key only wait for each other now and then. */
    return mb_db_query(db, "SELECT pg_advisory_xact_lock(28002, ($1::bigint & 2147483647)::int)",
                       1, p, NULL);
}

mb_status mb_job_problem(mb_db *db, uint64_t job, uint64_t account_id, const char *what,
                         const char *detail)
{
    U64STR(j, job);
    U64STR(a, account_id);
    const char *p[] = {j, a, what, detail ? detail : ""};
    return exec(db, "job_problem", 4, p, NULL);
}

mb_status mb_job_cut_init(mb_db *db, uint64_t job, mb_job_cut *c)
{
    memset(c, 0, sizeof *c);
    PGresult *r;
    mb_status s = exec_job(db, "job_next_seq", job, &r);
    if (s)
        return s;
    c->seq = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return MB_OK;
}

mb_status mb_job_folder_begin(mb_db *db, uint64_t job, uint64_t folder_id)
{
    U64STR(j, job);
    U64STR(f, folder_id);
    const char *p[] = {j, f};
    return exec(db, "job_folder_clear", 2, p, NULL);
}

mb_status mb_job_folder_add(mb_db *db, uint64_t job, uint64_t folder_id,
                            const mb_fetch_item *items, size_t n)
{
    if (n == 0)
        return MB_OK;
    U64STR(j, job);
    U64STR(f, folder_id);
    mb_pgarr uids = MB_PGARR_INIT, sizes = MB_PGARR_INIT, dates = MB_PGARR_INIT,
             flags = MB_PGARR_INIT, one = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < n && !s; i++) {
        s = mb_pgarr_add_u64(&uids, items[i].uid);
        if (!s) s = mb_pgarr_add_u64(&sizes, items[i].size);
        if (!s) s = mb_pgarr_add_i64(&dates, items[i].internal_date);
        mb_pgarr_reset(&one);
        for (size_t k = 0; k < items[i].flags.n && !s; k++)
            s = mb_pgarr_add_str(&one, items[i].flags.v[k]);
        if (!s) s = mb_pgarr_add_str(&flags, mb_pgarr_cstr(&one));
    }
    if (!s) {
        const char *q[] = {j, f, mb_pgarr_cstr(&uids), mb_pgarr_cstr(&sizes),
                           mb_pgarr_cstr(&dates), mb_pgarr_cstr(&flags)};
        s = exec(db, "job_messages_insert", 6, q, NULL);
    }
    mb_pgarr_free(&uids);
    mb_pgarr_free(&sizes);
    mb_pgarr_free(&dates);
    mb_pgarr_free(&flags);
    mb_pgarr_free(&one);
    return s;
}

/* Record one chunk [first, last] of the folder with its messages. */
static mb_status add_chunk(mb_db *db, const char *j, const char *f, int seq, uint64_t first,
                           uint64_t last, size_t count, uint64_t bytes)
{
    char sq[16], cnt[24];
    snprintf(sq, sizeof sq, "%d", seq);
    snprintf(cnt, sizeof cnt, "%zu", count);
    U64STR(lo, first);
    U64STR(hi, last);
    U64STR(b, bytes);
    const char *p[] = {j, f, sq, lo, hi, cnt, b};
    return exec(db, "job_chunk_insert", 7, p, NULL);
}

/* Messages read per page by the cut: memory stays bounded whatever the
 * folder's size. */
#define CUT_PAGE 10000

static int next_seq(mb_job_cut *c)
{
    return c->shared_seq ? atomic_fetch_add(c->shared_seq, 1) : c->seq++;
}

mb_status mb_job_folder_cut(mb_db *db, uint64_t job, uint64_t folder_id, mb_job_cut *c,
                            bool *more)
{
    U64STR(j, job);
    U64STR(f, folder_id);
    char page[16];
    snprintf(page, sizeof page, "%d", CUT_PAGE);
    if (!c->started) {
        c->below = UINT64_MAX >> 1; /* uids are bigint */
        c->count = 0;
        c->started = true;
    }
    U64STR(b, c->below);
    const char *p[] = {j, f, b, page};
    PGresult *r;
    mb_status s = exec(db, "job_messages_page", 4, p, &r);
    if (s)
        return s;
    int rows = PQntuples(r);
    *more = rows == CUT_PAGE;
    for (int i = 0; i < rows && !s; i++) {
        uint64_t uid = col_u64(r, i, 0), size = col_u64(r, i, 1);
        if (c->count && (c->count == MB_CHUNK_MAX_MSGS || c->bytes + size > MB_CHUNK_MAX_BYTES)) {
            s = add_chunk(db, j, f, next_seq(c), c->lo, c->hi, c->count, c->bytes);
            c->count = 0;
        }
        if (c->count == 0) {
            c->hi = uid;
            c->bytes = 0;
        }
        c->lo = uid;
        c->bytes += size;
        c->count++;
        c->below = uid;
    }
    PQclear(r);
    if (!s && !*more && c->count) {
        s = add_chunk(db, j, f, next_seq(c), c->lo, c->hi, c->count, c->bytes);
        c->count = 0;
    }
    if (!*more)
        c->started = false; /* ready for the next folder; seq goes on */
    return s;
}

mb_status mb_job_scan_done(mb_db *db, uint64_t job)
{
    /* Fresh statistics before the stages start marking messages: planned
     * without them (a new job_messages), the per-batch UPDATE ... FROM
     * unnest() became a sequential scan of the whole table, 7 ms a call at
     * 10k messages and growing with the job. A job of fewer messages than
     * ANALYZE_FROM goes without: the ANALYZE took 120-290 ms at 100,000 rows
     * in the table, most of a small sync's time, and its few marks are
     * cheap whatever the plan. */
    enum { ANALYZE_FROM = 2000 };
    PGresult *r;
    mb_status s = exec_job(db, "job_size_at_least", job, &r);
    if (s)
        return s;
    bool big = strtoull(PQgetvalue(r, 0, 0), NULL, 10) >= ANALYZE_FROM;
    PQclear(r);
    if (big && (s = mb_db_exec(db, "ANALYZE job_messages, job_chunks")))
        return s;
    return exec_job(db, "job_scan_done", job, NULL);
}

mb_status mb_job_chunks_mark_done(mb_db *db, uint64_t job)
{
    return exec_job(db, "job_chunks_done", job, NULL);
}

mb_status mb_job_chunks_to_publish(mb_db *db, uint64_t job, int max_inflight, uint64_t *ids_out,
                                   size_t max, size_t *n_out)
{
    U64STR(j, job);
    char mx[16];
    snprintf(mx, sizeof mx, "%d", max_inflight);
    const char *p[] = {j, mx};
    *n_out = 0;
    PGresult *r;
    mb_status s = exec(db, "job_chunks_next", 2, p, &r);
    if (s)
        return s;
    for (int i = 0; i < PQntuples(r) && *n_out < max; i++)
        ids_out[(*n_out)++] = col_u64(r, i, 0);
    PQclear(r);
    return MB_OK;
}

/* Parse a text[] literal as returned by Postgres ({a,"b c"}) into v. */
static mb_status parse_text_array(const char *lit, mb_strv *v)
{
    size_t len = strlen(lit);
    if (len < 2 || lit[0] != '{' || lit[len - 1] != '}')
        return mb_errf(MB_ERR_INVALID, "not an array literal: %.40s", lit);
    mb_buf cur = MB_BUF_INIT;
    const char *p = lit + 1, *end = lit + len - 1;
    mb_status s = MB_OK;
    while (p < end && !s) {
        mb_buf_reset(&cur);
        if (*p == '"') {
            for (p++; p < end && *p != '"' && !s; p++) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                s = mb_buf_putc(&cur, *p);
            }
            p++; /* closing quote */
        } else {
            for (; p < end && *p != ',' && !s; p++)
                s = mb_buf_putc(&cur, *p);
        }
        if (s)
            break;
        char **nv = realloc(v->v, (v->n + 1) * sizeof *nv);
        if (!nv) {
            s = mb_errf(MB_ERR_NOMEM, "flags array");
            break;
        }
        v->v = nv;
        if (!(v->v[v->n] = mb_strdup(mb_buf_cstr(&cur)))) {
            s = MB_ERR_NOMEM;
            break;
        }
        v->n++;
        if (p < end && *p == ',')
            p++;
    }
    mb_buf_free(&cur);
    return s;
}

mb_status mb_job_chunk_task(mb_db *db, uint64_t chunk_id, mb_rec_fetch *out, int *republished)
{
    U64STR(c, chunk_id);
    const char *p[] = {c};
    memset(out, 0, sizeof *out);
    PGresult *r;
    mb_status s = exec(db, "job_chunk_head", 1, p, &r);
    if (s)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return mb_errf(MB_ERR_NOTFOUND, "chunk %" PRIu64 " does not exist", chunk_id);
    }
    out->chunk_id = chunk_id;
    out->job = col_u64(r, 0, 0);
    out->account_id = col_u64(r, 0, 1);
    out->folder_id = col_u64(r, 0, 2);
    out->folder = mb_strdup(PQgetvalue(r, 0, 3));
    out->uidvalidity = col_u64(r, 0, 4);
    out->defer_attachments = PQgetvalue(r, 0, 5)[0] == 't';
    *republished = atoi(PQgetvalue(r, 0, 6));
    PQclear(r);
    if (!out->folder)
        return MB_ERR_NOMEM;
    if ((s = exec(db, "job_chunk_items", 1, p, &r))) {
        mb_rec_free(&mb_type_fetch, out);
        return s;
    }
    size_t n = (size_t)PQntuples(r);
    out->items.v = calloc(n ? n : 1, sizeof *out->items.v);
    if (!out->items.v)
        s = mb_errf(MB_ERR_NOMEM, "chunk %" PRIu64 ": %zu items", chunk_id, n);
    for (size_t i = 0; i < n && !s; i++) {
        mb_fetch_item *it = &out->items.v[i];
        out->items.n = i + 1;
        it->uid = col_u64(r, (int)i, 0);
        it->size = col_u64(r, (int)i, 1);
        it->internal_date = strtoll(PQgetvalue(r, (int)i, 2), NULL, 10);
        s = parse_text_array(PQgetvalue(r, (int)i, 3), &it->flags);
    }
    PQclear(r);
    if (s)
        mb_rec_free(&mb_type_fetch, out);
    return s;
}

mb_status mb_job_chunk_published(mb_db *db, uint64_t chunk_id)
{
    U64STR(c, chunk_id);
    const char *p[] = {c};
    return exec(db, "job_chunk_published", 1, p, NULL);
}

/* Statements with the job id and a duration in ms; *n_out: rows returned,
 * or the count the statement returns. */
static mb_status exec_job_ms(mb_db *db, const char *name, uint64_t job, int64_t ms, bool count,
                             size_t *n_out)
{
    *n_out = 0;
    U64STR(j, job);
    char m[24];
    snprintf(m, sizeof m, "%" PRId64, ms);
    const char *p[] = {j, m};
    PGresult *r;
    mb_status s = exec(db, name, 2, p, &r);
    if (s)
        return s;
    *n_out = count ? (size_t)col_u64(r, 0, 0) : (size_t)PQntuples(r);
    PQclear(r);
    return MB_OK;
}

mb_status mb_job_chunks_stalled(mb_db *db, uint64_t job, int64_t stall_ms, size_t *n_out)
{
    mb_status s = exec_job(db, "job_chunks_progress", job, NULL);
    return s ? s : exec_job_ms(db, "job_chunks_stalled", job, stall_ms, true, n_out);
}

mb_status mb_job_chunks_hand_back(mb_db *db, uint64_t job, int64_t stall_ms, size_t *n_out)
{
    return exec_job_ms(db, "job_chunks_sweep", job, stall_ms, false, n_out);
}

mb_status mb_job_mark(mb_db *db, uint64_t job, int bit, const uint64_t *folder_ids,
                      const uint64_t *uids, size_t n)
{
    if (n == 0)
        return MB_OK;
    U64STR(j, job);
    char b[8];
    snprintf(b, sizeof b, "%d", bit);
    mb_pgarr fa = MB_PGARR_INIT, ua = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < n && !s; i++) {
        s = mb_pgarr_add_u64(&fa, folder_ids[i]);
        if (!s) s = mb_pgarr_add_u64(&ua, uids[i]);
    }
    if (!s) {
        const char *p[] = {j, b, mb_pgarr_cstr(&fa), mb_pgarr_cstr(&ua)};
        s = exec(db, "job_mark", 4, p, NULL);
    }
    mb_pgarr_free(&fa);
    mb_pgarr_free(&ua);
    return s;
}

mb_status mb_job_marked(mb_db *db, uint64_t job, uint64_t folder_id, int bit,
                        const uint64_t *uids, size_t n, bool *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = false;
    if (n == 0)
        return MB_OK;
    U64STR(j, job);
    U64STR(f, folder_id);
    char b[8];
    snprintf(b, sizeof b, "%d", bit);
    mb_pgarr ua = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < n && !s; i++)
        s = mb_pgarr_add_u64(&ua, uids[i]);
    PGresult *r = NULL;
    if (!s) {
        const char *p[] = {j, f, b, mb_pgarr_cstr(&ua)};
        s = exec(db, "job_marked", 4, p, &r);
    }
    mb_pgarr_free(&ua);
    if (s)
        return s;
    for (int row = 0; row < PQntuples(r); row++) {
        uint64_t uid = col_u64(r, row, 0);
        for (size_t i = 0; i < n; i++)
            if (uids[i] == uid)
                out[i] = true;
    }
    PQclear(r);
    return MB_OK;
}

/* The event of a job_refresh / job_read row. */
static mb_status event_of(PGresult *r, uint64_t job, mb_rec_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->job = job;
    ev->status = mb_strdup(PQgetvalue(r, 0, 0));
    ev->total = col_u64(r, 0, 1);
    ev->total_bytes = col_u64(r, 0, 2);
    ev->scanned = col_u64(r, 0, 3);
    ev->fetched = col_u64(r, 0, 4);
    ev->parsed = col_u64(r, 0, 5);
    ev->stored = col_u64(r, 0, 6);
    ev->bytes = col_u64(r, 0, 7);
    ev->av_scanned = col_u64(r, 0, 8);
    ev->av_pending = col_u64(r, 0, 9);
    ev->av_infected = col_u64(r, 0, 10);
    ev->errors = col_u64(r, 0, 11);
    if (!PQgetisnull(r, 0, 12))
        ev->error = mb_strdup(PQgetvalue(r, 0, 12));
    PQclear(r);
    return ev->status ? MB_OK : MB_ERR_NOMEM;
}

mb_status mb_job_refresh(mb_db *db, uint64_t job, mb_rec_event *ev)
{
    PGresult *r;
    mb_status s = job_row(db, "job_refresh", job, &r);
    return s ? s : event_of(r, job, ev);
}

mb_status mb_job_read(mb_db *db, uint64_t job, mb_rec_event *ev)
{
    PGresult *r;
    mb_status s = job_row(db, "job_read", job, &r);
    return s ? s : event_of(r, job, ev);
}

mb_status mb_job_try_complete(mb_db *db, uint64_t job, bool *done_out)
{
    PGresult *r;
    mb_status s = exec_job(db, "job_try_complete", job, &r);
    if (s)
        return s;
    *done_out = PQntuples(r) == 1;
    PQclear(r);
    return MB_OK;
}

mb_status mb_job_list_status(mb_db *db, const char *status, uint64_t *ids_out, size_t max,
                             size_t *n_out)
{
    char mx[24];
    snprintf(mx, sizeof mx, "%zu", max);
    const char *p[] = {status, mx};
    PGresult *r;
    *n_out = 0;
    mb_status s = exec(db, "job_list_status", 2, p, &r);
    if (s)
        return s;
    for (int i = 0; i < PQntuples(r) && *n_out < max; i++)
        ids_out[(*n_out)++] = col_u64(r, i, 0);
    PQclear(r);
    return MB_OK;
}
