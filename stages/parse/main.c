/* main.c — mailbus-parse: MIME-parses each fetched message from its blob and
 * publishes what it found to the store stage. */
#include "schemas/schema.h"
#include "stages/common/job.h"
#include "stages/common/stage.h"
#include "mime/mime.h"
#include "util/env.h"
#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Consumes parse/1 records, MIME-parses the message's .eml blob (headers decoded to\n"
    "UTF-8, addresses, dates, threading, snippet, attachment metadata with the SHA-256\n"
    "of the decoded bytes) and publishes store/1 records. A message it cannot fully\n"
    "parse is still passed on, with its defects recorded; one that runs past its work\n"
    "budget (MAILBUS_PARSE_BUDGET_MS of CPU, default 10000) or stops the process is\n"
    "stored raw, flagged unparsed, with the reason on its job.";

typedef struct {
    mb_stage *st;
    mb_buf enc;
    int64_t budget_ms;       /* CPU per message (MAILBUS_PARSE_BUDGET_MS) */
    size_t max_record;       /* bytes of one store record (MAILBUS_MAX_RECORD_BYTES) */
    const char *fault_spin;  /* tests: spin forever on a message holding this */
    const char *fault_crash; /* tests: abort on a message holding this */
} parser;

/* Tests of the supervisor need a handler that hangs in a loop no budget
 * checks, or crashes: MAILBUS_FAULT_PARSE_SPIN=TEXT (or _CRASH=TEXT) makes
 * parse do that on every message whose raw bytes contain TEXT. */
static void fault(const parser *p, const char *data, size_t len)
{
    if (p->fault_spin && memmem(data, len, p->fault_spin, strlen(p->fault_spin))) {
        volatile unsigned long x = 0;
        for (;;)
            x++;
    }
    if (p->fault_crash && memmem(data, len, p->fault_crash, strlen(p->fault_crash)))
        abort();
}

/* A record for a message parse gave up on: what the scan knew plus the
 * reason, flagged unparsed; the raw bytes are in the blob store. */
static mb_status salvage(mb_rec_parsed *rec, const char *why)
{
    mb_mime_parsed_clear(rec);
    rec->date = rec->raw.internal_date;
    rec->unparsed = true;
    rec->defects.v = malloc(sizeof *rec->defects.v);
    if (!rec->defects.v || !(rec->defects.v[0] = mb_strdup(why))) {
        mb_mime_parsed_clear(rec);
        return mb_errf(MB_ERR_NOMEM, "unparsed record");
    }
    rec->defects.n = 1;
    return MB_OK;
}

/* A raw-only record has an id of its own: a full parse of the same message
 * later (a dead letter retried) must not be dropped as its duplicate. */
static void store_msg_id(const mb_rec_parsed *r, char *id, size_t cap)
{
    snprintf(id, cap, "store-%" PRIu64 "-%" PRIu64 "-%" PRIu64 "-%" PRIu64 "%s", r->raw.job,
             r->raw.folder_id, r->raw.uidvalidity, r->raw.uid, r->unparsed ? "-unparsed" : "");
}

/* Room for a record on the bus: MAILBUS_MAX_RECORD_BYTES, and never more
 * than the server's max_payload less what the headers may take. */
#define HEADER_ROOM 1024

/* Encode rec into p->enc so that it fits on the bus. A record too large
 * (thousands of parts with long file names) keeps the first half of its
 * attachments, then a quarter, ... with a defect saying so; without
 * attachments and still too large (huge address lists), it becomes a
 * raw-only record. Bad input costs detail, never the message. */
