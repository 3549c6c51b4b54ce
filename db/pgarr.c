/* pgarr.c — mb_pgarr, Postgres array literals ('{"a","b\"c",NULL}') built
 * element by element, so a batch of rows travels as one array parameter per
 * column and is written with a single INSERT ... SELECT FROM unnest(...).
 *
 * Quoting rules (Postgres "Array Value Input"): inside double quotes only
 * '"' and '\' need a backslash; an unquoted NULL is SQL NULL. Strings are
 * always quoted so "", "NULL", spaces, commas and braces need no special
 * cases. */
#include "db/db.h"
#include "util/utf8.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

void mb_pgarr_free(mb_pgarr *a)
{
    mb_buf_free(&a->buf);
    a->n = 0;
}

void mb_pgarr_reset(mb_pgarr *a)
{
    mb_buf_reset(&a->buf);
    a->n = 0;
}

/* Open the literal, or reopen it if cstr() closed it, then add the
 * separator for a new element. No element ends in a bare '}' (strings and
 * times end in '"'), so a trailing brace is always cstr()'s. */
static mb_status begin_elem(mb_pgarr *a)
{
    if (a->buf.len == 0)
        return mb_buf_putc(&a->buf, '{');
    if (a->buf.data[a->buf.len - 1] == '}')
        a->buf.data[--a->buf.len] = '\0';
    return a->n > 0 ? mb_buf_putc(&a->buf, ',') : MB_OK;
}


mb_status mb_pgarr_add_strn(mb_pgarr *a, const char *s, size_t n)
{
    if (!s)
        return mb_pgarr_add_null(a);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] == 0)
            return mb_errf(MB_ERR_INVALID, "array element %zu: NUL byte at offset %zu "
                           "(Postgres text cannot hold it)", a->n, i);
        size_t l = mb_utf8_seq(u + i, n - i);
        if (!l)
            return mb_errf(MB_ERR_INVALID, "array element %zu: invalid UTF-8 at offset %zu",
                           a->n, i);
        i += l;
    }
    mb_status st = begin_elem(a);
    if (st == MB_OK)
        st = mb_buf_reserve(&a->buf, n + n / 8 + 3);
    if (st != MB_OK)
        return st;
    st = mb_buf_putc(&a->buf, '"');
    size_t run = 0; /* copy unescaped stretches in one go */
    for (size_t i = 0; i < n && st == MB_OK; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            st = mb_buf_append(&a->buf, s + run, i - run);
            if (st == MB_OK)
                st = mb_buf_putc(&a->buf, '\\');
            run = i;
        }
    }
    if (st == MB_OK)
        st = mb_buf_append(&a->buf, s + run, n - run);
    if (st == MB_OK)
        st = mb_buf_putc(&a->buf, '"');
    if (st == MB_OK)
        a->n++;
    return st;
}

mb_status mb_pgarr_add_str(mb_pgarr *a, const char *s)
{
    return s ? mb_pgarr_add_strn(a, s, strlen(s)) : mb_pgarr_add_null(a);
}

static mb_status add_raw(mb_pgarr *a, const char *text)
{
    mb_status st = begin_elem(a);
    if (st == MB_OK)
        st = mb_buf_puts(&a->buf, text);
    if (st == MB_OK)
        a->n++;
    return st;
}

mb_status mb_pgarr_add_null(mb_pgarr *a) { return add_raw(a, "NULL"); }
mb_status mb_pgarr_add_bool(mb_pgarr *a, bool v) { return add_raw(a, v ? "t" : "f"); }

mb_status mb_pgarr_add_i64(mb_pgarr *a, int64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%" PRId64, v);
    return add_raw(a, num);
}

mb_status mb_pgarr_add_u64(mb_pgarr *a, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof num, "%" PRIu64, v);
    return add_raw(a, num);
}

mb_status mb_pgarr_add_bytea(mb_pgarr *a, const unsigned char *p, size_t n)
{
    if (!p)
        return mb_pgarr_add_null(a);
    /* bytea hex input is \x...; the backslash is doubled for the array
     * literal: "\\x0a1b". */
    mb_status st = begin_elem(a);
    if (st == MB_OK)
        st = mb_buf_reserve(&a->buf, 2 * n + 6);
    if (st == MB_OK)
        st = mb_buf_puts(&a->buf, "\"\\\\x");
    if (st == MB_OK)
        st = mb_buf_hex(&a->buf, p, n);
    if (st == MB_OK)
        st = mb_buf_putc(&a->buf, '"');
    if (st == MB_OK)
        a->n++;
    return st;
}

mb_status mb_pgarr_add_time(mb_pgarr *a, int64_t unix_secs)
{
    /* Years 1..9999 only: outside that the ISO form needs BC / 5 digits and
     * no mail date is legitimately there. */
    if (unix_secs < -62135596800LL || unix_secs > 253402300799LL)
        return mb_errf(MB_ERR_INVALID, "array element %zu: time %" PRId64
                       " is outside years 1..9999", a->n, unix_secs);
    time_t t = (time_t)unix_secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm))
        return mb_errf(MB_ERR_INVALID, "array element %zu: time %" PRId64 " not representable",
                       a->n, unix_secs);
    char ts[96];
    snprintf(ts, sizeof ts, "\"%04d-%02d-%02d %02d:%02d:%02d+00\"", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return add_raw(a, ts);
}

const char *mb_pgarr_cstr(mb_pgarr *a)
{
    mb_status st = MB_OK;
    if (a->buf.len == 0)
        st = mb_buf_puts(&a->buf, "{}");
    else if (a->buf.data[a->buf.len - 1] != '}')
        st = mb_buf_putc(&a->buf, '}');
    return st == MB_OK ? a->buf.data : NULL;
}
