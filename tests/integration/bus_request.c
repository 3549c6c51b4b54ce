/* bus_request.c — test helper, `nats req` for machines without the nats CLI:
 *
 *   mb-test-bus_request SUFFIX JSON [TIMEOUT_MS]
 *
 * sends JSON as a core-NATS request to <MAILBUS_PREFIX>.SUFFIX (e.g.
 * "cmd.dlq.retry" '{"id":12}') and prints the reply and a newline. Exit 0
 * when a reply came (whatever it says), 1 when none did.
 *
 *   mb-test-bus_request --repeat N --every MS SUFFIX JSON [TIMEOUT_MS]
 *
 * sends it N times, MS apart, on one connection, and prints each round
 * trip's time in milliseconds (one per line) instead of the replies
 * (scripts/bench-commands). */
#include "bus/serve.h"
#include "util/clock.h"
#include "util/env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    uint64_t repeat = 0, every = 0;
    if (argc > 5 && !strcmp(argv[1], "--repeat") && !strcmp(argv[3], "--every") &&
        !mb_parse_u64(argv[2], 10000000, &repeat) && !mb_parse_u64(argv[4], 600000, &every)) {
        argc -= 4;
        argv += 4;
    }
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: mb-test-bus_request [--repeat N --every MS] SUFFIX JSON "
                        "[TIMEOUT_MS]\n");
        return 2;
    }
    uint64_t timeout = 10000;
    if (argc == 4 && mb_parse_u64(argv[3], 600000, &timeout) != MB_OK) {
        fprintf(stderr, "bus_request: timeout '%s'\n", argv[3]);
        return 2;
    }
    mb_bus_opts o = {.name = "mb-test-bus_request"};
    mb_bus *bus = NULL;
    mb_buf reply = MB_BUF_INIT;
    mb_status s = mb_bus_connect(&o, &bus);
    for (uint64_t i = 0; !s && repeat && i < repeat; i++) {
        double t0 = now_ms();
        mb_buf_reset(&reply);
        s = mb_bus_request(bus, argv[1], argv[2], strlen(argv[2]), (int64_t)timeout, &reply);
        double took = now_ms() - t0;
        if (!s)
            printf("%.3f\n", took);
        fflush(stdout);
        if (!s && took < (double)every)
            mb_nap_ms((int64_t)((double)every - took));
    }
    if (!s && !repeat) {
        s = mb_bus_request(bus, argv[1], argv[2], strlen(argv[2]), (int64_t)timeout, &reply);
        if (!s)
            printf("%s\n", mb_buf_cstr(&reply));
    }
    if (s)
        fprintf(stderr, "bus_request: %s\n", mb_err_last());
    mb_buf_free(&reply);
    mb_bus_free(bus);
    mb_bus_library_close();
    return s ? 1 : 0;
}
