/* provision.c — create or update the streams and durable consumers, then
 * read each config back and compare. nats-server 2.9 silently drops config
 * fields it does not know (a 2.10 filter list became an unfiltered
 * consumer), so "the call succeeded" proves nothing: only the read-back does. */
#include "bus/internal.h"

#include "util/log.h"

#include <stdio.h>
#include <string.h>

#define NS_PER_MS 1000000LL

static const char *const work_stages[] = {"fetch", "parse", "store", "avscan"};

typedef struct {
    char name[MB_BUS_PREFIX_MAX + 16];
    char subject[MB_BUS_PREFIX_MAX + 16];
    const char *description;
    jsRetentionPolicy retention;
    int64_t max_age_ns;
} stream_spec;

static mb_status mismatch(const char *kind, const char *name, const char *field,
                          long long want, long long got)
{
    return mb_errf(MB_ERR_BUS,
                   "%s %s: server kept %s = %lld, asked for %lld (field dropped or changed "
                   "by this nats-server version?)", kind, name, field, got, want);
}

static mb_status verify_stream(const jsStreamConfig *want, const jsStreamConfig *got)
{
    const char *n = want->Name;
    if (!got)
        return mb_errf(MB_ERR_BUS, "stream %s: server returned no config", n);
    if (strcmp(got->Name ? got->Name : "", n) != 0)
        return mb_errf(MB_ERR_BUS, "stream %s: server returned config of '%s'", n,
                       got->Name ? got->Name : "");
    if (got->SubjectsLen != want->SubjectsLen ||
        strcmp(got->Subjects[0] ? got->Subjects[0] : "", want->Subjects[0]) != 0)
        return mb_errf(MB_ERR_BUS, "stream %s: server kept subjects %s%s, asked for %s", n,
                       got->SubjectsLen > 0 && got->Subjects[0] ? got->Subjects[0] : "(none)",
                       got->SubjectsLen > 1 ? ",..." : "", want->Subjects[0]);
    if (got->Retention != want->Retention)
        return mismatch("stream", n, "retention", want->Retention, got->Retention);
    if (got->Storage != want->Storage)
        return mismatch("stream", n, "storage", want->Storage, got->Storage);
    if (got->MaxAge != want->MaxAge)
        return mismatch("stream", n, "max_age (ns)", want->MaxAge, got->MaxAge);
    if (got->Duplicates != want->Duplicates)
        return mismatch("stream", n, "duplicate_window (ns)", want->Duplicates, got->Duplicates);
    if (got->AllowDirect != want->AllowDirect)
        return mismatch("stream", n, "allow_direct", want->AllowDirect, got->AllowDirect);
    if (got->Discard != want->Discard)
        return mismatch("stream", n, "discard", want->Discard, got->Discard);
    if (strcmp(got->Description ? got->Description : "", want->Description) != 0)
        return mb_errf(MB_ERR_BUS, "stream %s: server kept description '%s'", n,
                       got->Description ? got->Description : "");
    return MB_OK;
}

static mb_status ensure_stream(mb_bus *b, const stream_spec *sp, int64_t dup_ns)
{
    const char *subjects[1] = {sp->subject};
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = sp->name;
    cfg.Description = sp->description;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = sp->retention;
    cfg.Storage = js_FileStorage;
    cfg.Discard = js_DiscardOld;
    cfg.MaxAge = sp->max_age_ns;
    cfg.Duplicates = dup_ns;
    /* Direct get lets `nats stream view` and mb_bus_dlq_list read a stream
     * without a consumer (a WorkQueue stream cannot be paged otherwise). */
    cfg.AllowDirect = true;

    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, b->js, &cfg, NULL, &jerr);
    /* Stages start together: when another process created the stream an
     * instant earlier, 2.9 may answer "subjects overlap" (10065) rather than
     * "name exists" (10058). Either way the stream exists: update it. */
    if (s != NATS_OK && (jerr == JSStreamNameExistErr || jerr == JSStreamSubjectOverlapErr)) {
        jerr = 0;
        s = js_UpdateStream(&si, b->js, &cfg, NULL, &jerr);
    }
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "create/update stream %s", sp->name);
    jsStreamInfo_Destroy(si);
    si = NULL;
    /* Read back with a separate request, not the create reply, so what we
     * check is what the server stored. */
    s = js_GetStreamInfo(&si, b->js, sp->name, NULL, &jerr);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "read back stream %s", sp->name);
    mb_status rc = verify_stream(&cfg, si->Config);
    jsStreamInfo_Destroy(si);
    return rc;
}

