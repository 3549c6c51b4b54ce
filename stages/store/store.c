/* store.c — one batch of parsed messages into Postgres in one transaction.
 *
 * Each table is written with one statement whose columns are arrays
 * (INSERT ... SELECT FROM unnest(...) ON CONFLICT ...), so a batch of
 * hundreds of messages costs a handful of round trips. Rows are de-duplicated
 * in the batch first (the same message in two folders, a redelivered record),
 * because one INSERT ... ON CONFLICT DO UPDATE cannot touch a row twice. */
#include "stages/store/store.h"

#include "schemas/schema.h"
#include "stages/common/job.h"
#include "util/env.h"
#include "util/log.h"
#include "util/utf8.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char sql_emails[] =
    "INSERT INTO emails (account_id, blob_sha256, size, message_id, thread_id, in_reply_to, "
    "references_, subject, from_name, from_addr, date, internal_date, flags, snippet, "
    "has_attachments, defects, unparsed) "
    "SELECT u.acct, decode(u.sha, 'hex'), u.size, u.mid, u.tid, u.irt, u.refs::text[], u.subj, "
    "u.fname, u.faddr, to_timestamp(u.dt), to_timestamp(u.idt), u.flags::text[], u.snip, "
    "u.hasatt, nullif(u.defects::text[], '{}'), u.unparsed "
    "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], "
    "$7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], $12::bigint[], $13::text[], "
    "$14::text[], $15::bool[], $16::text[], $17::bool[]) "
    "AS u(acct, sha, size, mid, tid, irt, refs, subj, fname, faddr, dt, idt, flags, snip, hasatt, "
    "defects, unparsed) "
    /* A row parse gave up on is filled in by a later full parse (a dead
     * letter retried after a fix); a parsed row is never overwritten. An
     * email deleted (no location left) is live again: a sync found it
     * moved, or the message came back. */
    "ON CONFLICT (account_id, blob_sha256) DO UPDATE SET synced_at = now(), deleted_at = NULL, "
    "unparsed = emails.unparsed AND EXCLUDED.unparsed, "
    "message_id = CASE WHEN emails.unparsed THEN EXCLUDED.message_id ELSE emails.message_id END, "
    "thread_id = CASE WHEN emails.unparsed THEN EXCLUDED.thread_id ELSE emails.thread_id END, "
    "in_reply_to = CASE WHEN emails.unparsed THEN EXCLUDED.in_reply_to ELSE emails.in_reply_to END, "
    "references_ = CASE WHEN emails.unparsed THEN EXCLUDED.references_ ELSE emails.references_ END, "
    "subject = CASE WHEN emails.unparsed THEN EXCLUDED.subject ELSE emails.subject END, "
    "from_name = CASE WHEN emails.unparsed THEN EXCLUDED.from_name ELSE emails.from_name END, "
    "from_addr = CASE WHEN emails.unparsed THEN EXCLUDED.from_addr ELSE emails.from_addr END, "
    "date = CASE WHEN emails.unparsed THEN EXCLUDED.date ELSE emails.date END, "
    "snippet = CASE WHEN emails.unparsed THEN EXCLUDED.snippet ELSE emails.snippet END, "
    "has_attachments = CASE WHEN emails.unparsed THEN EXCLUDED.has_attachments ELSE emails.has_attachments END, "
    "defects = CASE WHEN emails.unparsed THEN EXCLUDED.defects ELSE emails.defects END "
    "RETURNING id, account_id, encode(blob_sha256, 'hex')";

static const char sql_locations[] =
    "INSERT INTO email_locations (email_id, folder_id, uidvalidity, uid, flags, internal_date) "
    "SELECT u.e, u.f, u.v, u.uid, u.flags::text[], to_timestamp(u.idt) "
    "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[]) "
    "AS u(e, f, v, uid, flags, idt) "
    "ON CONFLICT (folder_id, uidvalidity, uid) DO UPDATE SET email_id = EXCLUDED.email_id, "
    "flags = EXCLUDED.flags, internal_date = EXCLUDED.internal_date, synced_at = now()";

