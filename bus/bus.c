/* bus.c — the NATS connection (options, callbacks, reconnect policy),
 * subject/stream naming, and publishing (synchronous and async batches). */
#include "bus/internal.h"

#include "util/env.h"
#include "util/log.h"

#include <ctype.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mb_status mb_bus_nats_err(natsStatus s, jsErrCode jerr, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* nats.c's last error adds detail (e.g. the server's JetStream error
     * description) unless it only repeats the status text. */
    const char *last = nats_GetLastError(NULL);
    const char *text = natsStatus_GetText(s);
    bool extra = last && *last && !strstr(last, text);
    char code[32] = "";
    if (jerr)
        snprintf(code, sizeof code, " [jetstream error %d]", (int)jerr);
    /* The server being away (down, restarting, JetStream not ready) is a
     * network condition callers wait out, not a bus error. */
    mb_status st = s == NATS_TIMEOUT ? MB_ERR_TIMEOUT
                   : s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_CLOSED ||
                           s == NATS_CONNECTION_DISCONNECTED || s == NATS_NO_SERVER ||
                           s == NATS_STALE_CONNECTION || s == NATS_IO_ERROR ||
                           s == NATS_NOT_YET_CONNECTED || jerr == JSNotEnabledErr ||
                           jerr == JSNotEnabledForAccountErr || jerr == JSClusterNotAvailErr
                       ? MB_ERR_NET
                       : MB_ERR_BUS;
    mb_errf(st, "%s: %s%s%s%s%s", what, text, code, extra ? " (" : "", extra ? last : "",
            extra ? ")" : "");
    return st;
}

/* ---- connection callbacks: one log line per event ------------------------ */

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    (void)closure;
    MB_ERROR(NULL, NULL, "nats: async error on %s: %s",
             sub ? natsSubscription_GetSubject(sub) : "connection", natsStatus_GetText(err));
}

/* Connection callbacks run later on a nats.c thread, possibly after
 * mb_bus_free: they must not touch the mb_bus (closure is unused). The
 * connection itself is kept alive by nats.c for the callback. */
static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    if (natsConnection_IsClosed(nc))
        return; /* our own close, not an outage */
    MB_WARN(NULL, NULL, "nats: disconnected, reconnecting");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    MB_INFO(NULL, NULL, "nats: reconnected to %s", url);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    MB_DEBUG(NULL, NULL, "nats: connection closed");
}

/* Exponential backoff 250 ms .. 5 s: quick after a blip, gentle on a server
 * that is down for a while. nats.c adds its jitter on top. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    (void)closure;
    int64_t d = 250;
    for (int i = 1; i < attempts && d < 5000; i++)
        d *= 2;
    return d > 5000 ? 5000 : d;
}

/* PubAck (or failure) of one async publish. Runs on a nats.c thread; with
 * an AckHandler the library leaves the message for us to destroy. */
static void on_async_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    mb_bus *b = closure;
    pthread_mutex_lock(&b->mu);
    if (pae) {
        if (b->async_failed++ == 0)
            snprintf(b->async_err, sizeof b->async_err, "%s: %s [%d]",
                     msg ? natsMsg_GetSubject(msg) : "?",
                     pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err),
                     (int)pae->ErrCode);
    } else {
        b->async_acked++;
        if (pa && pa->Duplicate)
            b->async_dups++;
    }
    pthread_mutex_unlock(&b->mu);
    natsMsg_Destroy(msg);
}

static mb_status set_prefix(mb_bus *b, const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > MB_BUS_PREFIX_MAX)
        return mb_errf(MB_ERR_CONFIG, "prefix '%s': must be 1..%d characters", p,
                       MB_BUS_PREFIX_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        /* Stream names may not contain '.', so the prefix is one token that
         * also works upper-cased as a stream name. */
        if (!isalnum(c) && c != '_' && c != '-')
            return mb_errf(MB_ERR_CONFIG,
                           "prefix '%s': only letters, digits, '_' and '-' are allowed", p);
        b->prefix[i] = (char)c;
        b->upper[i] = (char)toupper(c);
    }
    b->prefix[n] = b->upper[n] = '\0';
    return MB_OK;
}

