/* bus_roundtrip.c — one process through the whole bus API, for valgrind
 * (test_bus_valgrind.sh): connect, provision, publish (sync and async),
 * consume with acks and one dead letter, list the DLQ, stop via
 * mb_bus_stop, delete the streams, free everything and close nats.c.
 * Exits 0 only if every step gave the expected outcome. */
#include "bus/bus.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POISON 3

static int failures;

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            fprintf(stderr, "bus_roundtrip: FAIL: " __VA_ARGS__); \
            fprintf(stderr, " (%s)\n", mb_err_last());            \
            failures++;                                           \
        }                                                         \
    } while (0)

typedef struct {
    int handled, failed, batches;
    bool stop_after_first;
} counts;

static void handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    counts *c = ctx;
    c->batches++;
    for (size_t i = 0; i < n; i++) {
        char buf[16] = {0};
        memcpy(buf, d[i].data, d[i].len < 15 ? d[i].len : 15);
        const char *acct = mb_bus_delivery_header(&d[i], "Mailbus-Account");
        if (atoi(buf) == POISON) {
            mb_bus_fail(&d[i], "poison %s", buf);
            c->failed++;
        } else if (!acct || strcmp(acct, "9") != 0) {
            mb_bus_retry(&d[i], 10, "bad account header");
        } else {
            mb_bus_in_progress(&d[i]);
            mb_bus_done(&d[i]);
            c->handled++;
        }
    }
    if (c->stop_after_first)
        mb_bus_stop();
}

static int dlq_cb(void *ctx, uint64_t seq, const mb_rec_dead *rec)
{
    int *n = ctx;
    (*n)++;
    CHECK(seq >= 1 && rec->reason && !strcmp(rec->reason, "poison 3"),
          "dead letter %llu has reason '%s'", (unsigned long long)seq,
          rec->reason ? rec->reason : "(null)");
    CHECK(rec->data.n == 1 && rec->data.p[0] == '3', "dead letter keeps the payload");
    CHECK(rec->headers.n >= 4, "dead letter keeps the headers (%zu)", rec->headers.n);
    return 0;
}

int main(void)
{
    mb_log_init("bus_roundtrip");
    mb_bus *b = NULL;
    mb_bus_opts bo = {.name = "mb-test-bus_roundtrip"};
    if (mb_bus_connect(&bo, &b) != MB_OK) {
        fprintf(stderr, "bus_roundtrip: connect: %s\n", mb_err_last());
        mb_bus_library_close();
        return 1;
    }
    mb_bus_provision_opts po = {.ack_wait_ms = 2000, .max_deliver = 2, .no_backoff = true};
    CHECK(mb_bus_provision(b, &po) == MB_OK, "provision");

    char subject[128];
    CHECK(mb_bus_subjectf(b, subject, sizeof subject, "fetch.%d", 9) == MB_OK, "subject");
    for (int i = 1; i <= 20; i++) {
        char payload[16], id[32];
        snprintf(payload, sizeof payload, "%d", i);
        snprintf(id, sizeof id, "rt-%d", i);
        mb_pub_headers h = {.msg_id = id, .schema = "test/1", .account = "9"};
        if (i <= 10)
            CHECK(mb_bus_publish(b, subject, payload, strlen(payload), &h) == MB_OK, "publish");
        else
            CHECK(mb_bus_publish_async(b, subject, payload, strlen(payload), &h) == MB_OK,
                  "publish_async");
    }
    CHECK(mb_bus_publish_flush(b, 5000) == MB_OK, "publish_flush");
    bool dup = false;
    mb_pub_headers again = {.msg_id = "rt-1", .schema = "test/1", .account = "9"};
    CHECK(mb_bus_publish_ex(b, subject, "1", 1, &again, &dup) == MB_OK && dup,
          "republish is a duplicate");
    /* A subject with a wildcard is refused before it reaches the server. */
    CHECK(mb_bus_publish(b, "x.*", "1", 1, NULL) == MB_ERR_INVALID, "wildcard subject refused");

    counts c = {0};
    mb_bus_consume_opts co = {.batch = 8, .fetch_timeout_ms = 300, .idle_return_ms = 800};
    CHECK(mb_bus_consume(b, "fetch", &co, handle, &c) == MB_OK, "consume");
    CHECK(c.handled == 19 && c.failed == 1, "handled %d failed %d, want 19 and 1", c.handled,
          c.failed);
    uint64_t n = 99;
    CHECK(mb_bus_stream_count(b, "FETCH", &n) == MB_OK && n == 0, "work stream holds %llu",
          (unsigned long long)n);
    CHECK(mb_bus_stream_count(b, "DLQ", &n) == MB_OK && n == 1, "DLQ holds %llu",
          (unsigned long long)n);
    int listed = 0;
    CHECK(mb_bus_dlq_list(b, NULL, dlq_cb, &listed) == MB_OK && listed == 1, "dlq list (%d)",
          listed);

    /* Shutdown path: the handler asks to stop; the loop returns MB_OK and
     * leaves the rest in the stream. */
    for (int i = 100; i < 110; i++) {
        char payload[16], id[32];
        snprintf(payload, sizeof payload, "%d", i);
        snprintf(id, sizeof id, "rt-%d", i);
        mb_pub_headers h = {.msg_id = id, .schema = "test/1", .account = "9"};
        CHECK(mb_bus_publish_async(b, subject, payload, strlen(payload), &h) == MB_OK,
              "publish_async");
    }
    CHECK(mb_bus_publish_flush(b, 5000) == MB_OK, "publish_flush");
    counts s = {.stop_after_first = true};
    mb_bus_consume_opts co2 = {.batch = 4, .fetch_timeout_ms = 300};
    CHECK(mb_bus_consume(b, "fetch", &co2, handle, &s) == MB_OK, "consume until stop");
    CHECK(s.batches == 1 && s.handled == 4, "stopped after %d batches, %d handled", s.batches,
          s.handled);
    CHECK(mb_bus_stream_count(b, "FETCH", &n) == MB_OK && n == 6, "after stop %llu left, want 6",
          (unsigned long long)n);

    CHECK(mb_bus_destroy_streams(b) == MB_OK, "destroy streams");
    mb_bus_free(b);
    mb_bus_library_close();
    if (failures)
        return 1;
    printf("bus_roundtrip: ok\n");
    return 0;
}
