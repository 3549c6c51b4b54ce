/* consume.c — the batch consume loop every stage runs: pull a batch from the
 * stage's durable, hand it to the stage's handler, turn each verdict into an
 * ack, a delayed nak or a dead letter, and shut down without losing anything.
 *
 * nats.c 3.4.1 constraints designed around here (see bus/README.md):
 *  - one natsSubscription_Fetch at a time per subscription: one subscription
 *    per mb_bus_consume call (i.e. per thread);
 *  - Fetch may return NATS_TIMEOUT early (a stale status of an earlier pull
 *    request): a timeout is always just "no messages";
 *  - Fetch overflows its array when messages left over from an earlier
 *    request are pending and more arrive than it expects: leftovers are
 *    taken with batch-1 fetches, which cannot overflow;
 *  - a message arriving for a subscription being destroyed can crash the
 *    read loop: unsubscribe, flush (the server has processed the UNSUB and
 *    the read loop is past any message for it), then destroy. */
#include "bus/internal.h"
#include "bus/watch.h"

#include "schemas/schema.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/log.h"

#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int stop_flag;

void mb_bus_stop(void) { atomic_store(&stop_flag, 1); }
bool mb_bus_stopping(void) { return atomic_load(&stop_flag) != 0; }

static void on_signal(int sig)
{
    (void)sig;
    mb_bus_stop();
}

mb_status mb_bus_install_signal_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return mb_errf(MB_ERR_INTERNAL, "sigaction: cannot install SIGTERM/SIGINT handlers");
    return MB_OK;
}

/* ---- delivery accessors -------------------------------------------------- */

const char *mb_bus_delivery_header(const mb_bus_delivery *d, const char *name)
{
    const char *v = NULL;
    if (!d || !d->msg_ || !name)
        return NULL;
    if (natsMsgHeader_Get((natsMsg *)d->msg_, name, &v) != NATS_OK)
        return NULL;
    return v;
}

void mb_bus_done(mb_bus_delivery *d)
{
    d->verdict = MB_BUS_DONE;
    d->reason[0] = '\0';
}

static void set_reason(mb_bus_delivery *d, const char *fmt, va_list ap)
{
    vsnprintf(d->reason, sizeof d->reason, fmt, ap);
}

void mb_bus_retry(mb_bus_delivery *d, int64_t delay_ms, const char *fmt, ...)
{
    d->verdict = MB_BUS_RETRY;
    d->retry_delay_ms = delay_ms;
    va_list ap;
    va_start(ap, fmt);
    set_reason(d, fmt, ap);
    va_end(ap);
}

void mb_bus_fail(mb_bus_delivery *d, const char *fmt, ...)
{
    d->verdict = MB_BUS_FAIL;
    va_list ap;
    va_start(ap, fmt);
    set_reason(d, fmt, ap);
    va_end(ap);
}

void mb_bus_in_progress(mb_bus_delivery *d)
{
    if (d && d->msg_)
        natsMsg_InProgress((natsMsg *)d->msg_, NULL);
    mb_watch_progress();
}

void mb_bus_begin(const mb_bus_delivery *d)
{
    mb_watch_begin(d->stream_seq, d->deliveries, 1);
}

