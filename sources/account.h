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

/* The credential keys: key seals and opens (MAILBUS_SECRET_KEY_FILE); old,
 * when set (MAILBUS_SECRET_OLD_KEY_FILE), only opens — while `mailbus keys
 * rotate` re-seals every credential under a new key, both are accepted. */
typedef struct {
    unsigned char keys[2][32]; /* [0] seals and opens, [1] (the old one) only opens */
    size_t n;                  /* keys loaded: 1, or 2 with an old one */
} mb_account_keys;

/* Read the key files (refused unless only their owner can read them). */
mb_status mb_account_keys_load(mb_account_keys *k);
void mb_account_keys_wipe(mb_account_keys *k);

/* Insert a new account (name must be unique); its credential sealed with
 * k->keys[0]. */
mb_status mb_account_insert(mb_db *db, const mb_account_keys *k, mb_account *a,
                            const char *secret);
/* Load by name or decimal id; *secret_out (may be NULL; then k may be too)
 * gets the decrypted credential (caller frees with mb_account_secret_free). */
mb_status mb_account_load(mb_db *db, const mb_account_keys *k, const char *name_or_id,
                          mb_account *out, char **secret_out);
/* `mailbus keys rotate`: every credential re-sealed with next, each in a
 * statement of its own (interrupted, run it again); opened with next or one
 * of k's keys. *resealed and *already count the accounts. An account whose
 * credential none of them opens is an error naming it, after the others. */
mb_status mb_account_keys_rotate(mb_db *db, const mb_account_keys *k,
                                 const unsigned char next[32], size_t *resealed,
                                 size_t *already);
mb_status mb_account_remove(mb_db *db, const char *name_or_id);
void mb_account_secret_free(char *secret);

/* A new, not yet connected source for the account. */
mb_status mb_account_source(const mb_account *a, const char *secret, mb_source **out);

#endif
