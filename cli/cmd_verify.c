/* cmd_verify.c — `mailbus verify ACCOUNT [--folders A,B] [--deep] [--json]
 * [--limit N]`: what the server has now against what mailbus holds
 * (stages/verify/verify.h), printed as a summary and the first differences;
 * the run is recorded for `mailbus jobs`. */
#include "cli/cli.h"
#include "cli/common.h"
#include "schemas/schema.h"
#include "stages/verify/verify.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/env.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char verify_usage[] =
    "usage: mailbus verify ACCOUNT [--folders A,B] [--deep] [--json] [--limit N] [--repair]\n\n"
    "Compares, folder by folder, what the mail server has now with what mailbus holds,\n"
    "with cheap server calls only (folder list, UIDs, sizes and flags; never a body):\n"
    "  not_stored    on the server, not stored, with the reason the jobs recorded\n"
    "  gone          stored, no longer on the server (a sync is due)\n"
    "  flags         flags differ\n"
    "  blob_missing  stored, but its .eml is not in the blob store\n"
    "  blob_corrupt  (--deep) its .eml no longer hashes to its name\n"
    "  unscanned     attachments never scanned, or scanned with an error\n"
    "  folder_new, folder_gone, uidvalidity   folders the two sides disagree on\n"
    "Prints a summary and the first N differences (--limit, 20; 0: all). A run over\n"
    "every folder is recorded: `mailbus jobs` shows it against the account's latest\n"
    "completed job.\n"
    "  --folders A,B  only these folders\n"
    "  --deep         also hash every stored .eml (reads the whole blob store)\n"
    "  --json         one JSON object, the differences in \"first\"\n"
    "  --repair       then start a sync of the account that fetches again exactly the\n"
    "                 messages not stored and those whose blob is missing or corrupt\n"
    "                 (a corrupt blob is removed first), and mends the rest as any sync\n"
    "                 does (flags, messages and folders gone, new folders); prints its\n"
    "                 job id. Messages a running job has yet to store are left to it;\n"
    "                 attachments never scanned are avscan's (mailbus dlq retry).\n"
    "Exit status: 0 no differences, 1 differences, 2 usage error or verify failed.\n";

typedef struct {
    bool json;
    uint64_t limit, shown;
    mb_buf first; /* --json: the "first" array's elements */
    bool repair;  /* --repair: collect what to fetch again */
    mb_pgarr folder_ids, uidvalidities, uids; /* repair_items to insert */
    char (*corrupt)[65];                      /* owned: blobs to remove first (hex) */
    size_t ncorrupt;
    mb_status repair_err;                     /* out of memory while collecting */
} printer;

static void collect(printer *p, const mb_verify_diff *d)
{
    if (!p->repair || !d->repair || p->repair_err)
        return;
    mb_status s = mb_pgarr_add_u64(&p->folder_ids, d->folder_id);
    if (!s) s = mb_pgarr_add_u64(&p->uidvalidities, d->uidvalidity);
    if (!s) s = mb_pgarr_add_u64(&p->uids, d->uid);
    if (!s && d->kind == MB_VERIFY_BLOB_CORRUPT && d->blob) {
        char(*v)[65] = mb_grow(p->corrupt, p->ncorrupt, sizeof *v);
        if (v) {
            p->corrupt = v;
            snprintf(p->corrupt[p->ncorrupt++], sizeof *v, "%s", d->blob);
        } else {
            s = MB_ERR_NOMEM;
        }
    }
    p->repair_err = s;
}

static void on_diff(void *ctx, const mb_verify_diff *d)
{
    printer *p = ctx;
    collect(p, d);
    if (p->limit && p->shown >= p->limit)
        return;
    p->shown++;
    if (!p->json) {
        if (d->uid)
            printf("%-13s %s UID %" PRIu64 ": %s\n", mb_verify_kind_name(d->kind), d->folder, d->uid,
                   d->detail);
        else
            printf("%-13s %s: %s\n", mb_verify_kind_name(d->kind), d->folder, d->detail);
        return;
    }
    mb_buf *b = &p->first;
    mb_status s = mb_buf_puts(b, b->len ? ",{\"folder\":" : "{\"folder\":");
    if (!s) s = mb_buf_json_str(b, d->folder, strlen(d->folder));
    if (!s) s = mb_buf_printf(b, ",\"uid\":%" PRIu64 ",\"kind\":\"%s\",\"detail\":", d->uid,
                              mb_verify_kind_name(d->kind));
    if (!s) s = mb_buf_json_str(b, d->detail, strlen(d->detail));
    if (!s) s = mb_buf_putc(b, '}');
    (void)s; /* out of memory: the JSON below is still well-formed up to here */
}

