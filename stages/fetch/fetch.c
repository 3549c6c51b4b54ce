/* fetch.c — one fetch task: download the chunk's messages into the blob
 * store and publish a parse record for each.
 *
 * Order of effects, so a crash anywhere loses nothing: after each FETCH group
 * (at most 4 MB / 100 messages) its blobs are made durable with one batched
 * sync, their parse records are published and acknowledged by JetStream, and
 * the messages are marked fetched in Postgres; the task is acked when every
 * group is through. Handing each group on at once keeps parse and store busy
 * while the rest of the chunk downloads. A redelivered
 * task skips messages already marked fetched; a message fetched twice lands
 * on the same blob (content addressing) and the same Nats-Msg-Id. */
#include "stages/fetch/fetch.h"

#include "schemas/schema.h"
#include "stages/common/job.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A FETCH command carries at most this many bytes or messages, so memory
 * stays bounded (libetpan holds a whole response) with large messages. */
#define GROUP_MAX_BYTES (4u * 1024 * 1024)
#define GROUP_MAX_MSGS 100
#define NET_ATTEMPTS 3

typedef struct {
    uint64_t uid;
    bool done;        /* fetched earlier or now */
    bool got;         /* received in this run */
    bool sent;        /* parse record published, marked fetched */
    char sha[65];
    uint64_t size;
} msg_state;

typedef struct {
    mb_fetcher *f;
    mb_rec_fetch *t;
    msg_state *ms;
    size_t n;
    mb_bus_delivery *d;
    mb_status werr;   /* blob store failure inside the callback */
    bool busy;        /* no connection slot was free */
} task_ctx;

mb_status mb_fetcher_init(mb_fetcher *f, mb_stage *st)
{
    memset(f, 0, sizeof *f);
    f->st = st;
    mb_bus_provision_opts po;
    mb_status s = mb_stage_provision_opts(&po);
    f->max_deliver = po.max_deliver;
    f->slot.account_slot = f->slot.host_slot = -1;
    if (!s) s = mb_env_int("MAILBUS_IMAP_SLOT_WAIT_MS", 30000, 0, 3600000L, &f->slot_wait_ms);
    return s;
}

/* Close the connection, then give its slot back. */
static void drop_source(mb_fetcher *f)
{
    mb_source_free(f->src);
    f->src = NULL;
    free(f->folder);
    f->folder = NULL;
    mb_conn_slot_release(&f->slot);
}

void mb_fetcher_free(mb_fetcher *f)
{
    drop_source(f);
    mb_account_free(&f->account);
    f->account_id = 0;
}

/* While waiting for a connection slot: keep the task ours. */
static bool slot_tick(void *ctx)
{
    mb_bus_in_progress(ctx);
    return !mb_bus_stopping();
}

/* Connected to the task's account, holding a connection slot. Waits for a
 * slot up to slot_wait_ms (on the task's last allowed delivery: as long as it
 * takes), then MB_ERR_TIMEOUT with *busy set. */
static mb_status ensure_source(mb_fetcher *f, uint64_t account_id, mb_bus_delivery *d, bool *busy)
{
    if (f->src && f->account_id == account_id) {
        mb_status s = mb_conn_slot_renew(&f->slot);
        if (s != MB_ERR_NOTFOUND)
            return s;
        MB_WARN(NULL, f->account.name, "%s; reconnecting", mb_err_last());
    }
    mb_fetcher_free(f);
    char a[24];
    char *secret = NULL;
    mb_status s = mb_account_load(f->st->db, f->st->key, mb_u64s(a, account_id), &f->account, &secret);
    if (!s) s = mb_account_source(&f->account, secret, &f->src);
    mb_account_secret_free(secret);
    if (!s) {
        long wait = d->deliveries >= (uint64_t)f->max_deliver ? -1 : f->slot_wait_ms;
        s = mb_conn_slot_take(f->st->db, account_id, f->account.host, f->account.port, wait,
                              slot_tick, d, &f->slot);
        *busy = s == MB_ERR_TIMEOUT;
    }
    if (!s) s = mb_source_connect(f->src);
    if (s) {
        drop_source(f);
        return s;
    }
    f->account_id = account_id;
    return MB_OK;
}

