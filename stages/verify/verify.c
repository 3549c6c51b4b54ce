/* verify.c — see verify.h. */
#include "stages/verify/verify.h"

#include "stages/common/stage.h"
#include "util/buf.h"
#include "util/clock.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 2000        /* stored locations read per query */
#define REASON_BATCH 10000 /* missing UIDs looked up per query */

static const char *const kind_names[MB_VERIFY_KINDS] = {
    "not_stored", "gone", "flags", "blob_missing", "blob_corrupt", "unscanned",
    "folder_new", "folder_gone", "uidvalidity"};

const char *mb_verify_kind_name(mb_verify_kind k)
{
    return k < MB_VERIFY_KINDS ? kind_names[k] : "?";
}

bool mb_verify_kind_missing(mb_verify_kind k)
{
    return k == MB_VERIFY_NOT_STORED || k == MB_VERIFY_BLOB_MISSING ||
           k == MB_VERIFY_BLOB_CORRUPT || k == MB_VERIFY_UNSCANNED;
}

typedef struct {
    mb_db *db;
    mb_blob_store *blobs;
    const mb_verify_opts *o;
    mb_verify_result *r;
    const char *folder; /* display name */
    char folder_id[24]; /* "" while the folder is not stored */
    char uidvalidity[24];
    uint64_t uidnext;   /* stored UIDNEXT of the folder's last sync (0: none) */
    bool reset;         /* stored under another UIDVALIDITY than the server's */
    PGresult *page;     /* stored locations, UID order */
    int row, nrows;
    bool page_end;      /* no rows after this page */
    uint64_t after;     /* last UID read from Postgres */
    uint64_t last_server_uid;
    uint64_t *missing;  /* owned: UIDs on the server, not stored */
    size_t nmissing;
    mb_buf flags;       /* scratch: the server's flags, sorted and joined */
    mb_status status;
} folder_ctx;

/* A difference at uid (0: the folder); repair: fetching the message again
 * mends it; blob: the blob concerned, or NULL. */
