/* download.c — a fetch task's messages into the blob store, parse records
 * out, progress into Postgres (download.h has the order of effects). */
#include "stages/common/download.h"

#include "schemas/schema.h"
#include "stages/common/job.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mb_status mb_dl_init(mb_dl *dl, mb_stage *st, mb_db *db, const mb_rec_fetch *t, bool async)
{
    memset(dl, 0, sizeof *dl);
    dl->st = st;
    dl->db = db;
    dl->t = t;
    dl->async = async;
    size_t n = t->items.n;
    dl->ms = calloc(n ? n : 1, sizeof *dl->ms);
    uint64_t *uids = calloc(n ? n : 1, sizeof *uids);
    bool *have = calloc(n ? n : 1, sizeof *have);
    mb_status s = MB_OK;
    if (!dl->ms || !uids || !have) {
        s = mb_errf(MB_ERR_NOMEM, "task of %zu", n);
        free(dl->ms);
        dl->ms = NULL; /* n stays 0: the other calls have nothing to do */
    } else {
        dl->n = n;
        for (size_t i = 0; i < n; i++)
            dl->ms[i].uid = uids[i] = t->items.v[i].uid;
        s = mb_job_marked(db, t->job, t->folder_id, MB_JOB_FETCHED, uids, n, have);
        for (size_t i = 0; !s && i < n; i++)
            dl->ms[i].done = have[i];
    }
    free(uids);
    free(have);
    return s;
}

size_t mb_dl_group(const mb_dl *dl, size_t *pos, uint64_t *uids)
{
    size_t k = 0;
    uint64_t bytes = 0;
    size_t j = *pos;
    for (; j < dl->n && k < MB_DL_GROUP_MAX_MSGS; j++) {
        if (dl->ms[j].done)
            continue;
        uint64_t sz = dl->t->items.v[j].size;
        if (k > 0 && bytes + sz > MB_DL_GROUP_MAX_BYTES)
            break;
        uids[k++] = dl->ms[j].uid;
        bytes += sz;
    }
    *pos = j;
    return k;
}

static mb_status on_message(void *ctx, uint64_t uid, const char *data, size_t len)
{
    mb_dl *dl = ctx;
    mb_dl_msg *m = NULL;
    for (size_t i = 0; i < dl->n; i++)
        if (dl->ms[i].uid == uid) {
            m = &dl->ms[i];
            break;
        }
    if (!m || m->done)
        return MB_OK; /* not asked for (or already have it) */
    mb_blob_writer *w;
    mb_status s = mb_blob_writer_open(dl->st->blobs, &w);
    if (!s) {
        s = mb_blob_write(w, data, len);
        if (!s)
            s = mb_blob_writer_commit(w, m->sha, &m->size);
        else
            mb_blob_writer_abort(w);
    }
    if (s) {
        dl->werr = s;
        return s;
    }
    m->done = m->got = true;
    return MB_OK;
}

mb_status mb_dl_fetch(mb_dl *dl, mb_source *src, const uint64_t *uids, size_t k)
{
    mb_status s = mb_source_fetch(src, uids, k, on_message, dl);
    if (!s && dl->werr)
        s = dl->werr;
    return s;
}

/* One parse record per message received and not yet handed on. */
static mb_status publish_parse(mb_dl *dl)
{
    mb_bus *bus = dl->st->bus;
    const mb_rec_fetch *t = dl->t;
    char subj[128], job[24], acct[24];
    mb_status s = mb_bus_subjectf(bus, subj, sizeof subj, "parse.%" PRIu64, t->account_id);
    mb_buf b = MB_BUF_INIT;
    for (size_t i = 0; i < dl->n && !s; i++) {
        mb_dl_msg *m = &dl->ms[i];
        if (!m->got || m->sent)
            continue;
        const mb_fetch_item *it = &t->items.v[i];
        mb_rec_rawmsg r = {.job = t->job, .account_id = t->account_id, .chunk_id = t->chunk_id,
                           .folder_id = t->folder_id, .uidvalidity = t->uidvalidity,
                           .uid = m->uid, .sha256 = m->sha, .size = m->size,
                           .internal_date = it->internal_date, .flags = it->flags,
                           .defer_attachments = t->defer_attachments};
        char id[128];
        snprintf(id, sizeof id, "parse-%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64, t->job,
                 t->folder_id, t->uidvalidity, m->uid);
        mb_pub_headers h = {.msg_id = id, .schema = mb_type_rawmsg.schema,
                            .job = mb_u64s(job, t->job), .account = mb_u64s(acct, t->account_id)};
        mb_buf_reset(&b);
        s = mb_rec_encode(&mb_type_rawmsg, &r, &b);
        if (!s)
            s = dl->async ? mb_bus_publish_async(bus, subj, b.data, b.len, &h)
                          : mb_bus_publish(bus, subj, b.data, b.len, &h);
    }
    mb_buf_free(&b);
    if (!dl->async)
        return s;
    mb_status fs = mb_bus_publish_flush(bus, 60000);
    return s ? s : fs;
}

/* Set bit on the messages received and not yet handed on (want_new), or on
 * those still missing (want_missing). */
static mb_status mark(mb_dl *dl, int bit, bool want_new, bool want_missing)
{
    uint64_t *fo = malloc((dl->n ? dl->n : 1) * sizeof *fo);
    uint64_t *uu = malloc((dl->n ? dl->n : 1) * sizeof *uu);
    mb_status s = MB_OK;
    if (!fo || !uu)
        s = mb_errf(MB_ERR_NOMEM, "marking %zu messages", dl->n);
    size_t k = 0;
    for (size_t i = 0; i < dl->n && !s; i++) {
        const mb_dl_msg *m = &dl->ms[i];
        if ((want_new && m->got && !m->sent) || (want_missing && !m->done)) {
            fo[k] = dl->t->folder_id;
            uu[k++] = m->uid;
        }
    }
    if (!s) s = mb_job_mark(dl->db, dl->t->job, bit, fo, uu, k);
    free(fo);
    free(uu);
    return s;
}

mb_status mb_dl_hand_on(mb_dl *dl)
{
    bool any = false;
    for (size_t i = 0; i < dl->n && !any; i++)
        any = dl->ms[i].got && !dl->ms[i].sent;
    if (!any)
        return MB_OK;
    mb_status s = mb_blob_sync(dl->st->blobs);
    if (!s) s = publish_parse(dl);
    if (!s) s = mark(dl, MB_JOB_FETCHED, true, false);
    if (s)
        return s;
    for (size_t i = 0; i < dl->n; i++)
        if (dl->ms[i].got)
            dl->ms[i].sent = true;
    return MB_OK;
}

void mb_dl_give_up(mb_dl *dl, const char *account_name, const char *why)
{
    const mb_rec_fetch *t = dl->t;
    char jobs[24];
    MB_ERROR(mb_u64s(jobs, t->job), account_name, "giving up on chunk %" PRIu64 ": %s",
             t->chunk_id, why);
    mb_job_problem(dl->db, t->job, t->account_id, "fetch", why);
    mark(dl, MB_JOB_FAILED, false, true);
}

size_t mb_dl_missing(const mb_dl *dl)
{
    size_t k = 0;
    for (size_t i = 0; i < dl->n; i++)
        k += !dl->ms[i].done;
    return k;
}

size_t mb_dl_got(const mb_dl *dl)
{
    size_t k = 0;
    for (size_t i = 0; i < dl->n; i++)
        k += dl->ms[i].got;
    return k;
}

void mb_dl_free(mb_dl *dl)
{
    free(dl->ms);
    dl->ms = NULL;
    dl->n = 0;
}
