/* cmd_export.c — `mailbus export ACCOUNT --format maildir|mbox|eml DIR`: an
 * account's stored mail (what `mailbus messages` lists) written out of
 * Postgres and the blob store into files other mail software reads. This
 * file reads Postgres (folders, then each folder's locations in pages of
 * EXPORT_PAGE by UID) and decides where each folder goes; export_out.c
 * writes the files and the index. */
#include "cli/cli.h"
#include "cli/common.h"
#include "cli/export_out.h"

#include "sources/imap/imap.h"
#include "util/clock.h"
#include "util/env.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define EXPORT_PAGE "500"     /* locations read per query (keyset paging) */
#define EXPORT_MAX_ERRORS 100 /* message errors printed; the rest are counted */

static const char export_usage[] =
    "usage: mailbus export ACCOUNT --format maildir|mbox|eml DIR [--folders A,B]\n"
    "                      [--since YYYY-MM-DD] [--json]\n"
    "\n"
    "Writes the account's stored mail (what `mailbus messages` lists: live folders,\n"
    "emails not deleted on the server) from Postgres and the blob store into DIR,\n"
    "every message byte for byte as stored, its SHA-256 checked while it is copied.\n"
    "  maildir  Maildir++ as Dovecot reads it (mail_location = maildir:DIR): INBOX in\n"
    "           DIR/{cur,new,tmp}, folder a/b (any server delimiter) in DIR/.a.b/,\n"
    "           names as the server sent them (IMAP modified UTF-7). A message is\n"
    "           cur/<internal date>.M<uid>V<uidvalidity>.mailbus,S=<size>:2,<flags>\n"
    "           (D draft, F flagged, R answered, S seen, T deleted, then keyword\n"
    "           letters from the folder's dovecot-keywords, at most 26), file mtime =\n"
    "           internal date, written to tmp/ and renamed. A name with a '.' inside a\n"
    "           level cannot be written in Maildir++: such a folder fails.\n"
    "  mbox     one mboxrd file per folder, DIR/<folder>.mbox (a/b: DIR/a/b.mbox, UTF-8\n"
    "           names): each message is a line `From mailbus@localhost <asctime of its\n"
    "           internal date, UTC>`, its bytes with every line matching ^>*From  given\n"
    "           one more '>', a newline if it does not end with one, and a blank line.\n"
    "           Flags are only in the index.\n"
    "  eml      DIR/<folder>/<uid>.eml, the stored bytes as they are; mtime = internal\n"
    "           date.\n"
    "DIR/mailbus-export.tsv indexes what DIR holds after the run, one line per message:\n"
    "path, sha256, size, folder, uidvalidity, uid, flags (space-separated), and for mbox\n"
    "the message's byte offset and end in its file (else -); control bytes as \\xNN.\n"
    "Run again, it resumes: a Maildir or eml file already there with the right size is\n"
    "kept; an mbox keeps the messages the previous index lists in order up to the first\n"
    "that differs or is cut short, is truncated there and gets the rest appended (each\n"
    "cut is first journaled in mailbus-export.tsv.cuts, so that a run killed after it\n"
    "can be resumed too). DIR holds one account in one format.\n"
    "A blob that is missing or does not hash to its name is named, counted as failed\n"
    "and skipped; everything else is still written. Of a folder's locations, those of\n"
    "its newest UIDVALIDITY are exported. Files are mode 600, directories 700, owned by\n"
    "the caller (chown them to Dovecot's mail user).\n"
    "  --folders A,B     only these folders (display or server names)\n"
    "  --since DATE      only messages whose internal date is on or after DATE (UTC)\n"
    "  --json            the summary as one JSON object\n"
    "Exit status: 0 every message written or already there, 1 any failed, 2 usage.\n";