void mb_bus_begin_batch(const mb_bus_delivery *d, size_t n)
{
    if (n)
        mb_watch_begin(d[0].stream_seq, d[0].deliveries, (int)n);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep up to ms, waking early when a stop is requested. */
static void nap(int64_t ms)
{
    while (ms > 0 && !mb_bus_stopping()) {
        int64_t step = ms < 50 ? ms : 50;
        nats_Sleep(step);
        ms -= step;
    }
}

/* ---- records in hand ------------------------------------------------------ */

/* The batch this thread's consume loop has handed to its handler (or holds
 * through an outage), for mb_bus_keepalive. */
static __thread struct {
    mb_bus_delivery *d;
    size_t n;
    int64_t every_ms; /* a quarter of AckWait */
    int64_t last_ms;
} hand;

static void hand_set(mb_bus_delivery *d, size_t n, int64_t every_ms)
{
    hand.d = d;
    hand.n = n;
    hand.every_ms = every_ms;
    hand.last_ms = mb_mono_ms();
}

void mb_bus_keepalive(void)
{
    int64_t t = mb_mono_ms();
    if (!hand.d || t - hand.last_ms < hand.every_ms)
        return;
    for (size_t i = 0; i < hand.n; i++)
        if (hand.d[i].msg_)
            natsMsg_InProgress((natsMsg *)hand.d[i].msg_, NULL);
    hand.last_ms = t;
}

/* ---- dead letters -------------------------------------------------------- */

/* Headers with server semantics are not copied onto the dead letter: the
 * original Nats-Msg-Id would make the DLQ stream drop a later, different
 * failure of a republished record as a duplicate. They stay in the record. */
static bool server_header(const char *k) { return strncmp(k, "Nats-", 5) == 0; }

/* The original headers as "Name: value" lines (rec.headers). */
static mb_status header_lines(natsMsg *from, mb_strv *out)
{
    const char **keys = NULL;
    int nkeys = 0;
    natsStatus s = natsMsgHeader_Keys(from, &keys, &nkeys);
    if (s == NATS_NOT_FOUND)
        return MB_OK;
    if (s != NATS_OK)
        return mb_bus_nats_err(s, 0, "dead letter: read headers");
    mb_status rc = MB_OK;
    for (int i = 0; i < nkeys && rc == MB_OK; i++) {
        const char **vals = NULL;
        int nvals = 0;
        if (natsMsgHeader_Values(from, keys[i], &vals, &nvals) != NATS_OK)
            continue;
        for (int j = 0; j < nvals && rc == MB_OK; j++) {
            mb_buf line = MB_BUF_INIT;
            char **nv = realloc(out->v, (out->n + 1) * sizeof *nv);
            if (!nv || mb_buf_printf(&line, "%s: %s", keys[i], vals[j]) != MB_OK) {
                if (nv)
                    out->v = nv;
                mb_buf_free(&line);
                rc = mb_errf(MB_ERR_NOMEM, "dead letter: headers");
                break;
            }
            out->v = nv;
            out->v[out->n++] = mb_buf_steal(&line);
        }
        free((void *)vals);
    }
    free((void *)keys);
    return rc;
}

/* Copy the original headers onto the dead letter, except server ones. */
static void copy_user_headers(natsMsg *from, natsMsg *to)
{
    const char **keys = NULL;
    int nkeys = 0;
    if (natsMsgHeader_Keys(from, &keys, &nkeys) != NATS_OK)
        return;
    for (int i = 0; i < nkeys; i++) {
        const char **vals = NULL;
        int nvals = 0;
        if (server_header(keys[i]) ||
            natsMsgHeader_Values(from, keys[i], &vals, &nvals) != NATS_OK)
            continue;
        for (int j = 0; j < nvals; j++)
            natsMsgHeader_Add(to, keys[i], vals[j]);
        free((void *)vals);
    }
    free((void *)keys);
}

/* A header value on one line, bounded (a reason can be an error text). */
static void header_safe(char *dst, size_t cap, const char *src)
{
    size_t i = 0;
    for (; src && src[i] && i + 1 < cap; i++)
        dst[i] = (src[i] == '\r' || src[i] == '\n') ? ' ' : src[i];
    dst[i] = '\0';
}

/* Publish d to <p>.dlq.<stage> as an mb_rec_dead and wait for the PubAck. */
static mb_status dead_letter(mb_bus *b, const char *stage, const char *stream,
                             mb_bus_delivery *d, const char *reason)
{
    natsMsg *orig = d->msg_;
    mb_rec_dead rec = {0};
    mb_buf enc = MB_BUF_INIT;
    natsMsg *m = NULL;
    char subject[MB_BUS_SUBJECT_MAX + 1], hv[MB_BUS_REASON_MAX];
    mb_status rc = mb_bus_subjectf(b, subject, sizeof subject, "dlq.%s", stage);
    if (rc != MB_OK)
        return rc;

    /* The record borrows everything from the delivery except the header
     * lines, which are freed below (so no mb_rec_free). */
    rec.stage = (char *)stage;
    rec.subject = (char *)d->subject;
    rec.reason = (char *)reason;
    rec.deliveries = d->deliveries;
    rec.stream_seq = d->stream_seq;
    rec.ts_ms = wall_ms();
    rec.data.p = (unsigned char *)d->data;
    rec.data.n = d->len;
    rc = header_lines(orig, &rec.headers);
    if (rc == MB_OK)
        rc = mb_rec_encode(&mb_type_dead, &rec, &enc);
    for (size_t i = 0; i < rec.headers.n; i++)
        free(rec.headers.v[i]);
    free(rec.headers.v);
    if (rc != MB_OK)
        return mb_err_wrap(rc, "dead letter for %s seq %llu", d->subject,
                           (unsigned long long)d->stream_seq);

    natsStatus s = natsMsg_Create(&m, subject, NULL, enc.data, (int)enc.len);
    if (s != NATS_OK) {
        mb_buf_free(&enc);
        return mb_bus_nats_err(s, 0, "dead letter for %s", subject);
    }
    copy_user_headers(orig, m);
    header_safe(hv, sizeof hv, reason);
    natsMsgHeader_Set(m, "Mailbus-Dlq-Reason", hv);
    natsMsgHeader_Set(m, "Mailbus-Dlq-Stage", stage);
    header_safe(hv, sizeof hv, d->subject);
    natsMsgHeader_Set(m, "Mailbus-Dlq-Subject", hv);
    const char *orig_id = NULL;
    if (natsMsgHeader_Get(orig, "Nats-Msg-Id", &orig_id) == NATS_OK && orig_id) {
        header_safe(hv, sizeof hv, orig_id);
        natsMsgHeader_Set(m, "Mailbus-Orig-Msg-Id", hv);
    }
    natsMsgHeader_Set(m, "Mailbus-Schema", "dead/1");
    natsMsgHeader_Set(m, "Content-Type", "application/msgpack");
    /* Deterministic per stored message: a redelivery after a lost ack does
     * not dead-letter the same message twice. */
    snprintf(hv, sizeof hv, "dlq:%s:%llu", stream, (unsigned long long)d->stream_seq);
    natsMsgHeader_Set(m, "Nats-Msg-Id", hv);
    rc = mb_bus_publish_msg(b, m, NULL);
    natsMsg_Destroy(m);
    mb_buf_free(&enc);
    return rc;
}

/* ---- fetching ------------------------------------------------------------ */

/* Fill msgs with up to batch messages. Returns NATS_OK with *n > 0, or the
 * status of a fetch that brought nothing. */
static natsStatus fetch_batch(natsSubscription *sub, natsMsg **msgs, int batch,
                              int64_t timeout_ms, int *n)
{
    natsMsgList list = {0};
    natsStatus s;
    int pending = 0;
    *n = 0;
    natsSubscription_GetPending(sub, &pending, NULL);
    if (pending > 0) {
        /* Leftovers from an earlier pull request: one at a time (see top). */
        while (*n < batch && pending > 0) {
            s = natsSubscription_Fetch(&list, sub, 1, 100, NULL);
            if (s != NATS_OK || list.Count != 1) {
                natsMsgList_Destroy(&list);
                break;
            }
            msgs[(*n)++] = list.Msgs[0];
            list.Msgs[0] = NULL;
            natsMsgList_Destroy(&list);
            pending = 0;
            natsSubscription_GetPending(sub, &pending, NULL);
        }
        if (*n > 0)
            return NATS_OK;
    }
    s = natsSubscription_Fetch(&list, sub, batch, timeout_ms, NULL);
    if (s != NATS_OK)
        return s;
    for (int i = 0; i < list.Count && *n < batch; i++) {
        msgs[(*n)++] = list.Msgs[i];
        list.Msgs[i] = NULL;
    }
    natsMsgList_Destroy(&list);
    return *n > 0 ? NATS_OK : NATS_TIMEOUT;
}

/* ---- the loop ------------------------------------------------------------ */

typedef struct {
    mb_bus *b;
    const char *stage;
    const mb_bus_consume_opts *o;
    void *ctx;
    char stream[MB_BUS_PREFIX_MAX + 32];
    natsSubscription *sub;
    int64_t max_deliver; /* <= 0: unlimited */
    int64_t ack_wait_ms;   /* the consumer's AckWait */
    int64_t backoff_ms[16]; /* its BackOff schedule (nak_delay) */
    int nbackoff;
    int64_t ack_timeout_ms;
    int64_t keepalive_ms;  /* InProgress interval for records held: AckWait / 4 */
    int64_t last_check_ms; /* last look at the consumer (check_consumer) */
    int64_t last_warn_ms;  /* rate limit of check_consumer's warnings */
} loop_state;

static void fill_delivery(mb_bus_delivery *d, natsMsg *m)
{
    memset(d, 0, sizeof *d);
    d->msg_ = m;
    d->subject = natsMsg_GetSubject(m);
    d->data = natsMsg_GetData(m);
    d->len = (size_t)natsMsg_GetDataLength(m);
    d->deliveries = 1;
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
        d->deliveries = meta->NumDelivered;
        d->stream_seq = meta->Sequence.Stream;
        d->ts_ms = meta->Timestamp / 1000000;
        jsMsgMetaData_Destroy(meta);
    }
    d->verdict = MB_BUS_RETRY;
    snprintf(d->reason, sizeof d->reason, "handler set no verdict");
}

