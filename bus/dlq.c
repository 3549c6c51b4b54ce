/* dlq.c — the dead letter queue: listing it without consuming it, showing,
 * retrying and deleting one dead letter, retrying or purging a selection,
 * and a dead letter as JSON. `mailbus dlq` (cli/cmd_dlq.c) and the scan
 * stage's <p>.cmd.dlq.* commands (stages/scan/dlq_commands.c) are both thin
 * front ends on these functions.
 *
 * Listing uses direct get (the DLQ stream has AllowDirect) walking "next
 * message at or after sequence s on <p>.dlq.<stage or >>": no consumer is
 * created, so listing has no side effect on the stream or on other readers. */
#include "bus/dlq.h"
#include "bus/internal.h"

#include "schemas/schema.h"
#include "util/env.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

mb_status mb_bus_dlq_list(mb_bus *b, const char *stage, mb_bus_dlq_fn fn, void *ctx)
{
    char stream[MB_BUS_PREFIX_MAX + 16], filter[MB_BUS_SUBJECT_MAX + 1];
    mb_status rc = mb_bus_stream_name(b, "DLQ", stream, sizeof stream);
    if (rc != MB_OK)
        return rc;
    if (stage) {
        for (const char *p = stage; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                return mb_errf(MB_ERR_INVALID, "dlq: stage '%s': only a-z, 0-9 and _", stage);
        if (!*stage)
            return mb_errf(MB_ERR_INVALID, "dlq: empty stage name");
    }
    rc = mb_bus_subjectf(b, filter, sizeof filter, "dlq.%s", stage ? stage : ">");
    if (rc != MB_OK)
        return rc;

    /* Stop at the last sequence seen now: dead letters added while we list
     * are left for the next listing, so the walk always ends. */
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, b->js, stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
        return mb_errf(MB_ERR_NOTFOUND, "dlq: stream %s not found (nothing provisioned for "
                       "prefix %s?)", stream, b->prefix);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "dlq: stream info %s", stream);
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq, msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    if (msgs == 0)
        return MB_OK;

    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = b->req_timeout_ms;
    uint64_t seq = first ? first : 1;
    while (seq <= last) {
        jsDirectGetMsgOptions dg;
        jsDirectGetMsgOptions_Init(&dg);
        dg.Sequence = seq;
        dg.NextBySubject = filter;
        natsMsg *m = NULL;
        s = js_DirectGetMsg(&m, b->js, stream, &jo, &dg);
        if (s == NATS_NOT_FOUND)
            break; /* nothing at or after seq */
        if (s != NATS_OK)
            return mb_bus_nats_err(s, 0, "dlq: direct get %s seq >= %llu", stream,
                                   (unsigned long long)seq);
        uint64_t got = natsMsg_GetSequence(m);
        if (got < seq || got > last) {
            natsMsg_Destroy(m);
            break;
        }
        mb_rec_dead rec;
        rc = mb_rec_decode(&mb_type_dead, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
                           &rec);
        int stop = 0;
        if (rc != MB_OK) {
            /* Someone published junk on the DLQ subject: report, go on. */
            MB_WARN(NULL, NULL, "dlq: %s seq %llu is not a dead/1 record: %s", stream,
                    (unsigned long long)got, mb_err_last());
        } else {
            stop = fn(ctx, got, &rec);
            mb_rec_free(&mb_type_dead, &rec);
        }
        natsMsg_Destroy(m);
        if (stop)
            break;
        seq = got + 1;
    }
    return MB_OK;
}

/* The outcome of a JetStream call on one dead letter: MB_ERR_NOTFOUND when
 * there is no such dead letter, else the error, naming what was done. */
static mb_status seq_result(natsStatus s, jsErrCode jerr, const char *what, const char *stream,
                            uint64_t dlq_seq)
{
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr || jerr == JSStreamNotFoundErr ||
        jerr == JSSequenceNotFoundErr)
        return mb_errf(MB_ERR_NOTFOUND, "dlq: no dead letter %llu in %s",
                       (unsigned long long)dlq_seq, stream);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "dlq: %s %s seq %llu", what, stream,
                               (unsigned long long)dlq_seq);
    return MB_OK;
}