static mb_status verify_consumer(const char *stream, const jsConsumerConfig *want,
                                 const jsConsumerConfig *got)
{
    char n[160];
    snprintf(n, sizeof n, "%s > %s", stream, want->Durable);
    if (!got)
        return mb_errf(MB_ERR_BUS, "consumer %s: server returned no config", n);
    if (strcmp(got->Durable ? got->Durable : "", want->Durable) != 0)
        return mb_errf(MB_ERR_BUS, "consumer %s: server kept durable name '%s'", n,
                       got->Durable ? got->Durable : "");
    if (got->FilterSubject && *got->FilterSubject)
        return mb_errf(MB_ERR_BUS, "consumer %s: server kept filter_subject '%s', asked for none",
                       n, got->FilterSubject);
    if (got->DeliverSubject && *got->DeliverSubject)
        return mb_errf(MB_ERR_BUS, "consumer %s: is a push consumer (deliver_subject '%s')", n,
                       got->DeliverSubject);
    if (got->AckPolicy != want->AckPolicy)
        return mismatch("consumer", n, "ack_policy", want->AckPolicy, got->AckPolicy);
    if (got->DeliverPolicy != want->DeliverPolicy)
        return mismatch("consumer", n, "deliver_policy", want->DeliverPolicy, got->DeliverPolicy);
    if (got->AckWait != want->AckWait)
        return mismatch("consumer", n, "ack_wait (ns)", want->AckWait, got->AckWait);
    if (got->MaxDeliver != want->MaxDeliver)
        return mismatch("consumer", n, "max_deliver", want->MaxDeliver, got->MaxDeliver);
    if (got->MaxAckPending != want->MaxAckPending)
        return mismatch("consumer", n, "max_ack_pending", want->MaxAckPending,
                        got->MaxAckPending);
    if (got->BackOffLen != want->BackOffLen)
        return mismatch("consumer", n, "backoff length", want->BackOffLen, got->BackOffLen);
    for (int i = 0; i < want->BackOffLen; i++)
        if (got->BackOff[i] != want->BackOff[i]) {
            char f[32];
            snprintf(f, sizeof f, "backoff[%d] (ns)", i);
            return mismatch("consumer", n, f, want->BackOff[i], got->BackOff[i]);
        }
    if (strcmp(got->Description ? got->Description : "", want->Description) != 0)
        return mb_errf(MB_ERR_BUS, "consumer %s: server kept description '%s'", n,
                       got->Description ? got->Description : "");
    return MB_OK;
}

static mb_status ensure_consumer(mb_bus *b, const char *stream, jsConsumerConfig *cfg)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, b->js, stream, cfg->Durable, NULL, &jerr);
    if (s == NATS_OK) {
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        s = js_UpdateConsumer(&ci, b->js, stream, cfg, NULL, &jerr);
    } else if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr) {
        jerr = 0;
        s = js_AddConsumer(&ci, b->js, stream, cfg, NULL, &jerr);
    }
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "create/update consumer %s > %s", stream, cfg->Durable);
    jsConsumerInfo_Destroy(ci);
    ci = NULL;
    s = js_GetConsumerInfo(&ci, b->js, stream, cfg->Durable, NULL, &jerr);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "read back consumer %s > %s", stream, cfg->Durable);
    mb_status rc = verify_consumer(stream, cfg, ci->Config);
    jsConsumerInfo_Destroy(ci);
    return rc;
}

