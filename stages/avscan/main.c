/* main.c — mailbus-avscan: scans each distinct attachment once with clamd.
 *
 * For each avscan record: if a clean or infected verdict for the
 * attachment's SHA-256 exists, copy it to the attachment rows with that hash
 * that have none; otherwise decode the part from the message's .eml blob,
 * stream it to clamd (INSTREAM), record the verdict, and copy it. Only clean
 * and infected verdicts are cached (av_verdicts): an `error` (clamd out of
 * reach on the last attempt, its size limit, a part no decoder gets through)
 * goes on the waiting attachment rows only, so a later import or a retry
 * scans that content again. When clamd is down the record is retried with
 * growing delays; on its last allowed delivery the attachments are marked
 * 'error' so the job can complete with the problem visible.
 * A batch (64 records) looks up known verdicts with one query, walks the
 * MIME tree of each of its messages once (a walk per attachment made a
 * message of n parts cost n walks of n parts), and writes the verdicts with
 * one transaction: per-record commits, each waiting for a WAL flush, held
 * the stage to about 100 attachments a second. A transaction Postgres
 * refuses for what one record holds is split in halves until the record is
 * found; only that record fails. */
#include "av/clamd.h"
#include "mime/mime.h"
#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/common/stage.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char usage[] =
    "Consumes avscan/1 records: decodes the attachment from its .eml blob and streams\n"
    "it to clamd (MAILBUS_CLAMD_SOCKET, INSTREAM), scanning each distinct attachment\n"
    "(by SHA-256) once; records clean / infected (with the signature) / error.\n"
    "MAILBUS_AVSCAN_THREADS (default 4) attachments are scanned at once.";

/* A message with attachments to scan: its blob mapped and its MIME tree
 * walked once, then read by every scanner thread. The records of one
 * message's attachments are queued together and span consecutive batches,
 * so the last few messages are kept open across batches (message_cache):
 * a message of n parts costs one walk, not one per batch. */
typedef struct {
    char email_sha256[65];
    mb_blob_mapping *m;       /* owned */
    mb_mime_tree *tree;       /* owned; points into the mapping */
    mb_status st;             /* opening failed: each of its items gets this */
    char err[400];
    uint64_t used;            /* batch that last used it */
} message;

#define MESSAGE_CACHE 4

typedef struct {
    mb_stage *st;
    const char *socket;
    int64_t max_deliver;
    bool clamd_down; /* an outage is recorded on the job once, not per record */
    int threads;     /* attachments scanned at once (clamd is multi-threaded) */
    int64_t budget_ms; /* CPU to walk one message's MIME tree, and to decode one
                          attachment (MAILBUS_AVSCAN_BUDGET_MS) */
    /* Test-only faults, matched against the start of an attachment's SHA-256
     * ("" is off): MAILBUS_FAULT_AVSCAN_ERROR: its scan comes back as an
     * error verdict without asking clamd (as clamd's size limit would);
     * MAILBUS_FAULT_AVSCAN_BADROW: its verdict is written with a status
     * Postgres refuses (CHECK), as a record it cannot hold would be. */
    const char *fault_error;
    const char *fault_badrow;
    message *cache[MESSAGE_CACHE]; /* opened without error; owned */
    uint64_t batches;
    uint64_t walks;                /* MIME trees walked (logged at debug) */
} avscan;

static bool fault_hit(const char *fault, const char *sha256)
{
    return *fault && !strncmp(sha256, fault, strlen(fault));
}

static mb_status sink(void *ctx, const void *p, size_t n)
{
    return mb_clamd_scan_write(ctx, p, n);
}


/* What one record of a batch comes to. */
typedef struct {
    mb_rec_avscan r;
    bool ok;            /* decoded */
    bool resolved;      /* a verdict exists or was just made: apply it */
    const char *status; /* new verdict to record, or NULL */
    char sig[256];
    bool to_scan;
    message *msg;       /* with to_scan */
    /* Set by a scanner thread. */
    mb_status scan_st;
    mb_av_verdict v;
    char err[400];
} item;

static bool is_hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f') ||
              (s[n] >= 'A' && s[n] <= 'F')))
            return false;
    return n == 64;
}

/* Which of the batch's attachments already have a clean or infected verdict
 * (one query). */
