/* clamd_tool.c — drive av/clamd.c from shell tests (mb-test-clamd_tool).
 *
 *   mb-test-clamd_tool [--socket PATH] [--timeout MS] ping
 *   mb-test-clamd_tool [--socket PATH] [--timeout MS] [--chunk N] [--writes MAX] scan FILE
 *
 * scan prints CLEAN, INFECTED <signature> or ERROR <clamd message> and exits
 * 0; any failure to get a verdict prints the error on stderr and exits 1.
 * --writes MAX feeds the file in writes of 1..MAX bytes (fixed pseudo-random
 * sequence); --chunk N caps the INSTREAM chunk size so chunk boundaries fall
 * inside the data. The socket defaults to $MAILBUS_CLAMD_SOCKET. */
#include "av/clamd.h"
#include "util/env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: mb-test-clamd_tool [--socket PATH] [--timeout MS] [--chunk N] "
                    "[--writes MAX] ping|scan FILE\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *sock = mb_env("MAILBUS_CLAMD_SOCKET", "");
    long timeout = 30000, chunk = MB_CLAMD_CHUNK, writes = 0;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--socket") == 0)
            sock = argv[i + 1];
        else if (strcmp(argv[i], "--timeout") == 0)
            timeout = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--chunk") == 0)
            chunk = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--writes") == 0)
            writes = atol(argv[i + 1]);
        else
            return usage();
    }
    if (i >= argc)
        return usage();
    const char *cmd = argv[i];
    mb_clamd *c;
    if (mb_clamd_connect(sock, (int)timeout, &c) != MB_OK) {
        fprintf(stderr, "clamd_tool: %s\n", mb_err_last());
        return 1;
    }
    int rc = 0;
    if (strcmp(cmd, "ping") == 0) {
        if (mb_clamd_ping(c) != MB_OK) {
            fprintf(stderr, "clamd_tool: %s\n", mb_err_last());
            rc = 1;
        } else {
            printf("PONG\n");
        }
    } else if (strcmp(cmd, "scan") == 0 && i + 1 < argc) {
        FILE *f = strcmp(argv[i + 1], "-") == 0 ? stdin : fopen(argv[i + 1], "rb");
        if (!f) {
            perror(argv[i + 1]);
            mb_clamd_free(c);
            return 1;
        }
        mb_clamd_set_chunk_size(c, (size_t)chunk);
        mb_status st = mb_clamd_scan_begin(c);
        static unsigned char buf[1 << 16];
        unsigned seed = 12345;
        size_t n;
        while (st == MB_OK && (n = fread(buf, 1, sizeof buf, f)) > 0) {
            size_t off = 0;
            while (st == MB_OK && off < n) {
                size_t w = n - off;
                if (writes > 0) {
                    seed = seed * 1103515245u + 12345u;
                    size_t k = 1 + (seed >> 16) % (size_t)writes;
                    if (k < w)
                        w = k;
                }
                st = mb_clamd_scan_write(c, buf + off, w);
                off += w;
            }
        }
        if (f != stdin)
            fclose(f);
        mb_av_verdict v;
        char sig[256];
        if (st == MB_OK)
            st = mb_clamd_scan_end(c, &v, sig, sizeof sig);
        if (st != MB_OK) {
            fprintf(stderr, "clamd_tool: %s: %s\n", mb_status_str(st), mb_err_last());
            rc = 1;
        } else if (v == MB_AV_CLEAN) {
            printf("CLEAN\n");
        } else {
            printf("%s %s\n", mb_av_verdict_str(v), sig);
        }
    } else {
        rc = usage();
    }
    mb_clamd_free(c);
    return rc;
}
