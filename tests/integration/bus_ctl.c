/* bus_ctl.c — test helper for test_bus.sh: provision / destroy the streams of
 * a prefix, publish numbered test records, print a stream's message count.
 *
 *   mb-test-bus_ctl provision [--ack-wait MS] [--max-deliver N] [--no-backoff]
 *   mb-test-bus_ctl destroy
 *   mb-test-bus_ctl count SUFFIX                 prints the count
 *   mb-test-bus_ctl purge SUFFIX                 empties the stream (a lost record)
 *   mb-test-bus_ctl publish --from A --n N [--async] [--flush-every K]
 *                           [--msgid-prefix P] [--account ACCT]
 *       publishes payload "<id>" for id in [A, A+N) to <p>.fetch.<ACCT> with
 *       Nats-Msg-Id "<P>-<id>"; prints "published=N duplicates=D".
 *
 * Prefix and URL come from MAILBUS_PREFIX / MAILBUS_NATS_URL. */
#include "bus/bus.h"
#include "util/env.h"
#include "util/log.h"

#include <nats/nats.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what)
{
    fprintf(stderr, "bus_ctl: %s: %s\n", what, mb_err_last());
    return 1;
}

static long arg_long(int argc, char **argv, const char *name, long dflt)
{
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return strtol(argv[i + 1], NULL, 10);
    return dflt;
}

static const char *arg_str(int argc, char **argv, const char *name, const char *dflt)
{
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return dflt;
}

static int has_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], name))
            return 1;
    return 0;
}

static int publish(mb_bus *b, int argc, char **argv)
{
    long from = arg_long(argc, argv, "--from", 1);
    long n = arg_long(argc, argv, "--n", 1);
    long every = arg_long(argc, argv, "--flush-every", 1000);
    int async = has_flag(argc, argv, "--async");
    const char *pfx = arg_str(argc, argv, "--msgid-prefix", "rec");
    const char *acct = arg_str(argc, argv, "--account", "1");
    char subject[256];
    if (mb_bus_subjectf(b, subject, sizeof subject, "fetch.%s", acct) != MB_OK)
        return fail("subject");
    long dups = 0;
    for (long id = from; id < from + n; id++) {
        char payload[32], msgid[96];
        snprintf(payload, sizeof payload, "%ld", id);
        snprintf(msgid, sizeof msgid, "%s-%ld", pfx, id);
        mb_pub_headers h = {.msg_id = msgid, .schema = "test/1", .job = "7", .account = acct,
                            .content_type = "text/plain"};
        if (async) {
            if (mb_bus_publish_async(b, subject, payload, strlen(payload), &h) != MB_OK)
                return fail("publish_async");
            if ((id - from + 1) % every == 0 && mb_bus_publish_flush(b, 10000) != MB_OK)
                return fail("publish_flush");
        } else {
            bool dup = false;
            if (mb_bus_publish_ex(b, subject, payload, strlen(payload), &h, &dup) != MB_OK)
                return fail("publish");
            dups += dup;
        }
    }
    if (async && mb_bus_publish_flush(b, 10000) != MB_OK)
        return fail("publish_flush");
    printf("published=%ld duplicates=%ld\n", n, dups);
    return 0;
}

int main(int argc, char **argv)
{
    mb_log_init("bus_ctl");
    if (argc < 2) {
        fprintf(stderr, "usage: bus_ctl provision|destroy|count|purge|publish ...\n");
        return 2;
    }
    mb_bus_opts bo = {.name = "mb-test-bus_ctl"};
    mb_bus *b = NULL;
    if (mb_bus_connect(&bo, &b) != MB_OK)
        return fail("connect");
    int rc = 0;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "provision")) {
        mb_bus_provision_opts po = {0};
        po.ack_wait_ms = arg_long(argc, argv, "--ack-wait", 0);
        po.max_deliver = arg_long(argc, argv, "--max-deliver", 0);
        po.no_backoff = has_flag(argc, argv, "--no-backoff");
        if (mb_bus_provision(b, &po) != MB_OK)
            rc = fail("provision");
    } else if (!strcmp(cmd, "destroy")) {
        if (mb_bus_destroy_streams(b) != MB_OK)
            rc = fail("destroy");
    } else if (!strcmp(cmd, "count") && argc >= 3) {
        uint64_t n = 0;
        if (mb_bus_stream_count(b, argv[2], &n) != MB_OK)
            rc = fail("count");
        else
            printf("%" PRIu64 "\n", n);
    } else if (!strcmp(cmd, "purge") && argc >= 3) {
        char stream[128];
        jsErrCode jerr = 0;
        if (mb_bus_stream_name(b, argv[2], stream, sizeof stream) != MB_OK)
            rc = fail("stream name");
        else if (js_PurgeStream(mb_bus_js(b), stream, NULL, &jerr) != NATS_OK) {
            fprintf(stderr, "bus_ctl: purge %s failed (%d)\n", stream, (int)jerr);
            rc = 1;
        }
    } else if (!strcmp(cmd, "publish")) {
        rc = publish(b, argc, argv);
    } else {
        fprintf(stderr, "bus_ctl: unknown command '%s'\n", cmd);
        rc = 2;
    }
    mb_bus_free(b);
    mb_bus_library_close();
    return rc;
}