static void print_summary(const printer *p, const char *account, const mb_verify_result *r,
                          bool deep, int64_t ms, bool repaired, uint64_t job, uint64_t queued)
{
    if (p->json) {
        printf("{\"account\":");
        mb_buf name = MB_BUF_INIT;
        if (!mb_buf_json_str(&name, account, strlen(account)))
            fwrite(name.data, 1, name.len, stdout);
        mb_buf_free(&name);
        printf(",\"deep\":%s,\"seconds\":%.3f,\"folders\":%" PRIu64 ",\"server_messages\":%" PRIu64
               ",\"stored_messages\":%" PRIu64 ",\"differences\":%" PRIu64 ",\"missing\":%" PRIu64
               ",\"counts\":{",
               deep ? "true" : "false", ms / 1000.0, r->folders, r->server_messages,
               r->stored_messages, r->total, r->missing);
        for (int k = 0; k < MB_VERIFY_KINDS; k++)
            printf("%s\"%s\":%" PRIu64, k ? "," : "", mb_verify_kind_name(k), r->count[k]);
        printf("},\"first\":[");
        fwrite(p->first.data ? (const char *)p->first.data : "", 1, p->first.len, stdout);
        printf("]");
        if (repaired)
            printf(",\"repair\":{\"queued\":%" PRIu64 ",\"job\":%" PRIu64 "}", queued, job);
        printf("}\n");
        return;
    }
    if (r->total > p->shown)
        printf("... and %" PRIu64 " more (--limit 0 lists all)\n", r->total - p->shown);
    printf("verify %s: %" PRIu64 " folders, %" PRIu64 " messages on the server, %" PRIu64
           " stored, %.1f s%s\n", account, r->folders, r->server_messages, r->stored_messages,
           ms / 1000.0, deep ? ", every blob hashed" : "");
    if (!r->total) {
        printf("no differences\n");
        return;
    }
    printf("%" PRIu64 " differences (", r->total);
    bool first = true;
    for (int k = 0; k < MB_VERIFY_KINDS; k++)
        if (r->count[k]) {
            printf("%s%s %" PRIu64, first ? "" : ", ", mb_verify_kind_name(k), r->count[k]);
            first = false;
        }
    printf("); %" PRIu64 " of them mail missing or damaged in mailbus\n", r->missing);
    if (repaired)
        printf("repair: %" PRIu64 " messages to fetch again; sync job %" PRIu64 " started\n",
               queued, job);
}

/* Remove the corrupt blobs, queue what to fetch again, start the sync;
 * *job: its id. */
static mb_status repair(mb_db *db, mb_blob_store *blobs, const mb_account *a, printer *p,
                        uint64_t *job, uint64_t *queued)
{
    *job = 0;
    *queued = p->uids.n;
    if (p->repair_err)
        return p->repair_err;
    PGresult *r;
    mb_status s = MB_OK;
    for (size_t i = 0; !s && i < p->ncorrupt; i++) { /* a blob named twice: ENOENT */
        char path[4096];
        s = mb_blob_path(blobs, p->corrupt[i], path, sizeof path);
        if (!s && unlink(path) != 0 && errno != ENOENT)
            s = mb_errf(MB_ERR_IO, "removing the corrupt blob %s: %s", path, strerror(errno));
    }
    const char *ip[] = {mb_pgarr_cstr(&p->folder_ids), mb_pgarr_cstr(&p->uidvalidities),
                        mb_pgarr_cstr(&p->uids)};
    if (!s && p->uids.n) s = mb_db_query(db,
        "INSERT INTO repair_items (folder_id, uidvalidity, uid) "
        "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) ON CONFLICT DO NOTHING",
        3, ip, &r);
    if (!s && p->uids.n)
        PQclear(r);
    mb_rec_command c = {0};
    mb_json *rep = NULL;
    if (!s && (!(c.account = strdup(a->name)) || !(c.op = strdup("sync.start"))))
        s = mb_errf(MB_ERR_NOMEM, "sync command");
    if (!s) s = mb_cli_send_cmd("sync.start", &c, &rep);
    mb_rec_free(&mb_type_command, &c);
    if (!s)
        mb_json_u64(mb_json_get(rep, "job"), job);
    mb_json_free(rep);
    return s ? mb_err_wrap(s, "repair (%" PRIu64 " messages queued to fetch again)", *queued) : s;
}