static mb_status known_verdicts(mb_db *db, item *it, size_t n)
{
    mb_pgarr shas = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < n && !s; i++)
        if (it[i].ok)
            s = mb_pgarr_add_str(&shas, it[i].r.sha256);
    PGresult *r = NULL;
    const char *p[] = {mb_pgarr_cstr(&shas)};
    /* 'error' rows were cached before they stopped being: not a verdict. */
    if (!s) s = mb_db_query(db, "SELECT encode(sha256, 'hex') FROM av_verdicts WHERE sha256 IN "
                                "(SELECT decode(x, 'hex') FROM unnest($1::text[]) x) "
                                "AND status IN ('clean', 'infected')", 1, p, &r);
    mb_pgarr_free(&shas);
    if (s)
        return s;
    for (int row = 0; row < PQntuples(r); row++)
        for (size_t i = 0; i < n; i++)
            if (it[i].ok && !strcasecmp(it[i].r.sha256, PQgetvalue(r, row, 0)))
                it[i].resolved = true;
    PQclear(r);
    return MB_OK;
}

/* The verdicts of it[lo..hi) in one transaction: new clean / infected ones
 * into av_verdicts, then copied to the attachment rows with those hashes
 * that have none yet or an error; new errors onto the waiting rows only. */
static mb_status apply_tx(avscan *av, const item *it, size_t lo, size_t hi)
{
    mb_pgarr nh = MB_PGARR_INIT, ns = MB_PGARR_INIT, nsig = MB_PGARR_INIT, all = MB_PGARR_INIT;
    mb_pgarr eh = MB_PGARR_INIT, esig = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = lo; i < hi && !s; i++) {
        if (!it[i].resolved)
            continue;
        const char *sig = it[i].sig[0] ? it[i].sig : NULL;
        if (it[i].status && !strcmp(it[i].status, "error")) {
            s = mb_pgarr_add_str(&eh, it[i].r.sha256);
            if (!s) s = mb_pgarr_add_str(&esig, sig);
            continue;
        }
        s = mb_pgarr_add_str(&all, it[i].r.sha256);
        if (!s && it[i].status) {
            s = mb_pgarr_add_str(&nh, it[i].r.sha256);
            if (!s) s = mb_pgarr_add_str(&ns, fault_hit(av->fault_badrow, it[i].r.sha256)
                                                  ? "refused by a test fault" : it[i].status);
            if (!s) s = mb_pgarr_add_str(&nsig, sig);
        }
    }
    const char *p[] = {mb_pgarr_cstr(&nh), mb_pgarr_cstr(&ns), mb_pgarr_cstr(&nsig)};
    const char *q[] = {mb_pgarr_cstr(&all)};
    const char *e[] = {mb_pgarr_cstr(&eh), mb_pgarr_cstr(&esig)};
    mb_db *db = av->st->db;
    if (!s && (all.n || eh.n)) {
        s = mb_db_begin(db);
        if (!s && nh.n)
            s = mb_db_query(db,
                "INSERT INTO av_verdicts (sha256, status, signature) "
                "SELECT decode(h, 'hex'), st, sig FROM unnest($1::text[], $2::text[], $3::text[]) "
                "AS u(h, st, sig) ON CONFLICT (sha256) DO UPDATE SET status = EXCLUDED.status, "
                "signature = EXCLUDED.signature, scanned_at = now() "
                "WHERE av_verdicts.status NOT IN ('clean', 'infected')", 3, p, NULL);
        if (!s && all.n)
            s = mb_db_query(db,
                "UPDATE attachments a SET scan_status = v.status, scan_signature = v.signature, "
                "scanned_at = v.scanned_at FROM av_verdicts v WHERE v.sha256 IN "
                "(SELECT decode(x, 'hex') FROM unnest($1::text[]) x) "
                "AND v.status IN ('clean', 'infected') "
                "AND a.sha256 = v.sha256 AND a.scan_status IN ('pending', 'error')", 1, q, NULL);
        if (!s && eh.n)
            s = mb_db_query(db,
                "UPDATE attachments a SET scan_status = 'error', scan_signature = u.sig, "
                "scanned_at = now() FROM unnest($1::text[], $2::text[]) AS u(h, sig) "
                "WHERE a.sha256 = decode(u.h, 'hex') AND a.scan_status = 'pending'", 2, e, NULL);
        if (!s) s = mb_db_commit(db);
    }
    mb_pgarr_free(&nh);
    mb_pgarr_free(&ns);
    mb_pgarr_free(&nsig);
    mb_pgarr_free(&all);
    mb_pgarr_free(&eh);
    mb_pgarr_free(&esig);
    return s;
}