static const char sql_addresses[] =
    "INSERT INTO addresses (email_id, kind, position, name, address) "
    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::text[], $5::text[]) "
    "ON CONFLICT (email_id, kind, position) DO UPDATE SET name = EXCLUDED.name, "
    "address = EXCLUDED.address";

static const char sql_attachments[] =
    "INSERT INTO attachments (email_id, part, filename, content_type, disposition, content_id, "
    "size, sha256, job_id, scan_status, scan_signature, scanned_at) "
    "SELECT u.e, u.p, u.fn, u.ct, u.d, u.cid, u.sz, decode(u.h, 'hex'), u.j, "
    "coalesce(v.status, 'pending'), v.signature, v.scanned_at "
    "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
    "$7::bigint[], $8::text[], $9::bigint[]) AS u(e, p, fn, ct, d, cid, sz, h, j) "
    /* Only clean and infected verdicts are reused (av_verdicts held 'error'
     * rows before they stopped being cached: those are scanned again). */
    "LEFT JOIN av_verdicts v ON v.sha256 = decode(u.h, 'hex') "
    "AND v.status IN ('clean', 'infected') "
    "ON CONFLICT (email_id, part) DO NOTHING";

/* Test-only fault (MAILBUS_FAULT_STORE_BADROW=TEXT): a record whose subject
 * contains TEXT is written with a size Postgres refuses (CHECK size >= 0),
 * as a record it cannot hold would be. Empty: off. */
static const char *fault_badrow = "";
/* Test-only (MAILBUS_FAULT_STORE_BATCH_DELAY_MS=N): sleep N ms after each
 * batch is committed, so that a kill test lands between two batches. */
static long fault_batch_delay_ms;

mb_status mb_store_prepare(mb_db *db)
{
    fault_badrow = mb_env("MAILBUS_FAULT_STORE_BADROW", "");
    mb_status s = mb_env_int("MAILBUS_FAULT_STORE_BATCH_DELAY_MS", 0, 0, 600000,
                             &fault_batch_delay_ms);
    if (!s) s = mb_db_prepare(db, "store_emails", sql_emails, 17);
    if (!s) s = mb_db_prepare(db, "store_locations", sql_locations, 6);
    if (!s) s = mb_db_prepare(db, "store_addresses", sql_addresses, 5);
    if (!s) s = mb_db_prepare(db, "store_attachments", sql_attachments, 9);
    return s;
}

/* Postgres refuses invalid UTF-8 (and NUL) in text: one bad string would
 * fail the whole batch forever. Add s, replacing what text cannot hold. */
static mb_status add_text(mb_pgarr *a, const char *s)
{
    if (!s)
        return mb_pgarr_add_null(a);
    mb_status st = mb_pgarr_add_str(a, s);
    if (st != MB_ERR_INVALID)
        return st;
    mb_err_clear();
    mb_buf clean = MB_BUF_INIT;
    st = mb_utf8_clean(&clean, s, strlen(s));
    if (!st) st = mb_pgarr_add_str(a, mb_buf_cstr(&clean));
    mb_buf_free(&clean);
    return st;
}

/* A text[] element holding an inner array literal. */
static mb_status add_strv(mb_pgarr *a, const mb_strv *v, mb_pgarr *tmp)
{
    mb_pgarr_reset(tmp);
    mb_status s = MB_OK;
    for (size_t i = 0; i < v->n && !s; i++)
        s = add_text(tmp, v->v[i]);
    return s ? s : mb_pgarr_add_str(a, mb_pgarr_cstr(tmp));
}

#define NCOLS 17

typedef struct {
    mb_rec_parsed *recs;   /* decoded, one per delivery (zeroed if bad) */
    bool *ok;              /* decoded */
    uint64_t *email_id;    /* per record after the emails upsert */
    size_t n;
} batch;

static void cols_free(mb_pgarr *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mb_pgarr_free(&c[i]);
}

static mb_status exec_cols(mb_db *db, const char *stmt, mb_pgarr *c, int n, PGresult **out)
{
    const char *p[NCOLS];
    for (int i = 0; i < n; i++)
        p[i] = mb_pgarr_cstr(&c[i]);
    return mb_db_exec_prepared(db, stmt, n, p, out);
}

