/* rfc2231.c — Content-Type / Content-Disposition values and parameters.
 *
 * Handles quoted strings with escapes, RFC 2231 continuations (name*0,
 * name*1*), extended values (charset'lang'%XX), mixes of both, and the
 * common non-compliant forms: RFC 2047 words inside quoted values, raw 8-bit
 * values, unquoted values with spaces. */
#include "mime/mime.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_PARAMS 64
#define MAX_SECTIONS 100

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Skip whitespace and (nested) comments. */
static const char *skip_cfws(const char *p, const char *end)
{
    while (p < end) {
        if (is_ws(*p)) {
            p++;
        } else if (*p == '(') {
            int depth = 0;
            while (p < end) {
                if (*p == '\\' && p + 1 < end) { p += 2; continue; }
                if (*p == '(') depth++;
                else if (*p == ')' && --depth == 0) { p++; break; }
                p++;
            }
        } else {
            break;
        }
    }
    return p;
}

void mb_mime_params_free(mb_mime_params *ps)
{
    free(ps->value);
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->p[i].name);
        free(ps->p[i].val);
    }
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

static void lower(char *s)
{
    for (; *s; s++)
        *s = (char)tolower((unsigned char)*s);
}

mb_status mb_mime_params_parse(const char *in, size_t n, mb_mime_params *out)
{
    memset(out, 0, sizeof *out);
    const char *p = skip_cfws(in, in + n), *end = in + n;
    const char *v = p;
    while (p < end && *p != ';' && !is_ws(*p) && *p != '(')
        p++;
    mb_buf b = MB_BUF_INIT;
    mb_status s = MB_OK;
    if (!(out->value = mb_strndup(v, (size_t)(p - v))))
        return MB_ERR_NOMEM;
    lower(out->value);
    while (p < end && out->n < MAX_PARAMS) {
        while (p < end && *p != ';')
            p++;
        if (p >= end)
            break;
        p = skip_cfws(p + 1, end);
        const char *nm = p;
        while (p < end && *p != '=' && *p != ';' && !is_ws(*p))
            p++;
        const char *nm_end = p;
        p = skip_cfws(p, end);
        if (p >= end || *p != '=' || nm_end == nm)
            continue;
        p = skip_cfws(p + 1, end);
        mb_buf_reset(&b);
        if (p < end && *p == '"') {
            p++;
            while (p < end && *p != '"') {
                if (*p == '\\' && p + 1 < end)
                    p++;
                if (*p != '\r' && *p != '\n' && (s = mb_buf_putc(&b, *p)))
                    goto fail;
                p++;
            }
            if (p < end)
                p++;
        } else {
            const char *vs = p;
            while (p < end && *p != ';')
                p++;
            const char *ve = p;
            while (ve > vs && is_ws(ve[-1]))
                ve--;
            if ((s = mb_buf_append(&b, vs, (size_t)(ve - vs))))
                goto fail;
        }
        struct mb_mime_param pr = {NULL, -1, false, NULL};
        size_t nl = (size_t)(nm_end - nm);
        if (nl && nm[nl - 1] == '*') {
            pr.ext = true;
            nl--;
        }
        const char *star = memchr(nm, '*', nl);
        if (star) {
            char *e;
            long sec = strtol(star + 1, &e, 10);
            if (e != nm + nl || sec < 0 || sec >= MAX_SECTIONS)
                continue;
            pr.section = (int)sec;
            nl = (size_t)(star - nm);
        }
        void *np = mb_grow(out->p, out->n, sizeof *out->p);
        if (!np) { s = mb_errf(MB_ERR_NOMEM, "mime params"); goto fail; }
        out->p = np;
        pr.name = mb_strndup(nm, nl);
        pr.val = mb_strndup(b.data ? b.data : "", b.len);
        if (!pr.name || !pr.val) {
            free(pr.name);
            free(pr.val);
            s = MB_ERR_NOMEM;
            goto fail;
        }
        lower(pr.name);
        out->p[out->n++] = pr;
    }
    mb_buf_free(&b);
    return MB_OK;
fail:
    mb_buf_free(&b);
    mb_mime_params_free(out);
    return s;
}

static int hexv(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static mb_status pct_decode(const char *v, mb_buf *raw)
{
    mb_status s = MB_OK;
    for (; *v && !s; v++) {
        if (*v == '%' && hexv((unsigned char)v[1]) >= 0 && hexv((unsigned char)v[2]) >= 0) {
            s = mb_buf_putc(raw, (char)(hexv((unsigned char)v[1]) * 16 + hexv((unsigned char)v[2])));
            v += 2;
        } else {
            s = mb_buf_putc(raw, *v);
        }
    }
    return s;
}

mb_status mb_mime_param_get(const mb_mime_params *ps, const char *name, char **out,
                            mb_mime_defects *d)
{
    *out = NULL;
    mb_buf raw = MB_BUF_INIT, res = MB_BUF_INIT;
    mb_status s = MB_OK;
    char charset[64] = "";
    bool found_2231 = false;
    /* name* (single extended value) or name*0.. continuations */
    for (int sec = -1; sec < MAX_SECTIONS && !s; sec++) {
        const struct mb_mime_param *hit = NULL;
        for (size_t i = 0; i < ps->n; i++)
            if (ps->p[i].section == sec && !strcmp(ps->p[i].name, name) &&
                (sec >= 0 || ps->p[i].ext)) {
                hit = &ps->p[i];
                break;
            }
        if (!hit) {
            if (sec >= 0)
                break;
            continue;
        }
        const char *v = hit->val;
        if (hit->ext && (sec <= 0) && !found_2231) {
            /* charset'lang'value */
            const char *q1 = strchr(v, '\'');
            const char *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
            if (q1 && q2) {
                size_t cl = (size_t)(q1 - v);
                if (cl >= sizeof charset)
                    cl = sizeof charset - 1;
                memcpy(charset, v, cl);
                charset[cl] = '\0';
                v = q2 + 1;
            }
        }
        found_2231 = true;
        s = hit->ext ? pct_decode(v, &raw) : mb_buf_puts(&raw, v);
        if (sec == -1)
            break; /* name* is complete on its own */
    }
    if (s)
        goto done;
    if (found_2231) {
        bool unknown = false;
        s = mb_mime_to_utf8(charset[0] ? charset : NULL, raw.data ? raw.data : "", raw.len,
                            &res, &unknown);
        if (unknown && d)
            mb_mime_defect(d, "unknown charset '%s' in parameter %s", charset, name);
    } else {
        for (size_t i = 0; i < ps->n; i++)
            if (ps->p[i].section == -1 && !ps->p[i].ext && !strcmp(ps->p[i].name, name)) {
                s = mb_mime_decode_header(ps->p[i].val, strlen(ps->p[i].val), &res, d, name);
                found_2231 = true; /* found something */
                break;
            }
    }
    if (!s && found_2231) {
        if (!res.data && (s = mb_buf_append(&res, "", 0)))
            goto done;
        *out = mb_buf_steal(&res);
        if (!*out)
            s = MB_ERR_NOMEM;
    }
done:
    mb_buf_free(&raw);
    mb_buf_free(&res);
    return s;
}