/* Dead letter dlq_seq (decoded into *rec, caller frees) and the DLQ stream's
 * name (stream, room for MB_BUS_PREFIX_MAX + 16). */
static mb_status get_dead(mb_bus *b, uint64_t dlq_seq, char *stream, mb_rec_dead *rec)
{
    mb_status rc = mb_bus_stream_name(b, "DLQ", stream, MB_BUS_PREFIX_MAX + 16);
    if (rc != MB_OK)
        return rc;
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetMsg(&m, b->js, stream, dlq_seq, NULL, &jerr);
    rc = seq_result(s, jerr, "get", stream, dlq_seq);
    if (rc != MB_OK)
        return rc;
    rc = mb_rec_decode(&mb_type_dead, natsMsg_GetData(m),
                                 (size_t)natsMsg_GetDataLength(m), rec);
    natsMsg_Destroy(m);
    if (rc != MB_OK)
        return mb_err_wrap(rc, "dlq: %s seq %llu is not a dead/1 record", stream,
                           (unsigned long long)dlq_seq);
    return MB_OK;
}

mb_status mb_bus_dlq_get(mb_bus *b, uint64_t dlq_seq, mb_bus_dlq_fn fn, void *ctx)
{
    char stream[MB_BUS_PREFIX_MAX + 16];
    mb_rec_dead rec;
    mb_status rc = get_dead(b, dlq_seq, stream, &rec);
    if (rc != MB_OK)
        return rc;
    fn(ctx, dlq_seq, &rec);
    mb_rec_free(&mb_type_dead, &rec);
    return MB_OK;
}

mb_status mb_bus_dlq_delete(mb_bus *b, uint64_t dlq_seq)
{
    char stream[MB_BUS_PREFIX_MAX + 16];
    mb_status rc = mb_bus_stream_name(b, "DLQ", stream, sizeof stream);
    if (rc != MB_OK)
        return rc;
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteMsg(b->js, stream, dlq_seq, NULL, &jerr);
    return seq_result(s, jerr, "delete", stream, dlq_seq);
}

mb_status mb_bus_dlq_retry(mb_bus *b, uint64_t dlq_seq)
{
    char stream[MB_BUS_PREFIX_MAX + 16], id[MB_BUS_REASON_MAX];
    mb_rec_dead rec;
    mb_status rc = get_dead(b, dlq_seq, stream, &rec);
    if (rc != MB_OK)
        return rc;
    natsMsg *m = NULL;
    natsStatus s = rec.subject && *rec.subject
                       ? natsMsg_Create(&m, rec.subject, NULL, (const char *)rec.data.p,
                                        (int)rec.data.n)
                       : NATS_INVALID_ARG;
    if (s != NATS_OK) {
        rc = s == NATS_INVALID_ARG
                 ? mb_errf(MB_ERR_INVALID, "dlq: dead letter %llu has no original subject",
                           (unsigned long long)dlq_seq)
                 : mb_bus_nats_err(s, 0, "dlq: retry %llu", (unsigned long long)dlq_seq);
        mb_rec_free(&mb_type_dead, &rec);
        return rc;
    }
    /* The original headers, so the stage sees the record as it was; a new
     * Nats-Msg-Id (the old one may still be in the duplicate window), the
     * same for every retry of this dead letter. */
    snprintf(id, sizeof id, "dlq-retry:%s:%llu", stream, (unsigned long long)dlq_seq);
    for (size_t i = 0; i < rec.headers.n; i++) {
        const char *line = rec.headers.v[i], *colon = strchr(line, ':');
        if (!colon || colon == line)
            continue;
        char name[128];
        size_t nl = (size_t)(colon - line);
        if (nl >= sizeof name)
            continue;
        memcpy(name, line, nl);
        name[nl] = '\0';
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        if (!strcmp(name, "Nats-Msg-Id"))
            snprintf(id, sizeof id, "%.200s:retry:%llu", v, (unsigned long long)dlq_seq);
        else if (strncmp(name, "Nats-", 5))
            natsMsgHeader_Add(m, name, v);
    }
    natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    rc = mb_bus_publish_msg(b, m, NULL);
    natsMsg_Destroy(m);
    if (rc == MB_OK) {
        MB_INFO(NULL, NULL, "dlq: dead letter %llu (%s) back on %s", (unsigned long long)dlq_seq,
                rec.stage ? rec.stage : "?", rec.subject);
        rc = mb_bus_dlq_delete(b, dlq_seq);
    }
    mb_rec_free(&mb_type_dead, &rec);
    return rc;
}

