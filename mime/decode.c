/* decode.c — streaming Content-Transfer-Encoding decoders.
 *
 * The encoded body is already in memory (the mmapped message), so decoders
 * walk it once and only the output is chunked: at most MB_MIME_CHUNK bytes
 * are produced before the sink is called. Memory use is independent of the
 * part's size. Base64 skips whitespace and garbage (flagging garbage);
 * quoted-printable leaves malformed "=" escapes literal. */
#include "mime/mime_int.h"

#include <string.h>

typedef struct {
    char *buf;
    size_t n;
    mb_mime_sink sink;
    void *ctx;
} outq;

static inline mb_status put(outq *o, char c)
{
    o->buf[o->n++] = c;
    if (o->n == MB_MIME_CHUNK) {
        o->n = 0;
        mb_status s = mime_budget_check();
        return s ? s : o->sink(o->ctx, o->buf, MB_MIME_CHUNK);
    }
    return MB_OK;
}

static mb_status flush(outq *o)
{
    mb_status s = o->n ? o->sink(o->ctx, o->buf, o->n) : MB_OK;
    o->n = 0;
    return s;
}

static void b64_init(signed char *t)
{
    memset(t, -1, 256);
    for (int i = 0; i < 26; i++) {
        t['A' + i] = (signed char)i;
        t['a' + i] = (signed char)(26 + i);
    }
    for (int i = 0; i < 10; i++)
        t['0' + i] = (signed char)(52 + i);
    t['+'] = 62;
    t['/'] = 63;
}

static int hexv(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

mb_status mime_decode_body(int cte, const char *p, const char *end, char *buf,
                           mb_mime_sink sink, void *ctx, bool *bad)
{
    outq o = {buf, 0, sink, ctx};
    mb_status s = MB_OK;
    *bad = false;
    if (cte == CTE_BASE64) {
        signed char t[256];
        b64_init(t);
        unsigned acc = 0;
        int nq = 0;
        for (; p < end && !s; p++) {
            unsigned char c = (unsigned char)*p;
            int v = t[c];
            if (v < 0) {
                if (c == '=') {
                    /* padding ends a quantum; data after it is tolerated
                     * (concatenated base64), a lone char before it is not */
                    if (nq == 1)
                        *bad = true;
                    else if (nq == 2)
                        s = put(&o, (char)(acc >> 4));
                    else if (nq == 3 && !(s = put(&o, (char)(acc >> 10))))
                        s = put(&o, (char)(acc >> 2));
                    nq = 0;
                    acc = 0;
                } else if (c != '\r' && c != '\n' && c != ' ' && c != '\t') {
                    *bad = true;
                }
                continue;
            }
            acc = (acc << 6) | (unsigned)v;
            if (++nq == 4) {
                if (!(s = put(&o, (char)(acc >> 16))) && !(s = put(&o, (char)(acc >> 8))))
                    s = put(&o, (char)acc);
                nq = 0;
                acc = 0;
            }
        }
        /* partial quantum at '=' or end */
        if (!s && nq == 1)
            *bad = true;
        else if (!s && nq == 2)
            s = put(&o, (char)(acc >> 4));
        else if (!s && nq == 3) {
            if (!(s = put(&o, (char)(acc >> 10))))
                s = put(&o, (char)(acc >> 2));
        }
        return s ? s : flush(&o);
    }
    if (cte == CTE_QP) {
        while (p < end && !(s = mime_budget_check())) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *le = nl ? nl : end;         /* line content end */
            const char *ce = le;
            if (ce > p && ce[-1] == '\r')
                ce--;
            const char *te = ce; /* trailing whitespace is transport padding */
            while (te > p && (te[-1] == ' ' || te[-1] == '\t'))
                te--;
            bool soft = false;
            for (const char *q = p; q < te && !s; q++) {
                if (*q == '=') {
                    if (q + 1 == te) {
                        soft = true;
                        break;
                    }
                    int h1 = q + 1 < te ? hexv((unsigned char)q[1]) : -1;
                    int h2 = q + 2 < te ? hexv((unsigned char)q[2]) : -1;
                    if (h1 >= 0 && h2 >= 0) {
                        s = put(&o, (char)(h1 * 16 + h2));
                        q += 2;
                        continue;
                    }
                    *bad = true;
                }
                s = put(&o, *q);
            }
            if (!soft && nl && !s) {
                for (const char *q = ce; q <= nl && !s; q++) /* keep CRLF or LF */
                    s = put(&o, *q);
            }
            p = nl ? nl + 1 : end;
        }
        return s ? s : flush(&o);
    }
    /* identity: hand out the bytes in chunks straight from the message */
    while (p < end && !s && !(s = mime_budget_check())) {
        size_t n = (size_t)(end - p);
        if (n > MB_MIME_CHUNK)
            n = MB_MIME_CHUNK;
        s = sink(ctx, p, n);
        p += n;
    }
    return s;
}
