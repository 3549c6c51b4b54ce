/* cmd_sync.c — `mailbus sync ACCOUNT [--folders F1,F2] [--wait]` (the
 * command <p>.cmd.sync.start, JSON, as `nats req` sends it) and `mailbus
 * history ACCOUNT [--json] [--limit N]` (sync_history, written when a job
 * ends: migration 0006). */
#include "cli/cli.h"
#include "cli/common.h"
#include "schemas/schema.h"
#include "stages/common/stage.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char sync_usage[] =
    "usage: mailbus sync ACCOUNT [--folders F1,F2,...] [--wait]\n\n"
    "Starts a sync of the account: what changed on the server since the last completed\n"
    "import or sync (new messages, flags, deletions, moves, folders created, renamed or\n"
    "deleted, a UIDVALIDITY reset) reaches Postgres and the blob store. Prints the job id.\n"
    "Refused while the account has another active job (an import or a sync).\n"
    "  --folders  only these folders (names as the server or `mailbus messages` shows\n"
    "             them); folders deleted on the server are noticed only without it\n"
    "  --wait     then wait for the job: exit 0 when it completed, 1 if it failed or\n"
    "             was cancelled (the reason on stderr)\n";

/* Poll the job's row until it ends. */
static int wait_job(uint64_t job)
{
    mb_db *db;
    mb_status s = mb_cli_db(&db);
    if (s)
        return mb_cli_fail("sync", s);
    char j[24];
    const char *p[] = {mb_u64s(j, job)};
    int rc = -1;
    while (rc < 0) {
        PGresult *r;
        if ((s = mb_db_query(db, "SELECT status, coalesce(error, '') FROM sync_jobs "
                                 "WHERE id = $1::bigint", 1, p, &r))) {
            rc = mb_cli_fail("sync", s);
            break;
        }
        if (PQntuples(r) != 1) {
            fprintf(stderr, "mailbus sync: job %s is gone\n", j);
            rc = 1;
        } else if (!strcmp(PQgetvalue(r, 0, 0), "completed")) {
            rc = 0;
        } else if (!strcmp(PQgetvalue(r, 0, 0), "failed") ||
                   !strcmp(PQgetvalue(r, 0, 0), "cancelled")) {
            fprintf(stderr, "mailbus sync: job %s %s: %s\n", j, PQgetvalue(r, 0, 0),
                    PQgetvalue(r, 0, 1));
            rc = 1;
        }
        PQclear(r);
        if (rc < 0) {
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    mb_db_free(db);
    return rc;
}

int mb_cli_sync(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        fputs(sync_usage, stdout);
        return 0;
    }
    mb_rec_command c = {0};
    bool wait = false;
    mb_status s = MB_OK;
    for (int i = 1; i < argc && !s; i++) {
        if (!strcmp(argv[i], "--folders") && i + 1 < argc)
            s = mb_cli_split_folders(argv[++i], &c.folders);
        else if (!strcmp(argv[i], "--wait"))
            wait = true;
        else if (argv[i][0] != '-' && !c.account)
            c.account = strdup(argv[i]);
        else {
            fprintf(stderr, "mailbus sync: unexpected '%s'\n%s", argv[i], sync_usage);
            mb_rec_free(&mb_type_command, &c);
            return 2;
        }
    }
    if (!c.account) {
        fprintf(stderr, "mailbus sync: ACCOUNT is required\n%s", sync_usage);
        mb_rec_free(&mb_type_command, &c);
        return 2;
    }
    c.op = strdup("sync.start");
    mb_json *rep = NULL;
    if (!s) s = mb_cli_send_cmd("sync.start", &c, &rep);
    mb_rec_free(&mb_type_command, &c);
    if (s)
        return mb_cli_fail("sync", s);
    uint64_t job = 0;
    mb_json_u64(mb_json_get(rep, "job"), &job);
    mb_json_free(rep);
    printf("%" PRIu64 "\n", job);
    fflush(stdout);
    return wait ? wait_job(job) : 0;
}

/* ---- history ------------------------------------------------------------- */

static const char history_sql[] =
    "SELECT h.job_id, h.event, to_char(h.created_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), h.detail->>'status', "
    "coalesce((h.detail->>'duration_ms')::bigint, 0), "
    "coalesce((SELECT sum((x->>'added')::bigint) FROM jsonb_array_elements(h.detail->'folders') x), 0), "
    "coalesce((SELECT sum((x->>'flags_changed')::bigint) FROM jsonb_array_elements(h.detail->'folders') x), 0), "
    "coalesce((SELECT sum((x->>'deleted')::bigint) FROM jsonb_array_elements(h.detail->'folders') x), 0), "
    "coalesce((SELECT sum((x->>'moved')::bigint) FROM jsonb_array_elements(h.detail->'folders') x), 0), "
    "(SELECT count(*) FROM jsonb_array_elements(h.detail->'folders') x WHERE x->>'event' IS NOT NULL), "
    "coalesce(h.detail->>'errors', '0'), coalesce(h.detail->>'error', ''), "
    "jsonb_build_object('job', h.job_id, 'type', h.event, 'at', h.created_at) || h.detail "
    "FROM sync_history h JOIN accounts a ON a.id = h.account_id "
    "WHERE (a.name = $1 OR a.id::text = $1) AND h.event IN ('import', 'sync') "
    "ORDER BY h.id DESC LIMIT $2::int";

int mb_cli_history(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        printf("usage: mailbus history ACCOUNT [--json] [--limit N]\n\n"
               "What each import and sync of the account did, newest first (default 20): status,\n"
               "duration, messages added, flags changed, deleted and moved, folder events\n"
               "(created, renamed, deleted, UIDVALIDITY reset) and errors. --json: one object per\n"
               "job with a \"folders\" array (folder, method, event, old_name, added,\n"
               "flags_changed, deleted, moved, duration_ms).\n");
        return 0;
    }
    const char *account = NULL, *limit = "20";
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc && atoi(argv[i + 1]) > 0)
            limit = argv[++i];
        else if (argv[i][0] != '-' && !account)
            account = argv[i];
        else {
            fprintf(stderr, "mailbus history: unexpected '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (!account) {
        fprintf(stderr, "usage: mailbus history ACCOUNT [--json] [--limit N]\n");
        return 2;
    }
    mb_db *db;
    mb_status s = mb_cli_db(&db);
    if (s)
        return mb_cli_fail("history", s);
    PGresult *r;
    s = mb_cli_account_exists(db, account);
    const char *p[] = {account, limit};
    if (!s) s = mb_db_query(db, history_sql, 2, p, &r);
    mb_db_free(db);
    if (s)
        return mb_cli_fail("history", s);
    if (!json)
        printf("%-6s %-6s %-20s %-9s %9s %7s %7s %7s %7s %7s %6s\n", "JOB", "TYPE", "ENDED",
               "STATUS", "SECONDS", "ADDED", "FLAGS", "DELETED", "MOVED", "FOLDERS", "ERRORS");
    for (int i = 0; i < PQntuples(r); i++) {
        if (json) {
            puts(PQgetvalue(r, i, 12));
            continue;
        }
        printf("%-6s %-6s %-20s %-9s %9.2f %7s %7s %7s %7s %7s %6s\n", PQgetvalue(r, i, 0),
               PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
               atof(PQgetvalue(r, i, 4)) / 1000.0, PQgetvalue(r, i, 5), PQgetvalue(r, i, 6),
               PQgetvalue(r, i, 7), PQgetvalue(r, i, 8), PQgetvalue(r, i, 9),
               PQgetvalue(r, i, 10));
        if (*PQgetvalue(r, i, 11))
            printf("       %s\n", PQgetvalue(r, i, 11));
    }
    PQclear(r);
    return 0;
}
