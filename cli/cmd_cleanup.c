/* cmd_cleanup.c — `mailbus cleanup [--retention DURATION] [--dry-run]
 * [--walk-all] [--json]`: one pass of the cleanup job now
 * (stages/store/cleanup.h), the same the store stage runs on its timer. */
#include "cli/cli.h"
#include "cli/common.h"
#include "stages/store/cleanup.h"
#include "util/env.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char cleanup_usage[] =
    "usage: mailbus cleanup [--retention DURATION] [--dry-run] [--walk-all] [--json]\n\n"
    "Runs one pass of the cleanup job now (the store stage runs one every\n"
    "MAILBUS_CLEANUP_EVERY_MS): emails deleted on the server (no location left) longer\n"
    "ago than the retention are purged with their addresses and attachments rows, then\n"
    "blobs no email of any account references any more are removed from the blob store\n"
    "(MAILBUS_BLOB_DIR) — never one a fetch wrote or found again within the retention,\n"
    "or since the oldest active job started: an import may be about to reference it.\n"
    "Prints what it did, in total and per account; each account also gets a\n"
    "sync_history row (event cleanup). One pass at a time across every process: while\n"
    "another runs, this one exits 1 saying so.\n"
    "  --retention D  30s, 15m, 12h, 7d (default: MAILBUS_RETENTION_DAYS, 30 days)\n"
    "  --dry-run      say what a pass would do; change nothing\n"
    "  --walk-all     also list all 256 blob directories for blobs no email ever\n"
    "                 referenced (a pass walks one, the next one each time)\n"
    "  --json         one JSON object\n";

/* "name" of each account of the result, NULL for unknown ids (removed). */
static mb_status account_names(mb_db *db, const mb_cleanup_result *r, PGresult **out)
{
    mb_pgarr ids = MB_PGARR_INIT;
    mb_status s = MB_OK;
    for (size_t i = 0; i < r->naccounts && !s; i++)
        s = mb_pgarr_add_u64(&ids, r->accounts[i].account_id);
    const char *p[] = {mb_pgarr_cstr(&ids)};
    if (!s) s = mb_db_query(db, "SELECT u.id, a.name FROM unnest($1::bigint[]) WITH ORDINALITY u(id, n) "
                                "LEFT JOIN accounts a ON a.id = u.id ORDER BY u.n", 1, p, out);
    mb_pgarr_free(&ids);
    return s;
}

static void print_json(const mb_cleanup_opts *o, const mb_cleanup_result *r, PGresult *names)
{
    const mb_cleanup_counts *t = &r->total;
    printf("{\"dry_run\":%s,\"retention_s\":%" PRId64 ",\"emails_purged\":%" PRIu64
           ",\"blobs_removed\":%" PRIu64 ",\"blobs_kept_referenced\":%" PRIu64
           ",\"blobs_kept_recent\":%" PRIu64 ",\"blobs_absent\":%" PRIu64
           ",\"blobs_queued\":%" PRIu64 ",\"dirs_walked\":%d,\"duration_ms\":%" PRId64
           ",\"accounts\":[",
           o->dry_run ? "true" : "false", o->retention_s, t->emails_purged, t->blobs_removed,
           t->blobs_kept_referenced, t->blobs_kept_recent, t->blobs_absent, r->blobs_queued,
           r->dirs_walked, r->duration_ms);
    for (size_t i = 0; i < r->naccounts; i++) {
        const mb_cleanup_counts *c = &r->accounts[i];
        mb_buf name = MB_BUF_INIT;
        if (PQgetisnull(names, (int)i, 1) || mb_buf_json_str(&name, PQgetvalue(names, (int)i, 1),
                                                             strlen(PQgetvalue(names, (int)i, 1))))
            mb_buf_puts(&name, "null");
        printf("%s{\"account\":%s,\"account_id\":%" PRIu64 ",\"emails_purged\":%" PRIu64
               ",\"blobs_removed\":%" PRIu64 ",\"blobs_kept_referenced\":%" PRIu64
               ",\"blobs_kept_recent\":%" PRIu64 ",\"blobs_absent\":%" PRIu64 "}",
               i ? "," : "", mb_buf_cstr(&name), c->account_id, c->emails_purged,
               c->blobs_removed, c->blobs_kept_referenced, c->blobs_kept_recent, c->blobs_absent);
        mb_buf_free(&name);
    }
    printf("]}\n");
}

