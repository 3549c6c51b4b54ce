/* common.c — what several subcommands share: connecting to Postgres and NATS
 * from the environment, with errors printed the same way, and sending a
 * command to the scan stage. */
#include "cli/common.h"

#include "bus/serve.h"
#include "schemas/schema.h"
#include "util/env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mb_cli_fail(const char *cmd, mb_status s)
{
    fprintf(stderr, "mailbus %s: %s\n", cmd, *mb_err_last() ? mb_err_last() : mb_status_str(s));
    return 1;
}

mb_status mb_cli_db(mb_db **out)
{
    const char *dsn = mb_env("MAILBUS_PG_DSN", MB_DEFAULT_PG_DSN);
    mb_status s = mb_db_connect(dsn, out);
    if (!s) s = mb_db_migrate(*out, NULL);
    if (s) {
        mb_buf d = MB_BUF_INIT;
        mb_db_dsn_describe(dsn, &d);
        mb_err_wrap(s, "postgres %s", mb_buf_cstr(&d));
        mb_buf_free(&d);
        mb_db_free(*out);
        *out = NULL;
    }
    return s;
}

mb_status mb_cli_bus(mb_bus **out)
{
    mb_bus_opts o = {.name = "mailbus-cli"};
    return mb_bus_connect(&o, out);
}

bool mb_cli_want_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    return false;
}

/* Send a cmd/1 as JSON to <p>.cmd.<op>; on {"ok":true} *reply holds the
 * parsed reply (caller mb_json_free's it). */
mb_status mb_cli_send_cmd(const char *op, const mb_rec_command *c, mb_json **reply)
{
    mb_bus *bus = NULL;
    mb_buf req = MB_BUF_INIT, rep = MB_BUF_INIT;
    char suffix[64];
    snprintf(suffix, sizeof suffix, "cmd.%s", op);
    mb_status s = mb_rec_to_json(&mb_type_command, c, &req);
    if (!s) s = mb_cli_bus(&bus);
    if (!s) s = mb_bus_request(bus, suffix, req.data, req.len, 10000, &rep);
    if (!s) s = mb_json_parse(rep.data ? rep.data : "", rep.len, reply);
    if (!s) {
        const mb_json *ok = mb_json_get(*reply, "ok");
        if (!ok || ok->kind != MB_JSON_BOOL || !ok->boolean) {
            const mb_json *e = mb_json_get(*reply, "error");
            s = mb_errf(MB_ERR_INVALID, "%s", e && e->kind == MB_JSON_STR ? e->str : "refused");
            mb_json_free(*reply);
            *reply = NULL;
        }
    }
    mb_buf_free(&req);
    mb_buf_free(&rep);
    mb_bus_free(bus);
    return s;
}

mb_status mb_cli_split_folders(const char *list, mb_strv *out)
{
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n) {
            char **v = realloc(out->v, (out->n + 1) * sizeof *v);
            if (!v)
                return mb_errf(MB_ERR_NOMEM, "folders");
            out->v = v;
            if (!(out->v[out->n] = strndup(p, n)))
                return mb_errf(MB_ERR_NOMEM, "folders");
            out->n++;
        }
        p += n + (p[n] == ',');
    }
    return MB_OK;
}

mb_status mb_cli_account_exists(mb_db *db, const char *account)
{
    const char *p[] = {account};
    PGresult *r;
    mb_status s = mb_db_query(db, "SELECT 1 FROM accounts WHERE name = $1 OR id::text = $1",
                              1, p, &r);
    if (s)
        return s;
    int n = PQntuples(r);
    PQclear(r);
    return n ? MB_OK : mb_errf(MB_ERR_NOTFOUND, "no account '%s'", account);
}
