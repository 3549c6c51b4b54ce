/* cmd_migrate.c — `mailbus migrate`: bring the Postgres schema up to date
 * with the migrations compiled into this binary. Safe to repeat and to run
 * next to stages that migrate at start-up (they share an advisory lock). */
#include "cli/cli.h"

#include "db/db.h"
#include "util/env.h"

#include <stdio.h>
#include <string.h>

static void migrate_usage(FILE *f)
{
    fprintf(f,
            "usage: mailbus migrate [--help]\n"
            "\n"
            "Apply the database migrations this binary carries (%zu, up to version %d) to\n"
            "the database named by MAILBUS_PG_DSN (default %s).\n"
            "Already-applied migrations are skipped; concurrent runs wait for each other.\n"
            "MAILBUS_PG_CONNECT_TIMEOUT (seconds, default 30) bounds the wait for the server.\n",
            mb_migrations_count, mb_migrations[mb_migrations_count - 1].version,
            MB_DEFAULT_PG_DSN);
}

int mb_cli_migrate(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            migrate_usage(stdout);
            return 0;
        }
        fprintf(stderr, "mailbus migrate: unknown argument '%s'\n", argv[i]);
        migrate_usage(stderr);
        return 2;
    }

    const char *dsn = mb_env("MAILBUS_PG_DSN", MB_DEFAULT_PG_DSN);
    mb_db *db = NULL;
    int applied = 0, version = 0;
    mb_status st = mb_db_connect(dsn, &db);
    if (st == MB_OK)
        st = mb_db_migrate(db, &applied);
    if (st == MB_OK)
        st = mb_db_schema_version(db, &version);
    mb_db_free(db);
    if (st != MB_OK) {
        fprintf(stderr, "mailbus migrate: %s\n", mb_err_last());
        return 1;
    }
    if (applied > 0)
        printf("applied %d migration%s (schema version %d)\n", applied, applied == 1 ? "" : "s",
               version);
    else
        printf("schema up to date (version %d)\n", version);
    return 0;
}