static void print_counts(const char *who, const mb_cleanup_counts *c, bool dry)
{
    printf("%-20s %s %" PRIu64 " emails; blobs: %" PRIu64 " %s, %" PRIu64
           " kept (still referenced), %" PRIu64 " kept (wanted recently), %" PRIu64 " already gone\n",
           who, dry ? "would purge" : "purged", c->emails_purged, c->blobs_removed,
           dry ? "would be removed" : "removed", c->blobs_kept_referenced, c->blobs_kept_recent,
           c->blobs_absent);
}

static void print_text(const mb_cleanup_opts *o, const mb_cleanup_result *r, PGresult *names)
{
    print_counts(o->dry_run ? "cleanup (dry run):" : "cleanup:", &r->total, o->dry_run);
    printf("%-20s retention %" PRId64 " s; %d blob directories walked, %" PRIu64
           " unreferenced blobs found there; %" PRId64 " ms\n",
           "", o->retention_s, r->dirs_walked, r->blobs_queued, r->duration_ms);
    for (size_t i = 0; i < r->naccounts; i++) {
        char who[64];
        if (!r->accounts[i].account_id)
            snprintf(who, sizeof who, "  (no account)");
        else if (PQgetisnull(names, (int)i, 1))
            snprintf(who, sizeof who, "  (account %" PRIu64 " removed)", r->accounts[i].account_id);
        else
            snprintf(who, sizeof who, "  %.60s", PQgetvalue(names, (int)i, 1));
        print_counts(who, &r->accounts[i], o->dry_run);
    }
}

int mb_cli_cleanup(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        fputs(cleanup_usage, stdout);
        return 0;
    }
    mb_cleanup_opts o = {.walk_dirs = 1};
    bool json = false, retention_set = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--retention") && i + 1 < argc) {
            if (mb_parse_duration(argv[++i], &o.retention_s)) {
                fprintf(stderr, "mailbus cleanup: --retention: %s\n", mb_err_last());
                return 2;
            }
            retention_set = true;
        } else if (!strcmp(argv[i], "--dry-run")) {
            o.dry_run = true;
        } else if (!strcmp(argv[i], "--walk-all")) {
            o.walk_dirs = MB_CLEANUP_DIRS;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else {
            fprintf(stderr, "mailbus cleanup: unexpected '%s'\n%s", argv[i], cleanup_usage);
            return 2;
        }
    }
    const char *dir;
    mb_status s = retention_set ? MB_OK : mb_cleanup_retention_env(&o.retention_s);
    if (!s) s = mb_env_require("MAILBUS_BLOB_DIR", &dir);
    if (s)
        return mb_cli_fail("cleanup", s);
    mb_db *db = NULL;
    mb_blob_store *blobs = NULL;
    mb_cleanup_result r;
    memset(&r, 0, sizeof r);
    PGresult *names = NULL;
    s = mb_blob_store_open(dir, &blobs);
    if (!s) s = mb_cli_db(&db);
    if (!s) s = mb_cleanup_pass(db, blobs, &o, &r);
    if (!s && r.ran) s = account_names(db, &r, &names);
    int rc = 0;
    if (s) {
        rc = mb_cli_fail("cleanup", s);
    } else if (!r.ran) {
        fprintf(stderr, "mailbus cleanup: another process is running a cleanup pass (lease "
                        "\"cleanup\"); try again when it is done\n");
        rc = 1;
    } else if (json) {
        print_json(&o, &r, names);
    } else {
        print_text(&o, &r, names);
    }
    PQclear(names);
    mb_cleanup_result_free(&r);
    mb_db_free(db);
    mb_blob_store_free(blobs);
    return rc;
}