static mb_status encode_fitting(parser *p, mb_rec_parsed *rec)
{
    size_t max = mb_bus_max_payload(p->st->bus) - HEADER_ROOM, all = rec->attachments.n;
    if (max > p->max_record)
        max = p->max_record;
    char why[256], js[24], as[24];
    for (;;) {
        mb_buf_reset(&p->enc);
        mb_status s = mb_rec_encode(&mb_type_parsed, rec, &p->enc);
        if (s || p->enc.len <= max)
            return s;
        if (rec->attachments.n > 1) {
            if (rec->attachments.n == all) {
                snprintf(why, sizeof why, "parsed record of %zu bytes exceeds the bus limit "
                         "of %zu: only the first of %zu attachments recorded", p->enc.len, max,
                         all);
                char **nv = mb_grow(rec->defects.v, rec->defects.n, sizeof *nv);
                if (!nv || !(nv[rec->defects.n] = mb_strdup(why))) {
                    if (nv)
                        rec->defects.v = nv;
                    return mb_errf(MB_ERR_NOMEM, "defect");
                }
                rec->defects.v = nv;
                rec->defects.n++;
                MB_WARN(mb_u64s(js, rec->raw.job), mb_u64s(as, rec->raw.account_id),
                        "uid %" PRIu64 ": %s", rec->raw.uid, why);
            }
            size_t keep = rec->attachments.n / 2;
            for (size_t i = keep; i < rec->attachments.n; i++)
                mb_rec_free(&mb_type_attachment, &rec->attachments.v[i]);
            rec->attachments.n = keep;
            continue;
        }
        if (rec->unparsed) /* raw-only and still too large: nothing left to drop */
            return mb_errf(MB_ERR_TOOBIG, "uid %" PRIu64 ": a raw-only record of %zu bytes "
                           "exceeds the bus limit of %zu", rec->raw.uid, p->enc.len, max);
        snprintf(why, sizeof why, "parsed record of %zu bytes exceeds the bus limit of %zu: "
                 "stored raw", p->enc.len, max);
        MB_WARN(mb_u64s(js, rec->raw.job), mb_u64s(as, rec->raw.account_id),
                "uid %" PRIu64 ": %s", rec->raw.uid, why);
        if ((s = salvage(rec, why)))
            return s;
    }
}

/* Encode rec and publish it to store: async (collected by the batch's
 * flush) or, for a record given up on outside a batch, synchronously. */
static mb_status publish_store(parser *p, mb_rec_parsed *rec, bool async)
{
    char js[24], as[24], subj[128], id[128];
    mb_status s = mb_bus_subjectf(p->st->bus, subj, sizeof subj, "store.%" PRIu64,
                                  rec->raw.account_id);
    if (!s) s = encode_fitting(p, rec); /* may make it raw-only: id after */
    store_msg_id(rec, id, sizeof id);
    mb_pub_headers h = {.msg_id = id, .schema = mb_type_parsed.schema,
                        .job = mb_u64s(js, rec->raw.job), .account = mb_u64s(as, rec->raw.account_id)};
    if (!s && async) s = mb_bus_publish_async(p->st->bus, subj, p->enc.data, p->enc.len, &h);
    if (!s && !async) s = mb_bus_publish(p->st->bus, subj, p->enc.data, p->enc.len, &h);
    return s;
}

/* Parse one delivery; on success a store record is queued (async). Sets
 * the job, folder and uid for the progress mark when the message is dealt
 * with. A record that cannot be handled is failed; the give-up hook below
 * settles it on its job. */
static bool parse_one(parser *p, mb_bus_delivery *d, uint64_t *job, uint64_t *folder, uint64_t *uid)
{
    mb_rec_parsed rec = {0};
    mb_bus_begin(d);
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
         * not transient. */
        mb_bus_fail(d, "uid %" PRIu64 ": blob %s: %s", rec.raw.uid, rec.raw.sha256, mb_err_last());
        mb_rec_free(&mb_type_parsed, &rec);
        return false;
    }
    fault(p, data, len);
    mb_mime_budget(p->budget_ms);
    s = mb_mime_parse(data, len, rec.raw.internal_date, &rec);
    mb_mime_budget(0);
    mb_blob_unmap(m);
    if (s == MB_ERR_BUDGET) {
        /* No single message may hold the stage: store it raw, say why. */
        char why[300];
        snprintf(why, sizeof why, "parse abandoned: %s (%zu bytes)", mb_err_last(), len);
        s = salvage(&rec, why);
    }
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
        mb_job_problem(p->st->db, rec.raw.job, rec.raw.account_id,
                       rec.unparsed ? "parse" : "defect", why);
    }
    s = publish_store(p, &rec, true);
    mb_rec_free(&mb_type_parsed, &rec);
    if (s) {
        mb_bus_retry(d, 2000, "publish: %s", mb_err_last());
        return false;
    }
    mb_bus_done(d);
    return true;
}

