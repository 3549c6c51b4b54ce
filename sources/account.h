/* account.h — mail accounts: parsing `imaps://user@host:port`, storing them
 * with their credential sealed (AES-256-GCM, key from
 * MAILBUS_SECRET_KEY_FILE, bound to the account name), loading them back,
 * and opening an mb_source for one. Credentials never leave this module in
 * a log line or a bus record: records carry the account id only. */
#ifndef MB_ACCOUNT_H
#define MB_ACCOUNT_H

#include "db/db.h"
#include "sources/source.h"

typedef struct {
    uint64_t id;
    char *name;
    char *kind;     /* "imap" */
    char *host;
    int port;
    char *tls;      /* "imaps", "starttls", "plain" */
    char *username;
    char *auth;     /* "password", "xoauth2" */
} mb_account;

void mb_account_free(mb_account *a); /* members only */

/* imaps://USER@HOST[:PORT] or imap://USER@HOST[:PORT] (plain, or STARTTLS
 * when starttls). USER may contain '@' (the last one separates the host) and
 * %XX escapes. */
mb_status mb_account_parse_url(const char *url, bool starttls, mb_account *out);

/* Read the 32-byte key named by MAILBUS_SECRET_KEY_FILE. */
mb_status mb_account_key(unsigned char key[32]);

/* Insert a new account (name must be unique). */
mb_status mb_account_insert(mb_db *db, const unsigned char key[32], mb_account *a,
                            const char *secret);
/* Load by name or decimal id; *secret_out (may be NULL) gets the decrypted
 * credential (caller frees after OPENSSL_cleanse / mb_account_secret_free). */
mb_status mb_account_load(mb_db *db, const unsigned char key[32], const char *name_or_id,
                          mb_account *out, char **secret_out);
mb_status mb_account_remove(mb_db *db, const char *name_or_id);
void mb_account_secret_free(char *secret);

/* A new, not yet connected source for the account. */
mb_status mb_account_source(const mb_account *a, const char *secret, mb_source **out);

#endif