int mb_cli_verify(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        fputs(verify_usage, stdout);
        return 0;
    }
    const char *account = NULL, *folders = NULL;
    bool deep = false;
    printer p = {.limit = 20, .first = MB_BUF_INIT, .folder_ids = MB_PGARR_INIT,
                 .uidvalidities = MB_PGARR_INIT, .uids = MB_PGARR_INIT};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--folders") && i + 1 < argc) folders = argv[++i];
        else if (!strcmp(argv[i], "--deep")) deep = true;
        else if (!strcmp(argv[i], "--json")) p.json = true;
        else if (!strcmp(argv[i], "--repair")) p.repair = true;
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            if (mb_parse_u64(argv[++i], 1000000000, &p.limit)) {
                fprintf(stderr, "mailbus verify: --limit '%s' is not a number\n", argv[i]);
                return 2;
            }
        } else if (argv[i][0] != '-' && !account) account = argv[i];
        else {
            fprintf(stderr, "mailbus verify: unexpected '%s'\n%s", argv[i], verify_usage);
            return 2;
        }
    }
    if (!account) {
        fputs(verify_usage, stderr);
        return 2;
    }
    mb_strv fv = {0};
    mb_account a = {0};
    mb_account_keys keys = {0};
    char *secret = NULL;
    mb_db *db = NULL;
    mb_blob_store *blobs = NULL;
    mb_source *src = NULL;
    const char *blob_dir = NULL;
    mb_verify_result r;
    int64_t t0 = mb_mono_ms();
    time_t started = time(NULL);
    mb_status s = folders ? mb_cli_split_folders(folders, &fv) : MB_OK;
    if (!s) s = mb_env_require("MAILBUS_BLOB_DIR", &blob_dir);
    if (!s) s = mb_blob_store_open(blob_dir, &blobs);
    if (!s) s = mb_account_keys_load(&keys);
    if (!s) s = mb_cli_db(&db);
    if (!s) s = mb_account_load(db, &keys, account, &a, &secret);
    if (!s) s = mb_account_source(&a, secret, &src);
    if (!s) {
        mb_verify_opts o = {.deep = deep, .folders = &fv, .on_diff = on_diff, .ctx = &p};
        s = mb_verify_account(db, blobs, &a, src, &o, &r);
    }
    int64_t ms = mb_mono_ms() - t0;
    if (!s && fv.n == 0) /* only a whole-account run vouches for the job */
        s = mb_verify_record(db, &a, &r, deep, (int64_t)started, ms);
    uint64_t job = 0, queued = 0;
    bool repaired = !s && p.repair && r.total;
    if (repaired) s = repair(db, blobs, &a, &p, &job, &queued);
    int rc;
    if (s) {
        mb_cli_fail("verify", s);
        rc = 2;
    } else {
        print_summary(&p, a.name, &r, deep, ms, repaired, job, queued);
        rc = r.total ? 1 : 0;
    }
    mb_source_free(src);
    mb_account_secret_free(secret);
    mb_account_keys_wipe(&keys);
    mb_account_free(&a);
    mb_db_free(db);
    mb_blob_store_free(blobs);
    for (size_t i = 0; i < fv.n; i++)
        free(fv.v[i]);
    free(fv.v);
    mb_buf_free(&p.first);
    mb_pgarr_free(&p.folder_ids);
    mb_pgarr_free(&p.uidvalidities);
    mb_pgarr_free(&p.uids);
    free(p.corrupt);
    return rc;
}
