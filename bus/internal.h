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

    /* What the last successful mb_bus_provision asked for, so that a lost
     * JetStream store can be provisioned again (health.c). Guarded by mu. */
    bool prov_set;
    unsigned prov_gen; /* successful provisionings so far */
    mb_bus_provision_opts prov;
    int64_t prov_backoff[16]; /* prov.backoff_ms points here */
};

/* Copy o (and its backoff schedule) into b for mb_bus_check; counts the
 * provisioning in prov_gen. */
void mb_bus_remember_provision(mb_bus *b, const mb_bus_provision_opts *o);
/* Provision every stream and consumer again with the remembered options
 * (why goes to the log). MB_ERR_NOTFOUND if this process never provisioned;
 * a server that does not answer is MB_ERR_NET / MB_ERR_TIMEOUT. */
mb_status mb_bus_reprovision(mb_bus *b, const char *why);
/* prov_gen, read under mu. */
unsigned mb_bus_provision_gen(mb_bus *b);

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