mb_status mb_bus_provision(mb_bus *b, const mb_bus_provision_opts *o)
{
    mb_bus_provision_opts dflt = {0};
    if (!o)
        o = &dflt;
    int64_t ack_wait = o->ack_wait_ms > 0 ? o->ack_wait_ms : 60000;
    int64_t max_deliver = o->max_deliver > 0 ? o->max_deliver : 8;
    int64_t max_ack_pending = o->max_ack_pending > 0 ? o->max_ack_pending : 4096;
    int64_t dup_ms = o->duplicate_window_ms > 0 ? o->duplicate_window_ms : 120000;
    int64_t events_age = o->events_max_age_ms > 0 ? o->events_max_age_ms : 7LL * 86400 * 1000;
    int64_t dlq_age = o->dlq_max_age_ms > 0 ? o->dlq_max_age_ms : 30LL * 86400 * 1000;

    int64_t backoff_ns[16];
    int nbackoff = 0;
    if (!o->no_backoff) {
        if (o->backoff_ms && o->backoff_len > 0) {
            if (o->backoff_len > (int)MB_ARRAY_LEN(backoff_ns))
                return mb_errf(MB_ERR_CONFIG, "backoff: %d entries, at most %zu", o->backoff_len,
                               MB_ARRAY_LEN(backoff_ns));
            for (int i = 0; i < o->backoff_len; i++) {
                if (o->backoff_ms[i] <= 0)
                    return mb_errf(MB_ERR_CONFIG, "backoff[%d]: %lld ms, must be > 0", i,
                                   (long long)o->backoff_ms[i]);
                backoff_ns[nbackoff++] = o->backoff_ms[i] * NS_PER_MS;
            }
            /* 2.9 replaces AckWait with BackOff[0]; asking for anything else
             * would fail the read-back, so say why up front. */
            if (o->ack_wait_ms > 0 && o->ack_wait_ms != o->backoff_ms[0])
                return mb_errf(MB_ERR_CONFIG,
                               "ack_wait %lld ms != backoff[0] %lld ms: the server uses "
                               "backoff[0] as the ack wait", (long long)o->ack_wait_ms,
                               (long long)o->backoff_ms[0]);
            ack_wait = o->backoff_ms[0];
        } else {
            /* Ack timeouts after AckWait, then 2, 4, 8 and 16 times it: with
             * the default of 60 s a record is handed out 8 times over about
             * an hour before it is given up (and retries by NakWithDelay
             * follow the same floor: consume.c nak_delay). */
            for (int i = 0; i < 5; i++)
                backoff_ns[nbackoff++] = (ack_wait << i) * NS_PER_MS;
        }
        if (max_deliver <= nbackoff) {
            /* MaxDeliver must exceed the schedule; trim the schedule when
             * only a small MaxDeliver was asked for. */
            if (o->backoff_ms && o->backoff_len > 0)
                return mb_errf(MB_ERR_CONFIG, "max_deliver %lld must be > backoff length %d",
                               (long long)max_deliver, nbackoff);
            nbackoff = (int)max_deliver - 1;
        }
    }

    static const struct {
        const char *suffix, *token, *desc;
        jsRetentionPolicy ret;
    } specs[] = {
        {"FETCH", "fetch", "mailbus fetch tasks (scan -> fetch), one per chunk", js_WorkQueuePolicy},
        {"PARSE", "parse", "mailbus raw messages in the blob store (fetch -> parse)", js_WorkQueuePolicy},
        {"STORE", "store", "mailbus parsed messages (parse -> store)", js_WorkQueuePolicy},
        {"AVSCAN", "avscan", "mailbus attachments to virus-scan (-> avscan)", js_WorkQueuePolicy},
        {"EVENTS", "events", "mailbus job progress, completion and errors", js_LimitsPolicy},
        {"DLQ", "dlq", "mailbus dead letters: records that failed for good", js_LimitsPolicy},
    };
    for (size_t i = 0; i < MB_ARRAY_LEN(specs); i++) {
        stream_spec sp = {0};
        mb_status rc = mb_bus_stream_name(b, specs[i].suffix, sp.name, sizeof sp.name);
        if (rc == MB_OK)
            rc = mb_bus_subjectf(b, sp.subject, sizeof sp.subject, "%s.>", specs[i].token);
        if (rc != MB_OK)
            return rc;
        sp.description = specs[i].desc;
        sp.retention = specs[i].ret;
        sp.max_age_ns = !strcmp(specs[i].suffix, "EVENTS") ? events_age * NS_PER_MS
                        : !strcmp(specs[i].suffix, "DLQ") ? dlq_age * NS_PER_MS
                                                          : 0;
        rc = ensure_stream(b, &sp, dup_ms * NS_PER_MS);
        if (rc != MB_OK)
            return rc;
    }

    for (size_t i = 0; i < MB_ARRAY_LEN(work_stages); i++) {
        char stream[MB_BUS_PREFIX_MAX + 16], upper[16];
        size_t k = 0;
        for (; work_stages[i][k] && k < sizeof upper - 1; k++)
            upper[k] = (char)(work_stages[i][k] - 'a' + 'A');
        upper[k] = '\0';
        mb_status rc = mb_bus_stream_name(b, upper, stream, sizeof stream);
        if (rc != MB_OK)
            return rc;
        char desc[96];
        snprintf(desc, sizeof desc, "mailbus %s stage: one durable shared by all copies",
                 work_stages[i]);
        jsConsumerConfig cc;
        jsConsumerConfig_Init(&cc);
        cc.Durable = work_stages[i];
        cc.Description = desc;
        cc.DeliverPolicy = js_DeliverAll;
        cc.AckPolicy = js_AckExplicit;
        cc.AckWait = ack_wait * NS_PER_MS;
        cc.MaxDeliver = max_deliver;
        cc.BackOff = nbackoff ? backoff_ns : NULL;
        cc.BackOffLen = nbackoff;
        cc.MaxAckPending = max_ack_pending;
        rc = ensure_consumer(b, stream, &cc);
        if (rc != MB_OK)
            return rc;
    }
    mb_bus_remember_provision(b, o);
    MB_INFO(NULL, NULL, "bus: provisioned %s_* streams (ack_wait %lld ms, max_deliver %lld, "
            "%d backoff steps, max_ack_pending %lld)", b->upper, (long long)ack_wait,
            (long long)max_deliver, nbackoff, (long long)max_ack_pending);
    return MB_OK;
}

mb_status mb_bus_destroy_streams(mb_bus *b)
{
    static const char *const suffixes[] = {"FETCH", "PARSE", "STORE", "AVSCAN", "EVENTS", "DLQ"};
    for (size_t i = 0; i < MB_ARRAY_LEN(suffixes); i++) {
        char name[MB_BUS_PREFIX_MAX + 16];
        mb_status rc = mb_bus_stream_name(b, suffixes[i], name, sizeof name);
        if (rc != MB_OK)
            return rc;
        jsErrCode jerr = 0;
        natsStatus s = js_DeleteStream(b->js, name, NULL, &jerr);
        if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr)
            return mb_bus_nats_err(s, jerr, "delete stream %s", name);
    }
    return MB_OK;
}

mb_status mb_bus_stream_count(mb_bus *b, const char *stream_suffix, uint64_t *msgs)
{
    char name[MB_BUS_PREFIX_MAX + 32];
    mb_status rc = mb_bus_stream_name(b, stream_suffix, name, sizeof name);
    if (rc != MB_OK)
        return rc;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, b->js, name, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
        return mb_errf(MB_ERR_NOTFOUND, "stream %s: not found (run provisioning)", name);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "stream info %s", name);
    *msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return MB_OK;
}
