/* bus.h — the one place that talks to NATS JetStream.
 *
 * Everything a stage needs from the bus: connect, provision the streams and
 * durable consumers, publish records (synchronously or in acked async
 * batches), run the batch consume loop with retries / dead-lettering /
 * graceful shutdown, and read the dead letter queue.
 *
 * Subjects and streams, for prefix p (default "mailbus") and P = upper(p):
 *   <P>_FETCH  <p>.fetch.>   work queue, consumer "fetch"   (records on <p>.fetch.<account>)
 *   <P>_PARSE  <p>.parse.>   work queue, consumer "parse"
 *   <P>_STORE  <p>.store.>   work queue, consumer "store"
 *   <P>_AVSCAN <p>.avscan.>  work queue, consumer "avscan"
 *   <P>_EVENTS <p>.events.>  limits, max age                (<p>.events.<job>.<kind>)
 *   <P>_DLQ    <p>.dlq.>     limits                         (<p>.dlq.<stage>)
 *
 * Written for nats-server 2.9 and nats.c 3.4.1; bus/README.md lists the
 * server and library behaviours this module designs around.
 *
 * Threads: an mb_bus may be shared by threads for mb_bus_publish and
 * mb_bus_consume (each consume call has its own subscription), but async
 * publishing (mb_bus_publish_async + mb_bus_publish_flush) tracks one batch
 * per mb_bus: use one mb_bus per thread that publishes asynchronously. */
#ifndef MB_BUS_H
#define MB_BUS_H

#include "schemas/records.h"
#include "util/mb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mb_bus mb_bus;

/* ---- connection ---------------------------------------------------------- */

typedef struct {
    const char *url;          /* NULL: $MAILBUS_NATS_URL or MB_DEFAULT_NATS_URL */
    const char *prefix;       /* NULL: $MAILBUS_PREFIX or "mailbus" */
    const char *name;         /* connection name shown by the server; NULL: "mailbus" */
    int64_t connect_timeout_ms; /* 0: 2000 */
    int64_t max_pending_async;  /* PublishAsync.MaxPending; 0: 1024 */
    int64_t request_timeout_ms; /* JetStream API / PubAck wait; 0: 10000 */
} mb_bus_opts;

/* Connect (reconnecting forever once connected). o may be NULL. */
mb_status mb_bus_connect(const mb_bus_opts *o, mb_bus **out);
/* Flushes, closes and frees; NULL is fine. Pending async publishes that were
 * never flushed are abandoned (the caller did not wait for their acks). */
void mb_bus_free(mb_bus *b);
/* Release nats.c's global state (threads, memory). Call once at process exit
 * after every mb_bus is freed; needed for a clean valgrind run. */
void mb_bus_library_close(void);

const char *mb_bus_prefix(const mb_bus *b);      /* "mailbus" */
/* The largest message the server takes (max_payload), headers included. */
size_t mb_bus_max_payload(mb_bus *b);
/* Stream name for a suffix: "FETCH" -> "MAILBUS_FETCH". Returns MB_ERR_TOOBIG
 * if cap is too small. */
mb_status mb_bus_stream_name(const mb_bus *b, const char *suffix, char *out, size_t cap);
/* "<p>." followed by the formatted text: mb_bus_subjectf(b, s, sizeof s,
 * "fetch.%llu", acct) -> "mailbus.fetch.42". MB_ERR_TOOBIG if truncated. */
