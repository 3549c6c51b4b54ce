/* cmd_account.c — `mailbus account add|list|remove`. */
#include "cli/cli.h"
#include "cli/common.h"
#include "sources/account.h"
#include "util/buf.h"
#include "util/secret.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: mailbus account add NAME --imap URL (--password-file F | --xoauth2-token-file F)\n"
    "                           [--starttls]\n"
    "       mailbus account list [--json]\n"
    "       mailbus account remove NAME\n"
    "       mailbus account test NAME\n\n"
    "URL is imaps://USER@HOST[:PORT], or imap://USER@HOST[:PORT] with --starttls (or\n"
    "plain text, only to a loopback host). `add` logs in once to check the credentials,\n"
    "then stores them encrypted (AES-256-GCM, key from MAILBUS_SECRET_KEY_FILE). The\n"
    "password or token file must be readable by its owner only (chmod 600). `test` opens\n"
    "the stored credential (with MAILBUS_SECRET_KEY_FILE or MAILBUS_SECRET_OLD_KEY_FILE)\n"
    "and logs in with it.\n";

/* The first line of file path, without its newline (max 64 KB). */
static mb_status read_secret(const char *what, const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return mb_errf(MB_ERR_IO, "%s: %s", path, strerror(errno));
    /* A secret others can read is a leak already: refuse it, as the key. */
    mb_status ps = mb_secret_file_private(fileno(f), what, path);
    if (ps) {
        fclose(f);
        return ps;
    }
    mb_buf b = MB_BUF_INIT;
    char chunk[4096];
    size_t n;
    mb_status s = MB_OK;
    while (!s && (n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        s = mb_buf_append(&b, chunk, n);
        if (b.len > 65536)
            s = mb_errf(MB_ERR_TOOBIG, "%s: longer than 64 KB", path);
    }
    fclose(f);
    OPENSSL_cleanse(chunk, sizeof chunk);
    if (!s) {
        size_t len = strcspn(mb_buf_cstr(&b), "\r\n");
        if (len == 0)
            s = mb_errf(MB_ERR_INVALID, "%s: empty", path);
        b.len = len;
        if (b.data) b.data[len] = '\0';
    }
    if (s) {
        mb_secret_buf_wipe(&b);
        return s;
    }
    *out = mb_buf_steal(&b);
    return MB_OK;
}

/* What add and test hold; released by session_end, which returns rc. */
typedef struct {
    mb_account a;
    mb_account_keys keys;
    char *secret;
    mb_db *db;
    mb_source *src;
} session;

/* Log in to the account's server with its credential, as a check. */
static mb_status session_log_in(session *x)
{
    mb_status s = mb_account_source(&x->a, x->secret, &x->src);
    if (!s && (s = mb_source_connect(x->src)))
        mb_err_wrap(s, "cannot log in to %s:%d as %s", x->a.host, x->a.port, x->a.username);
    return s;
}

static int session_end(session *x, const char *what, mb_status s)
{
    int rc = s ? mb_cli_fail(what, s) : 0;
    mb_source_free(x->src);
    mb_account_secret_free(x->secret);
    mb_account_keys_wipe(&x->keys);
    mb_account_free(&x->a);
    mb_db_free(x->db);
    return rc;
}

static int cmd_add(int argc, char **argv)
{
    const char *name = NULL, *url = NULL, *pwfile = NULL, *tokfile = NULL;
    bool starttls = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--imap") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--password-file") && i + 1 < argc) pwfile = argv[++i];
        else if (!strcmp(argv[i], "--xoauth2-token-file") && i + 1 < argc) tokfile = argv[++i];
        else if (!strcmp(argv[i], "--starttls")) starttls = true;
        else if (argv[i][0] != '-' && !name) name = argv[i];
        else {
            fprintf(stderr, "mailbus account add: unexpected '%s'\n%s", argv[i], usage);
            return 2;
        }
    }
    if (!name || !url || (!pwfile == !tokfile)) {
        fprintf(stderr, "mailbus account add: NAME, --imap and exactly one of --password-file "
                        "or --xoauth2-token-file are required\n%s", usage);
        return 2;
    }
    session x = {0};
    mb_account *a = &x.a;
    mb_status s = mb_account_parse_url(url, starttls, a);
    if (s)
        return mb_cli_fail("account add", s);
    a->name = strdup(name);
    a->auth = strdup(tokfile ? "xoauth2" : "password");
    if (!a->name || !a->auth) s = mb_errf(MB_ERR_NOMEM, "account");
    if (!s) s = mb_account_keys_load(&x.keys);
    if (!s) s = read_secret(tokfile ? "--xoauth2-token-file" : "--password-file",
                            tokfile ? tokfile : pwfile, &x.secret);
    /* Log in once: a wrong password is an error now, not a failed job later. */
    if (!s) s = session_log_in(&x);
    if (!s) s = mb_cli_db(&x.db);
    if (!s) s = mb_account_insert(x.db, &x.keys, a, x.secret);
    if (!s)
        printf("account %s added (id %" PRIu64 ", %s://%s@%s:%d, %s)\n", a->name, a->id,
               strcmp(a->tls, "imaps") ? "imap" : "imaps", a->username, a->host, a->port, a->tls);
    return session_end(&x, "account add", s);
}

