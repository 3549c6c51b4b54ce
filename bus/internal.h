/* internal.h — what the files of bus/ share and nobody else may see: the
 * mb_bus struct (nats.c handles, prefix, async-publish bookkeeping) and the
 * helpers to build messages and translate nats.c errors. */
#ifndef MB_BUS_INTERNAL_H
#define MB_BUS_INTERNAL_H

#include "bus/bus.h"

#include <nats/nats.h>
#include <pthread.h>

#define MB_BUS_PREFIX_MAX 64
#define MB_BUS_SUBJECT_MAX 256

struct mb_bus {
    natsConnection *nc;
    jsCtx *js;
    char prefix[MB_BUS_PREFIX_MAX + 1]; /* "mailbus" */
    char upper[MB_BUS_PREFIX_MAX + 1];  /* "MAILBUS" */
    int64_t req_timeout_ms;

    /* Async publish batch, updated by the PubAck handler (nats.c thread)
     * and read/reset by mb_bus_publish_flush (caller's thread). */
    pthread_mutex_t mu;
    uint64_t async_sent;
    uint64_t async_acked;
    uint64_t async_dups;
    uint64_t async_failed;
    char async_err[256];
};

/* Record a nats.c failure as an mb_errf message: "<what>: <nats text>
 * [<jetstream code>] (<last nats error>)" and return MB_ERR_BUS (or
 * MB_ERR_TIMEOUT for NATS_TIMEOUT). */
mb_status mb_bus_nats_err(natsStatus s, jsErrCode jerr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A message with the standard mailbus headers. */
mb_status mb_bus_msg_new(natsMsg **out, const char *subject, const void *data, size_t len,
                         const mb_pub_headers *h);

/* Publish m synchronously and wait for its PubAck. Does not take ownership. */
mb_status mb_bus_publish_msg(mb_bus *b, natsMsg *m, bool *duplicate);

/* Check a subject we are about to publish to: non-empty, no whitespace,
 * no empty tokens, no wildcards. */
mb_status mb_bus_check_subject(const char *subject);

#endif
