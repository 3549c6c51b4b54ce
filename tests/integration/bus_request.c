/* bus_request.c — test helper, `nats req` for machines without the nats CLI:
 *
 *   mb-test-bus_request SUFFIX JSON [TIMEOUT_MS]
 *
 * sends JSON as a core-NATS request to <MAILBUS_PREFIX>.SUFFIX (e.g.
 * "cmd.dlq.retry" '{"id":12}') and prints the reply and a newline. Exit 0
 * when a reply came (whatever it says), 1 when none did. */
#include "bus/serve.h"
#include "util/env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: mb-test-bus_request SUFFIX JSON [TIMEOUT_MS]\n");
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
    if (!s) s = mb_bus_request(bus, argv[1], argv[2], strlen(argv[2]), (int64_t)timeout, &reply);
    if (!s)
        printf("%s\n", mb_buf_cstr(&reply));
    else
        fprintf(stderr, "bus_request: %s\n", mb_err_last());
    mb_buf_free(&reply);
    mb_bus_free(bus);
    mb_bus_library_close();
    return s ? 1 : 0;
}