static const mb_db_stmt export_stmts[] = {
    {"export_range", 1,
     "SELECT min(uidvalidity), max(uidvalidity) FROM email_locations WHERE folder_id = $1"},
    {"export_page", 4,
     "SELECT l.uid, encode(e.blob_sha256, 'hex'), e.size, "
     "coalesce(floor(extract(epoch FROM coalesce(l.internal_date, e.internal_date)))::bigint, 0), "
     "array_to_string(ARRAY(SELECT x FROM unnest(l.flags) x ORDER BY x COLLATE \"C\"), chr(10)) "
     "FROM email_locations l JOIN emails e ON e.id = l.email_id "
     "WHERE l.folder_id = $1 AND l.uidvalidity = $2 AND l.uid > $3 AND e.deleted_at IS NULL "
     "AND ($4::bigint IS NULL OR l.internal_date >= to_timestamp($4::bigint)) "
     "ORDER BY l.uid LIMIT " EXPORT_PAGE},
    {"export_count", 2,
     "SELECT count(*) FROM email_locations l JOIN emails e ON e.id = l.email_id "
     "WHERE l.folder_id = $1 AND e.deleted_at IS NULL "
     "AND ($2::bigint IS NULL OR l.internal_date >= to_timestamp($2::bigint))"},
};

typedef struct {
    char *id, *name, *remote; /* folders.id, .name (display), coalesce(remote_name, name) */
    char delim;               /* the server's hierarchy delimiter; 0: none */
    char *rel;                /* where it goes, relative to DIR; NULL: see why */
    char *rel_tsv;            /* rel as in the index: the order folders are written in */
    char *why;                /* why it cannot be written */
} folder;

typedef struct {
    uint64_t written, skipped, failed, errors_shown;
} counts;

static void folder_free(folder *f)
{
    free(f->id);
    free(f->name);
    free(f->remote);
    free(f->rel);
    free(f->rel_tsv);
    free(f->why);
}

static int folder_cmp(const void *a, const void *b)
{
    const folder *x = a, *y = b;
    if (!x->rel_tsv || !y->rel_tsv)
        return !x->rel_tsv - !y->rel_tsv;
    return strcmp(x->rel_tsv, y->rel_tsv);
}

/* Where folder f goes: Maildir++ from the server's bytes, levels joined by
 * '.' ("" for INBOX); mbox and eml from the display name, levels as
 * directories. A level that cannot be a file name sets f->why. */
static mb_status folder_place(folder *f, exp_format fmt)
{
    char *src = NULL;
    size_t len = 0;
    mb_buf rel = MB_BUF_INIT, why = MB_BUF_INIT;
    mb_status st = fmt == EXP_MAILDIR ? mb_imap_unescape(f->remote, &src, &len)
                                      : (src = mb_strdup(f->name)) ? MB_OK : MB_ERR_NOMEM;
    if (st == MB_ERR_INVALID) {
        st = mb_buf_printf(&why, "its stored server name: %s", mb_err_last());
    } else if (st) {
        return mb_errf(st, "export: out of memory");
    } else if (fmt == EXP_MAILDIR && strlen(src) != len) {
        st = mb_buf_puts(&why, "its server name holds a NUL byte");
    } else if (fmt == EXP_MAILDIR && !strcasecmp(src, "INBOX")) {
        st = mb_buf_puts(&rel, ""); /* INBOX is the Maildir itself */
    } else {
        /* levels split by hand: strtok would merge empty ones */
        const char *sep = fmt == EXP_MAILDIR ? "." : "/";
        for (char *p = src, *d; p && !st && !why.len; p = d ? d + 1 : NULL) {
            if ((d = f->delim ? strchr(p, f->delim) : NULL))
                *d = 0;
            if (!*p || !strcmp(p, ".") || !strcmp(p, ".."))
                st = mb_buf_printf(&why, "a level of its name is '%s'", p);
            else if (strchr(p, '/'))
                st = mb_buf_printf(&why, "a '/' inside a level of its name ('%s')", p);
            else if (fmt == EXP_MAILDIR && strchr(p, '.'))
                st = mb_buf_printf(&why, "a '.' inside a level of its name ('%s') cannot be written in "
                                         "Maildir++, where it separates levels (use --format mbox or eml)", p);
            if (!st && (fmt == EXP_MAILDIR || p != src))
                st = mb_buf_puts(&rel, sep);
            if (!st) st = mb_buf_puts(&rel, p);
        }
        if (!st && fmt == EXP_MBOX)
            st = mb_buf_puts(&rel, ".mbox");
    }
    free(src);
    if (!st && why.len)
        st = (f->why = mb_buf_steal(&why)) ? MB_OK : MB_ERR_NOMEM;
    else if (!st)
        st = (f->rel = mb_buf_steal(&rel)) ? MB_OK : MB_ERR_NOMEM;
    mb_buf_free(&rel);
    mb_buf_free(&why);
    return st ? mb_errf(MB_ERR_NOMEM, "export: out of memory") : MB_OK;
}

