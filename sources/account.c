/* account.c — stored mail accounts (see account.h). */
#include "sources/account.h"

#include "sources/imap/imap.h"
#include "util/buf.h"
#include "util/env.h"
#include "util/secret.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void mb_account_free(mb_account *a)
{
    if (!a)
        return;
    free(a->name);
    free(a->kind);
    free(a->host);
    free(a->tls);
    free(a->username);
    free(a->auth);
    memset(a, 0, sizeof *a);
}

void mb_account_secret_free(char *secret)
{
    if (secret) {
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* %XX-decode s[0..n) into a new string. */
static mb_status pct_decode(const char *s, size_t n, const char *what, char **out)
{
    mb_buf b = MB_BUF_INIT;
    mb_status st = MB_OK;
    for (size_t i = 0; i < n && !st; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                st = mb_errf(MB_ERR_INVALID, "bad %%-escape in %s", what);
                break;
            }
            st = mb_buf_putc(&b, (char)(hi * 16 + lo));
            i += 2;
        } else {
            st = mb_buf_putc(&b, s[i]);
        }
    }
    if (st) {
        mb_buf_free(&b);
        return st;
    }
    *out = mb_buf_steal(&b);
    return *out ? MB_OK : MB_ERR_NOMEM;
}

mb_status mb_account_parse_url(const char *url, bool starttls, mb_account *out)
{
    memset(out, 0, sizeof *out);
    const char *rest;
    const char *tls;
    int dport;
    if (!strncmp(url, "imaps://", 8)) {
        rest = url + 8;
        tls = "imaps";
        dport = 993;
        if (starttls)
            return mb_errf(MB_ERR_INVALID, "%s: --starttls goes with imap://, not imaps://", url);
    } else if (!strncmp(url, "imap://", 7)) {
        rest = url + 7;
        tls = starttls ? "starttls" : "plain";
        dport = 143;
    } else {
        return mb_errf(MB_ERR_INVALID, "'%s': expected imaps://USER@HOST[:PORT] or imap://...", url);
    }
    const char *at = strrchr(rest, '@');
    if (!at || at == rest)
        return mb_errf(MB_ERR_INVALID, "'%s': missing USER@ before the host", url);
    const char *host = at + 1;
    size_t hostlen = strcspn(host, ":/");
    if (hostlen == 0)
        return mb_errf(MB_ERR_INVALID, "'%s': missing host", url);
    int port = dport;
    const char *after = host + hostlen;
    if (*after == ':') {
        uint64_t p;
        char pbuf[8];
        size_t plen = strcspn(after + 1, "/");
        if (plen == 0 || plen >= sizeof pbuf)
            return mb_errf(MB_ERR_INVALID, "'%s': bad port", url);
        memcpy(pbuf, after + 1, plen);
        pbuf[plen] = '\0';
        if (mb_parse_u64(pbuf, 65535, &p) || p == 0)
            return mb_errf(MB_ERR_INVALID, "'%s': bad port '%s'", url, pbuf);
        port = (int)p;
        after += 1 + plen;
    }
    if (*after && strcmp(after, "/"))
        return mb_errf(MB_ERR_INVALID, "'%s': unexpected '%s' after the host", url, after);
    mb_status s = pct_decode(rest, (size_t)(at - rest), "the user name", &out->username);
    if (!s && !(out->host = mb_strndup(host, hostlen))) s = MB_ERR_NOMEM;
    if (!s && !(out->tls = mb_strdup(tls))) s = MB_ERR_NOMEM;
    if (!s && !(out->kind = mb_strdup("imap"))) s = MB_ERR_NOMEM;
    out->port = port;
    if (s)
        mb_account_free(out);
    return s;
}

mb_status mb_account_keys_load(mb_account_keys *k)
{
    memset(k, 0, sizeof *k);
    const char *path;
    mb_status s = mb_env_require("MAILBUS_SECRET_KEY_FILE", &path);
    if (!s) s = mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", path, k->keys[0]);
    k->n = !s;
    const char *old = mb_env("MAILBUS_SECRET_OLD_KEY_FILE", "");
    if (!s && *old && !(s = mb_secret_key_load("MAILBUS_SECRET_OLD_KEY_FILE", old, k->keys[1])))
        k->n = 2;
    if (s)
        mb_account_keys_wipe(k);
    return s;
}

void mb_account_keys_wipe(mb_account_keys *k)
{
    OPENSSL_cleanse(k, sizeof *k);
}

/* The sealed credential opened with the first of keys[0..n) that fits
 * (*which: its index). */
static mb_status open_with(const unsigned char (*keys)[32], size_t n, const unsigned char *raw,
                           size_t len, const char *aad, mb_buf *plain, size_t *which)
{
    mb_status s = MB_ERR_AUTH;
    for (size_t i = 0; i < n && s == MB_ERR_AUTH; i++) {
        s = mb_secret_open(keys[i], raw, len, aad, plain);
        *which = i;
    }
    return s;
}

