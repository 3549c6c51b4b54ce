/* main.c — mailbus-parse: MIME-parses each fetched message from its blob and
 * publishes what it found to the store stage. */
#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/common/stage.h"
#include "mime/mime.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Consumes parse/1 records, MIME-parses the message's .eml blob (headers decoded to\n"
    "UTF-8, addresses, dates, threading, snippet, attachment metadata with the SHA-256\n"
    "of the decoded bytes) and publishes store/1 records. A message it cannot fully\n"
    "parse is still passed on, with its defects recorded.";

typedef struct {
    mb_stage *st;
    mb_buf enc;
} parser;

/* Parse one delivery; on success a store record is queued (async). Sets
 * the job, folder and uid for the progress mark when the message is dealt with. */
static bool parse_one(parser *p, mb_bus_delivery *d, uint64_t *job, uint64_t *folder, uint64_t *uid,
                      bool *failed)
{
    mb_rec_parsed rec = {0};
    *failed = false;
    if (mb_rec_decode(&mb_type_rawmsg, d->data, d->len, &rec.raw)) {
        mb_bus_fail(d, "undecodable parse record: %s", mb_err_last());
        return false;
    }
    char js[24], as[24];
    mb_u64s(js, rec.raw.job);
    mb_u64s(as, rec.raw.account_id);
    *job = rec.raw.job;
    *folder = rec.raw.folder_id;
    *uid = rec.raw.uid;
    const char *data;
    size_t len;
    mb_blob_mapping *m = NULL;
    mb_status s = mb_blob_map(p->st->blobs, rec.raw.sha256, &data, &len, &m);
    if (s) {
        /* The blob is made durable before this record exists: its absence is
         * not transient. Record it on the job and move on. */
        char why[300];
        snprintf(why, sizeof why, "uid %" PRIu64 ": blob %s: %s", rec.raw.uid, rec.raw.sha256,
                 mb_err_last());
        mb_job_problem(p->st->db, rec.raw.job, rec.raw.account_id, "parse", why);
        mb_bus_fail(d, "%s", why);
        *failed = true;
        mb_rec_free(&mb_type_parsed, &rec);
        return true;
    }
    s = mb_mime_parse(data, len, rec.raw.internal_date, &rec);
    mb_blob_unmap(m);
    if (s) {
        mb_bus_retry(d, 1000, "parse: %s", mb_err_last());
        mb_rec_free(&mb_type_parsed, &rec);
        return false;
    }
    if (rec.defects.n) {
        char why[400];
        snprintf(why, sizeof why, "uid %" PRIu64 " (blob %.12s): %zu defects, first: %s", rec.raw.uid,
                 rec.raw.sha256, rec.defects.n, rec.defects.v[0]);
        MB_WARN(js, as, "%s", why);
        mb_job_problem(p->st->db, rec.raw.job, rec.raw.account_id, "defect", why);
    }
    char subj[128], id[128];
    s = mb_bus_subjectf(p->st->bus, subj, sizeof subj, "store.%" PRIu64, rec.raw.account_id);
    snprintf(id, sizeof id, "store-%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64, rec.raw.job,
             rec.raw.folder_id, rec.raw.uidvalidity, rec.raw.uid);
    mb_pub_headers h = {.msg_id = id, .schema = mb_type_parsed.schema, .job = js, .account = as};
    mb_buf_reset(&p->enc);
    if (!s) s = mb_rec_encode(&mb_type_parsed, &rec, &p->enc);
    if (!s) s = mb_bus_publish_async(p->st->bus, subj, p->enc.data, p->enc.len, &h);
    mb_rec_free(&mb_type_parsed, &rec);
    if (s) {
        mb_bus_retry(d, 2000, "publish: %s", mb_err_last());
        return false;
    }
    mb_bus_done(d);
    return true;
}

static void handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    parser *p = ctx;
    uint64_t *jobs = calloc(n, sizeof *jobs), *folders = calloc(n, sizeof *folders),
             *uids = calloc(n, sizeof *uids);
    bool *ok = calloc(n, sizeof *ok), *failed = calloc(n, sizeof *failed);
    if (!jobs || !folders || !uids || !ok || !failed) {
        for (size_t i = 0; i < n; i++)
            mb_bus_retry(&d[i], 1000, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ok[i] = parse_one(p, &d[i], &jobs[i], &folders[i], &uids[i], &failed[i]);
    /* Nothing is acked before every store record is stored by JetStream. */
    mb_status s = mb_bus_publish_flush(p->st->bus, 60000);
    /* Progress bits, grouped per job (a batch usually holds one job). */
    for (size_t i = 0; !s && i < n; i++) {
        if (!ok[i] || !jobs[i])
            continue;
        uint64_t job = jobs[i];
        size_t k = 0, kf = 0;
        uint64_t *fo = calloc(n, sizeof *fo), *uu = calloc(n, sizeof *uu);
        uint64_t *ffo = calloc(n, sizeof *ffo), *fuu = calloc(n, sizeof *fuu);
        if (!fo || !uu || !ffo || !fuu)
            s = mb_errf(MB_ERR_NOMEM, "marks");
        for (size_t j = i; !s && j < n; j++) {
            if (!ok[j] || jobs[j] != job)
                continue;
            if (failed[j]) {
                ffo[kf] = folders[j];
                fuu[kf++] = uids[j];
            } else {
                fo[k] = folders[j];
                uu[k++] = uids[j];
            }
            jobs[j] = 0;
        }
        if (!s) s = mb_job_mark(p->st->db, job, MB_JOB_PARSED, fo, uu, k);
        if (!s) s = mb_job_mark(p->st->db, job, MB_JOB_FAILED, ffo, fuu, kf);
        free(fo);
        free(uu);
        free(ffo);
        free(fuu);
    }
    if (s) {
        MB_WARN(NULL, NULL, "batch of %zu: %s", n, mb_err_last());
        for (size_t i = 0; i < n; i++)
            if (d[i].verdict == MB_BUS_DONE)
                mb_bus_retry(&d[i], 1000, "%s", mb_err_last());
    }
out:
    free(jobs);
    free(folders);
    free(uids);
    free(ok);
    free(failed);
}

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "parse", usage, MB_STAGE_BLOBS, 64, argc, argv);
    if (rc >= 0)
        return rc;
    parser p = {.st = &st};
    mb_status s = mb_bus_consume(st.bus, "parse", &st.consume, handle, &p);
    mb_buf_free(&p.enc);
    return mb_stage_finish(&st, s);
}