mb_status mb_bus_dlq_cutoff(const char *age, int64_t *before_ms)
{
    *before_ms = 0;
    if (!age || !*age)
        return MB_OK;
    int64_t secs;
    if (mb_parse_duration(age, &secs))
        return mb_errf(MB_ERR_INVALID, "dlq: age '%s': expected 30s, 15m, 12h or 7d", age);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *before_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - secs * 1000;
    return MB_OK;
}

typedef struct {
    int64_t before_ms;
    uint64_t *seqs; /* owned */
    size_t n;
    mb_status err;
} selection;

static int select_one(void *vctx, uint64_t dlq_seq, const mb_rec_dead *rec)
{
    selection *sel = vctx;
    if (sel->before_ms && rec->ts_ms >= sel->before_ms)
        return 0;
    uint64_t *nv = mb_grow(sel->seqs, sel->n, sizeof *nv);
    if (!nv) {
        sel->err = mb_err_wrap(MB_ERR_NOMEM, "dlq: %zu sequences", sel->n + 1);
        return 1;
    }
    sel->seqs = nv;
    sel->seqs[sel->n++] = dlq_seq;
    return 0;
}

mb_status mb_bus_dlq_each(mb_bus *b, mb_bus_dlq_action action, const char *stage,
                          int64_t before_ms, size_t *done)
{
    *done = 0;
    /* Collect first, then act: acting while listing would shift the walk. */
    selection sel = {.before_ms = before_ms};
    mb_status rc = mb_bus_dlq_list(b, stage, select_one, &sel);
    if (rc == MB_ERR_NOTFOUND) /* nothing provisioned yet: nothing dead yet */
        rc = MB_OK;
    if (rc == MB_OK)
        rc = sel.err;
    for (size_t i = 0; rc == MB_OK && i < sel.n; i++) {
        rc = action == MB_BUS_DLQ_RETRY ? mb_bus_dlq_retry(b, sel.seqs[i])
                                        : mb_bus_dlq_delete(b, sel.seqs[i]);
        if (rc == MB_OK)
            (*done)++;
        else
            rc = mb_err_wrap(rc, "dlq: %s stopped after %zu of %zu",
                             action == MB_BUS_DLQ_RETRY ? "retry" : "purge", *done, sel.n);
    }
    free(sel.seqs);
    return rc;
}

mb_status mb_bus_dlq_json(uint64_t dlq_seq, const mb_rec_dead *rec, bool with_data, mb_buf *out)
{
    /* The dead/1 record's own JSON, after the DLQ sequence and payload size. */
    mb_rec_dead shown = *rec;
    if (!with_data)
        shown.data = (mb_bytes){0};
    mb_buf rec_json = MB_BUF_INIT;
    mb_status rc = mb_rec_to_json(&mb_type_dead, &shown, &rec_json);
    if (rc == MB_OK && (rec_json.len < 2 || rec_json.data[0] != '{'))
        rc = mb_errf(MB_ERR_INTERNAL, "dlq: dead letter %llu: unexpected JSON",
                     (unsigned long long)dlq_seq);
    if (rc == MB_OK)
        rc = mb_buf_printf(out, "{\"dlq_seq\":%llu,\"data_bytes\":%zu%s%s",
                           (unsigned long long)dlq_seq, rec->data.n,
                           rec_json.data[1] == '}' ? "" : ",", rec_json.data + 1);
    mb_buf_free(&rec_json);
    return rc;
}
