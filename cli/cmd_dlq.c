/* cmd_dlq.c — `mailbus dlq list|show|retry|purge`: the dead letter queue,
 * listed without consuming it (a table for people, JSON lines for scripts),
 * one dead letter shown, put back on its stage, or removed. */
#include "cli/cli.h"

#include "bus/dlq.h"
#include "schemas/schema.h"
#include "util/buf.h"
#include "util/env.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mailbus dlq list [--json] [--stage STAGE]\n"
            "       mailbus dlq show ID [--json]\n"
            "       mailbus dlq retry ID | --all [--stage STAGE]\n"
            "       mailbus dlq purge [--older-than AGE] [--stage STAGE]\n"
            "\n"
            "Dead letters are records that exhausted their deliveries, failed for good, or\n"
            "stopped a stage's worker (poison); they wait in the <PREFIX>_DLQ stream.\n"
            "  list    show them without removing them\n"
            "  show    one of them, with its reason and original headers\n"
            "  retry   put it (or every one) back on its stage with its original headers,\n"
            "          and remove it from the DLQ; the stage handles it as the first time\n"
            "  purge   remove them for good (only those older than AGE: 30s, 15m, 12h, 7d)\n"
            "\n"
            "  --json         one JSON object per line: the dead/1 record plus \"dlq_seq\"\n"
            "  --stage STAGE  only dead letters of this stage (fetch, parse, store, avscan)\n"
            "\n"
            "Exit status: 0 done, 1 error, 2 usage, 3 no such dead letter.\n"
            "Environment: MAILBUS_NATS_URL, MAILBUS_PREFIX.\n");
}

typedef struct {
    bool json;
    bool detail;        /* show: headers too */
    size_t count;
    mb_status err;
} list_ctx;

/* One table cell: at most width bytes, line breaks and tabs made spaces. */
static void cell(const char *s, int width, bool last)
{
    char tmp[256];
    size_t n = 0;
    for (; s && s[n] && n < sizeof tmp - 1 && (int)n < width; n++)
        tmp[n] = (s[n] == '\n' || s[n] == '\r' || s[n] == '\t') ? ' ' : s[n];
    tmp[n] = '\0';
    if (last)
        printf("%s\n", tmp);
    else
        printf("%-*s  ", width, tmp);
}

static void header(void)
{
    cell("SEQ", 6, false);
    cell("TIME", 20, false);
    cell("STAGE", 7, false);
    cell("DLV", 4, false);
    cell("SUBJECT", 32, false);
    cell("REASON", 200, true);
}

static int print_one(void *vctx, uint64_t dlq_seq, const mb_rec_dead *rec)
{
    list_ctx *c = vctx;
    c->count++;
    if (c->json) {
        mb_buf out = MB_BUF_INIT;
        c->err = mb_bus_dlq_json(dlq_seq, rec, true, &out);
        if (c->err == MB_OK)
            printf("%s\n", mb_buf_cstr(&out));
        mb_buf_free(&out);
        return c->err != MB_OK;
    }
    if (c->count == 1)
        header();
    char when[32] = "-";
    if (rec->ts_ms > 0) {
        time_t t = (time_t)(rec->ts_ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    char seq[24], dc[24];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)dlq_seq);
    snprintf(dc, sizeof dc, "%llu", (unsigned long long)rec->deliveries);
    cell(seq, 6, false);
    cell(when, 20, false);
    cell(rec->stage ? rec->stage : "-", 7, false);
    cell(dc, 4, false);
    cell(rec->subject ? rec->subject : "-", 32, false);
    cell(rec->reason ? rec->reason : "-", 200, true);
    for (size_t i = 0; c->detail && i < rec->headers.n; i++)
        printf("    %s\n", rec->headers.v[i]);
    if (c->detail)
        printf("    (%zu bytes of %s record)\n", rec->data.n, rec->stage ? rec->stage : "?");
    return 0;
}

int mb_cli_dlq(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    if (strcmp(sub, "list") && strcmp(sub, "show") && strcmp(sub, "retry") && strcmp(sub, "purge")) {
        fprintf(stderr, "mailbus dlq: unknown subcommand '%s'\n", sub);
        usage(stderr);
        return 2;
    }
    list_ctx c = {0};
    const char *stage = NULL;
    bool all = false;
    uint64_t id = 0;
    int64_t before_ms = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && strcmp(sub, "retry") && strcmp(sub, "purge")) {
            c.json = true;
        } else if (!strcmp(argv[i], "--stage") && i + 1 < argc && strcmp(sub, "show")) {
            stage = argv[++i];
        } else if (!strcmp(argv[i], "--all") && !strcmp(sub, "retry")) {
            all = true;
        } else if (!strcmp(argv[i], "--older-than") && i + 1 < argc && !strcmp(sub, "purge")) {
            if (mb_bus_dlq_cutoff(argv[++i], &before_ms) != MB_OK) {
                fprintf(stderr, "mailbus dlq purge: --older-than: %s\n", mb_err_last());
                return 2;
            }
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!id && (!strcmp(sub, "show") || !strcmp(sub, "retry")) &&
                   mb_parse_u64(argv[i], UINT64_MAX, &id) == MB_OK && id > 0) {
            continue;
        } else {
            fprintf(stderr, "mailbus dlq %s: unknown argument '%s'\n", sub, argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if ((!strcmp(sub, "show") && !id) || (!strcmp(sub, "retry") && !id == !all)) {
        fprintf(stderr, "mailbus dlq %s: %s\n", sub,
                !strcmp(sub, "show") ? "which dead letter? (an ID from `mailbus dlq list`)"
                                     : "give one ID or --all");
        return 2;
    }

    mb_bus_opts bo = {.name = "mailbus-cli-dlq"};
    mb_bus *bus = NULL;
    mb_status rc = mb_bus_connect(&bo, &bus);
    if (rc != MB_OK) {
        fprintf(stderr, "mailbus dlq: %s\n", mb_err_last());
        mb_bus_library_close();
        return 1;
    }
    size_t done = 0;
    if (!strcmp(sub, "list")) {
        rc = mb_bus_dlq_list(bus, stage, print_one, &c);
        if (rc == MB_ERR_NOTFOUND) /* nothing provisioned yet: nothing dead yet */
            rc = MB_OK;
    } else if (!strcmp(sub, "show")) {
        c.detail = true;
        rc = mb_bus_dlq_get(bus, id, print_one, &c);
    } else if (id) {
        rc = mb_bus_dlq_retry(bus, id);
        done = rc == MB_OK;
    } else {
        rc = mb_bus_dlq_each(bus, !strcmp(sub, "retry") ? MB_BUS_DLQ_RETRY : MB_BUS_DLQ_PURGE,
                             stage, before_ms, &done);
    }
    if (rc == MB_OK && c.err != MB_OK)
        rc = c.err;
    int code = 0;
    if (rc != MB_OK) {
        fprintf(stderr, "mailbus dlq %s: %s\n", sub, mb_err_last());
        code = rc == MB_ERR_NOTFOUND ? 3 : 1;
    } else if (!strcmp(sub, "list") && c.count == 0 && !c.json) {
        printf("no dead letters\n");
    }
    if (!strcmp(sub, "retry") || !strcmp(sub, "purge"))
        printf("%s %zu dead letter%s\n", !strcmp(sub, "retry") ? "retried" : "purged", done,
               done == 1 ? "" : "s");
    fflush(stdout);
    mb_bus_free(bus);
    mb_bus_library_close();
    return code;
}