/* Dead-letter then ack; if the DLQ publish fails, nak (never drop). The
 * stage settles the record on its job first. */
static void settle_dead(loop_state *ls, mb_bus_delivery *d, const char *reason)
{
    natsMsg *m = d->msg_;
    const char *job = mb_bus_delivery_header(d, "Mailbus-Job");
    const char *acct = mb_bus_delivery_header(d, "Mailbus-Account");
    if (ls->o->give_up)
        ls->o->give_up(ls->ctx, d, reason);
    mb_status rc = dead_letter(ls->b, ls->stage, ls->stream, d, reason);
    if (rc == MB_OK) {
        MB_WARN(job, acct, "bus: dead-lettered %s seq %llu after %llu deliveries: %s",
                d->subject, (unsigned long long)d->stream_seq,
                (unsigned long long)d->deliveries, reason);
        natsMsg_Ack(m, NULL);
    } else {
        MB_ERROR(job, acct, "bus: could not dead-letter %s seq %llu (%s); nak'ed instead",
                 d->subject, (unsigned long long)d->stream_seq, mb_err_last());
        natsMsg_NakWithDelay(m, 5000, NULL);
    }
}

/* The delay to nak a retried record with, so that it comes back after the
 * handler's retry_delay_ms. JetStream (2.9.10, and still 2.14) brings a
 * record nak'ed with delay D back after BackOff[i] - AckWait + D, where i is
 * its redeliveries so far (capped at the last step): with the default
 * schedule a record's second retry of 1 s came back after 2 minutes. So the
 * step's excess over AckWait is taken off D; where it is larger than the
 * handler's delay, the schedule wins (retries of a record that keeps
 * failing come back later and later: the schedule is a floor). */