/* The account's live folders (those --folders names), placed and sorted by
 * where they go; two folders that would go to one place: the later fails. */
static mb_status load_folders(mb_db *db, const char *account_id, const mb_strv *only, exp_format fmt,
                              folder **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    const char *p[] = {account_id};
    PGresult *r;
    mb_status st = mb_db_query(db, "SELECT id, name, coalesce(remote_name, name), coalesce(delimiter, '') "
                                   "FROM folders WHERE account_id = $1 AND deleted_at IS NULL ORDER BY id",
                               1, p, &r);
    if (st)
        return st;
    int rows = PQntuples(r);
    folder *fs = calloc((size_t)rows + 1, sizeof *fs);
    bool *used = calloc(only->n + 1, sizeof *used);
    size_t n = 0;
    if (!fs || !used)
        st = mb_errf(MB_ERR_NOMEM, "export: out of memory");
    for (int i = 0; i < rows && !st; i++) {
        const char *name = PQgetvalue(r, i, 1), *remote = PQgetvalue(r, i, 2);
        bool want = only->n == 0;
        for (size_t k = 0; k < only->n; k++)
            if (!strcmp(only->v[k], name) || !strcmp(only->v[k], remote))
                want = used[k] = true;
        if (!want)
            continue;
        folder *f = &fs[n++];
        f->delim = PQgetvalue(r, i, 3)[0];
        if (!(f->id = mb_strdup(PQgetvalue(r, i, 0))) || !(f->name = mb_strdup(name)) ||
            !(f->remote = mb_strdup(remote)))
            st = mb_errf(MB_ERR_NOMEM, "export: out of memory");
        if (!st) st = folder_place(f, fmt);
        mb_buf t = MB_BUF_INIT;
        if (!st && f->rel && (exp_tsv_escape(&t, f->rel) || !(f->rel_tsv = mb_buf_steal(&t))))
            st = mb_errf(MB_ERR_NOMEM, "export: out of memory");
        mb_buf_free(&t);
    }
    PQclear(r);
    for (size_t k = 0; k < only->n && !st; k++)
        if (!used[k])
            st = mb_errf(MB_ERR_NOTFOUND, "no folder '%s' in this account (retired folders are not exported)",
                         only->v[k]);
    free(used);
    if (!st) {
        qsort(fs, n, sizeof *fs, folder_cmp);
        for (size_t i = 1, k = 0; i < n && !st && fs[i].rel_tsv; i++) {
            if (strcmp(fs[i].rel_tsv, fs[k].rel_tsv)) {
                k = i;
                continue;
            }
            mb_buf w = MB_BUF_INIT;
            if (mb_buf_printf(&w, "it would be written to '%s' too, like folder '%s'", fs[i].rel, fs[k].name) ||
                !(fs[i].why = mb_buf_steal(&w)))
                st = mb_errf(MB_ERR_NOMEM, "export: out of memory");
            mb_buf_free(&w);
        }
    }
    if (st) {
        for (size_t i = 0; i < n; i++)
            folder_free(&fs[i]);
        free(fs);
        return st;
    }
    *out = fs;
    *nout = n;
    return MB_OK;
}

static void message_error(counts *c, const char *folder, const char *uid)
{
    c->failed++;
    if (c->errors_shown++ < EXPORT_MAX_ERRORS)
        fprintf(stderr, "mailbus export: folder '%s' uid %s: %s\n", folder, uid, mb_err_last());
    else if (c->errors_shown == EXPORT_MAX_ERRORS + 1)
        fprintf(stderr, "mailbus export: more messages fail; only the first %d are shown\n",
                EXPORT_MAX_ERRORS);
}

/* A folder that cannot be written: its messages count as failed. */
static mb_status folder_failed(mb_db *db, const folder *f, const char *since, counts *c)
{
    const char *p[] = {f->id, since};
    PGresult *r;
    mb_status st = mb_db_exec_prepared(db, "export_count", 2, p, &r);
    if (st)
        return st;
    uint64_t n = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    c->failed += n;
    fprintf(stderr, "mailbus export: folder '%s' is not exported (%" PRIu64 " messages): %s\n", f->name, n,
            f->why);
    return MB_OK;
}

