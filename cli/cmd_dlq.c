/* cmd_dlq.c — `mailbus dlq list`: show the dead letter queue without
 * consuming it, as a table for people or JSON lines for scripts. */
#include "cli/cli.h"

#include "bus/bus.h"
#include "schemas/schema.h"
#include "util/buf.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mailbus dlq list [--json] [--stage STAGE]\n"
            "\n"
            "List dead letters (records that exhausted their deliveries or failed for good)\n"
            "from the <PREFIX>_DLQ stream without removing them.\n"
            "\n"
            "  --json         one JSON object per line: the dead/1 record plus \"dlq_seq\"\n"
            "  --stage STAGE  only dead letters of this stage (fetch, parse, store, avscan)\n"
            "\n"
            "Environment: MAILBUS_NATS_URL, MAILBUS_PREFIX.\n");
}

typedef struct {
    bool json;
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
        /* The dead/1 record's own JSON with the DLQ sequence added first. */
        mb_buf rec_json = MB_BUF_INIT, out = MB_BUF_INIT;
        mb_status rc = mb_rec_to_json(&mb_type_dead, rec, &rec_json);
        if (rc == MB_OK && (rec_json.len < 2 || rec_json.data[0] != '{'))
            rc = mb_errf(MB_ERR_INTERNAL, "dead letter %llu: unexpected JSON",
                         (unsigned long long)dlq_seq);
        if (rc == MB_OK)
            rc = mb_buf_printf(&out, "{\"dlq_seq\":%llu%s%s", (unsigned long long)dlq_seq,
                               rec_json.data[1] == '}' ? "" : ",", rec_json.data + 1);
        mb_buf_free(&rec_json);
        if (rc != MB_OK) {
            c->err = rc;
            mb_buf_free(&out);
            return 1;
        }
        printf("%s\n", mb_buf_cstr(&out));
        mb_buf_free(&out);
        return 0;
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
    return 0;
}

int mb_cli_dlq(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "list") != 0) {
        fprintf(stderr, "mailbus dlq: unknown subcommand '%s'\n", argv[1]);
        usage(stderr);
        return 2;
    }
    list_ctx c = {0};
    const char *stage = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            c.json = true;
        } else if (!strcmp(argv[i], "--stage") && i + 1 < argc) {
            stage = argv[++i];
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "mailbus dlq list: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    mb_bus_opts bo = {.name = "mailbus-cli-dlq"};
    mb_bus *bus = NULL;
    mb_status rc = mb_bus_connect(&bo, &bus);
    if (rc != MB_OK) {
        fprintf(stderr, "mailbus dlq: %s\n", mb_err_last());
        mb_bus_library_close();
        return 1;
    }
    rc = mb_bus_dlq_list(bus, stage, print_one, &c);
    if (rc == MB_ERR_NOTFOUND) {
        /* Nothing provisioned yet means nothing dead yet. */
        rc = MB_OK;
    }
    if (rc == MB_OK && c.err != MB_OK)
        rc = c.err;
    int code = 0;
    if (rc != MB_OK) {
        fprintf(stderr, "mailbus dlq: %s\n", mb_err_last());
        code = 1;
    } else if (c.count == 0 && !c.json) {
        printf("no dead letters\n");
    }
    fflush(stdout);
    mb_bus_free(bus);
    mb_bus_library_close();
    return code;
}