static const char *col(PGresult *r, int c) { return PQgetisnull(r, 0, c) ? NULL : PQgetvalue(r, 0, c); }

mb_status mb_account_insert(mb_db *db, const mb_account_keys *k, mb_account *a,
                            const char *secret)
{
    mb_buf sealed = MB_BUF_INIT, hex = MB_BUF_INIT;
    mb_status s = mb_secret_seal(k->keys[0], secret, strlen(secret), a->name, &sealed);
    if (!s) s = mb_buf_puts(&hex, "\\x");
    if (!s) s = mb_buf_hex(&hex, (const unsigned char *)sealed.data, sealed.len);
    if (s)
        goto out;
    char port[16];
    snprintf(port, sizeof port, "%d", a->port);
    const char *p[] = {a->name, a->kind, a->host, port, a->tls, a->username, a->auth,
                       mb_buf_cstr(&hex)};
    PGresult *r;
    s = mb_db_query(db,
                    "INSERT INTO accounts (name, kind, host, port, tls, username, auth, secret) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::bytea) RETURNING id",
                    8, p, &r);
    if (s) {
        if (!strcmp(mb_db_sqlstate(db), "23505"))
            s = mb_errf(MB_ERR_INVALID, "an account named '%s' already exists", a->name);
        goto out;
    }
    a->id = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
out:
    mb_buf_free(&sealed);
    mb_buf_free(&hex);
    return s;
}

mb_status mb_account_load(mb_db *db, const mb_account_keys *k, const char *name_or_id,
                          mb_account *out, char **secret_out)
{
    memset(out, 0, sizeof *out);
    if (secret_out)
        *secret_out = NULL;
    uint64_t id = 0;
    bool by_id = mb_parse_u64(name_or_id, INT64_MAX, &id) == MB_OK;
    mb_err_clear();
    const char *p[] = {name_or_id};
    PGresult *r;
    mb_status s = mb_db_query(db,
                              by_id ? "SELECT id, name, kind, host, port, tls, username, auth, secret "
                                      "FROM accounts WHERE id = $1::bigint"
                                    : "SELECT id, name, kind, host, port, tls, username, auth, secret "
                                      "FROM accounts WHERE name = $1",
                              1, p, &r);
    if (s)
        return s;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return mb_errf(MB_ERR_NOTFOUND, "no account '%s' (see `mailbus account list`)", name_or_id);
    }
    out->id = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
    out->name = mb_strdup(PQgetvalue(r, 0, 1));
    out->kind = mb_strdup(PQgetvalue(r, 0, 2));
    out->host = col(r, 3) ? mb_strdup(col(r, 3)) : NULL;
    out->port = col(r, 4) ? atoi(col(r, 4)) : 0;
    out->tls = col(r, 5) ? mb_strdup(col(r, 5)) : NULL;
    out->username = col(r, 6) ? mb_strdup(col(r, 6)) : NULL;
    out->auth = col(r, 7) ? mb_strdup(col(r, 7)) : NULL;
    if (!out->name || !out->kind) {
        PQclear(r);
        mb_account_free(out);
        return mb_errf(MB_ERR_NOMEM, "account '%s'", name_or_id);
    }
    if (secret_out) {
        size_t n;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, 0, 8), &n);
        mb_buf plain = MB_BUF_INIT;
        size_t which;
        s = raw ? open_with(k->keys, k->n, raw, n, out->name, &plain, &which)
                : mb_errf(MB_ERR_NOMEM, "account '%s': secret", out->name);
        PQfreemem(raw);
        if (!s)
            *secret_out = mb_buf_steal(&plain);
        else
            mb_err_wrap(s, "account '%s'", out->name);
        mb_buf_free(&plain);
    }
    PQclear(r);
    if (s)
        mb_account_free(out);
    return s;
}