mb_status mb_bus_connect(const mb_bus_opts *o, mb_bus **out)
{
    mb_bus_opts dflt = {0};
    if (!o)
        o = &dflt;
    *out = NULL;
    const char *url = o->url ? o->url : mb_env("MAILBUS_NATS_URL", MB_DEFAULT_NATS_URL);
    const char *prefix = o->prefix ? o->prefix : mb_env("MAILBUS_PREFIX", MB_DEFAULT_PREFIX);
    const char *name = o->name ? o->name : "mailbus";
    int64_t max_pending = o->max_pending_async > 0 ? o->max_pending_async : 1024;

    mb_bus *b = calloc(1, sizeof *b);
    if (!b)
        return mb_errf(MB_ERR_NOMEM, "mb_bus_connect: out of memory");
    pthread_mutex_init(&b->mu, NULL);
    b->req_timeout_ms = o->request_timeout_ms > 0 ? o->request_timeout_ms : 10000;
    mb_status rc = set_prefix(b, prefix);
    if (rc != MB_OK) {
        mb_bus_free(b);
        return rc;
    }

    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s == NATS_OK) s = natsOptions_SetURL(no, url);
    if (s == NATS_OK) s = natsOptions_SetName(no, name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 2000);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(no, on_error, NULL);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(no, on_disconnected, NULL);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(no, on_reconnected, NULL);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(no, on_closed, NULL);
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(no, true);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(no, 250);
    if (s == NATS_OK) s = natsOptions_SetReconnectJitter(no, 100, 1000);
    if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(no, reconnect_delay, NULL);
    /* 32 MB of publishes buffered while reconnecting; beyond that publish
     * calls fail and the stage naks its input instead of blocking forever. */
    if (s == NATS_OK) s = natsOptions_SetReconnectBufSize(no, 32 * 1024 * 1024);
    /* Acks, naks and sync publishes are latency bound (one per record
     * or per batch); the 1 ms flusher delay would cap throughput. Async
     * publishes are bursts, where the extra writes cost little. */
    if (s == NATS_OK) s = natsOptions_SetSendAsap(no, true);
    if (s != NATS_OK) {
        natsOptions_Destroy(no);
        mb_bus_free(b);
        return mb_bus_nats_err(s, 0, "nats options for %s", url);
    }
    s = natsConnection_Connect(&b->nc, no);
    natsOptions_Destroy(no);
    if (s != NATS_OK) {
        mb_bus_nats_err(s, 0, "connect to %s", url);
        mb_bus_free(b);
        return mb_err_wrap(MB_ERR_NET, "MAILBUS_NATS_URL");
    }

    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = b->req_timeout_ms;
    jo.PublishAsync.MaxPending = max_pending;
    jo.PublishAsync.AckHandler = on_async_ack;
    jo.PublishAsync.AckHandlerClosure = b;
    jo.PublishAsync.StallWait = b->req_timeout_ms;
    s = natsConnection_JetStream(&b->js, b->nc, &jo);
    if (s != NATS_OK) {
        mb_bus_free(b);
        return mb_bus_nats_err(s, 0, "jetstream context on %s", url);
    }
    MB_INFO(NULL, NULL, "nats: connected to %s as %s, prefix %s", url, name, b->prefix);
    *out = b;
    return MB_OK;
}