static int64_t nak_delay(const loop_state *ls, const mb_bus_delivery *d)
{
    int64_t want = d->retry_delay_ms;
    if (ls->nbackoff <= 0 || d->deliveries < 1)
        return want;
    uint64_t i = d->deliveries - 1;
    if (i >= (uint64_t)ls->nbackoff)
        i = (uint64_t)ls->nbackoff - 1;
    int64_t excess = ls->backoff_ms[i] - ls->ack_wait_ms;
    return want - excess > 0 ? want - excess : 1;
}

static void settle(loop_state *ls, mb_bus_delivery *d)
{
    natsMsg *m = d->msg_;
    char reason[MB_BUS_REASON_MAX + 64];
    switch (d->verdict) {
    case MB_BUS_DONE:
        natsMsg_Ack(m, NULL);
        return;
    case MB_BUS_FAIL:
        settle_dead(ls, d, d->reason[0] ? d->reason : "failed");
        return;
    case MB_BUS_RETRY:
    default:
        if (ls->max_deliver > 0 && d->deliveries >= (uint64_t)ls->max_deliver) {
            /* The server would stop redelivering and leave the record
             * stuck in the work stream; move it to the DLQ ourselves. */
            snprintf(reason, sizeof reason, "%s (gave up after %llu deliveries)",
                     d->reason[0] ? d->reason : "retry",
                     (unsigned long long)d->deliveries);
            settle_dead(ls, d, reason);
        } else if (d->retry_delay_ms > 0) {
            natsMsg_NakWithDelay(m, nak_delay(ls, d), NULL);
        } else {
            natsMsg_Nak(m, NULL);
        }
        return;
    }
}

static void nak_all(natsMsg **msgs, int n)
{
    for (int i = 0; i < n; i++) {
        natsMsg_Nak(msgs[i], NULL);
        natsMsg_Destroy(msgs[i]);
        msgs[i] = NULL;
    }
}

/* Acks/naks are fire-and-forget publishes; a flush (PING/PONG) proves they
 * reached the server before we fetch more or exit. If it fails the server
 * redelivers after AckWait: at least once, never lost. */
static void flush_acks(loop_state *ls)
{
    natsStatus s = natsConnection_FlushTimeout(ls->b->nc, ls->ack_timeout_ms);
    if (s != NATS_OK)
        MB_WARN(NULL, NULL, "bus: %s: acks not confirmed (%s); unconfirmed records will be "
                "redelivered", ls->stage, natsStatus_GetText(s));
}