static void diff(folder_ctx *c, mb_verify_kind k, uint64_t uid, bool repair, const char *blob,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void diff(folder_ctx *c, mb_verify_kind k, uint64_t uid, bool repair, const char *blob,
                 const char *fmt, ...)
{
    char detail[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    c->r->count[k]++;
    c->r->total++;
    if (mb_verify_kind_missing(k))
        c->r->missing++;
    if (c->o->on_diff) {
        mb_verify_diff d = {.kind = k, .folder = c->folder, .uid = uid, .detail = detail,
                            .folder_id = strtoull(c->folder_id, NULL, 10),
                            .uidvalidity = strtoull(c->uidvalidity, NULL, 10),
                            .repair = repair && c->folder_id[0], .blob = blob};
        c->o->on_diff(c->o->ctx, &d);
    }
}

/* ---- the stored side ------------------------------------------------------ */

enum { COL_UID, COL_SHA, COL_SIZE, COL_FLAGS, COL_UNSCANNED, COL_SCAN_ERRORS };

/* The current stored row, reading the next page when this one is done;
 * -1 when there is none (or on error: c->status). */
static int stored_row(folder_ctx *c)
{
    if (c->row < c->nrows)
        return c->row;
    if (c->page_end || !c->folder_id[0] || c->status)
        return -1;
    PQclear(c->page);
    c->page = NULL;
    char after[24], limit[24];
    mb_u64s(after, c->after);
    snprintf(limit, sizeof limit, "%d", PAGE);
    const char *p[] = {c->folder_id, c->uidvalidity, after, limit};
    c->status = mb_db_query(c->db,
        "SELECT l.uid, encode(e.blob_sha256, 'hex'), e.size, "
        "array_to_string(ARRAY(SELECT f FROM unnest(l.flags) f ORDER BY f COLLATE \"C\"), ' '), "
        "(SELECT count(*) FROM attachments a WHERE a.email_id = e.id AND a.scan_status = 'pending'), "
        "(SELECT count(*) FROM attachments a WHERE a.email_id = e.id AND a.scan_status = 'error') "
        "FROM email_locations l JOIN emails e ON e.id = l.email_id "
        "WHERE l.folder_id = $1 AND l.uidvalidity = $2 AND l.uid > $3 ORDER BY l.uid LIMIT $4",
        4, p, &c->page);
    if (c->status)
        return -1;
    c->row = 0;
    c->nrows = PQntuples(c->page);
    c->page_end = c->nrows < PAGE;
    if (c->nrows)
        c->after = strtoull(PQgetvalue(c->page, c->nrows - 1, COL_UID), NULL, 10);
    return c->nrows ? 0 : -1;
}

/* The checks of one stored location that need no server: blob, attachments. */
static void check_stored(folder_ctx *c, int row, uint64_t uid)
{
    const char *sha = PQgetvalue(c->page, row, COL_SHA);
    c->r->stored_messages++;
    if (c->o->deep) {
        mb_status s = mb_blob_verify(c->blobs, sha);
        if (s == MB_ERR_NOTFOUND)
            diff(c, MB_VERIFY_BLOB_MISSING, uid, true, sha, "blob %s is not in the blob store", sha);
        else if (s == MB_ERR_INVALID)
            diff(c, MB_VERIFY_BLOB_CORRUPT, uid, true, sha, "blob %s no longer hashes to its name", sha);
        else if (s)
            c->status = s;
    } else {
        bool there = false;
        mb_status s = mb_blob_exists(c->blobs, sha, &there);
        if (s)
            c->status = s;
        else if (!there)
            diff(c, MB_VERIFY_BLOB_MISSING, uid, true, sha, "blob %s is not in the blob store", sha);
    }
    long pending = atol(PQgetvalue(c->page, row, COL_UNSCANNED));
    long errors = atol(PQgetvalue(c->page, row, COL_SCAN_ERRORS));
    if (pending || errors)
        diff(c, MB_VERIFY_UNSCANNED, uid, false, NULL, "%ld attachments never scanned, %ld scanned with an error",
             pending, errors);
}

/* A stored location the server does not list. */
static void stored_only(folder_ctx *c, int row, uint64_t uid)
{
    diff(c, MB_VERIFY_GONE, uid, false, NULL, "stored (blob %s), no longer on the server: a sync is due",
         PQgetvalue(c->page, row, COL_SHA));
    check_stored(c, row, uid);
}

/* ---- the merge, one server message at a time -------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The server's flags sorted bytewise and joined by spaces into c->flags. */
static mb_status server_flags(folder_ctx *c, const mb_msg_info *m)
{
    const char *small[32];
    const char **v = m->nflags <= 32 ? small : malloc(m->nflags * sizeof *v);
    if (!v)
        return mb_errf(MB_ERR_NOMEM, "%zu flags", m->nflags);
    if (m->nflags)
        memcpy(v, m->flags, m->nflags * sizeof *v);
    qsort(v, m->nflags, sizeof *v, cmp_str);
    mb_buf_reset(&c->flags);
    mb_status s = mb_buf_puts(&c->flags, "");
    for (size_t i = 0; i < m->nflags && !s; i++) {
        if (i) s = mb_buf_putc(&c->flags, ' ');
        if (!s) s = mb_buf_puts(&c->flags, v[i]);
    }
    if (v != small)
        free(v);
    return s;
}

static mb_status on_server_msg(void *ctx, const mb_msg_info *m)
{
    folder_ctx *c = ctx;
    if (m->uid <= c->last_server_uid)
        return mb_errf(MB_ERR_INVALID, "folder '%s': the server listed UID %" PRIu64
                       " after UID %" PRIu64 " (not in ascending order)", c->folder, m->uid,
                       c->last_server_uid);
    c->last_server_uid = m->uid;
    c->r->server_messages++;
    int row;
    uint64_t uid = 0;
    while ((row = stored_row(c)) >= 0 &&
           (uid = strtoull(PQgetvalue(c->page, row, COL_UID), NULL, 10)) < m->uid) {
        stored_only(c, row, uid);
        c->row++;
    }
    if (c->status)
        return c->status;
    if (row >= 0 && uid == m->uid) {
        mb_status s = server_flags(c, m);
        if (s)
            return s;
        const char *stored = PQgetvalue(c->page, row, COL_FLAGS);
        if (strcmp(stored, (const char *)c->flags.data))
            diff(c, MB_VERIFY_FLAGS, uid, false, NULL, "flags on the server '%s', stored '%s'",
                 (const char *)c->flags.data, stored);
        check_stored(c, row, uid);
        c->row++;
        return c->status;
    }
    uint64_t *v = mb_grow(c->missing, c->nmissing, sizeof *v);
    if (!v)
        return MB_ERR_NOMEM;
    c->missing = v;
    c->missing[c->nmissing++] = m->uid;
    return MB_OK;
}

/* Why the UIDs in c->missing[from, from + n) are not stored, from the
 * newest job that scanned each. */
static mb_status explain_batch(folder_ctx *c, size_t from, size_t n)
{
    if (!c->folder_id[0] || c->reset) {
        for (size_t i = 0; i < n; i++)
            diff(c, MB_VERIFY_NOT_STORED, c->missing[from + i], false, NULL, "%s",
                 c->reset ? "the folder's UIDVALIDITY changed since the last import or sync"
                          : "its folder is not stored: new since the last import or sync");
        return MB_OK;
    }
    mb_pgarr uids = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < n && !s; i++)
        s = mb_pgarr_add_u64(&uids, c->missing[from + i]);
    const char *p[] = {c->folder_id, mb_pgarr_cstr(&uids)};
    PGresult *r = NULL;
    if (!s) s = mb_db_query(c->db,
        /* job_messages has no index on (folder_id, uid): one join, not a
         * lookup per UID. */
        "WITH m AS (SELECT DISTINCT ON (u.uid) u.uid, jm.job_id, jm.st "
        " FROM unnest($2::bigint[]) u(uid) "
        " LEFT JOIN job_messages jm ON jm.folder_id = $1 AND jm.uid = u.uid "
        " ORDER BY u.uid, jm.job_id DESC NULLS LAST) "
        "SELECT m.uid, m.job_id, m.st, j.status, "
        "CASE WHEN m.st & 8 <> 0 THEN (SELECT h.detail->>'detail' FROM sync_history h "
        " WHERE h.job_id = m.job_id AND h.detail->>'detail' LIKE '%UID ' || m.uid || ':%' "
        " ORDER BY h.id DESC LIMIT 1) END "
        "FROM m LEFT JOIN sync_jobs j ON j.id = m.job_id ORDER BY m.uid",
        2, p, &r);
    mb_pgarr_free(&uids);
    if (s)
        return s;
    for (int i = 0; i < PQntuples(r); i++) {
        uint64_t uid = strtoull(PQgetvalue(r, i, 0), NULL, 10);
        const char *job = PQgetvalue(r, i, 1), *status = PQgetvalue(r, i, 3);
        int st = atoi(PQgetvalue(r, i, 2));
        const char *why = PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4);
        bool active = strcmp(status, "completed") && strcmp(status, "failed") &&
                      strcmp(status, "cancelled");
        if (PQgetisnull(r, i, 1)) {
            if (!c->uidnext || uid >= c->uidnext)
                diff(c, MB_VERIFY_NOT_STORED, uid, true, NULL, "new since the last import or sync");
            else
                diff(c, MB_VERIFY_NOT_STORED, uid, true, NULL, "no job has a record of it (a bug)");
        } else if (st & 8) {
            diff(c, MB_VERIFY_NOT_STORED, uid, true, NULL, "given up on by job %s: %s", job,
                 why ? why : "(no reason recorded for this UID)");
        } else if (st & 4) {
            diff(c, MB_VERIFY_NOT_STORED, uid, true, NULL, "stored by job %s, but its location is gone", job);
        } else if (active) {
            diff(c, MB_VERIFY_NOT_STORED, uid, false, NULL, "job %s (%s) has not stored it yet", job, status);
        } else {
            diff(c, MB_VERIFY_NOT_STORED, uid, true, NULL, "job %s ended (%s) without storing it", job, status);
        }
    }
    PQclear(r);
    return MB_OK;
}