static mb_status write_emails(mb_db *db, batch *b)
{
    mb_pgarr c[NCOLS], tmp = MB_PGARR_INIT;
    memset(c, 0, sizeof c);
    mb_status s = MB_OK;
    for (size_t i = 0; i < b->n && !s; i++) {
        if (!b->ok[i])
            continue;
        mb_rec_parsed *r = &b->recs[i];
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = b->ok[k] && b->recs[k].raw.account_id == r->raw.account_id &&
                  !strcmp(b->recs[k].raw.sha256, r->raw.sha256);
        if (dup)
            continue;
        const mb_address *from = r->from.n ? &r->from.v[0] : NULL;
        s = mb_pgarr_add_u64(&c[0], r->raw.account_id);
        if (!s) s = mb_pgarr_add_str(&c[1], r->raw.sha256);
        if (!s && *fault_badrow && r->subject && strstr(r->subject, fault_badrow))
            s = mb_pgarr_add_i64(&c[2], -1);
        else if (!s)
            s = mb_pgarr_add_u64(&c[2], r->raw.size);
        if (!s) s = add_text(&c[3], r->message_id);
        if (!s) s = add_text(&c[4], r->thread_id);
        if (!s) s = add_text(&c[5], r->in_reply_to);
        if (!s) s = add_strv(&c[6], &r->references, &tmp);
        if (!s) s = add_text(&c[7], r->subject);
        if (!s) s = add_text(&c[8], from ? from->name : NULL);
        if (!s) s = add_text(&c[9], from ? from->addr : NULL);
        if (!s) s = mb_pgarr_add_i64(&c[10], r->date);
        if (!s) s = mb_pgarr_add_i64(&c[11], r->raw.internal_date);
        if (!s) s = add_strv(&c[12], &r->raw.flags, &tmp);
        if (!s) s = add_text(&c[13], r->snippet);
        if (!s) s = mb_pgarr_add_bool(&c[14], r->attachments.n > 0);
        if (!s) s = add_strv(&c[15], &r->defects, &tmp);
        if (!s) s = mb_pgarr_add_bool(&c[16], r->unparsed);
    }
    PGresult *res = NULL;
    if (!s) s = exec_cols(db, "store_emails", c, 17, &res);
    cols_free(c, NCOLS);
    mb_pgarr_free(&tmp);
    if (s)
        return s;
    for (int row = 0; row < PQntuples(res); row++) {
        uint64_t id = strtoull(PQgetvalue(res, row, 0), NULL, 10);
        uint64_t acct = strtoull(PQgetvalue(res, row, 1), NULL, 10);
        const char *sha = PQgetvalue(res, row, 2);
        for (size_t i = 0; i < b->n; i++)
            if (b->ok[i] && b->recs[i].raw.account_id == acct && !strcmp(b->recs[i].raw.sha256, sha))
                b->email_id[i] = id;
    }
    PQclear(res);
    for (size_t i = 0; i < b->n; i++)
        if (b->ok[i] && !b->email_id[i])
            return mb_errf(MB_ERR_INTERNAL, "email %s got no id", b->recs[i].raw.sha256);
    return MB_OK;
}

/* Whether record i is the first with the same email (so its addresses and
 * attachments are written once). */
static bool first_of_email(const batch *b, size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (b->ok[k] && b->email_id[k] == b->email_id[i])
            return false;
    return true;
}