static mb_status ensure_folder(mb_fetcher *f, const mb_rec_fetch *t)
{
    if (f->folder && !strcmp(f->folder, t->folder))
        return MB_OK;
    free(f->folder);
    f->folder = NULL;
    mb_folder_state fs;
    mb_status s = mb_source_open_folder(f->src, t->folder, &fs);
    if (s)
        return s;
    if (fs.uidvalidity != t->uidvalidity)
        return mb_errf(MB_ERR_NOTFOUND, "folder '%s': UIDVALIDITY changed from %" PRIu64
                       " to %" PRIu64 " since the scan", t->folder, t->uidvalidity, fs.uidvalidity);
    f->folder = mb_strdup(t->folder);
    return f->folder ? MB_OK : MB_ERR_NOMEM;
}

static mb_status on_message(void *ctx, uint64_t uid, const char *data, size_t len)
{
    task_ctx *tc = ctx;
    msg_state *m = NULL;
    for (size_t i = 0; i < tc->n; i++)
        if (tc->ms[i].uid == uid) {
            m = &tc->ms[i];
            break;
        }
    if (!m || m->done)
        return MB_OK; /* not asked for (or already have it) */
    mb_blob_writer *w;
    mb_status s = mb_blob_writer_open(tc->f->st->blobs, &w);
    if (!s) {
        s = mb_blob_write(w, data, len);
        if (!s)
            s = mb_blob_writer_commit(w, m->sha, &m->size);
        else
            mb_blob_writer_abort(w);
    }
    if (s) {
        tc->werr = s;
        return s;
    }
    m->done = m->got = true;
    return MB_OK;
}

static const mb_fetch_item *item_of(const mb_rec_fetch *t, uint64_t uid)
{
    for (size_t i = 0; i < t->items.n; i++)
        if (t->items.v[i].uid == uid)
            return &t->items.v[i];
    return NULL;
}

static mb_status hand_on(task_ctx *tc);

/* Download every message not done yet, in bounded groups, reconnecting on
 * network errors up to NET_ATTEMPTS times. */
static mb_status download(task_ctx *tc, const char *jobs)
{
    mb_fetcher *f = tc->f;
    uint64_t *uids = malloc((tc->n ? tc->n : 1) * sizeof *uids);
    if (!uids)
        return mb_errf(MB_ERR_NOMEM, "fetch: %zu uids", tc->n);
    mb_status s = MB_OK;
    int attempts = 0;
    size_t i = 0;
    while (i < tc->n && !mb_bus_stopping()) {
        size_t k = 0;
        uint64_t bytes = 0;
        size_t j = i;
        for (; j < tc->n && k < GROUP_MAX_MSGS; j++) {
            if (tc->ms[j].done)
                continue;
            const mb_fetch_item *it = item_of(tc->t, tc->ms[j].uid);
            uint64_t sz = it ? it->size : 0;
            if (k > 0 && bytes + sz > GROUP_MAX_BYTES)
                break;
            uids[k++] = tc->ms[j].uid;
            bytes += sz;
        }
        if (k == 0) {
            i = j;
            continue;
        }
        s = ensure_source(f, tc->t->account_id, tc->d, &tc->busy);
        if (!s) s = ensure_folder(f, tc->t);
        if (!s) s = mb_source_fetch(f->src, uids, k, on_message, tc);
        if (!s && tc->werr)
            s = tc->werr;
        if (s == MB_ERR_NET && ++attempts < NET_ATTEMPTS) {
            char why[600];
            snprintf(why, sizeof why, "folder '%s': FETCH failed for now (%s); "
                     "reconnecting, attempt %d", tc->t->folder, mb_err_last(), attempts + 1);
            MB_WARN(jobs, f->account.name, "%s", why);
            mb_job_problem(f->st->db, tc->t->job, tc->t->account_id, "fetch", why);
            drop_source(f);
            struct timespec ts = {attempts, 0};
            nanosleep(&ts, NULL);
            mb_bus_in_progress(tc->d);
            s = MB_OK;
            continue; /* same group again; done messages are skipped */
        }
        if (!s) s = hand_on(tc);
        if (s)
            break;
        mb_bus_in_progress(tc->d);
        i = j;
    }
    free(uids);
    if (!s && mb_bus_stopping())
        s = mb_errf(MB_ERR_STOPPED, "stopping");
    return s;
}