void mb_bus_free(mb_bus *b)
{
    if (!b)
        return;
    if (b->js) {
        /* The PubAck handler's closure is b: make sure no handler can still
         * run once b is freed. Publishes never flushed are abandoned. */
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 2000;
        if (js_PublishAsyncComplete(b->js, &po) != NATS_OK) {
            natsMsgList pending = {0};
            if (js_PublishAsyncGetPendingList(&pending, b->js) == NATS_OK)
                natsMsgList_Destroy(&pending);
            po.MaxWait = 100;
            js_PublishAsyncComplete(b->js, &po);
        }
    }
    if (b->nc)
        natsConnection_FlushTimeout(b->nc, 2000);
    /* The context first: it holds a reference on the connection through its
     * async-reply subscription. */
    if (b->js)
        jsCtx_Destroy(b->js);
    if (b->nc) {
        natsConnection_Close(b->nc);
        natsConnection_Destroy(b->nc);
    }
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void mb_bus_library_close(void)
{
    /* Waits for nats.c's internal threads so their memory is released too;
     * a bounded wait, since a stuck thread must not hang shutdown. */
    nats_CloseAndWait(5000);
}

const char *mb_bus_prefix(const mb_bus *b) { return b->prefix; }

size_t mb_bus_max_payload(mb_bus *b)
{
    int64_t m = natsConnection_GetMaxPayload(b->nc);
    return m > 0 ? (size_t)m : 1024 * 1024; /* nats-server's default */
}
void *mb_bus_js(mb_bus *b) { return b->js; }

mb_status mb_bus_stream_name(const mb_bus *b, const char *suffix, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s_%s", b->upper, suffix);
    if (n < 0 || (size_t)n >= cap)
        return mb_errf(MB_ERR_TOOBIG, "stream name %s_%s: longer than %zu", b->upper, suffix,
                       cap ? cap - 1 : 0);
    return MB_OK;
}

mb_status mb_bus_subjectf(const mb_bus *b, char *out, size_t cap, const char *fmt, ...)
{
    int n = snprintf(out, cap, "%s.", b->prefix);
    if (n < 0 || (size_t)n >= cap)
        return mb_errf(MB_ERR_TOOBIG, "subject: buffer of %zu too small", cap);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(out + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0 || (size_t)m >= cap - (size_t)n)
        return mb_errf(MB_ERR_TOOBIG, "subject '%s...': longer than %zu", out, cap - 1);
    return MB_OK;
}

mb_status mb_bus_check_subject(const char *subject)
{
    if (!subject || !*subject)
        return mb_errf(MB_ERR_INVALID, "subject: empty");
    if (strlen(subject) > MB_BUS_SUBJECT_MAX)
        return mb_errf(MB_ERR_INVALID, "subject '%.40s...': longer than %d", subject,
                       MB_BUS_SUBJECT_MAX);
    char prev = '.';
    for (const char *p = subject; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c == 0x7f || c == '*' || c == '>')
            return mb_errf(MB_ERR_INVALID,
                           "subject '%s': whitespace, control characters and wildcards are "
                           "not allowed", subject);
        if (c == '.' && prev == '.')
            return mb_errf(MB_ERR_INVALID, "subject '%s': empty token", subject);
        prev = (char)c;
    }
    if (prev == '.')
        return mb_errf(MB_ERR_INVALID, "subject '%s': empty token", subject);
    return MB_OK;
}

/* Header values end up on the wire inside the header block: a CR or LF in a
 * value would let it forge headers, so such values are refused. */
static mb_status set_header(natsMsg *m, const char *name, const char *value)
{
    if (!value)
        return MB_OK;
    for (const char *p = value; *p; p++)
        if (*p == '\r' || *p == '\n')
            return mb_errf(MB_ERR_INVALID, "header %s: value contains a line break", name);
    natsStatus s = natsMsgHeader_Set(m, name, value);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, 0, "header %s", name);
    return MB_OK;
}

mb_status mb_bus_msg_new(natsMsg **out, const char *subject, const void *data, size_t len,
                         const mb_pub_headers *h)
{
    *out = NULL;
    mb_status rc = mb_bus_check_subject(subject);
    if (rc != MB_OK)
        return rc;
    if (len > INT_MAX)
        return mb_errf(MB_ERR_TOOBIG, "publish to %s: %zu bytes is too big", subject, len);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, data, (int)len);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, 0, "message for %s", subject);
    mb_pub_headers none = {0};
    if (!h)
        h = &none;
    rc = set_header(m, "Nats-Msg-Id", h->msg_id);
    if (rc == MB_OK) rc = set_header(m, "Mailbus-Schema", h->schema);
    if (rc == MB_OK) rc = set_header(m, "Mailbus-Job", h->job);
    if (rc == MB_OK) rc = set_header(m, "Mailbus-Account", h->account);
    if (rc == MB_OK)
        rc = set_header(m, "Content-Type",
                        h->content_type ? h->content_type : "application/msgpack");
    if (rc != MB_OK) {
        natsMsg_Destroy(m);
        return mb_err_wrap(rc, "publish to %s", subject);
    }
    *out = m;
    return MB_OK;
}

