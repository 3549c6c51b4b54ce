/* bus_worker.c — test helper for test_bus.sh: one consumer process on the
 * "fetch" durable that records what it handled, with knobs for the retry,
 * dead-letter and shutdown cases.
 *
 *   mb-test-bus_worker --out FILE [--log FILE] [--batch N] [--idle-exit MS]
 *                      [--sleep-ms MS] [--retry-id ID --retry-delay MS [--retries N]]
 *                      [--always-retry-id ID] [--fail-id ID]
 *
 *   --out   appends "<id>" for every record answered DONE (flushed before the
 *           handler returns, i.e. before the ack is sent)
 *   --log   appends "<id> <deliveries> <unix ms>" for every delivery seen
 *   --sleep-ms     slow handler: sleep this long per record (sends InProgress)
 *   --retry-id     answer RETRY with --retry-delay on the first --retries (1)
 *                  deliveries
 *   --always-retry-id  answer RETRY (100 ms) every time
 *   --fail-id      answer FAIL
 * Exits 0 after --idle-exit ms without messages or on SIGTERM/SIGINT. */
#include "bus/bus.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    FILE *out, *log;
    long sleep_ms;
    long retry_id, retry_delay, retries, always_retry_id, fail_id;
    unsigned long handled;
} worker;

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void handle(void *ctx, mb_bus_delivery *d, size_t n)
{
    worker *w = ctx;
    for (size_t i = 0; i < n; i++) {
        char buf[32];
        size_t len = d[i].len < sizeof buf - 1 ? d[i].len : sizeof buf - 1;
        memcpy(buf, d[i].data, len);
        buf[len] = '\0';
        long id = strtol(buf, NULL, 10);
        if (w->log)
            fprintf(w->log, "%ld %llu %lld\n", id, (unsigned long long)d[i].deliveries,
                    wall_ms());
        if (w->sleep_ms > 0) {
            struct timespec ts = {w->sleep_ms / 1000, (w->sleep_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
            mb_bus_in_progress(&d[i]);
        }
        const char *schema = mb_bus_delivery_header(&d[i], "Mailbus-Schema");
        if (!schema || strcmp(schema, "test/1") != 0) {
            mb_bus_fail(&d[i], "missing Mailbus-Schema header");
        } else if (id == w->fail_id) {
            mb_bus_fail(&d[i], "poison record %ld", id);
        } else if (id == w->always_retry_id) {
            mb_bus_retry(&d[i], 100, "transient failure of %ld", id);
        } else if (id == w->retry_id && d[i].deliveries <= (uint64_t)w->retries) {
            mb_bus_retry(&d[i], w->retry_delay, "try %ld again later", id);
        } else {
            fprintf(w->out, "%ld\n", id);
            mb_bus_done(&d[i]);
            w->handled++;
        }
    }
    /* What we claim to have handled is on disk before the acks go out. */
    fflush(w->out);
    if (mb_bus_stopping())
        fprintf(stderr, "bus_worker: finished a batch of %zu after stop was requested\n", n);
    if (w->log)
        fflush(w->log);
}

int main(int argc, char **argv)
{
    mb_log_init("bus_worker");
    worker w = {.retry_id = -1, .always_retry_id = -1, .fail_id = -1, .retry_delay = 1000, .retries = 1};
    const char *out = NULL, *log = NULL;
    mb_bus_consume_opts co = {0};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        long n = strtol(v, NULL, 10);
        if (!strcmp(k, "--out")) out = v;
        else if (!strcmp(k, "--log")) log = v;
        else if (!strcmp(k, "--batch")) co.batch = (int)n;
        else if (!strcmp(k, "--idle-exit")) co.idle_return_ms = n;
        else if (!strcmp(k, "--sleep-ms")) w.sleep_ms = n;
        else if (!strcmp(k, "--retry-id")) w.retry_id = n;
        else if (!strcmp(k, "--retry-delay")) w.retry_delay = n;
        else if (!strcmp(k, "--retries")) w.retries = n;
        else if (!strcmp(k, "--always-retry-id")) w.always_retry_id = n;
        else if (!strcmp(k, "--fail-id")) w.fail_id = n;
        else {
            fprintf(stderr, "bus_worker: unknown option %s\n", k);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "bus_worker: --out FILE is required\n");
        return 2;
    }
    w.out = fopen(out, "a");
    w.log = log ? fopen(log, "a") : NULL;
    if (!w.out || (log && !w.log)) {
        fprintf(stderr, "bus_worker: cannot open output files\n");
        return 1;
    }
    co.fetch_timeout_ms = 500;
    if (mb_bus_install_signal_handlers() != MB_OK)
        return 1;
    mb_bus_opts bo = {.name = "mb-test-bus_worker"};
    mb_bus *b = NULL;
    int rc = 0;
    if (mb_bus_connect(&bo, &b) != MB_OK) {
        fprintf(stderr, "bus_worker: connect: %s\n", mb_err_last());
        rc = 1;
    } else if (mb_bus_consume(b, "fetch", &co, handle, &w) != MB_OK) {
        fprintf(stderr, "bus_worker: consume: %s\n", mb_err_last());
        rc = 1;
    }
    fprintf(stderr, "bus_worker: handled %lu records, exiting %d\n", w.handled, rc);
    mb_bus_free(b);
    mb_bus_library_close();
    fclose(w.out);
    if (w.log)
        fclose(w.log);
    return rc;
}