static mb_status write_rest(mb_db *db, batch *b)
{
    mb_pgarr c[NCOLS], tmp = MB_PGARR_INIT;
    memset(c, 0, sizeof c);
    mb_status s = MB_OK;
    /* Locations, de-duplicated by (folder, uidvalidity, uid). */
    for (size_t i = 0; i < b->n && !s; i++) {
        if (!b->ok[i])
            continue;
        const mb_rec_rawmsg *r = &b->recs[i].raw;
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = b->ok[k] && b->recs[k].raw.folder_id == r->folder_id &&
                  b->recs[k].raw.uidvalidity == r->uidvalidity && b->recs[k].raw.uid == r->uid;
        if (dup)
            continue;
        s = mb_pgarr_add_u64(&c[0], b->email_id[i]);
        if (!s) s = mb_pgarr_add_u64(&c[1], r->folder_id);
        if (!s) s = mb_pgarr_add_u64(&c[2], r->uidvalidity);
        if (!s) s = mb_pgarr_add_u64(&c[3], r->uid);
        if (!s) s = add_strv(&c[4], &r->flags, &tmp);
        if (!s) s = mb_pgarr_add_i64(&c[5], r->internal_date);
    }
    if (!s) s = exec_cols(db, "store_locations", c, 6, NULL);
    cols_free(c, NCOLS);

    /* Addresses. */
    static const char *const kinds[] = {"from", "to", "cc", "bcc", "reply_to"};
    for (size_t i = 0; i < b->n && !s; i++) {
        if (!b->ok[i] || !first_of_email(b, i))
            continue;
        mb_rec_parsed *r = &b->recs[i];
        const mb_addressv *lists[] = {&r->from, &r->to, &r->cc, &r->bcc, &r->reply_to};
        for (size_t k = 0; k < 5 && !s; k++) {
            for (size_t j = 0; j < lists[k]->n && j < 32767 && !s; j++) {
                s = mb_pgarr_add_u64(&c[0], b->email_id[i]);
                if (!s) s = mb_pgarr_add_str(&c[1], kinds[k]);
                if (!s) s = mb_pgarr_add_u64(&c[2], j);
                if (!s) s = add_text(&c[3], lists[k]->v[j].name);
                if (!s) s = add_text(&c[4], lists[k]->v[j].addr);
            }
        }
    }
    if (!s && c[0].n) s = exec_cols(db, "store_addresses", c, 5, NULL);
    cols_free(c, NCOLS);

    /* Attachments. */
    for (size_t i = 0; i < b->n && !s; i++) {
        if (!b->ok[i] || !first_of_email(b, i))
            continue;
        mb_rec_parsed *r = &b->recs[i];
        for (size_t j = 0; j < r->attachments.n && !s; j++) {
            const mb_attachment *a = &r->attachments.v[j];
            s = mb_pgarr_add_u64(&c[0], b->email_id[i]);
            if (!s) s = add_text(&c[1], a->part ? a->part : "");
            if (!s) s = add_text(&c[2], a->filename);
            if (!s) s = add_text(&c[3], a->content_type);
            if (!s) s = add_text(&c[4], a->disposition);
            if (!s) s = add_text(&c[5], a->content_id);
            if (!s) s = mb_pgarr_add_u64(&c[6], a->size);
            if (!s) s = mb_pgarr_add_str(&c[7], a->sha256);
            if (!s) s = mb_pgarr_add_u64(&c[8], r->raw.job);
        }
    }
    if (!s && c[0].n) s = exec_cols(db, "store_attachments", c, 9, NULL);
    cols_free(c, NCOLS);
    mb_pgarr_free(&tmp);

    /* Progress bits, per job. */
    uint64_t *fo = calloc(b->n ? b->n : 1, sizeof *fo), *uu = calloc(b->n ? b->n : 1, sizeof *uu);
    bool *seen = calloc(b->n ? b->n : 1, sizeof *seen);
    if (!s && (!fo || !uu || !seen))
        s = mb_errf(MB_ERR_NOMEM, "marks");
    for (size_t i = 0; i < b->n && !s; i++) {
        if (!b->ok[i] || seen[i])
            continue;
        size_t k = 0;
        for (size_t j = i; j < b->n; j++)
            if (b->ok[j] && !seen[j] && b->recs[j].raw.job == b->recs[i].raw.job) {
                seen[j] = true;
                fo[k] = b->recs[j].raw.folder_id;
                uu[k++] = b->recs[j].raw.uid;
            }
        s = mb_job_mark(db, b->recs[i].raw.job, MB_JOB_STORED, fo, uu, k);
    }
    free(fo);
    free(uu);
    free(seen);
    return s;
}

