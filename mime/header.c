/* header.c — finding, iterating and unfolding header fields in place.
 *
 * Works on the caller's memory (the mmapped message): nothing is copied
 * until a field the parser needs is unfolded. Accepts CRLF and bare LF, an
 * obsolete space before the colon, and stops the section at the first line
 * that is neither a field nor a continuation (recorded as a defect). */
#include "mime/mime_int.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl + 1 : end;
}

static bool blank_line(const char *p, const char *end)
{
    return (p < end && *p == '\n') || (end - p >= 2 && p[0] == '\r' && p[1] == '\n') ||
           (end - p == 1 && *p == '\r');
}

/* A "Name:" line (name of printable non-space chars, optional spaces). */
static bool field_line(const char *p, const char *end)
{
    const char *q = p;
    while (q < end && *q > ' ' && *q < 127 && *q != ':')
        q++;
    if (q == p)
        return false;
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    return q < end && *q == ':';
}

void mime_headers_scan(const char *p, const char *end, bool top, mime_hsect *h)
{
    memset(h, 0, sizeof *h);
    if (top && end - p >= 5 && !memcmp(p, "From ", 5))
        p = line_end(p, end);
    h->start = p;
    const char *q = p;
    while (q < end) {
        if (blank_line(q, end)) {
            if (!h->truncated) /* past the limit, the section stays cut */
                h->end = q;
            h->body = line_end(q, end);
            return;
        }
        bool cont = (*q == ' ' || *q == '\t') && q > p;
        if (!cont && !field_line(q, end)) {
            h->bad_line = true;
            if (!h->truncated)
                h->end = q;
            h->body = q;
            return;
        }
        const char *n = line_end(q, end);
        if (!h->truncated && (size_t)(n - p) > MB_MIME_MAX_HEADER_BYTES) {
            h->truncated = true;
            h->end = q;
        }
        q = n;
    }
    if (!h->truncated)
        h->end = end;
    h->body = end;
    h->no_blank = true;
}

bool mime_field_next(const mime_hsect *h, const char **it, mime_field *f)
{
    const char *p = *it, *end = h->end;
    while (p < end) {
        const char *n = line_end(p, end);
        if (*p == ' ' || *p == '\t') { /* stray continuation */
            p = n;
            continue;
        }
        const char *c = memchr(p, ':', (size_t)(n - p));
        if (!c) {
            p = n;
            continue;
        }
        f->name = p;
        const char *ne = c;
        while (ne > p && (ne[-1] == ' ' || ne[-1] == '\t'))
            ne--;
        f->nlen = (size_t)(ne - p);
        f->val = c + 1;
        while (n < end && (*n == ' ' || *n == '\t'))
            n = line_end(n, end);
        f->vlen = (size_t)(n - f->val);
        *it = n;
        return true;
    }
    *it = end;
    return false;
}

bool mime_field_is(const mime_field *f, const char *name)
{
    return strlen(name) == f->nlen && !strncasecmp(f->name, name, f->nlen);
}

mb_status mime_unfold(const mime_field *f, mb_buf *out, bool *capped)
{
    mb_buf_reset(out);
    *capped = false;
    size_t n = f->vlen;
    if (n > MB_MIME_MAX_FIELD_BYTES) {
        n = MB_MIME_MAX_FIELD_BYTES;
        *capped = true;
    }
    const char *v = f->val, *e = v + n;
    while (v < e && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
        v++;
    mb_status s = mb_buf_reserve(out, (size_t)(e - v));
    if (s)
        return s;
    const char *run = v;
    for (const char *q = v; q < e; q++) {
        if (*q == '\r' || *q == '\n' || *q == '\0') {
            if ((s = mb_buf_append(out, run, (size_t)(q - run))))
                return s;
            if (*q == '\0' && (s = mb_buf_putc(out, ' ')))
                return s;
            run = q + 1;
        }
    }
    if ((s = mb_buf_append(out, run, (size_t)(e - run))))
        return s;
    while (out->len && (out->data[out->len - 1] == ' ' || out->data[out->len - 1] == '\t'))
        out->data[--out->len] = '\0';
    return MB_OK;
}
