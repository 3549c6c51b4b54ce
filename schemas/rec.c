/* rec.c — generic record helpers: freeing, field paths for error messages,
 * base64 for mb_bytes in JSON, and the msgpack-or-JSON entry points. */
#include "schemas/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void mb_path_init(mb_path *p, const mb_type *t)
{
    p->s[0] = '\0';
    p->len = 0;
    p->schema = t->schema ? t->schema : t->name;
}

static size_t path_add(mb_path *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static size_t path_add(mb_path *p, const char *fmt, ...)
{
    size_t mark = p->len;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->s + p->len, sizeof p->s - p->len, fmt, ap);
    va_end(ap);
    /* A path longer than the buffer is cut; the message stays useful. */
    if (n > 0) {
        p->len += (size_t)n;
        if (p->len >= sizeof p->s) p->len = sizeof p->s - 1;
    }
    return mark;
}

size_t mb_path_push_name(mb_path *p, const char *name)
{
    return p->len ? path_add(p, ".%s", name) : path_add(p, "%s", name);
}

size_t mb_path_push_index(mb_path *p, size_t i) { return path_add(p, "[%zu]", i); }

mb_status mb_path_err(const mb_path *p, mb_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->len) return mb_errf(st, "%s: field \"%s\": %s", p->schema, p->s, msg);
    return mb_errf(st, "%s: %s", p->schema, msg);
}

void mb_field_free(const mb_field *f, void *rec)
{
    char *p = (char *)rec + f->off;
    switch (f->type) {
    case MB_F_STR: {
        char *s;
        memcpy(&s, p, sizeof s);
        free(s);
        s = NULL;
        memcpy(p, &s, sizeof s);
        break;
    }
    case MB_F_U64: memset(p, 0, sizeof(uint64_t)); break;
    case MB_F_I64: memset(p, 0, sizeof(int64_t)); break;
    case MB_F_BOOL: memset(p, 0, sizeof(bool)); break;
    case MB_F_BYTES: {
        mb_bytes *b = (mb_bytes *)p;
        free(b->p);
        b->p = NULL;
        b->n = 0;
        break;
    }
    case MB_F_STRV: {
        mb_strv *v = (mb_strv *)p;
        for (size_t i = 0; i < v->n && v->v; i++) free(v->v[i]);
        free(v->v);
        v->v = NULL;
        v->n = 0;
        break;
    }
    case MB_F_U64V: {
        mb_u64v *v = (mb_u64v *)p;
        free(v->v);
        v->v = NULL;
        v->n = 0;
        break;
    }
    case MB_F_REC: mb_rec_free(f->sub, p); break;
    case MB_F_RECV: {
        mb_anyvec a = mb_vec_get(p);
        for (size_t i = 0; i < a.n && a.v; i++)
            mb_rec_free(f->sub, (char *)a.v + i * f->sub->size);
        free(a.v);
        mb_vec_set(p, NULL, 0);
        break;
    }
    }
}

void mb_rec_free(const mb_type *t, void *rec)
{
    if (!t || !rec) return;
    for (size_t i = 0; i < t->nfields; i++) mb_field_free(&t->fields[i], rec);
    memset(rec, 0, t->size);
}

bool mb_field_present(const mb_field *f, const void *rec)
{
    const char *p = (const char *)rec + f->off;
    switch (f->type) {
    case MB_F_STR: return *(char *const *)p != NULL;
    case MB_F_U64: return *(const uint64_t *)p != 0;
    case MB_F_I64: return *(const int64_t *)p != 0;
    case MB_F_BOOL: return *(const bool *)p;
    case MB_F_BYTES: return ((const mb_bytes *)p)->n != 0;
    case MB_F_STRV:
    case MB_F_U64V:
    case MB_F_RECV: return mb_vec_get(p).n != 0;
    case MB_F_REC: return true;
    }
    return false;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

mb_status mb_base64_encode(mb_buf *b, const unsigned char *p, size_t n)
{
    mb_status st = mb_buf_reserve(b, (n + 2) / 3 * 4);
    if (st) return st;
    char *o = b->data + b->len;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return MB_OK;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

mb_status mb_base64_decode(const char *s, size_t len, unsigned char **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (len % 4) return mb_errf(MB_ERR_INVALID, "base64 length %zu is not a multiple of 4", len);
    if (!len) return MB_OK;
    size_t pad = 0;
    if (s[len - 1] == '=') pad++;
    if (s[len - 2] == '=') pad++;
    unsigned char *p = malloc(len / 4 * 3);
    if (!p) return mb_errf(MB_ERR_NOMEM, "out of memory decoding base64");
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        bool last = i + 4 == len;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            v[k] = (last && c == '=' && k >= 4 - (int)pad) ? 0 : b64val(c);
            if (v[k] < 0) {
                free(p);
                return mb_errf(MB_ERR_INVALID, "invalid base64 character at offset %zu",
                               i + (size_t)k);
            }
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
                     (uint32_t)v[3];
        p[o++] = (unsigned char)(w >> 16);
        if (!last || pad < 2) p[o++] = (unsigned char)(w >> 8);
        if (!last || pad < 1) p[o++] = (unsigned char)w;
    }
    *out = p;
    *n = o;
    return MB_OK;
}

mb_status mb_rec_decode_any(const void *data, size_t len, const mb_type **type, void **rec)
{
    *type = NULL;
    *rec = NULL;
    char schema[64];
    mb_status st = mb_rec_peek_schema(data, len, schema, sizeof schema);
    if (st) return st;
    const mb_type *t = mb_type_by_schema(schema);
    if (!t) return mb_errf(MB_ERR_INVALID, "unknown schema \"%s\"", schema);
    void *r = calloc(1, t->size);
    if (!r) return mb_errf(MB_ERR_NOMEM, "%s: out of memory", t->schema);
    if ((st = mb_rec_decode(t, data, len, r))) {
        free(r);
        return st;
    }
    *type = t;
    *rec = r;
    return MB_OK;
}

mb_status mb_rec_decode_auto(const mb_type *t, const void *data, size_t len, void *rec)
{
    const unsigned char *p = data;
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r')) i++;
    if (i < len && p[i] == '{') return mb_rec_from_json(t, (const char *)data, len, rec);
    return mb_rec_decode(t, data, len, rec);
}