/* After the commit: one avscan record per attachment of jobs that scan as
 * they go. The avscan stage skips contents it has a verdict for. The
 * record's Nats-Msg-Id names the job: a later import of the same message
 * (another account, or a re-import within the duplicate window) gets its
 * own record, so an attachment without a cached verdict is scanned again. */
static mb_status queue_scans(mb_stage *st, batch *b)
{
    mb_buf enc = MB_BUF_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < b->n && !s; i++) {
        mb_rec_parsed *r = &b->recs[i];
        if (!b->ok[i] || r->raw.defer_attachments || !first_of_email(b, i))
            continue;
        char subj[128], js[24], as[24];
        s = mb_bus_subjectf(st->bus, subj, sizeof subj, "avscan.%" PRIu64, r->raw.account_id);
        for (size_t j = 0; j < r->attachments.n && !s; j++) {
            const mb_attachment *a = &r->attachments.v[j];
            if (!a->sha256)
                continue;
            mb_rec_avscan rec = {.job = r->raw.job, .account_id = r->raw.account_id,
                                 .email_sha256 = r->raw.sha256, .sha256 = a->sha256,
                                 .part = a->part, .size = a->size};
            char id[256];
            snprintf(id, sizeof id, "av-%" PRIu64 "-%s-%s", r->raw.job, r->raw.sha256,
                     a->part ? a->part : "");
            mb_pub_headers h = {.msg_id = id, .schema = mb_type_avscan.schema,
                                .job = mb_u64s(js, r->raw.job),
                                .account = mb_u64s(as, r->raw.account_id)};
            mb_buf_reset(&enc);
            s = mb_rec_encode(&mb_type_avscan, &rec, &enc);
            if (!s) s = mb_bus_publish_async(st->bus, subj, enc.data, enc.len, &h);
        }
    }
    mb_buf_free(&enc);
    mb_status fs = mb_bus_publish_flush(st->bus, 60000);
    return s ? s : fs;
}

/* The write locks of b's accounts, in ascending order (job.h). */
static mb_status lock_accounts(mb_db *db, const batch *b)
{
    uint64_t last = 0;
    for (;;) {
        uint64_t next = 0; /* the smallest account above last */
        for (size_t i = 0; i < b->n; i++) {
            uint64_t a = b->ok[i] ? b->recs[i].raw.account_id : 0;
            if (a > last && (!next || a < next))
                next = a;
        }
        if (!next)
            return MB_OK;
        mb_status s = mb_job_account_lock(db, next);
        if (s)
            return s;
        last = next;
    }
}

/* One transaction for b, retried (up to 3 times) while the failure is
 * transient. On failure *retryable says whether it was (connection lost,
 * serialization failure: mb_db_retryable), read before the rollback. */
static mb_status write_batch(mb_db *db, batch *b, size_t good, bool *retryable)
{
    mb_status s = MB_OK;
    *retryable = false;
    for (int attempt = 0; attempt < 3; attempt++) {
        memset(b->email_id, 0, b->n * sizeof *b->email_id);
        s = mb_db_begin(db);
        if (!s) s = lock_accounts(db, b);
        if (!s) s = write_emails(db, b);
        if (!s) s = write_rest(db, b);
        if (!s) s = mb_db_commit(db);
        if (!s)
            return MB_OK;
        /* ROLLBACK is a statement of its own: it resets the db's last
         * failure, so read what this one was first. */
        *retryable = mb_db_retryable(db);
        char why[MB_BUS_REASON_MAX];
        snprintf(why, sizeof why, "%s", mb_err_last());
        mb_db_rollback(db);
        mb_errf(s, "%s", why);
        if (!*retryable)
            break;
        MB_WARN(NULL, NULL, "batch of %zu: %s; retrying", good, why);
    }
    return s;
}

