/* common.c — what several subcommands share: connecting to Postgres and NATS
 * from the environment, with errors printed the same way. */
#include "cli/common.h"

#include "util/env.h"

#include <stdio.h>
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