/* The give-up hook (bus.h): a record that failed, ran out of deliveries or
 * stopped a worker (poison). If its blob is there, the message is stored
 * raw, flagged unparsed, with the reason; otherwise it is marked failed.
 * Either way the reason is on the job and the job can end. */
static void give_up(void *ctx, const mb_bus_delivery *d, const char *reason)
{
    parser *p = ctx;
    mb_rec_parsed rec = {0};
    if (mb_rec_decode(&mb_type_rawmsg, d->data, d->len, &rec.raw) || !rec.raw.sha256) {
        mb_stage_undecodable(d, "parse", reason);
        mb_rec_free(&mb_type_parsed, &rec);
        return;
    }
    mb_rec_rawmsg raw = rec.raw; /* salvage keeps raw; copied for the settle below */
    bool have = false;
    int bit = MB_JOB_FAILED;
    if (!mb_blob_exists(p->st->blobs, rec.raw.sha256, &have) && have &&
        !salvage(&rec, reason) && !publish_store(p, &rec, false))
        bit = MB_JOB_PARSED;
    mb_stage_settle(p->st, &raw, bit, "parse", reason,
                    bit == MB_JOB_PARSED ? "stored raw, unparsed" : "marked failed");
    mb_rec_free(&mb_type_parsed, &rec);
}

static void handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    parser *p = ctx;
    uint64_t *jobs = calloc(n, sizeof *jobs), *folders = calloc(n, sizeof *folders),
             *uids = calloc(n, sizeof *uids);
    bool *ok = calloc(n, sizeof *ok);
    if (!jobs || !folders || !uids || !ok) {
        for (size_t i = 0; i < n; i++)
            mb_bus_retry(&d[i], 1000, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ok[i] = parse_one(p, &d[i], &jobs[i], &folders[i], &uids[i]);
    mb_bus_begin_batch(d, n);
    /* Nothing is acked before every store record is stored by JetStream. */
    mb_status s = mb_bus_publish_flush(p->st->bus, 60000);
    /* Progress bits, grouped per job (a batch usually holds one job). */
    for (size_t i = 0; !s && i < n; i++) {
        if (!ok[i] || !jobs[i])
            continue;
        uint64_t job = jobs[i];
        size_t k = 0;
        uint64_t *fo = calloc(n, sizeof *fo), *uu = calloc(n, sizeof *uu);
        if (!fo || !uu)
            s = mb_errf(MB_ERR_NOMEM, "marks");
        for (size_t j = i; !s && j < n; j++) {
            if (!ok[j] || jobs[j] != job)
                continue;
            fo[k] = folders[j];
            uu[k++] = uids[j];
            jobs[j] = 0;
        }
        if (!s) s = mb_job_mark(p->st->db, job, MB_JOB_PARSED, fo, uu, k);
        free(fo);
        free(uu);
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
}

int main(int argc, char **argv)
{
    mb_stage st;
    int rc = mb_stage_start(&st, "parse", usage, MB_STAGE_BLOBS, 64, argc, argv);
    if (rc >= 0)
        return rc;
    parser p = {.st = &st};
    long budget = 0, max_record = 0;
    mb_status s = mb_env_int("MAILBUS_PARSE_BUDGET_MS", 10000, 10, 3600000, &budget);
    if (!s) s = mb_env_int("MAILBUS_MAX_RECORD_BYTES", 1 << 20, 64 << 10, 64 << 20, &max_record);
    p.budget_ms = budget;
    p.max_record = (size_t)max_record;
    const char *spin = mb_env("MAILBUS_FAULT_PARSE_SPIN", ""), *crash = mb_env("MAILBUS_FAULT_PARSE_CRASH", "");
    p.fault_spin = *spin ? spin : NULL;
    p.fault_crash = *crash ? crash : NULL;
    st.consume.give_up = give_up;
    if (!s) s = mb_bus_consume(st.bus, "parse", &st.consume, handle, &p);
    mb_buf_free(&p.enc);
    return mb_stage_finish(&st, s);
}
