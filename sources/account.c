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

mb_status mb_account_key(unsigned char key[32])
{
    const char *path;
    mb_status s = mb_env_require("MAILBUS_SECRET_KEY_FILE", &path);
    if (s)
        return s;
    return mb_secret_key_load(path, key);
}

static const char *col(PGresult *r, int c) { return PQgetisnull(r, 0, c) ? NULL : PQgetvalue(r, 0, c); }

mb_status mb_account_insert(mb_db *db, const unsigned char key[32], mb_account *a,
                            const char *secret)
{
    mb_buf sealed = MB_BUF_INIT, hex = MB_BUF_INIT;
    mb_status s = mb_secret_seal(key, secret, strlen(secret), a->name, &sealed);
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

mb_status mb_account_load(mb_db *db, const unsigned char key[32], const char *name_or_id,
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
        s = raw ? mb_secret_open(key, raw, n, out->name, &plain)
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
    mb_source_cfg cfg = {
        .host = a->host,
        .port = a->port,
        .tls = !strcmp(a->tls, "imaps") ? MB_TLS_IMAPS
               : !strcmp(a->tls, "starttls") ? MB_TLS_STARTTLS : MB_TLS_PLAIN,
        .user = a->username,
        .password = a->auth && !strcmp(a->auth, "xoauth2") ? NULL : secret,
        .xoauth2_token = a->auth && !strcmp(a->auth, "xoauth2") ? secret : NULL,
        .ca_file = mb_env("MAILBUS_IMAP_CA_FILE", NULL),
    };
    return mb_source_imap_new(&cfg, out);
}