/* Store the records [lo, hi) of all (d[lo..hi) their deliveries) in one
 * transaction. A record Postgres refuses for what it holds (a server error
 * that is not transient) fails that statement, and with it every record of
 * the transaction: then the range is split in halves, recursively, so the
 * good records commit and only the bad one gets a FAIL verdict (the consume
 * loop's give-up hook settles it on its job). A transient error or one of
 * ours (out of memory) retries the range. stored[i] is set for each
 * committed record; the others get their verdict here. Returns how many
 * records were refused. */
static size_t store_range(mb_stage *st, batch *all, mb_bus_delivery *d, size_t lo, size_t hi,
                          bool *stored)
{
    batch b = {.recs = all->recs + lo, .ok = all->ok + lo, .email_id = all->email_id + lo,
               .n = hi - lo};
    size_t good = 0, last = lo;
    for (size_t i = lo; i < hi; i++)
        if (all->ok[i]) {
            good++;
            last = i;
        }
    if (!good)
        return 0;
    bool retryable;
    mb_status s = write_batch(st->db, &b, good, &retryable);
    if (!s) {
        for (size_t i = lo; i < hi; i++)
            stored[i] = all->ok[i];
        return 0;
    }
    bool record_error = (s == MB_ERR_DB || s == MB_ERR_INVALID) && !retryable;
    if (record_error && good > 1) {
        MB_WARN(NULL, NULL, "batch of %zu refused (%s); splitting it", good, mb_err_last());
        size_t mid = lo + (hi - lo) / 2;
        return store_range(st, all, d, lo, mid, stored) + store_range(st, all, d, mid, hi, stored);
    }
    if (record_error) {
        const mb_rec_rawmsg *r = &all->recs[last].raw;
        char js[24], as[24];
        MB_WARN(mb_u64s(js, r->job), mb_u64s(as, r->account_id),
                "uid %" PRIu64 " (blob %.12s) refused: %s", r->uid, r->sha256, mb_err_last());
        mb_bus_fail(&d[last], "store: %s", mb_err_last());
        return 1;
    }
    for (size_t i = lo; i < hi; i++)
        if (all->ok[i])
            mb_bus_retry(&d[i], 2000, "store: %s", mb_err_last());
    MB_WARN(NULL, NULL, "batch of %zu not stored: %s", good, mb_err_last());
    return 0;
}

void mb_store_handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    mb_stage *st = ctx;
    batch b = {.n = n};
    b.recs = calloc(n, sizeof *b.recs);
    b.ok = calloc(n, sizeof *b.ok);
    b.email_id = calloc(n, sizeof *b.email_id);
    bool *stored = calloc(n, sizeof *stored);
    if (!b.recs || !b.ok || !b.email_id || !stored) {
        for (size_t i = 0; i < n; i++)
            mb_bus_retry(&d[i], 1000, "out of memory for a batch of %zu", n);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (mb_rec_decode(&mb_type_parsed, d[i].data, d[i].len, &b.recs[i])) {
            mb_bus_fail(&d[i], "undecodable store record: %s", mb_err_last());
            continue;
        }
        b.ok[i] = true;
    }
    size_t refused = store_range(st, &b, d, 0, n, stored);
    if (fault_batch_delay_ms > 0) {
        struct timespec ts = {fault_batch_delay_ms / 1000, (fault_batch_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Scans are queued for the committed records only. */
    size_t good = 0;
    for (size_t i = 0; i < n; i++) {
        b.ok[i] = stored[i];
        good += stored[i];
    }
    mb_status s = good ? queue_scans(st, &b) : MB_OK;
    for (size_t i = 0; i < n; i++) {
        if (!stored[i])
            continue;
        if (s)
            mb_bus_retry(&d[i], 2000, "store: %s", mb_err_last());
        else
            mb_bus_done(&d[i]);
    }
    if (s)
        MB_WARN(NULL, NULL, "scans of a batch of %zu not queued: %s", good, mb_err_last());
    else if (good)
        MB_DEBUG(NULL, NULL, "stored a batch of %zu (%zu refused)", good, refused);
out:
    for (size_t i = 0; b.recs && i < n; i++)
        mb_rec_free(&mb_type_parsed, &b.recs[i]);
    free(b.recs);
    free(b.ok);
    free(b.email_id);
    free(stored);
}