static mb_status subscribe(loop_state *ls)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = ls->stream;
    so.Consumer = ls->stage;
    jsErrCode jerr = 0;
    natsStatus s = js_PullSubscribe(&ls->sub, ls->b->js, NULL, ls->stage, NULL, &so, &jerr);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "pull subscribe to %s > %s (provisioned?)", ls->stream,
                               ls->stage);
    jsConsumerInfo *ci = NULL;
    /* natsSubscription_GetConsumerInfo refuses subscriptions bound to an
     * existing consumer in 3.4.1; ask by name. */
    s = js_GetConsumerInfo(&ci, ls->b->js, ls->stream, ls->stage, NULL, &jerr);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "consumer info %s > %s", ls->stream, ls->stage);
    ls->max_deliver = ci->Config ? ci->Config->MaxDeliver : -1;
    /* On 2.9 with a BackOff, AckWait is BackOff[0], the shortest wait. */
    int64_t ack_wait = ci->Config && ci->Config->AckWait > 0 ? ci->Config->AckWait / 1000000 : 30000;
    ls->ack_wait_ms = ack_wait;
    ls->nbackoff = 0;
    for (int i = 0; ci->Config && i < ci->Config->BackOffLen &&
                    i < (int)MB_ARRAY_LEN(ls->backoff_ms); i++)
        ls->backoff_ms[ls->nbackoff++] = ci->Config->BackOff[i] / 1000000;
    ls->keepalive_ms = ack_wait / 4 < 100 ? 100 : ack_wait / 4 > 15000 ? 15000 : ack_wait / 4;
    jsConsumerInfo_Destroy(ci);
    return MB_OK;
}

static void unsubscribe(loop_state *ls, natsMsg **msgs, int batch)
{
    if (!ls->sub)
        return;
    /* Anything delivered to us but not yet taken is nak'ed, so it comes
     * back at once instead of after AckWait. */
    int pending = 0, n = 0;
    natsSubscription_GetPending(ls->sub, &pending, NULL);
    while (pending > 0 && n < batch) {
        natsMsgList list = {0};
        if (natsSubscription_Fetch(&list, ls->sub, 1, 100, NULL) != NATS_OK || list.Count != 1) {
            natsMsgList_Destroy(&list);
            break;
        }
        msgs[n++] = list.Msgs[0];
        list.Msgs[0] = NULL;
        natsMsgList_Destroy(&list);
        pending = 0;
        natsSubscription_GetPending(ls->sub, &pending, NULL);
    }
    if (n)
        MB_INFO(NULL, NULL, "bus: %s: nak'ed %d undelivered records at shutdown", ls->stage, n);
    nak_all(msgs, n);
    natsSubscription_Unsubscribe(ls->sub);
    flush_acks(ls);
    natsSubscription_Destroy(ls->sub);
    ls->sub = NULL;
}

/* The batch a dead worker had in hand (poison excepted) comes back now,
 * not after AckWait or, for a redelivered record, the next BackOff step. */
static void nak_dead_batch(loop_state *ls, mb_watch *w)
{
    int nr = atomic_load(&w->nreply), naked = 0;
    for (int i = 0; i < nr && i < MB_WATCH_BATCH; i++) {
        bool poison = false;
        for (int k = 0; k < MB_WATCH_POISON && !poison; k++)
            poison = atomic_load(&w->poison[k].state) == MB_POISON_PENDING &&
                     w->poison[k].seq == w->reply_seq[i];
        if (!poison && natsConnection_PublishString(ls->b->nc, w->reply[i], "-NAK") == NATS_OK)
            naked++;
    }
    atomic_store(&w->nreply, 0);
    if (naked) {
        flush_acks(ls);
        MB_INFO(NULL, NULL, "bus: nak'ed %d records the previous worker had in hand", naked);
    }
}

/* Poison records the supervisor left for this stream: read each from the
 * stream, give up on it (settled on its job, dead-lettered) and delete it
 * from the stream, so that no copy of the stage is handed it again. One
 * already gone (another copy dealt with it) is just forgotten. A failure
 * leaves the entry for the next start. */