/* Apply the verdicts of it[lo..hi) (d[i] the delivery of it[i]) and set
 * each resolved record's verdict: done once committed. A transaction
 * Postgres refuses for what a record holds (a server error that is not
 * transient) is split in halves, recursively, so the others commit and only
 * that record fails (the give-up hook settles it); a transient error
 * (connection lost, serialization failure) retries the records. */
static void apply(avscan *av, item *it, mb_bus_delivery *d, size_t lo, size_t hi)
{
    size_t res = 0, last = lo;
    for (size_t i = lo; i < hi; i++)
        if (it[i].resolved) {
            res++;
            last = i;
        }
    if (!res)
        return;
    mb_db *db = av->st->db;
    mb_status s = apply_tx(av, it, lo, hi);
    bool retryable = false;
    char why[MB_BUS_REASON_MAX];
    if (s) {
        /* ROLLBACK resets the db's last failure: read it first. */
        retryable = mb_db_retryable(db);
        snprintf(why, sizeof why, "%s", mb_err_last());
        mb_db_rollback(db);
    }
    if (!s) {
        for (size_t i = lo; i < hi; i++)
            if (it[i].resolved)
                mb_bus_done(&d[i]);
    } else if ((s == MB_ERR_DB || s == MB_ERR_INVALID) && !retryable && res > 1) {
        MB_WARN(NULL, NULL, "verdicts of %zu records refused (%s); splitting them", res, why);
        size_t mid = lo + (hi - lo) / 2;
        apply(av, it, d, lo, mid);
        apply(av, it, d, mid, hi);
    } else if ((s == MB_ERR_DB || s == MB_ERR_INVALID) && !retryable) {
        const mb_rec_avscan *r = &it[last].r;
        char js[24], as[24];
        MB_WARN(mb_u64s(js, r->job), mb_u64s(as, r->account_id),
                "verdict for attachment %s (part %s of %.12s) refused: %s", r->sha256, r->part,
                r->email_sha256, why);
        mb_bus_fail(&d[last], "avscan: %s", why);
    } else {
        MB_WARN(NULL, NULL, "verdicts of %zu records not written: %s", res, why);
        for (size_t i = lo; i < hi; i++)
            if (it[i].resolved)
                mb_bus_retry(&d[i], 2000, "avscan: %s", why);
    }
}

static void message_free(message *m)
{
    if (!m)
        return;
    mb_mime_tree_free(m->tree);
    if (m->m)
        mb_blob_unmap(m->m);
    free(m);
}

/* The message with this blob, from the cache or opened now: mapped and its
 * MIME tree walked (under the work budget), in the consuming thread. A
 * failure to open is kept in m->st for its items. NULL: out of memory. */
static message *message_get(avscan *av, const char *email_sha256)
{
    for (int k = 0; k < MESSAGE_CACHE; k++) {
        message *m = av->cache[k];
        if (m && !strcmp(m->email_sha256, email_sha256)) {
            av->cache[k] = NULL;
            return m;
        }
    }
    message *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    snprintf(m->email_sha256, sizeof m->email_sha256, "%s", email_sha256);
    const char *data;
    size_t len;
    m->st = mb_blob_map(av->st->blobs, m->email_sha256, &data, &len, &m->m);
    mb_mime_budget(av->budget_ms);
    if (!m->st) m->st = mb_mime_tree_open(data, len, &m->tree);
    mb_mime_budget(0);
    av->walks += !m->st;
    if (m->st)
        snprintf(m->err, sizeof m->err, "message %.12s: %s", m->email_sha256, mb_err_last());
    return m;
}

/* After the batch: an opened message goes back to the cache in place of
 * the one used longest ago; a message that failed to open is dropped. */
static void message_put(avscan *av, message *m)
{
    if (m->st) {
        message_free(m);
        return;
    }
    int slot = 0;
    for (int k = 0; k < MESSAGE_CACHE; k++) {
        if (!av->cache[k]) {
            slot = k;
            break;
        }
        if (av->cache[k]->used < av->cache[slot]->used)
            slot = k;
    }
    message_free(av->cache[slot]);
    av->cache[slot] = m;
}

