/* buf.c — growable byte buffer (see buf.h). */
#include "util/buf.h"

#include "util/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mb_buf_free(mb_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void mb_buf_reset(mb_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

mb_status mb_buf_reserve(mb_buf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len - 1)
        return mb_errf(MB_ERR_TOOBIG, "buffer growth of %zu bytes overflows", extra);
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return MB_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return mb_errf(MB_ERR_NOMEM, "cannot grow buffer to %zu bytes", cap);
    b->data = p;
    b->cap = cap;
    return MB_OK;
}

mb_status mb_buf_append(mb_buf *b, const void *p, size_t n)
{
    mb_status s = mb_buf_reserve(b, n);
    if (s)
        return s;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return MB_OK;
}

mb_status mb_buf_puts(mb_buf *b, const char *s) { return mb_buf_append(b, s, strlen(s)); }
mb_status mb_buf_putc(mb_buf *b, char c) { return mb_buf_append(b, &c, 1); }

mb_status mb_buf_vprintf(mb_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return mb_errf(MB_ERR_INVALID, "bad format string '%s'", fmt);
    mb_status s = mb_buf_reserve(b, (size_t)n);
    if (s)
        return s;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return MB_OK;
}

mb_status mb_buf_printf(mb_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mb_status s = mb_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return s;
}


mb_status mb_buf_json_str(mb_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    mb_status st = mb_buf_reserve(b, n + 2);
    if (st) return st;
    if ((st = mb_buf_putc(b, '"'))) return st;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            st = mb_buf_append(b, e, 2);
            i++;
        } else if (c < 0x20) {
            char e[7];
            switch (c) {
            case '\n': st = mb_buf_append(b, "\\n", 2); break;
            case '\r': st = mb_buf_append(b, "\\r", 2); break;
            case '\t': st = mb_buf_append(b, "\\t", 2); break;
            default:
                e[0] = '\\'; e[1] = 'u'; e[2] = '0'; e[3] = '0';
                e[4] = hex[c >> 4]; e[5] = hex[c & 15];
                st = mb_buf_append(b, e, 6);
            }
            i++;
        } else {
            size_t l = mb_utf8_seq(p + i, n - i);
            if (l == 0) {
                st = mb_buf_append(b, "\xEF\xBF\xBD", 3);
                i++;
            } else {
                st = mb_buf_append(b, p + i, l);
                i += l;
            }
        }
        if (st) return st;
    }
    return mb_buf_putc(b, '"');
}

mb_status mb_buf_hex(mb_buf *b, const unsigned char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    mb_status st = mb_buf_reserve(b, n * 2);
    if (st) return st;
    for (size_t i = 0; i < n; i++) {
        b->data[b->len++] = hex[p[i] >> 4];
        b->data[b->len++] = hex[p[i] & 15];
    }
    b->data[b->len] = '\0';
    return MB_OK;
}

const char *mb_buf_cstr(const mb_buf *b) { return b->data ? b->data : ""; }

char *mb_buf_steal(mb_buf *b)
{
    char *p = b->data;
    if (!p) {
        p = malloc(1);
        if (p) p[0] = '\0';
    }
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

char *mb_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) {
        mb_errf(MB_ERR_NOMEM, "cannot allocate %zu bytes", n + 1);
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *mb_strdup(const char *s) { return mb_strndup(s, strlen(s)); }

void *mb_grow(void *v, size_t n, size_t size)
{
    if (n & (n - 1)) /* not 0 and not a power of two: room up to the next one */
        return v;
    size_t cap = n ? n * 2 : 1;
    if (!size || cap > SIZE_MAX / size || cap < n) {
        mb_errf(MB_ERR_TOOBIG, "array of %zu elements of %zu bytes is too large", cap, size);
        return NULL;
    }
    void *p = realloc(v, cap * size);
    if (!p)
        mb_errf(MB_ERR_NOMEM, "cannot grow an array to %zu elements", cap);
    return p;
}