mb_status mb_bus_publish_msg(mb_bus *b, natsMsg *m, bool *duplicate)
{
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = b->req_timeout_ms;
    natsStatus s = js_PublishMsg(&pa, b->js, m, &po, &jerr);
    if (s != NATS_OK)
        return mb_bus_nats_err(s, jerr, "publish to %s", natsMsg_GetSubject(m));
    if (duplicate)
        *duplicate = pa->Duplicate;
    jsPubAck_Destroy(pa);
    return MB_OK;
}

mb_status mb_bus_publish_ex(mb_bus *b, const char *subject, const void *data, size_t len,
                            const mb_pub_headers *h, bool *duplicate)
{
    if (duplicate)
        *duplicate = false;
    natsMsg *m = NULL;
    mb_status rc = mb_bus_msg_new(&m, subject, data, len, h);
    if (rc != MB_OK)
        return rc;
    rc = mb_bus_publish_msg(b, m, duplicate);
    natsMsg_Destroy(m);
    return rc;
}

mb_status mb_bus_publish(mb_bus *b, const char *subject, const void *data, size_t len,
                         const mb_pub_headers *h)
{
    return mb_bus_publish_ex(b, subject, data, len, h, NULL);
}

mb_status mb_bus_publish_async(mb_bus *b, const char *subject, const void *data, size_t len,
                               const mb_pub_headers *h)
{
    natsMsg *m = NULL;
    mb_status rc = mb_bus_msg_new(&m, subject, data, len, h);
    if (rc != MB_OK)
        return rc;
    /* MaxWait makes nats.c report a lost PubAck as a failure through the
     * ack handler instead of leaving it pending forever. */
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = b->req_timeout_ms;
    pthread_mutex_lock(&b->mu);
    b->async_sent++;
    pthread_mutex_unlock(&b->mu);
    natsStatus s = js_PublishMsgAsync(b->js, &m, &po);
    if (s != NATS_OK) {
        /* Not queued: count it as failed so the batch reports it even if
         * the caller ignores this return value. */
        pthread_mutex_lock(&b->mu);
        if (b->async_failed++ == 0)
            snprintf(b->async_err, sizeof b->async_err, "%s: %s", subject,
                     natsStatus_GetText(s));
        pthread_mutex_unlock(&b->mu);
        natsMsg_Destroy(m);
        return mb_bus_nats_err(s, 0, "async publish to %s", subject);
    }
    return MB_OK;
}

mb_status mb_bus_publish_flush(mb_bus *b, int64_t timeout_ms)
{
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout_ms > 0 ? timeout_ms : b->req_timeout_ms;
    natsStatus s = js_PublishAsyncComplete(b->js, &po);
    uint64_t abandoned = 0;
    if (s != NATS_OK) {
        /* Whatever is still pending has no PubAck: take the messages back
         * (late acks for them are then ignored) and count them as failed. */
        natsMsgList pending = {0};
        if (js_PublishAsyncGetPendingList(&pending, b->js) == NATS_OK) {
            abandoned = (uint64_t)pending.Count;
            natsMsgList_Destroy(&pending);
        }
    }
    pthread_mutex_lock(&b->mu);
    uint64_t sent = b->async_sent, failed = b->async_failed + abandoned;
    uint64_t dups = b->async_dups;
    char err[sizeof b->async_err];
    memcpy(err, b->async_err, sizeof err);
    b->async_sent = b->async_acked = b->async_dups = b->async_failed = 0;
    b->async_err[0] = '\0';
    pthread_mutex_unlock(&b->mu);

    if (failed == 0 && s != NATS_OK && s != NATS_TIMEOUT)
        return mb_bus_nats_err(s, 0, "async publish flush");
    if (failed) {
        if (!err[0])
            snprintf(err, sizeof err, "no PubAck within %lld ms", (long long)po.MaxWait);
        return mb_errf(abandoned && failed == abandoned ? MB_ERR_TIMEOUT : MB_ERR_BUS,
                       "async publish: %llu of %llu not stored; first error: %s",
                       (unsigned long long)failed, (unsigned long long)sent, err);
    }
    if (dups)
        MB_DEBUG(NULL, NULL, "async publish: %llu of %llu were duplicates",
                 (unsigned long long)dups, (unsigned long long)sent);
    return MB_OK;
}