/* Open every message with an item to scan, once each. ms has room for n. */
static mb_status open_messages(avscan *av, item *it, mb_bus_delivery *d, size_t n,
                               message **ms, size_t *nout)
{
    size_t nm = 0;
    mb_status s = MB_OK;
    av->batches++;
    for (size_t i = 0; i < n && !s; i++) {
        if (!it[i].to_scan)
            continue;
        for (size_t k = 0; k < nm && !it[i].msg; k++)
            if (!strcmp(ms[k]->email_sha256, it[i].r.email_sha256))
                it[i].msg = ms[k];
        if (it[i].msg)
            continue;
        mb_bus_begin(&d[i]); /* a walk that crashes or spins names this record */
        message *m = message_get(av, it[i].r.email_sha256);
        if (!m) {
            s = mb_errf(MB_ERR_NOMEM, "message %.12s", it[i].r.email_sha256);
            break;
        }
        m->used = av->batches;
        ms[nm++] = m;
        it[i].msg = m;
    }
    mb_bus_begin_batch(d, n);
    *nout = nm;
    return s;
}

static void close_messages(avscan *av, message **ms, size_t n)
{
    for (size_t i = 0; i < n; i++)
        message_put(av, ms[i]);
}

/* Scan the part with clamd through *c (connected, and checked with PING,
 * on first use). MB_ERR_NET: clamd unreachable (retry later). */
static mb_status scan_part(avscan *av, mb_clamd **c, const item *it, mb_av_verdict *v,
                           char *sig, size_t siglen)
{
    if (fault_hit(av->fault_error, it->r.sha256)) {
        *v = MB_AV_ERROR;
        snprintf(sig, siglen, "scan error injected by a test fault");
        return MB_OK;
    }
    mb_status s = MB_OK;
    if (!*c)
        s = mb_clamd_connect(av->socket, 30000, c);
    if (!s) s = mb_clamd_scan_begin(*c);
    mb_mime_budget(av->budget_ms);
    if (!s) s = mb_mime_tree_decode(it->msg->tree, it->r.part, sink, *c);
    mb_mime_budget(0);
    if (!s) s = mb_clamd_scan_end(*c, v, sig, siglen);
    if (s && *c) {
        /* A scan cut short leaves its connection open: start afresh (and
         * PING again) next time. */
        mb_clamd_free(*c);
        *c = NULL;
    }
    return s;
}

/* Scanner threads share a batch: each takes the next item to scan. */
typedef struct {
    avscan *av;
    item *it;
    mb_bus_delivery *d; /* it[i] came from d[i] */
    size_t n;
    size_t next;        /* guarded by mu */
    pthread_mutex_t mu;
} scan_pool;

static void *scanner(void *arg)
{
    scan_pool *p = arg;
    mb_clamd *c = NULL;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        size_t i = p->next;
        while (i < p->n && !p->it[i].to_scan)
            i++;
        p->next = i + 1;
        pthread_mutex_unlock(&p->mu);
        if (i >= p->n)
            break;
        item *it = &p->it[i];
        if (it->msg->st) {
            it->scan_st = it->msg->st;
            snprintf(it->err, sizeof it->err, "%s", it->msg->err);
            continue;
        }
        mb_bus_begin(&p->d[i]);
        it->scan_st = scan_part(p->av, &c, it, &it->v, it->sig, sizeof it->sig);
        if (it->scan_st)
            snprintf(it->err, sizeof it->err, "%s", mb_err_last());
    }
    mb_clamd_free(c);
    return NULL;
}

/* Scan every item marked to_scan, up to av->threads at a time. */
static void scan_all(avscan *av, item *it, mb_bus_delivery *d, size_t n)
{
    size_t todo = 0;
    for (size_t i = 0; i < n; i++)
        todo += it[i].to_scan;
    if (todo == 0)
        return;
    scan_pool p = {.av = av, .it = it, .d = d, .n = n, .mu = PTHREAD_MUTEX_INITIALIZER};
    pthread_t th[16];
    size_t k = 0, want = todo < (size_t)av->threads ? todo : (size_t)av->threads;
    for (; k + 1 < want; k++)
        if (pthread_create(&th[k], NULL, scanner, &p))
            break;
    scanner(&p); /* this thread scans too */
    for (size_t i = 0; i < k; i++)
        pthread_join(th[i], NULL);
    mb_bus_begin_batch(d, n);
    pthread_mutex_destroy(&p.mu);
}