/* One folder: its locations of the newest UIDVALIDITY, by UID, a page at a time. */
static mb_status export_folder(mb_db *db, exp_out *o, const folder *f, const char *since, counts *c)
{
    mb_status st = exp_folder_begin(o, f->name, f->rel);
    const char *p[4] = {f->id, NULL, "0", since};
    PGresult *r = NULL;
    if (!st) st = mb_db_exec_prepared(db, "export_range", 1, p, &r);
    if (st) {
        PQclear(r);
        return st;
    }
    char uv[24], last[24] = "0";
    bool empty = PQgetisnull(r, 0, 1);
    if (!empty) {
        snprintf(uv, sizeof uv, "%s", PQgetvalue(r, 0, 1));
        if (strcmp(PQgetvalue(r, 0, 0), uv))
            fprintf(stderr, "mailbus export: folder '%s': locations of UIDVALIDITY %s and older are left out "
                            "(a sync after a reset is under way); UIDVALIDITY %s is exported\n",
                    f->name, PQgetvalue(r, 0, 0), uv);
    }
    PQclear(r);
    p[1] = uv;
    p[2] = last;
    for (int rows = empty ? 0 : 1; rows && !st;) {
        if ((st = mb_db_exec_prepared(db, "export_page", 4, p, &r)))
            break;
        rows = PQntuples(r);
        for (int i = 0; i < rows && !st; i++) {
            exp_msg m = {.sha = PQgetvalue(r, i, 1), .flags = PQgetvalue(r, i, 4)};
            if (mb_parse_u64(uv, UINT64_MAX, &m.uidvalidity) ||
                mb_parse_u64(PQgetvalue(r, i, 0), UINT64_MAX, &m.uid) ||
                mb_parse_u64(PQgetvalue(r, i, 2), UINT64_MAX, &m.size)) {
                st = mb_errf(MB_ERR_INVALID, "folder '%s': a location row that is not numbers", f->name);
                break;
            }
            m.internal_date = strtoll(PQgetvalue(r, i, 3), NULL, 10);
            exp_result res;
            if ((st = exp_message(o, &m, &res)))
                break;
            if (res == EXP_WRITTEN)
                c->written++;
            else if (res == EXP_SKIPPED)
                c->skipped++;
            else
                message_error(c, f->name, PQgetvalue(r, i, 0));
        }
        if (rows)
            snprintf(last, sizeof last, "%s", PQgetvalue(r, rows - 1, 0));
        PQclear(r);
    }
    mb_status end = exp_folder_end(o);
    return st ? st : end;
}

/* --since YYYY-MM-DD as unix seconds (UTC midnight), into out. */
static bool parse_since(const char *s, char out[24])
{
    int y, mo, d, n = 0;
    if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10 || s[4] != '-' ||
        s[7] != '-')
        return false;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d};
    time_t t = timegm(&tm);
    if (tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d)
        return false; /* 2024-02-30 normalised into March */
    snprintf(out, 24, "%lld", (long long)t);
    return true;
}

static void print_summary(bool json, const char *account, const char *fmt, const char *dir, size_t nfolders,
                          const counts *c, const exp_out *o, int64_t ms)
{
    if (!json) {
        printf("export of %s to %s (%s): %" PRIu64 " written, %" PRIu64 " skipped (already there), %" PRIu64
               " failed; %zu folders, %.1f MB in %.1f s\n",
               account, dir, fmt, c->written, c->skipped, c->failed, nfolders,
               (double)exp_bytes_written(o) / 1e6, (double)ms / 1000.0);
        if (exp_keywords_dropped(o))
            printf("%" PRIu64 " keywords left out of Maildir file names (see the warnings)\n",
                   exp_keywords_dropped(o));
        return;
    }
    mb_buf a = MB_BUF_INIT, d = MB_BUF_INIT;
    mb_buf_json_str(&a, account, strlen(account));
    mb_buf_json_str(&d, dir, strlen(dir));
    printf("{\"account\":%s,\"format\":\"%s\",\"dir\":%s,\"folders\":%zu,\"written\":%" PRIu64
           ",\"skipped\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"bytes_written\":%" PRIu64
           ",\"keywords_dropped\":%" PRIu64 ",\"duration_ms\":%" PRId64 "}\n",
           mb_buf_cstr(&a), fmt, mb_buf_cstr(&d), nfolders, c->written, c->skipped, c->failed,
           exp_bytes_written(o), exp_keywords_dropped(o), ms);
    mb_buf_free(&a);
    mb_buf_free(&d);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "mailbus export: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (try --help)\n");
    return 2;
}

