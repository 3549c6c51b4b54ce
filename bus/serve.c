/* serve.c — core-NATS request/reply and subscriptions (see serve.h). */
#include "bus/serve.h"

#include "bus/internal.h"

#include <stdlib.h>
#include <string.h>

struct mb_bus_sub {
    mb_bus *bus;
    natsSubscription *sub;
    mb_bus_request_fn fn;
    void *ctx;
};

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
    (void)sub;
    mb_bus_sub *s = closure;
    mb_buf reply = MB_BUF_INIT;
    s->fn(s->ctx, natsMsg_GetSubject(m), natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m),
          &reply);
    const char *to = natsMsg_GetReply(m);
    if (to && *to)
        natsConnection_Publish(nc, to, reply.data ? reply.data : "", (int)reply.len);
    mb_buf_free(&reply);
    natsMsg_Destroy(m);
}

mb_status mb_bus_serve(mb_bus *b, const char *suffix, const char *queue, mb_bus_request_fn fn,
                       void *ctx, mb_bus_sub **out)
{
    char subject[MB_BUS_SUBJECT_MAX];
    mb_status st = mb_bus_subjectf(b, subject, sizeof subject, "%s", suffix);
    if (st)
        return st;
    mb_bus_sub *s = calloc(1, sizeof *s);
    if (!s)
        return mb_errf(MB_ERR_NOMEM, "subscription to %s", subject);
    s->bus = b;
    s->fn = fn;
    s->ctx = ctx;
    natsStatus ns = queue ? natsConnection_QueueSubscribe(&s->sub, b->nc, subject, queue, on_msg, s)
                          : natsConnection_Subscribe(&s->sub, b->nc, subject, on_msg, s);
    if (ns == NATS_OK)
        ns = natsConnection_Flush(b->nc);
    if (ns != NATS_OK) {
        natsSubscription_Destroy(s->sub);
        free(s);
        return mb_bus_nats_err(ns, 0, "subscribe to %s", subject);
    }
    *out = s;
    return MB_OK;
}

mb_status mb_bus_request(mb_bus *b, const char *suffix, const void *data, size_t len,
                         int64_t timeout_ms, mb_buf *reply)
{
    char subject[MB_BUS_SUBJECT_MAX];
    mb_status st = mb_bus_subjectf(b, subject, sizeof subject, "%s", suffix);
    if (st)
        return st;
    /* Nobody subscribed (a scan restarting, or not started yet) means nobody
     * got the command: ask again until the timeout. A timeout with a
     * subscriber is not retried: it may have acted on the command. */
    natsMsg *r = NULL;
    natsStatus ns;
    int64_t deadline = nats_Now() + timeout_ms;
    for (;;) {
        int64_t left = deadline - nats_Now();
        ns = natsConnection_Request(&r, b->nc, subject, data, (int)len, left > 1 ? left : 1);
        if (ns != NATS_NO_RESPONDERS || nats_Now() + 250 >= deadline)
            break;
        nats_Sleep(250);
    }
    if (ns == NATS_NO_RESPONDERS)
        return mb_errf(MB_ERR_TIMEOUT, "no answer on %s within %lld ms: nobody serves commands "
                       "(no mailbus-scan running)", subject, (long long)timeout_ms);
    if (ns == NATS_TIMEOUT)
        return mb_errf(MB_ERR_TIMEOUT, "no answer on %s within %lld ms (mailbus-scan busy or "
                       "stuck?)", subject, (long long)timeout_ms);
    if (ns != NATS_OK)
        return mb_bus_nats_err(ns, 0, "request on %s", subject);
    st = mb_buf_append(reply, natsMsg_GetData(r), (size_t)natsMsg_GetDataLength(r));
    natsMsg_Destroy(r);
    return st;
}

void mb_bus_unsubscribe(mb_bus_sub *s)
{
    if (!s)
        return;
    /* Drain so a handler in flight finishes before the memory goes away
     * (nats.c 3.4.1 can crash on a message for a subscription being destroyed). */
    if (natsSubscription_Drain(s->sub) == NATS_OK)
        natsSubscription_WaitForDrainCompletion(s->sub, 5000);
    natsSubscription_Destroy(s->sub);
    free(s);
}