static void clear_poison(loop_state *ls, mb_watch *w)
{
    for (int i = 0; i < MB_WATCH_POISON; i++) {
        mb_watch_poison *p = &w->poison[i];
        if (atomic_load(&p->state) != MB_POISON_PENDING || strcmp(p->stream, ls->stream))
            continue;
        natsMsg *m = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetMsg(&m, ls->b->js, ls->stream, p->seq, NULL, &jerr);
        if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
            MB_INFO(NULL, NULL, "bus: poison %s seq %llu is gone already", ls->stream,
                    (unsigned long long)p->seq);
            atomic_store(&p->state, MB_POISON_FREE);
            continue;
        }
        if (s != NATS_OK) {
            mb_bus_nats_err(s, jerr, "get poison %s seq %llu", ls->stream,
                            (unsigned long long)p->seq);
            MB_ERROR(NULL, NULL, "bus: %s; left for the next start", mb_err_last());
            continue;
        }
        mb_bus_delivery d;
        fill_delivery(&d, m);
        d.stream_seq = p->seq;
        d.deliveries = p->deliveries;
        const char *job = mb_bus_delivery_header(&d, "Mailbus-Job");
        const char *acct = mb_bus_delivery_header(&d, "Mailbus-Account");
        if (ls->o->give_up)
            ls->o->give_up(ls->ctx, &d, p->reason);
        mb_status rc = dead_letter(ls->b, ls->stage, ls->stream, &d, p->reason);
        if (rc == MB_OK) {
            s = js_DeleteMsg(ls->b->js, ls->stream, p->seq, NULL, &jerr);
            if (s != NATS_OK && s != NATS_NOT_FOUND)
                rc = mb_bus_nats_err(s, jerr, "delete poison %s seq %llu", ls->stream,
                                     (unsigned long long)p->seq);
        }
        if (rc == MB_OK) {
            MB_WARN(job, acct, "bus: poison %s seq %llu dead-lettered and removed: %s",
                    d.subject, (unsigned long long)p->seq, p->reason);
            atomic_store(&p->state, MB_POISON_FREE);
        } else {
            MB_ERROR(job, acct, "bus: poison seq %llu: %s; left for the next start",
                     (unsigned long long)p->seq, mb_err_last());
        }
        natsMsg_Destroy(m);
    }
}

/* ---- outages (bus.h) ----------------------------------------------------- */

/* How often a held batch looks whether the outage is over, and how often it
 * says it is still waiting. */
#define OUTAGE_PROBE_MS 1000
#define OUTAGE_LOG_MS 60000
/* How often an idle loop makes sure its consumer still exists. */
#define CONSUMER_CHECK_MS 5000

/* Is NATS, or what the stage's probe covers (Postgres), down? what: why.
 * *reprovisioned (may be NULL): a lost stream was provisioned again just
 * now, so records that failed for its absence can be handled again at once. */
static bool outage_ex(loop_state *ls, char *what, size_t cap, bool *reprovisioned)
{
    unsigned gen = mb_bus_provision_gen(ls->b);
    mb_status rc = mb_bus_check(ls->b);
    if (reprovisioned)
        *reprovisioned = rc == MB_OK && mb_bus_provision_gen(ls->b) != gen;
    if (rc == MB_ERR_NET || rc == MB_ERR_TIMEOUT) {
        snprintf(what, cap, "%s", mb_err_last());
        return true;
    }
    if (ls->o->probe) {
        rc = ls->o->probe(ls->o->probe_ctx);
        if (rc == MB_ERR_NET || rc == MB_ERR_TIMEOUT) {
            snprintf(what, cap, "%s", mb_err_last());
            return true;
        }
    }
    return false;
}

static bool outage(loop_state *ls, char *what, size_t cap)
{
    return outage_ex(ls, what, cap, NULL);
}

/* Move the records the handler wants retried to the front; their count. */
static size_t retries_first(mb_bus_delivery *d, size_t n)
{
    size_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i].verdict != MB_BUS_RETRY)
            continue;
        if (i != r) {
            mb_bus_delivery t = d[r];
            d[r] = d[i];
            d[i] = t;
        }
        r++;
    }
    return r;
}

/* Keep d[0..n) in hand (InProgress) until the outage is over or a stop is
 * requested. Returns how long it waited, in ms. */
static int64_t hold(loop_state *ls, mb_bus_delivery *d, size_t n, size_t held,
                    const char *what)
{
    const char *job = mb_bus_delivery_header(&d[0], "Mailbus-Job");
    int64_t t0 = mb_mono_ms(), last_probe = t0, last_log = t0;
    MB_WARN(job, NULL, "bus: %s: %s; holding %zu records (no delivery spent) until it is back",
            ls->stage, what, held);
    char now_what[MB_BUS_REASON_MAX];
    while (!mb_bus_stopping()) {
        hand_set(d, n, ls->keepalive_ms);
        hand.last_ms = 0; /* due now */
        mb_bus_keepalive();
        for (int64_t slept = 0; slept < ls->keepalive_ms && slept < OUTAGE_PROBE_MS &&
                                !mb_bus_stopping();
             slept += 50)
            nats_Sleep(50);
        int64_t t = mb_mono_ms();
        if (t - last_probe < OUTAGE_PROBE_MS)
            continue;
        last_probe = t;
        if (!outage(ls, now_what, sizeof now_what))
            break;
        if (t - last_log >= OUTAGE_LOG_MS) {
            MB_WARN(job, NULL, "bus: %s: still holding %zu records after %lld s: %s", ls->stage,
                    held, (long long)((t - t0) / 1000), now_what);
            last_log = t;
        }
    }
    int64_t ms = mb_mono_ms() - t0;
    if (!mb_bus_stopping())
        MB_INFO(job, NULL, "bus: %s: back after %lld s; handling the %zu held records again",
                ls->stage, (long long)(ms / 1000), held);
    return ms;
}

