/* serve.h — core-NATS request/reply and plain subscriptions: commands
 * (<p>.cmd.<op>, answered by the scan stage, sent by the CLI or `nats req`)
 * and live event feeds (<p>.events.<job>.>, read by `mailbus watch`).
 * Part of bus/, the only code that talks to NATS. */
#ifndef MB_BUS_SERVE_H
#define MB_BUS_SERVE_H

#include "bus/bus.h"
#include "util/buf.h"

typedef struct mb_bus_sub mb_bus_sub;

/* A request handler: data/len is the request, reply collects the answer
 * (sent when the handler returns; nothing is sent if it stays empty and the
 * request had no reply subject). Runs on a nats.c thread, one message at a
 * time per subscription. */
typedef void (*mb_bus_request_fn)(void *ctx, const char *subject, const void *data, size_t len,
                                  mb_buf *reply);

/* Subscribe to "<p>.<suffix>" (wildcards allowed) in queue group queue (NULL:
 * none), calling fn for each message and replying with what it wrote.
 * *out is freed with mb_bus_unsubscribe. */
mb_status mb_bus_serve(mb_bus *b, const char *suffix, const char *queue, mb_bus_request_fn fn,
                       void *ctx, mb_bus_sub **out);

/* Send a request to "<p>.<suffix>" and wait up to timeout_ms for the reply,
 * appended to reply. While nobody subscribes (a server restarting) the
 * request is sent again until timeout_ms; MB_ERR_TIMEOUT if nobody answered,
 * saying whether nobody was there or a subscriber did not reply. */
mb_status mb_bus_request(mb_bus *b, const char *suffix, const void *data, size_t len,
                         int64_t timeout_ms, mb_buf *reply);

/* Unsubscribe, waiting for a running handler to finish. NULL is fine. */
void mb_bus_unsubscribe(mb_bus_sub *s);

#endif