mb_status mb_account_keys_rotate(mb_db *db, const mb_account_keys *k,
                                 const unsigned char next[32], size_t *resealed,
                                 size_t *already)
{
    *resealed = *already = 0;
    unsigned char keys[3][32]; /* next first: an account done before is found at once */
    memcpy(keys[0], next, 32);
    memcpy(keys[1], k->keys, k->n * 32);
    PGresult *r;
    mb_status s = mb_db_query(db, "SELECT id, name, secret FROM accounts ORDER BY id", 0, NULL, &r);
    if (s) {
        OPENSSL_cleanse(keys, sizeof keys);
        return s;
    }
    long fault_after = 0; /* test-only: exit after this many re-sealed, as a crash would */
    mb_env_int("MAILBUS_FAULT_KEYS_ROTATE_EXIT_AFTER", 0, 0, 1000000, &fault_after);
    mb_status first = MB_OK;
    char first_msg[600] = "";
    for (int i = 0; i < PQntuples(r) && !s; i++) {
        const char *id = PQgetvalue(r, i, 0), *name = PQgetvalue(r, i, 1);
        size_t n, which = 0;
        unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, i, 2), &n);
        mb_buf plain = MB_BUF_INIT, sealed = MB_BUF_INIT, hex = MB_BUF_INIT, was = MB_BUF_INIT;
        mb_status e = raw ? open_with((const unsigned char(*)[32])keys, k->n + 1, raw, n, name,
                                      &plain, &which)
                          : mb_errf(MB_ERR_NOMEM, "account '%s': secret", name);
        if (e == MB_ERR_AUTH)
            e = mb_errf(MB_ERR_AUTH, "account '%s': its credential opens with none of the keys",
                        name);
        if (!e && which == 0) {
            (*already)++;
        } else if (!e) {
            e = mb_secret_seal(next, plain.data, plain.len, name, &sealed);
            if (!e) e = mb_buf_puts(&hex, "\\x");
            if (!e) e = mb_buf_hex(&hex, (const unsigned char *)sealed.data, sealed.len);
            if (!e) e = mb_buf_puts(&was, "\\x");
            if (!e) e = mb_buf_hex(&was, raw, n);
            /* Only if nobody changed it meanwhile (then: run it again). */
            const char *p[] = {id, mb_buf_cstr(&hex), mb_buf_cstr(&was)};
            PGresult *u;
            if (!e) e = mb_db_query(db, "UPDATE accounts SET secret = $2::bytea WHERE id = "
                                        "$1::bigint AND secret = $3::bytea RETURNING id", 3, p, &u);
            if (!e) {
                bool hit = PQntuples(u) == 1;
                PQclear(u);
                if (!hit)
                    e = mb_errf(MB_ERR_BUSY, "account '%s' changed while its credential was "
                                "re-sealed: run it again", name);
                else
                    (*resealed)++;
            }
            if (!e && fault_after && *resealed >= (size_t)fault_after)
                _exit(3);
        }
        PQfreemem(raw);
        mb_secret_buf_wipe(&plain);
        mb_buf_free(&sealed);
        mb_buf_free(&hex);
        mb_buf_free(&was);
        if (e == MB_ERR_DB)
            s = e; /* Postgres gone: stop */
        else if (e && !first) { /* keep the first, go on with the others */
            first = e;
            snprintf(first_msg, sizeof first_msg, "%s", mb_err_last());
        }
    }
    PQclear(r);
    OPENSSL_cleanse(keys, sizeof keys);
    if (!s && first)
        s = mb_errf(first, "%s", first_msg);
    return s;
}

mb_status mb_account_remove(mb_db *db, const char *name_or_id)
{
    uint64_t id;
    bool by_id = mb_parse_u64(name_or_id, INT64_MAX, &id) == MB_OK;
    const char *p[] = {name_or_id};
    PGresult *r;
    mb_status s = mb_db_query(db,
                              by_id ? "DELETE FROM accounts WHERE id = $1::bigint RETURNING id"
                                    : "DELETE FROM accounts WHERE name = $1 RETURNING id",
                              1, p, &r);
    if (s)
        return s;
    int n = PQntuples(r);
    PQclear(r);
    return n ? MB_OK : mb_errf(MB_ERR_NOTFOUND, "no account '%s'", name_or_id);
}

mb_status mb_account_source(const mb_account *a, const char *secret, mb_source **out)
{
    if (strcmp(a->kind, "imap"))
        return mb_errf(MB_ERR_CONFIG, "account '%s': kind '%s' is not supported yet", a->name,
                       a->kind);
    long timeout_s, max_literal;
    mb_status st = mb_env_int("MAILBUS_IMAP_TIMEOUT", 60, 1, 3600, &timeout_s);
    if (!st)
        st = mb_env_int("MAILBUS_IMAP_MAX_LITERAL", 256L << 20, 1L << 20, 1L << 40, &max_literal);
    if (st)
        return st;
    mb_source_cfg cfg = {
        .host = a->host,
        .port = a->port,
        .tls = !strcmp(a->tls, "imaps") ? MB_TLS_IMAPS
               : !strcmp(a->tls, "starttls") ? MB_TLS_STARTTLS : MB_TLS_PLAIN,
        .user = a->username,
        .password = a->auth && !strcmp(a->auth, "xoauth2") ? NULL : secret,
        .xoauth2_token = a->auth && !strcmp(a->auth, "xoauth2") ? secret : NULL,
        .ca_file = mb_env("MAILBUS_IMAP_CA_FILE", NULL),
        .timeout_s = (int)timeout_s,
        .max_literal = (uint64_t)max_literal,
    };
    return mb_source_imap_new(&cfg, out);
}