/* What a scan came to: a verdict in it, or a retry on d. Problems go on
 * the job here, in the consuming thread (mb_db is not shared). */
static void scan_outcome(avscan *av, item *it, mb_bus_delivery *d)
{
    const mb_rec_avscan *r = &it->r;
    char js[24], as[24];
    mb_u64s(js, r->job);
    mb_u64s(as, r->account_id);
    mb_av_verdict v = it->v;
    mb_status s = it->scan_st;
    mb_errf(s, "%s", it->err);
    if (!s) {
        if (av->clamd_down)
            MB_INFO(js, as, "clamd answers again");
        av->clamd_down = false;
        it->status = v == MB_AV_CLEAN ? "clean" : v == MB_AV_INFECTED ? "infected" : "error";
        if (v == MB_AV_CLEAN)
            it->sig[0] = '\0';
        else if (v == MB_AV_INFECTED)
            MB_WARN(js, as, "attachment %s (part %s of %.12s) infected: %s", r->sha256, r->part,
                    r->email_sha256, it->sig);
        else
            mb_job_problem(av->st->db, r->job, r->account_id, "avscan", it->sig);
        it->resolved = true;
    } else if (s == MB_ERR_NET || s == MB_ERR_TIMEOUT) {
        char why[400];
        snprintf(why, sizeof why, "clamd: %s", mb_err_last());
        if (d->deliveries >= (uint64_t)av->max_deliver) {
            /* Out of attempts: an error verdict lets the job finish, with
             * the reason on the job. */
            mb_job_problem(av->st->db, r->job, r->account_id, "avscan", why);
            it->status = "error";
            snprintf(it->sig, sizeof it->sig, "clamd unavailable");
            it->resolved = true;
        } else {
            int64_t delay = 2000LL << (d->deliveries < 5 ? d->deliveries : 5);
            /* One line and one problem per outage, not one per attachment. */
            if (!av->clamd_down) {
                mb_job_problem(av->st->db, r->job, r->account_id, "avscan", why);
                MB_WARN(js, as, "%s; retrying in %lld ms (and every attachment waiting for "
                        "clamd, quietly)", why, (long long)delay);
            } else {
                MB_DEBUG(js, as, "%s; retrying in %lld ms", why, (long long)delay);
            }
            av->clamd_down = true;
            mb_bus_retry(d, delay, "%s", why);
        }
    } else if (s == MB_ERR_NOTFOUND || s == MB_ERR_INVALID || s == MB_ERR_BUDGET) {
        /* Blob or part missing, or a part no decoder gets through within
         * its budget: a permanent problem for this attachment. */
        snprintf(it->sig, sizeof it->sig, "attachment %s: %s", r->sha256, mb_err_last());
        mb_job_problem(av->st->db, r->job, r->account_id, "avscan", it->sig);
        it->status = "error";
        it->resolved = true;
    } else {
        mb_bus_retry(d, 2000, "%s", mb_err_last());
    }
}