static mb_status publish_parse(task_ctx *tc)
{
    mb_fetcher *f = tc->f;
    const mb_rec_fetch *t = tc->t;
    char subj[128], job[24], acct[24];
    mb_status s = mb_bus_subjectf(f->st->bus, subj, sizeof subj, "parse.%" PRIu64, t->account_id);
    mb_buf b = MB_BUF_INIT;
    for (size_t i = 0; i < tc->n && !s; i++) {
        msg_state *m = &tc->ms[i];
        if (!m->got || m->sent)
            continue;
        const mb_fetch_item *it = item_of(t, m->uid);
        mb_rec_rawmsg r = {.job = t->job, .account_id = t->account_id, .chunk_id = t->chunk_id,
                           .folder_id = t->folder_id, .uidvalidity = t->uidvalidity,
                           .uid = m->uid, .sha256 = m->sha, .size = m->size,
                           .internal_date = it ? it->internal_date : 0,
                           .defer_attachments = t->defer_attachments};
        if (it)
            r.flags = it->flags;
        char id[128];
        snprintf(id, sizeof id, "parse-%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64, t->job,
                 t->folder_id, t->uidvalidity, m->uid);
        mb_pub_headers h = {.msg_id = id, .schema = mb_type_rawmsg.schema,
                            .job = mb_u64s(job, t->job), .account = mb_u64s(acct, t->account_id)};
        mb_buf_reset(&b);
        s = mb_rec_encode(&mb_type_rawmsg, &r, &b);
        if (!s) s = mb_bus_publish_async(f->st->bus, subj, b.data, b.len, &h);
    }
    mb_buf_free(&b);
    mb_status fs = mb_bus_publish_flush(f->st->bus, 60000);
    return s ? s : fs;
}

/* Set bit on the messages received and not yet handed on (want_new), or on
 * those still missing (want_missing). */
static mb_status mark(task_ctx *tc, int bit, bool want_new, bool want_missing)
{
    uint64_t *fo = malloc((tc->n ? tc->n : 1) * sizeof *fo);
    uint64_t *uu = malloc((tc->n ? tc->n : 1) * sizeof *uu);
    mb_status s = MB_OK;
    if (!fo || !uu)
        s = mb_errf(MB_ERR_NOMEM, "marking %zu messages", tc->n);
    size_t k = 0;
    for (size_t i = 0; i < tc->n && !s; i++) {
        if ((want_new && tc->ms[i].got && !tc->ms[i].sent) || (want_missing && !tc->ms[i].done)) {
            fo[k] = tc->t->folder_id;
            uu[k++] = tc->ms[i].uid;
        }
    }
    if (!s) s = mb_job_mark(tc->f->st->db, tc->t->job, bit, fo, uu, k);
    free(fo);
    free(uu);
    return s;
}

/* Make what was received durable and hand it to the parse stage. */
static mb_status hand_on(task_ctx *tc)
{
    bool any = false;
    for (size_t i = 0; i < tc->n && !any; i++)
        any = tc->ms[i].got && !tc->ms[i].sent;
    if (!any)
        return MB_OK;
    mb_status s = mb_blob_sync(tc->f->st->blobs);
    if (!s) s = publish_parse(tc);
    if (!s) s = mark(tc, MB_JOB_FETCHED, true, false);
    if (s)
        return s;
    for (size_t i = 0; i < tc->n; i++)
        if (tc->ms[i].got)
            tc->ms[i].sent = true;
    return MB_OK;
}

/* Give up on the messages not fetched: failed, with the reason on the job. */
static void give_up(task_ctx *tc, const char *why)
{
    char jobs[24];
    MB_ERROR(mb_u64s(jobs, tc->t->job), tc->f->account.name, "giving up on chunk %" PRIu64 ": %s",
             tc->t->chunk_id, why);
    mb_job_problem(tc->f->st->db, tc->t->job, tc->t->account_id, "fetch", why);
    mark(tc, MB_JOB_FAILED, false, true);
}