/* Hand the batch to the handler; while records come back RETRY because
 * NATS or Postgres is down, hold them and hand them over again once the
 * outage is over (bus.h "outages"). */
static void handle_batch(loop_state *ls, mb_bus_batch_fn fn, mb_bus_delivery *d, size_t n)
{
    hand_set(d, n, ls->keepalive_ms);
    mb_bus_begin_batch(d, n);
    fn(ls->ctx, d, n);
    char what[MB_BUS_REASON_MAX];
    size_t r;
    bool reprovisioned = false;
    while (!mb_bus_stopping() && (r = retries_first(d, n)) > 0 &&
           (outage_ex(ls, what, sizeof what, &reprovisioned) || reprovisioned)) {
        if (reprovisioned) {
            MB_INFO(mb_bus_delivery_header(&d[0], "Mailbus-Job"), NULL,
                    "bus: %s: streams provisioned again; handling %zu records again",
                    ls->stage, r);
        } else {
            int64_t ms = hold(ls, d, n, r, what);
            if (mb_bus_stopping())
                break;
            if (ls->o->outage_over)
                ls->o->outage_over(ls->o->probe_ctx, d, r, what, ms);
        }
        for (size_t i = 0; i < r; i++) {
            d[i].verdict = MB_BUS_RETRY;
            d[i].retry_delay_ms = 0;
            snprintf(d[i].reason, sizeof d[i].reason, "handler set no verdict");
        }
        hand_set(d, n, ls->keepalive_ms);
        mb_bus_begin_batch(d, r);
        fn(ls->ctx, d, r);
    }
    hand_set(NULL, 0, 0);
}

/* The consumer (or its stream) can vanish under a running loop: nats-server
 * restarted without its JetStream store. Look now and then (and at once
 * after an odd fetch status); if it is gone, provision everything again and
 * subscribe anew. */
static void check_consumer(loop_state *ls, natsMsg **msgs, int batch, bool odd)
{
    int64_t t = mb_mono_ms();
    if (t - ls->last_check_ms < (odd ? 1000 : CONSUMER_CHECK_MS) || !mb_bus_connected(ls->b))
        return;
    ls->last_check_ms = t;
    if (ls->sub) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 2000;
        jsConsumerInfo *ci = NULL;
        jsErrCode jerr = 0;
        natsStatus s = js_GetConsumerInfo(&ci, ls->b->js, ls->stream, ls->stage, &jo, &jerr);
        jsConsumerInfo_Destroy(ci);
        if (s == NATS_OK || !(s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr ||
                              jerr == JSStreamNotFoundErr))
            return; /* there, or the server does not answer yet: nothing to do */
    }
    char why[MB_BUS_PREFIX_MAX + 64];
    snprintf(why, sizeof why, "consumer %s > %s is gone", ls->stream, ls->stage);
    mb_status rc = ls->sub ? mb_bus_reprovision(ls->b, why) : MB_OK;
    if (rc == MB_OK) {
        unsubscribe(ls, msgs, batch);
        rc = subscribe(ls);
    }
    if (rc == MB_OK) {
        MB_INFO(NULL, NULL, "bus: consuming %s > %s again", ls->stream, ls->stage);
    } else {
        if (ls->sub)
            unsubscribe(ls, msgs, batch);
        if (t - ls->last_warn_ms >= 10000) {
            MB_WARN(NULL, NULL, "bus: %s: %s; trying again", ls->stage, mb_err_last());
            ls->last_warn_ms = t;
        }
    }
}

static bool fatal_status(natsStatus s)
{
    return s == NATS_CONNECTION_CLOSED || s == NATS_INVALID_SUBSCRIPTION ||
           s == NATS_INVALID_ARG || s == NATS_NO_MEMORY;
}