static void handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    avscan *av = ctx;
    item *it = calloc(n, sizeof *it);
    if (!it) {
        for (size_t i = 0; i < n; i++)
            mb_bus_retry(&d[i], 1000, "out of memory for a batch of %zu", n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (mb_rec_decode(&mb_type_avscan, d[i].data, d[i].len, &it[i].r)) {
            mb_bus_fail(&d[i], "undecodable avscan record: %s", mb_err_last());
        } else if (!it[i].r.sha256 || !it[i].r.email_sha256 || !it[i].r.part) {
            mb_bus_fail(&d[i], "avscan record without sha256/email/part");
        } else if (!is_hex64(it[i].r.sha256) || !is_hex64(it[i].r.email_sha256)) {
            /* It would make every query of the batch fail. */
            mb_bus_fail(&d[i], "avscan record with a malformed SHA-256 (%.80s / %.80s)",
                        it[i].r.sha256, it[i].r.email_sha256);
        } else {
            it[i].ok = true;
            mb_bus_retry(&d[i], 2000, "not handled"); /* until resolved below */
        }
    }
    message **ms = calloc(n, sizeof *ms);
    size_t nm = 0;
    mb_status s = ms ? known_verdicts(av->st->db, it, n) : mb_errf(MB_ERR_NOMEM, "batch");
    for (size_t i = 0; i < n && !s; i++) {
        if (!it[i].ok || it[i].resolved)
            continue;
        /* The same content twice in one batch is scanned once. */
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = it[k].to_scan && !strcmp(it[k].r.sha256, it[i].r.sha256);
        if (dup)
            it[i].resolved = true;
        else
            it[i].to_scan = true;
    }
    if (!s) s = open_messages(av, it, d, n, ms, &nm);
    if (!s)
        scan_all(av, it, d, n);
    for (size_t i = 0; i < n && !s; i++)
        if (it[i].to_scan)
            scan_outcome(av, &it[i], &d[i]);
    close_messages(av, ms, nm);
    free(ms);
    if (!s)
        apply(av, it, d, 0, n);
    for (size_t i = 0; i < n; i++) {
        if (s && it[i].ok)
            mb_bus_retry(&d[i], 2000, "avscan: %s", mb_err_last());
        mb_rec_free(&mb_type_avscan, &it[i].r);
    }
    if (s)
        MB_WARN(NULL, NULL, "batch of %zu: %s", n, mb_err_last());
    else
        MB_DEBUG(NULL, NULL, "batch of %zu: %zu messages, %" PRIu64 " MIME trees walked so far",
                 n, nm, av->walks);
    free(it);
}

/* The give-up hook (bus.h): a record that failed, ran out of deliveries or
 * stopped a worker. Its pending attachment rows get an 'error' verdict with
 * the reason (not cached in av_verdicts: a later import scans again), so
 * the job can end with the problem shown. */
static void give_up(void *ctx, const mb_bus_delivery *d, const char *reason)
{
    avscan *av = ctx;
    mb_rec_avscan r = {0};
    if (mb_rec_decode(&mb_type_avscan, d->data, d->len, &r) || !r.sha256) {
        mb_stage_undecodable(d, "avscan", reason);
        mb_rec_free(&mb_type_avscan, &r);
        return;
    }
    char why[600], js[24], as[24];
    snprintf(why, sizeof why, "attachment %s (part %s of %.12s): %s", r.sha256,
             r.part ? r.part : "?", r.email_sha256 ? r.email_sha256 : "?", reason);
    const char *p[] = {r.sha256, "scan abandoned"};
    mb_status s = mb_db_query(av->st->db,
        "UPDATE attachments SET scan_status = 'error', scan_signature = $2, scanned_at = now() "
        "WHERE sha256 = decode($1, 'hex') AND scan_status = 'pending'", 2, p, NULL);
    MB_WARN(mb_u64s(js, r.job), mb_u64s(as, r.account_id), "gave up on %s", why);
    if (s)
        MB_ERROR(js, as, "settling attachment %s: %s", r.sha256, mb_err_last());
    mb_job_problem(av->st->db, r.job, r.account_id, "avscan", why);
    mb_rec_free(&mb_type_avscan, &r);
}

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "avscan", usage, MB_STAGE_BLOBS, 64, argc, argv);
    if (rc >= 0)
        return rc;
    avscan av = {.st = &st};
    mb_bus_provision_opts po;
    mb_status s = mb_stage_provision_opts(&po);
    av.max_deliver = po.max_deliver;
    long threads;
    if (!s) s = mb_env_int("MAILBUS_AVSCAN_THREADS", 4, 1, 16, &threads);
    av.threads = (int)threads;
    long budget = 0;
    if (!s) s = mb_env_int("MAILBUS_AVSCAN_BUDGET_MS", 30000, 10, 3600000, &budget);
    av.budget_ms = budget;
    av.fault_error = mb_env("MAILBUS_FAULT_AVSCAN_ERROR", "");
    av.fault_badrow = mb_env("MAILBUS_FAULT_AVSCAN_BADROW", "");
    st.consume.give_up = give_up;
    if (!s) s = mb_env_require("MAILBUS_CLAMD_SOCKET", &av.socket);
    if (!s) s = mb_bus_consume(st.bus, "avscan", &st.consume, handle, &av);
    for (int k = 0; k < MESSAGE_CACHE; k++)
        message_free(av.cache[k]);
    return mb_stage_finish(&st, s);
}