/* ---- folders ------------------------------------------------------------------ */

typedef struct {
    PGresult *res; /* id, display name, server name, uidvalidity, uidnext; by server name */
    bool *seen;    /* owned: listed by the server */
} stored_folders;

/* The row of the stored folder with this server name, or -1 (rows are
 * sorted by server name, bytewise: a binary search, for 100,000 folders). */
static int find_stored(const stored_folders *sf, const char *server_name)
{
    int lo = 0, hi = PQntuples(sf->res) - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(PQgetvalue(sf->res, mid, 2), server_name);
        if (!c)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

static bool chosen(const mb_verify_opts *o, const char *name, const char *display)
{
    if (!o->folders || !o->folders->n)
        return true;
    for (size_t i = 0; i < o->folders->n; i++)
        if (!strcmp(o->folders->v[i], name) || (display && !strcmp(o->folders->v[i], display)))
            return true;
    return false;
}

/* The stored locations of folder_id under other UIDVALIDITYs than the server's. */
static mb_status other_uidvalidity(folder_ctx *c, uint64_t now)
{
    const char *p[] = {c->folder_id, c->uidvalidity};
    PGresult *r;
    mb_status s = mb_db_query(c->db,
        "SELECT l.uidvalidity, count(*) FROM email_locations l WHERE l.folder_id = $1 "
        "AND l.uidvalidity <> $2 GROUP BY 1 ORDER BY 1", 2, p, &r);
    if (s)
        return s;
    for (int i = 0; i < PQntuples(r); i++)
        diff(c, MB_VERIFY_UIDVALIDITY, 0, false, NULL, "%s messages stored under UIDVALIDITY %s, the server's is "
             "%" PRIu64 ": a sync is due", PQgetvalue(r, i, 1), PQgetvalue(r, i, 0), now);
    PQclear(r);
    return MB_OK;
}

static mb_status verify_folder(folder_ctx *c, mb_source *src, const mb_folder_info *f,
                               const stored_folders *sf, int srow)
{
    mb_folder_state st;
    mb_status s = mb_source_open_folder(src, f->name, &st);
    if (s)
        return s;
    c->r->folders++;
    mb_u64s(c->uidvalidity, st.uidvalidity);
    if (srow < 0) {
        diff(c, MB_VERIFY_FOLDER_NEW, 0, false, NULL, "on the server (%" PRIu32 " messages), not stored",
             st.exists);
    } else {
        snprintf(c->folder_id, sizeof c->folder_id, "%s", PQgetvalue(sf->res, srow, 0));
        c->uidnext = strtoull(PQgetvalue(sf->res, srow, 4), NULL, 10);
        c->reset = !PQgetisnull(sf->res, srow, 3) &&
                   strtoull(PQgetvalue(sf->res, srow, 3), NULL, 10) != st.uidvalidity;
        s = other_uidvalidity(c, st.uidvalidity);
    }
    if (!s) s = mb_source_scan(src, 0, 0, on_server_msg, c);
    int row;
    while (!s && (row = stored_row(c)) >= 0) { /* stored beyond the server's last UID */
        stored_only(c, row, strtoull(PQgetvalue(c->page, row, COL_UID), NULL, 10));
        c->row++;
    }
    if (!s) s = c->status;
    for (size_t i = 0; !s && i < c->nmissing; i += REASON_BATCH)
        s = explain_batch(c, i, c->nmissing - i < REASON_BATCH ? c->nmissing - i : REASON_BATCH);
    return s;
}

static void folder_ctx_free(folder_ctx *c)
{
    PQclear(c->page);
    free(c->missing);
    mb_buf_free(&c->flags);
}

mb_status mb_verify_account(mb_db *db, mb_blob_store *blobs, const mb_account *a, mb_source *src,
                            const mb_verify_opts *o, mb_verify_result *r)
{
    memset(r, 0, sizeof *r);
    char acc[24];
    const char *p[] = {mb_u64s(acc, a->id)};
    stored_folders sf = {0};
    mb_folder_info *fl = NULL;
    size_t nf = 0;
    mb_status s = mb_db_query(db,
        "SELECT id, name, coalesce(remote_name, name), uidvalidity, coalesce(uidnext, 0) "
        "FROM folders WHERE account_id = $1 AND deleted_at IS NULL "
        "ORDER BY coalesce(remote_name, name) COLLATE \"C\"",
        1, p, &sf.res);
    if (!s && !(sf.seen = calloc((size_t)PQntuples(sf.res) + 1, sizeof *sf.seen)))
        s = mb_errf(MB_ERR_NOMEM, "verify: %d folders", PQntuples(sf.res));
    if (!s) s = mb_source_connect(src);
    if (!s) s = mb_source_list_folders(src, &fl, &nf);
    for (size_t i = 0; i < nf && !s; i++) {
        const char *shown = fl[i].display ? fl[i].display : fl[i].name;
        int srow = find_stored(&sf, fl[i].name);
        if (srow >= 0)
            sf.seen[srow] = true;
        if (fl[i].noselect || !chosen(o, fl[i].name, fl[i].display))
            continue;
        folder_ctx c = {.db = db, .blobs = blobs, .o = o, .r = r, .folder = shown};
        s = verify_folder(&c, src, &fl[i], &sf, srow);
        folder_ctx_free(&c);
        if (s)
            mb_err_wrap(s, "verify folder '%s'", shown);
    }
    for (int i = 0; !s && i < PQntuples(sf.res); i++) {
        const char *name = PQgetvalue(sf.res, i, 1);
        if (sf.seen[i] || !chosen(o, PQgetvalue(sf.res, i, 2), name))
            continue;
        folder_ctx c = {.db = db, .blobs = blobs, .o = o, .r = r, .folder = name};
        diff(&c, MB_VERIFY_FOLDER_GONE, 0, false, NULL, "stored, the server no longer lists it: a sync is due");
    }
    mb_folder_info_free(fl, nf);
    free(sf.seen);
    PQclear(sf.res);
    return s;
}

mb_status mb_verify_record(mb_db *db, const mb_account *a, const mb_verify_result *r,
                           bool deep, int64_t started_unix, int64_t ms)
{
    mb_buf counts = MB_BUF_INIT;
    mb_status s = mb_buf_putc(&counts, '{');
    for (int k = 0; k < MB_VERIFY_KINDS && !s; k++)
        s = mb_buf_printf(&counts, "%s\"%s\":%" PRIu64, k ? "," : "", kind_names[k], r->count[k]);
    if (!s) s = mb_buf_putc(&counts, '}');
    if (!s) s = mb_buf_putc(&counts, '\0');
    char acc[24], start[24], dur[24], srv[24], sto[24], tot[24], mis[24];
    const char *p[] = {mb_u64s(acc, a->id), mb_u64s(start, (uint64_t)started_unix),
                       mb_u64s(dur, (uint64_t)ms), deep ? "true" : "false",
                       mb_u64s(srv, r->server_messages), mb_u64s(sto, r->stored_messages),
                       mb_u64s(tot, r->total), mb_u64s(mis, r->missing),
                       s ? NULL : (const char *)counts.data};
    PGresult *res;
    if (!s) s = mb_db_query(db,
        "INSERT INTO verify_runs (account_id, job_id, started_at, duration_ms, deep, "
        "server_messages, stored_messages, differences, missing, counts) "
        "SELECT $1, (SELECT max(id) FROM sync_jobs WHERE account_id = $1 AND status = 'completed'), "
        "to_timestamp($2), $3, $4, $5, $6, $7, $8, $9::jsonb",
        9, p, &res);
    if (!s)
        PQclear(res);
    mb_buf_free(&counts);
    return s;
}