mb_status mb_bus_subjectf(const mb_bus *b, char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The nats.c JetStream context (jsCtx *), for code that must go further than
 * this API. Owned by the bus. */
void *mb_bus_js(mb_bus *b);

/* ---- provisioning -------------------------------------------------------- */

typedef struct {
    /* Work consumers. On nats-server 2.9 a BackOff overrides AckWait with
     * BackOff[0], so the first backoff entry IS the ack wait. */
    int64_t ack_wait_ms;        /* 0: 60000 (== backoff[0] when a backoff is used) */
    int64_t max_deliver;        /* 0: 8; must be > backoff_len */
    const int64_t *backoff_ms;  /* NULL: ack_wait x {1, 2, 4, 8, 16} */
    int backoff_len;
    bool no_backoff;            /* plain AckWait redelivery, no schedule */
    int64_t max_ack_pending;    /* 0: 4096 (>= copies x batch) */
    /* Streams. */
    int64_t duplicate_window_ms; /* 0: 120000 */
    int64_t events_max_age_ms;   /* 0: 7 days */
    int64_t dlq_max_age_ms;      /* 0: 30 days */
} mb_bus_provision_opts;

/* Create or update every stream and consumer above, then read each config
 * back and fail (MB_ERR_BUS naming the stream/consumer and field) if the
 * server's config differs from what was asked. Idempotent. o may be NULL. */
mb_status mb_bus_provision(mb_bus *b, const mb_bus_provision_opts *o);
/* Delete every stream of this prefix (tests). Missing streams are fine. */
mb_status mb_bus_destroy_streams(mb_bus *b);
/* Whether stream <P>_<stream_suffix> holds any record on subject
 * "<p>.<subject_suffix>" ("FETCH", "fetch.42"). */
mb_status mb_bus_has_records(mb_bus *b, const char *stream_suffix, const char *subject_suffix,
                             bool *has);
/* Messages currently in stream <P>_<suffix> ("FETCH", "DLQ", ...). */
mb_status mb_bus_stream_count(mb_bus *b, const char *stream_suffix, uint64_t *msgs);

/* ---- publish ------------------------------------------------------------- */

/* Headers every record carries (readable in `nats stream view`). NULL fields
 * are omitted. */
typedef struct {
    const char *msg_id;       /* Nats-Msg-Id: deterministic, so republish dedups */
    const char *schema;       /* Mailbus-Schema: "parse/1" */
    const char *job;          /* Mailbus-Job */
    const char *account;      /* Mailbus-Account */
    const char *content_type; /* Content-Type; NULL: application/msgpack */
} mb_pub_headers;

/* Publish and wait for the PubAck. h may be NULL. */
mb_status mb_bus_publish(mb_bus *b, const char *subject, const void *data, size_t len,
                         const mb_pub_headers *h);
/* Same; *duplicate (if not NULL) is set when the server dropped the message
 * as a duplicate of an earlier Nats-Msg-Id within the duplicate window. */
mb_status mb_bus_publish_ex(mb_bus *b, const char *subject, const void *data, size_t len,
                            const mb_pub_headers *h, bool *duplicate);
/* Queue a publish; the PubAck is collected later. Blocks (up to the request
 * timeout) when max_pending_async publishes are in flight. */
mb_status mb_bus_publish_async(mb_bus *b, const char *subject, const void *data, size_t len,
                               const mb_pub_headers *h);
/* Wait until every async publish since the last flush is acked. MB_OK only
 * if all were stored (duplicates count as stored); otherwise MB_ERR_BUS or
 * MB_ERR_TIMEOUT with how many failed and the first error. Either way the
 * batch is over: the next async publish starts a new one. A stage must not
 * ack its input unless this returned MB_OK. */
mb_status mb_bus_publish_flush(mb_bus *b, int64_t timeout_ms);

/* ---- consume ------------------------------------------------------------- */

typedef enum { MB_BUS_DONE, MB_BUS_RETRY, MB_BUS_FAIL } mb_bus_verdict;

#define MB_BUS_REASON_MAX 512

/* One fetched message. The handler reads the first block and fills in the
 * verdict block; everything it points to is valid only during the handler. */
typedef struct {
    const char *subject;
    const void *data;
    size_t len;
    uint64_t deliveries;    /* 1 on first delivery */
    uint64_t stream_seq;
    int64_t ts_ms;          /* when it was published (unix ms) */
    /* Set by the handler. Initialised to RETRY "handler set no verdict". */
    mb_bus_verdict verdict;
    int64_t retry_delay_ms; /* RETRY: redeliver after this (0: at once) */
    char reason[MB_BUS_REASON_MAX]; /* RETRY/FAIL: why, goes to the DLQ */
    /* private */
    void *msg_;             /* natsMsg * */
} mb_bus_delivery;

/* Header value of this delivery, or NULL. */
const char *mb_bus_delivery_header(const mb_bus_delivery *d, const char *name);
/* Verdict helpers (the fields may also be set directly). */
void mb_bus_done(mb_bus_delivery *d);
void mb_bus_retry(mb_bus_delivery *d, int64_t delay_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mb_bus_fail(mb_bus_delivery *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Tell the server this delivery is still being worked on (resets AckWait).
 * Call from the handler during long work; it also counts as progress for
 * the supervisor's watchdog. */
void mb_bus_in_progress(mb_bus_delivery *d);
/* The calling thread starts work on d alone: if the process dies or this
 * thread spins before its next begin, d is the record that did it (see
 * bus/watch.h). Handlers that work record by record call this for each;
 * the consume loop itself marks the whole batch as in hand. */
void mb_bus_begin(const mb_bus_delivery *d);
/* The calling thread works on the batch d[0..n) as a whole again. */
void mb_bus_begin_batch(const mb_bus_delivery *d, size_t n);

typedef void (*mb_bus_batch_fn)(void *ctx, mb_bus_delivery *d, size_t n);
/* Called (in the consuming thread) for every record the loop gives up on,
 * before it is dead-lettered: a FAIL verdict, a RETRY on the last allowed
 * delivery, a poison record left by the supervisor. The stage settles the
 * record's messages on their job here (failed, with the reason), so that a
 * job always ends. d->msg_ headers are readable; the verdict fields are not
 * used. */
typedef void (*mb_bus_give_up_fn)(void *ctx, const mb_bus_delivery *d, const char *reason);

typedef struct {
    int batch;                /* max messages per handler call; 0: 256 */
    int64_t fetch_timeout_ms; /* 0: 1000; also bounds the reaction to stop */
    int64_t ack_timeout_ms;   /* wait for acks to reach the server; 0: 5000 */
    int64_t idle_return_ms;   /* return MB_OK after this long without
                                 messages; 0: never (until mb_bus_stop) */
    mb_bus_give_up_fn give_up; /* may be NULL; gets the consume ctx */
    /* Outages (see "outages" below). probe: is what the handler needs
     * besides NATS there? MB_ERR_NET / MB_ERR_TIMEOUT mean down. outage_over:
     * called once after an outage that held records, with those records, what
     * was down and for how long (the stage records it on their jobs). Both
     * get probe_ctx; either may be NULL. */
    mb_status (*probe)(void *probe_ctx);
    void (*outage_over)(void *probe_ctx, const mb_bus_delivery *d, size_t n, const char *what,
                        int64_t ms);
    void *probe_ctx;
} mb_bus_consume_opts;

/* Pull from the durable consumer of the stage's work stream ("fetch",
 * "parse", "store", "avscan") and hand batches to fn until mb_bus_stop().
 * After fn returns: DONE -> ack; RETRY -> nak with delay, or dead-letter when
 * this was the last allowed delivery; FAIL -> dead-letter (published to
 * <p>.dlq.<stage> and acked only after the DLQ PubAck). If the DLQ publish
 * fails the message is nak'ed instead, never dropped. On stop: the batch in
 * hand is finished, anything fetched but not handled is nak'ed, the
 * subscription is drained, and MB_OK is returned. o may be NULL.
 * Before the first fetch, poison records the supervisor left (bus/watch.h)
 * are read from the stream, given up on and deleted from it. */
mb_status mb_bus_consume(mb_bus *b, const char *stage, const mb_bus_consume_opts *o,
                         mb_bus_batch_fn fn, void *ctx);

/* Ask every consume loop in the process to stop. Async-signal-safe. */
void mb_bus_stop(void);
/* True once mb_bus_stop() was called (handlers may cut long work short). */
bool mb_bus_stopping(void);
/* SIGTERM and SIGINT call mb_bus_stop(). */
mb_status mb_bus_install_signal_handlers(void);

/* ---- outages ------------------------------------------------------------- *
 *
 * A NATS or Postgres outage costs no delivery and no dead letter:
 *  - records whose handler answered RETRY while NATS is down (mb_bus_check)
 *    or the consume probe says Postgres is down are not nak'ed: the loop
 *    keeps them in hand (InProgress heartbeats, so AckWait never runs out),
 *    checks every second, logs one line a minute, and hands them to the
 *    handler again once everything answers;
 *  - while a handler waits for Postgres to come back (db.h wait hook) the
 *    records in hand are kept alive the same way (mb_bus_keepalive);
 *  - a consume loop whose stream or consumer is gone (nats-server restarted
 *    without its JetStream store) provisions everything again and goes on. */

/* MB_OK when connected and every stream of this prefix exists. A missing
 * stream is provisioned again (all streams and consumers, with the options
 * of this process's last mb_bus_provision) and then MB_OK. MB_ERR_NET or
 * MB_ERR_TIMEOUT when NATS or JetStream does not answer. */
mb_status mb_bus_check(mb_bus *b);
/* The connection is up (not reconnecting, not closed). */
bool mb_bus_connected(mb_bus *b);
/* InProgress for every record the calling thread's consume loop has in hand,
 * at most every quarter AckWait; nothing outside a handler. Safe to call
 * often, from code that waits on something else. */
void mb_bus_keepalive(void);

/* ---- dead letters -------------------------------------------------------- */

/* Called for each dead letter in order; rec is valid during the call only.
 * Return non-zero to stop early. */
typedef int (*mb_bus_dlq_fn)(void *ctx, uint64_t dlq_seq, const mb_rec_dead *rec);

/* Read the DLQ stream without consuming it (direct get). stage NULL: all. */
mb_status mb_bus_dlq_list(mb_bus *b, const char *stage, mb_bus_dlq_fn fn, void *ctx);
/* Dead letter dlq_seq to fn; MB_ERR_NOTFOUND if there is none. */
mb_status mb_bus_dlq_get(mb_bus *b, uint64_t dlq_seq, mb_bus_dlq_fn fn, void *ctx);
/* Publish dead letter dlq_seq again on its original subject with its
 * original headers (and a Nats-Msg-Id of its own, so the duplicate window
 * does not drop it), then remove it from the DLQ: its stage handles it as
 * it would have the first time. */
mb_status mb_bus_dlq_retry(mb_bus *b, uint64_t dlq_seq);
/* Remove dead letter dlq_seq for good. */
mb_status mb_bus_dlq_delete(mb_bus *b, uint64_t dlq_seq);

#endif
