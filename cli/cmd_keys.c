/* cmd_keys.c — `mailbus keys rotate --new-key-file F`: every stored credential
 * re-sealed under a new key (sources/account.h). */
#include "cli/cli.h"
#include "cli/common.h"
#include "sources/account.h"
#include "util/secret.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "usage: mailbus keys rotate --new-key-file F\n\n"
    "Re-seals every stored credential (IMAP passwords, tokens) under the key in F\n"
    "(32 raw bytes or 64 hex characters, chmod 600: `openssl rand -hex 32 > F`).\n"
    "It opens them with F, MAILBUS_SECRET_KEY_FILE or MAILBUS_SECRET_OLD_KEY_FILE.\n"
    "Each account is re-sealed on its own: interrupted, run it again. To rotate\n"
    "without stopping anything:\n"
    "  1. restart the stages with MAILBUS_SECRET_KEY_FILE=F and\n"
    "     MAILBUS_SECRET_OLD_KEY_FILE=the current key: they open credentials sealed\n"
    "     under either and seal new ones under F;\n"
    "  2. run `mailbus keys rotate --new-key-file F` (same environment);\n"
    "  3. drop MAILBUS_SECRET_OLD_KEY_FILE and the old key.\n";

int mb_cli_keys(int argc, char **argv)
{
    if (mb_cli_want_help(argc, argv)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc != 4 || strcmp(argv[1], "rotate") || strcmp(argv[2], "--new-key-file")) {
        fputs(usage, stderr);
        return 2;
    }
    mb_account_keys keys;
    unsigned char next[32];
    mb_db *db = NULL;
    size_t resealed = 0, already = 0;
    mb_status s = mb_account_keys_load(&keys);
    if (!s) s = mb_secret_key_load("--new-key-file", argv[3], next);
    if (!s) s = mb_cli_db(&db);
    if (!s) s = mb_account_keys_rotate(db, &keys, next, &resealed, &already);
    printf("%zu credentials re-sealed under the new key, %zu were already\n", resealed, already);
    int rc = s ? mb_cli_fail("keys rotate", s) : 0;
    if (!s)
        printf("now set MAILBUS_SECRET_KEY_FILE=%s everywhere and drop the old key\n", argv[3]);
    OPENSSL_cleanse(next, sizeof next);
    mb_account_keys_wipe(&keys);
    mb_db_free(db);
    return rc;
}
