/* cmd_decode.c — `mailbus decode` (msgpack record on stdin -> JSON on stdout,
 * usable as `nats stream view STREAM --translate 'mailbus decode'`) and
 * `mailbus encode SCHEMA` (JSON on stdin -> msgpack on stdout, for tests and
 * for publishing hand-written records). */
#include "cli/cli.h"
#include "schemas/schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read all of stdin, at most max bytes; one byte more means "too big". */
static int read_stdin(const char *cmd, size_t max, mb_buf *in)
{
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        if (in->len + n > max) {
            fprintf(stderr, "mailbus %s: input exceeds %zu bytes\n", cmd, max);
            return 1;
        }
        if (mb_buf_append(in, chunk, n)) {
            fprintf(stderr, "mailbus %s: out of memory\n", cmd);
            return 1;
        }
    }
    if (ferror(stdin)) {
        fprintf(stderr, "mailbus %s: cannot read stdin\n", cmd);
        return 1;
    }
    return 0;
}

static int write_out(const char *cmd, const void *p, size_t n)
{
    if (fwrite(p, 1, n, stdout) != n || fflush(stdout)) {
        fprintf(stderr, "mailbus %s: cannot write stdout\n", cmd);
        return 1;
    }
    return 0;
}

int mb_cli_decode(int argc, char **argv)
{
    bool pretty = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: mailbus decode [--pretty]\n\n"
                   "Reads one msgpack record (any schema: cmd/1, fetch/1, parse/1, store/1,\n"
                   "avscan/1, event/1, dead/1) on stdin and prints it as JSON on one line\n"
                   "(indented with --pretty). Bytes fields are base64. Exit 1 if the input\n"
                   "is not a valid record. Works as:\n"
                   "  nats stream view MAILBUS_PARSE --translate 'mailbus decode'\n");
            return 0;
        }
        if (!strcmp(argv[i], "--pretty")) {
            pretty = true;
            continue;
        }
        fprintf(stderr, "mailbus decode: unknown argument '%s' (try --help)\n", argv[i]);
        return 2;
    }
    mb_buf in = MB_BUF_INIT, out = MB_BUF_INIT;
    int rc = read_stdin("decode", MB_REC_MAX_BYTES, &in);
    const mb_type *t = NULL;
    void *rec = NULL;
    if (!rc) {
        mb_status st = mb_rec_decode_any(in.data ? in.data : "", in.len, &t, &rec);
        if (!st) st = pretty ? mb_rec_to_json_pretty(t, rec, &out) : mb_rec_to_json(t, rec, &out);
        if (!st) st = mb_buf_putc(&out, '\n');
        if (st) {
            fprintf(stderr, "mailbus decode: %s\n", mb_err_last());
            rc = 1;
        } else {
            rc = write_out("decode", out.data, out.len);
        }
    }
    if (rec) {
        mb_rec_free(t, rec);
        free(rec);
    }
    mb_buf_free(&in);
    mb_buf_free(&out);
    return rc;
}

int mb_cli_encode(int argc, char **argv)
{
    const char *schema = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: mailbus encode SCHEMA\n\n"
                   "Reads one JSON object on stdin (long names as printed by `mailbus decode`,\n"
                   "or the short msgpack keys) and writes the msgpack record of SCHEMA\n"
                   "(cmd/1, fetch/1, parse/1, store/1, avscan/1, event/1, dead/1) to stdout.\n");
            return 0;
        }
        if (schema) {
            fprintf(stderr, "mailbus encode: unexpected argument '%s' (try --help)\n", argv[i]);
            return 2;
        }
        schema = argv[i];
    }
    if (!schema) {
        fprintf(stderr, "mailbus encode: missing SCHEMA (try --help)\n");
        return 2;
    }
    const mb_type *t = mb_type_by_schema(schema);
    if (!t) {
        fprintf(stderr, "mailbus encode: unknown schema '%s'\n", schema);
        return 2;
    }
    mb_buf in = MB_BUF_INIT, out = MB_BUF_INIT;
    void *rec = calloc(1, t->size);
    int rc = rec ? read_stdin("encode", MB_REC_MAX_BYTES, &in) : 1;
    if (!rc) {
        mb_status st = mb_rec_from_json(t, mb_buf_cstr(&in), in.len, rec);
        if (!st) st = mb_rec_encode(t, rec, &out);
        if (st) {
            fprintf(stderr, "mailbus encode: %s\n", mb_err_last());
            rc = 1;
        } else {
            rc = write_out("encode", out.data, out.len);
        }
    }
    if (rec) {
        mb_rec_free(t, rec);
        free(rec);
    }
    mb_buf_free(&in);
    mb_buf_free(&out);
    return rc;
}