int mb_cli_export(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        fputs(export_usage, stdout);
        return 0;
    }
    const char *account = NULL, *format = NULL, *folders = NULL, *since_arg = NULL;
    char *dir = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
        else if (!strcmp(argv[i], "--folders") && i + 1 < argc) folders = argv[++i];
        else if (!strcmp(argv[i], "--since") && i + 1 < argc) since_arg = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] != '-' && !account) account = argv[i];
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else return usage_error("unexpected '%s'", argv[i]);
    }
    if (!account || !dir || !format)
        return usage_error("%s", "needs ACCOUNT, --format and DIR");
    exp_format fmt;
    if (!strcmp(format, "maildir")) fmt = EXP_MAILDIR;
    else if (!strcmp(format, "mbox")) fmt = EXP_MBOX;
    else if (!strcmp(format, "eml")) fmt = EXP_EML;
    else return usage_error("--format '%s': maildir, mbox or eml", format);
    char since_buf[24];
    const char *since = NULL;
    if (since_arg) {
        if (!parse_since(since_arg, since_buf))
            return usage_error("--since '%s': want a date YYYY-MM-DD", since_arg);
        since = since_buf;
    }
    mb_strv only = {0};
    if (folders && mb_cli_split_folders(folders, &only))
        return mb_cli_fail("export", MB_ERR_NOMEM);
    if (folders && !only.n)
        return usage_error("--folders '%s': no folder named", folders);
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/';)
        dir[--n] = 0;

    int64_t t0 = mb_mono_ms();
    const char *blob_dir;
    mb_db *db = NULL;
    mb_blob_store *blobs = NULL;
    exp_out *o = NULL;
    folder *fs = NULL;
    size_t nf = 0;
    counts c = {0};
    PGresult *r = NULL;
    const char *p[] = {account};
    mb_status st = mb_env_require("MAILBUS_BLOB_DIR", &blob_dir);
    if (!st) st = mb_blob_store_open(blob_dir, &blobs);
    if (!st) st = mb_cli_db(&db);
    if (!st) st = mb_db_prepare_all(db, export_stmts, MB_ARRAY_LEN(export_stmts));
    if (!st) st = mb_db_query(db, "SELECT id FROM accounts WHERE name = $1 OR id::text = $1", 1, p, &r);
    if (!st && !PQntuples(r))
        st = mb_errf(MB_ERR_NOTFOUND, "no account '%s'", account);
    if (!st) st = load_folders(db, PQgetvalue(r, 0, 0), &only, fmt, &fs, &nf);
    if (!st) st = exp_out_open(dir, fmt, blobs, &o);
    for (size_t i = 0; i < nf && !st; i++)
        st = fs[i].why ? folder_failed(db, &fs[i], since, &c) : export_folder(db, o, &fs[i], since, &c);
    if (!st) st = exp_out_finish(o);
    int rc = 0;
    if (st)
        rc = mb_cli_fail("export", st);
    else
        print_summary(json, account, format, dir, nf, &c, o, mb_mono_ms() - t0);
    if (!st && c.failed) {
        fprintf(stderr, "mailbus export: %" PRIu64 " message%s failed (above); the rest is in %s\n", c.failed,
                c.failed == 1 ? "" : "s", dir);
        rc = 1;
    }
    PQclear(r);
    for (size_t i = 0; i < nf; i++)
        folder_free(&fs[i]);
    free(fs);
    for (size_t i = 0; i < only.n; i++)
        free(only.v[i]);
    free(only.v);
    exp_out_free(o);
    mb_db_free(db);
    mb_blob_store_free(blobs);
    return rc;
}