static void handle_one(mb_fetcher *f, mb_bus_delivery *d)
{
    mb_rec_fetch t;
    if (mb_rec_decode(&mb_type_fetch, d->data, d->len, &t)) {
        mb_bus_fail(d, "undecodable fetch task: %s", mb_err_last());
        return;
    }
    char jobs[24];
    mb_u64s(jobs, t.job);
    task_ctx tc = {.f = f, .t = &t, .d = d, .n = t.items.n};
    tc.ms = calloc(t.items.n ? t.items.n : 1, sizeof *tc.ms);
    uint64_t *uids = malloc((t.items.n ? t.items.n : 1) * sizeof *uids);
    bool *have = calloc(t.items.n ? t.items.n : 1, sizeof *have);
    mb_job_info info;
    mb_status s = tc.ms && uids && have ? MB_OK : mb_errf(MB_ERR_NOMEM, "task of %zu", t.items.n);
    if (!s) s = mb_job_get(f->st->db, t.job, &info);
    if (s == MB_ERR_NOTFOUND) {
        mb_bus_fail(d, "%s", mb_err_last());
        goto out;
    }
    if (!s && (!strcmp(info.status, "cancelled") || !strcmp(info.status, "failed"))) {
        mb_bus_done(d); /* the job is over: drop its work */
        goto out;
    }
    for (size_t i = 0; !s && i < t.items.n; i++)
        tc.ms[i].uid = uids[i] = t.items.v[i].uid;
    if (!s) s = mb_job_marked(f->st->db, t.job, t.folder_id, MB_JOB_FETCHED, uids, t.items.n, have);
    for (size_t i = 0; !s && i < t.items.n; i++)
        tc.ms[i].done = have[i];
    if (!s) s = download(&tc, jobs);
    if (s == MB_ERR_AUTH || s == MB_ERR_CONFIG) {
        char msg[600];
        snprintf(msg, sizeof msg, "account '%s': %s", f->account.name ? f->account.name : "?",
                 mb_err_last());
        mb_job_set_status(f->st->db, t.job, "failed", msg);
        give_up(&tc, msg);
        mb_bus_fail(d, "%s", msg);
        goto out;
    }
    if (s == MB_ERR_NOTFOUND) { /* folder or UIDVALIDITY gone */
        give_up(&tc, mb_err_last());
        mb_bus_done(d);
        goto out;
    }
    /* Whatever was downloaded is handed on even if the rest failed. */
    mb_status s2 = hand_on(&tc);
    if (s2) {
        mb_bus_retry(d, 5000, "publishing parse records: %s", mb_err_last());
        goto out;
    }
    if (s == MB_ERR_STOPPED) {
        mb_bus_retry(d, 0, "stage stopping");
        goto out;
    }
    if (s == MB_ERR_TIMEOUT && tc.busy) {
        /* Not a failure: another process holds every slot. Back to the
         * stream, so this process can serve another account meanwhile. */
        MB_INFO(jobs, f->account.name, "chunk %" PRIu64 ": %s; handing it back", t.chunk_id,
                mb_err_last());
        mb_bus_retry(d, 1000, "%s", mb_err_last());
        goto out;
    }
    if (s) {
        if (d->deliveries >= (uint64_t)f->max_deliver) {
            give_up(&tc, mb_err_last());
            mb_bus_fail(d, "%s", mb_err_last());
        } else {
            MB_WARN(jobs, f->account.name, "chunk %" PRIu64 ": %s; retrying in 10 s", t.chunk_id,
                    mb_err_last());
            mb_job_problem(f->st->db, t.job, t.account_id, "fetch", mb_err_last());
            mb_bus_retry(d, 10000, "%s", mb_err_last());
        }
        drop_source(f);
        goto out;
    }
    /* UIDs the server no longer has (expunged since the scan). */
    size_t gone = 0;
    for (size_t i = 0; i < tc.n; i++)
        gone += !tc.ms[i].done;
    if (gone) {
        char why[128];
        snprintf(why, sizeof why, "%zu messages of folder '%s' vanished from the server", gone, t.folder);
        give_up(&tc, why);
    }
    size_t got = 0;
    for (size_t i = 0; i < tc.n; i++)
        got += tc.ms[i].got;
    MB_INFO(jobs, f->account.name, "chunk %" PRIu64 ": fetched %zu of %zu messages", t.chunk_id, got,
            t.items.n);
    mb_bus_done(d);
out:
    drop_source(f); /* an idle process holds no connection and no slot */
    free(tc.ms);
    free(uids);
    free(have);
    mb_rec_free(&mb_type_fetch, &t);
}

void mb_fetcher_handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        handle_one(ctx, &d[i]);
}