mb_status mb_bus_consume(mb_bus *b, const char *stage, const mb_bus_consume_opts *o,
                         mb_bus_batch_fn fn, void *ctx)
{
    mb_bus_consume_opts dflt = {0};
    if (!o)
        o = &dflt;
    if (!stage || !*stage || strlen(stage) > 32)
        return mb_errf(MB_ERR_INVALID, "consume: stage name '%s' must be 1..32 characters",
                       stage ? stage : "(null)");
    char upper[33];
    size_t i = 0;
    for (; stage[i]; i++) {
        char c = stage[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return mb_errf(MB_ERR_INVALID, "consume: stage name '%s': only a-z, 0-9 and _",
                           stage);
        upper[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    upper[i] = '\0';
    int batch = o->batch > 0 ? o->batch : 256;
    int64_t fetch_timeout = o->fetch_timeout_ms > 0 ? o->fetch_timeout_ms : 1000;

    loop_state ls = {0};
    ls.b = b;
    ls.stage = stage;
    ls.o = o;
    ls.ctx = ctx;
    ls.ack_timeout_ms = o->ack_timeout_ms > 0 ? o->ack_timeout_ms : 5000;
    mb_status rc = mb_bus_stream_name(b, upper, ls.stream, sizeof ls.stream);
    if (rc != MB_OK)
        return rc;
    natsMsg **msgs = calloc((size_t)batch, sizeof *msgs);
    mb_bus_delivery *dels = calloc((size_t)batch, sizeof *dels);
    if (!msgs || !dels) {
        free(msgs);
        free(dels);
        return mb_errf(MB_ERR_NOMEM, "consume: batch of %d", batch);
    }
    rc = subscribe(&ls);
    if (rc != MB_OK)
        goto out;
    MB_INFO(NULL, NULL, "bus: consuming %s > %s (batch %d, max_deliver %lld)", ls.stream,
            stage, batch, (long long)ls.max_deliver);
    mb_watch *w = mb_watch_get();
    if (w) {
        snprintf(w->stream, sizeof w->stream, "%s", ls.stream);
        nak_dead_batch(&ls, w);
        clear_poison(&ls, w);
    }

    int64_t idle_since = mb_mono_ms();
    int64_t last_err_log = 0;
    ls.last_check_ms = idle_since;
    while (!mb_bus_stopping()) {
        int n = 0;
        int64_t t0 = mb_mono_ms();
        if (!ls.sub) { /* lost with its consumer: check_consumer subscribes again */
            check_consumer(&ls, msgs, batch, true);
            if (!ls.sub)
                nap(250);
            continue;
        }
        /* After a death during batch-level work, one record at a time, so
         * that a second death names its record (bus/watch.h). */
        int want = w && atomic_load(&w->isolate) > 0 ? 1 : batch;
        natsStatus s = fetch_batch(ls.sub, msgs, want, fetch_timeout, &n);
        if (n == 0) {
            int64_t t1 = mb_mono_ms();
            if (fatal_status(s)) {
                rc = mb_bus_nats_err(s, 0, "fetch from %s > %s", ls.stream, stage);
                break;
            }
            if (s != NATS_OK && s != NATS_TIMEOUT && s != NATS_NOT_FOUND &&
                t1 - last_err_log > 10000) {
                /* Disconnected, etc.: nats.c reconnects; keep trying. */
                mb_bus_nats_err(s, 0, "fetch from %s > %s", ls.stream, stage);
                MB_WARN(NULL, NULL, "bus: %s; retrying", mb_err_last());
                last_err_log = t1;
            }
            /* An early return (stale status, disconnected) must not spin. */
            if (t1 - t0 < 50)
                nap(s == NATS_TIMEOUT || s == NATS_NOT_FOUND ? 50 : 250);
            check_consumer(&ls, msgs, batch, s != NATS_OK && s != NATS_TIMEOUT);
            if (o->idle_return_ms > 0 && mb_mono_ms() - idle_since >= o->idle_return_ms)
                break;
            continue;
        }
        idle_since = mb_mono_ms();
        if (mb_bus_stopping()) {
            /* Stop arrived during the fetch: hand nothing new to the handler. */
            nak_all(msgs, n);
            flush_acks(&ls);
            break;
        }
        for (int k = 0; k < n; k++) {
            fill_delivery(&dels[k], msgs[k]);
            mb_watch_batch_add(k, dels[k].stream_seq, natsMsg_GetReply(msgs[k]));
        }
        handle_batch(&ls, fn, dels, (size_t)n);
        for (int k = 0; k < n; k++)
            settle(&ls, &dels[k]);
        mb_watch_idle();
        if (w && want == 1 && atomic_load(&w->isolate) > 0)
            atomic_fetch_sub(&w->isolate, 1);
        flush_acks(&ls);
        for (int k = 0; k < n; k++) {
            natsMsg_Destroy(msgs[k]);
            msgs[k] = NULL;
        }
    }
    unsubscribe(&ls, msgs, batch);
    if (rc == MB_OK)
        MB_INFO(NULL, NULL, "bus: %s: consume loop ended (%s)", stage,
                mb_bus_stopping() ? "stop requested" : "idle");
out:
    unsubscribe(&ls, msgs, batch); /* only if subscribe failed half-way */
    free(msgs);
    free(dels);
    return rc;
}
