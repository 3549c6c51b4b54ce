/* cmd_schedule.c — `mailbus schedule [ACCOUNT] [--json]` (read from
 * Postgres: migration 0007) and `mailbus schedule set ACCOUNT [--folder F]
 * --every 10m|off|auto` (the command <p>.cmd.schedule.set, served by scan). */
#include "cli/cli.h"
#include "cli/common.h"
#include "schemas/schema.h"
#include "stages/common/stage.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: mailbus schedule [ACCOUNT] [--json]\n"
    "       mailbus schedule set ACCOUNT [--folder F]... --every 10m|2h|1d|off|auto\n\n"
    "Once an account's import has completed, mailbus-scan syncs each folder by itself,\n"
    "every interval after its last sync. The automatic interval starts from the folder's\n"
    "role (INBOX 5m; Sent, Drafts 15m; archive, all mail, trash, junk 1d; others 30m):\n"
    "it halves after a sync that found changes in the folder (down to a quarter of\n"
    "that) and grows by half after one that found none (up to four times it).\n"
    "The first form lists folder, role, interval (and who set it), last sync, changes\n"
    "found then, next sync. `set` fixes the interval of the folders named, else of the\n"
    "whole account (folders without their own follow it); off stops scheduled syncs\n"
    "(`mailbus sync` still works); auto goes back to the automatic interval.\n";

static const char list_sql[] =
    "SELECT a.name, f.name, coalesce(f.role, ''), "
    "       extract(epoch FROM e.every)::bigint, e.by, "
    "       coalesce(to_char(f.synced_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), ''), "
    "       coalesce(f.last_changes::text, ''), "
    "       CASE WHEN f.synced_at IS NULL THEN '' WHEN f.next_sync_at IS NULL THEN 'soon' "
    "            WHEN f.next_sync_at = 'infinity' THEN 'off' "
    "            ELSE to_char(f.next_sync_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') END, "
    "       jsonb_build_object('account', a.name, 'folder', f.name, 'role', f.role, "
    "           'interval_s', extract(epoch FROM e.every)::bigint, 'set_by', e.by, "
    "           'last_sync', f.synced_at, 'last_changes', f.last_changes, "
    "           'next_sync', CASE WHEN f.next_sync_at <> 'infinity' THEN f.next_sync_at END, "
    "           'scheduled', f.synced_at IS NOT NULL AND e.every > interval '0')::text "
    "FROM folders f JOIN accounts a ON a.id = f.account_id "
    "CROSS JOIN LATERAL (SELECT coalesce(f.sync_every, a.sync_every, f.sync_interval, "
    "                           mb_sync_base(f.role)) AS every, "
    "       CASE WHEN f.sync_every IS NOT NULL THEN 'folder' "
    "            WHEN a.sync_every IS NOT NULL THEN 'account' ELSE 'auto' END AS by) e "
    "WHERE f.deleted_at IS NULL AND ($1 = '' OR a.name = $1 OR a.id::text = $1) "
    "ORDER BY a.name, f.name";

/* "5m", "1h30m", "1d", "off". */
static void format_interval(long long s, char *out, size_t n)
{
    if (s <= 0) {
        snprintf(out, n, "off");
        return;
    }
    size_t k = 0;
    static const struct { long long secs; char unit; } u[] = {
        {86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    for (size_t i = 0; i < MB_ARRAY_LEN(u) && k < n; i++) {
        if (s >= u[i].secs) {
            int w = snprintf(out + k, n - k, "%lld%c", s / u[i].secs, u[i].unit);
            k += w > 0 ? (size_t)w : 0;
            s %= u[i].secs;
        }
    }
}

static int list(const char *account, bool json)
{
    mb_db *db;
    mb_status s = mb_cli_db(&db);
    if (s)
        return mb_cli_fail("schedule", s);
    const char *p[] = {account ? account : ""};
    PGresult *r = NULL;
    if (account)
        s = mb_cli_account_exists(db, account);
    if (!s) s = mb_db_query(db, list_sql, 1, p, &r);
    mb_db_free(db);
    if (s)
        return mb_cli_fail("schedule", s);
    if (!json)
        printf("%-14s %-24s %-8s %-14s %-19s %7s  %s\n", "ACCOUNT", "FOLDER", "ROLE", "INTERVAL",
               "LAST SYNC (UTC)", "CHANGES", "NEXT SYNC (UTC)");
    for (int i = 0; i < PQntuples(r); i++) {
        if (json) {
            puts(PQgetvalue(r, i, 8));
            continue;
        }
        char every[32], shown[48];
        format_interval(atoll(PQgetvalue(r, i, 3)), every, sizeof every);
        snprintf(shown, sizeof shown, "%s%s%s", every,
                 strcmp(PQgetvalue(r, i, 4), "auto") ? " by " : "",
                 strcmp(PQgetvalue(r, i, 4), "auto") ? PQgetvalue(r, i, 4) : "");
        const char *next = PQgetvalue(r, i, 7);
        printf("%-14s %-24s %-8s %-14s %-19s %7s  %s\n", PQgetvalue(r, i, 0),
               PQgetvalue(r, i, 1), *PQgetvalue(r, i, 2) ? PQgetvalue(r, i, 2) : "-", shown,
               *PQgetvalue(r, i, 5) ? PQgetvalue(r, i, 5) : "never",
               *PQgetvalue(r, i, 6) ? PQgetvalue(r, i, 6) : "-",
               *next ? next : "after its import");
    }
    PQclear(r);
    return 0;
}

static int set(int argc, char **argv)
{
    mb_rec_command c = {0};
    mb_status s = MB_OK;
    int rc = 2;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--folder") && i + 1 < argc) {
            char **v = realloc(c.folders.v, (c.folders.n + 1) * sizeof *v);
            if (!v || !(v[c.folders.n] = strdup(argv[++i]))) {
                if (v)
                    c.folders.v = v;
                s = mb_errf(MB_ERR_NOMEM, "folder names");
                break;
            }
            c.folders.v = v;
            c.folders.n++;
        } else if (!strcmp(argv[i], "--every") && i + 1 < argc && !c.every) {
            c.every = strdup(argv[++i]);
        } else if (argv[i][0] != '-' && !c.account) {
            c.account = strdup(argv[i]);
        } else {
            fprintf(stderr, "mailbus schedule set: unexpected '%s'\n%s", argv[i], usage);
            goto out;
        }
    }
    if (!s && (!c.account || !c.every)) {
        fprintf(stderr, "mailbus schedule set: ACCOUNT and --every are required\n%s", usage);
        goto out;
    }
    mb_json *rep = NULL;
    if (!s) s = (c.op = strdup("schedule.set")) ? MB_OK : MB_ERR_NOMEM;
    if (!s) s = mb_cli_send_cmd("schedule.set", &c, &rep);
    if (s) {
        rc = mb_cli_fail("schedule set", s);
        goto out;
    }
    mb_json_free(rep);
    if (c.folders.n)
        printf("%s: %zu folder%s every %s\n", c.account, c.folders.n, c.folders.n == 1 ? "" : "s",
               c.every);
    else
        printf("%s: every folder without its own interval every %s\n", c.account, c.every);
    rc = 0;
out:
    mb_rec_free(&mb_type_command, &c);
    return rc;
}

int mb_cli_schedule(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "set"))
        return set(argc, argv);
    const char *account = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (argv[i][0] != '-' && !account)
            account = argv[i];
        else {
            fprintf(stderr, "mailbus schedule: unexpected '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    return list(account, json);
}