static int cmd_list(int argc, char **argv)
{
    bool json = argc > 1 && !strcmp(argv[1], "--json");
    mb_db *db;
    mb_status s = mb_cli_db(&db);
    if (s)
        return mb_cli_fail("account list", s);
    PGresult *r;
    s = mb_db_query(db, "SELECT a.id, a.name, a.kind, a.host, a.port, a.tls, a.username, a.auth, "
                        "(SELECT count(*) FROM emails e WHERE e.account_id = a.id) "
                        "FROM accounts a ORDER BY a.name", 0, NULL, &r);
    if (s) {
        mb_db_free(db);
        return mb_cli_fail("account list", s);
    }
    if (!json && PQntuples(r))
        printf("%-6s %-20s %-6s %-30s %-9s %-9s %s\n", "ID", "NAME", "KIND", "SERVER", "TLS", "AUTH",
               "EMAILS");
    mb_buf line = MB_BUF_INIT;
    for (int i = 0; i < PQntuples(r); i++) {
        if (json) {
            mb_buf_reset(&line);
            mb_buf_printf(&line, "{\"id\":%s,\"name\":", PQgetvalue(r, i, 0));
            mb_buf_json_str(&line, PQgetvalue(r, i, 1), strlen(PQgetvalue(r, i, 1)));
            mb_buf_printf(&line, ",\"kind\":\"%s\",\"host\":", PQgetvalue(r, i, 2));
            mb_buf_json_str(&line, PQgetvalue(r, i, 3), strlen(PQgetvalue(r, i, 3)));
            mb_buf_printf(&line, ",\"port\":%s,\"tls\":\"%s\",\"username\":", PQgetvalue(r, i, 4),
                          PQgetvalue(r, i, 5));
            mb_buf_json_str(&line, PQgetvalue(r, i, 6), strlen(PQgetvalue(r, i, 6)));
            mb_buf_printf(&line, ",\"auth\":\"%s\",\"emails\":%s}", PQgetvalue(r, i, 7),
                          PQgetvalue(r, i, 8));
            puts(mb_buf_cstr(&line));
        } else {
            char server[300];
            snprintf(server, sizeof server, "%s@%s:%s", PQgetvalue(r, i, 6), PQgetvalue(r, i, 3),
                     PQgetvalue(r, i, 4));
            printf("%-6s %-20s %-6s %-30s %-9s %-9s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                   PQgetvalue(r, i, 2), server, PQgetvalue(r, i, 5), PQgetvalue(r, i, 7),
                   PQgetvalue(r, i, 8));
        }
    }
    if (!json && !PQntuples(r))
        printf("no accounts (add one with `mailbus account add`)\n");
    mb_buf_free(&line);
    PQclear(r);
    mb_db_free(db);
    return 0;
}

static int cmd_remove(int argc, char **argv)
{
    if (argc != 2) {
        fputs(usage, stderr);
        return 2;
    }
    mb_db *db;
    mb_status s = mb_cli_db(&db);
    if (!s) s = mb_account_remove(db, argv[1]);
    mb_db_free(db);
    if (s)
        return mb_cli_fail("account remove", s);
    printf("account %s removed with its emails, folders and jobs (blobs stay until cleanup)\n", argv[1]);
    return 0;
}

/* Open the stored credential and log in with it. */
static int cmd_test(int argc, char **argv)
{
    if (argc != 2) {
        fputs(usage, stderr);
        return 2;
    }
    session x = {0};
    mb_status s = mb_account_keys_load(&x.keys);
    if (!s) s = mb_cli_db(&x.db);
    if (!s) s = mb_account_load(x.db, &x.keys, argv[1], &x.a, &x.secret);
    if (!s) s = session_log_in(&x);
    if (!s)
        printf("account %s: logged in to %s:%d as %s\n", x.a.name, x.a.host, x.a.port,
               x.a.username);
    return session_end(&x, "account test", s);
}

int mb_cli_account(int argc, char **argv)
{
    if (argc < 2 || mb_cli_want_help(argc, argv)) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "add")) return cmd_add(argc - 1, argv + 1);
    if (!strcmp(argv[1], "list")) return cmd_list(argc - 1, argv + 1);
    if (!strcmp(argv[1], "remove")) return cmd_remove(argc - 1, argv + 1);
    if (!strcmp(argv[1], "test")) return cmd_test(argc - 1, argv + 1);
    fprintf(stderr, "mailbus account: unknown subcommand '%s'\n%s", argv[1], usage);
    return 2;
}
