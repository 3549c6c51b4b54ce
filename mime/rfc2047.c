/* rfc2047.c — header values to UTF-8: RFC 2047 encoded words and raw text.
 *
 * Leniency matches what mail clients accept: encoded words may touch
 * surrounding text, whitespace between adjacent encoded words is dropped,
 * adjacent words in the same charset are joined before conversion (so a
 * multibyte character split across two words survives), and anything that
 * does not parse as an encoded word is left literal. */
#include "mime/mime_int.h"

#include <string.h>
#include <strings.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decode encoded-word text; false if it is not valid for its encoding. */
static bool ew_decode(char enc, const char *t, size_t n, mb_buf *out, mb_status *s)
{
    if (enc == 'Q' || enc == 'q') {
        for (size_t i = 0; i < n && !*s; i++) {
            char c = t[i];
            if (c == '_') c = ' ';
            else if (c == '=' && i + 2 < n && hexval(t[i + 1]) >= 0 && hexval(t[i + 2]) >= 0) {
                c = (char)(hexval(t[i + 1]) * 16 + hexval(t[i + 2]));
                i += 2;
            }
            *s = mb_buf_putc(out, c);
        }
        return true;
    }
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && !*s; i++) {
        if (t[i] == '=')
            break;
        int v = b64val((unsigned char)t[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *s = mb_buf_putc(out, (char)((acc >> bits) & 0xFF));
        }
    }
    return true;
}

/* Where the text of an encoded word starting at or after `from` stops: the
 * first "?=", whitespace or the end of the value at or after it. Remembered
 * across the calls for one value, so a value full of "=?x?Q?" starts with no
 * "?=" is read once, not once per start (that was quadratic). */
typedef struct {
    const char *from, *stop;
    bool unterminated; /* a "=?cs?e?" start had no "?=" */
} ew_memo;

static const char *ew_text_stop(ew_memo *m, const char *t, const char *end)
{
    if (m->stop && t >= m->from && t <= m->stop)
        return m->stop;
    const char *e = t;
    while (e + 1 < end && !(e[0] == '?' && e[1] == '=') && *e != ' ' && *e != '\t' &&
           *e != '\r' && *e != '\n')
        e++;
    m->from = t;
    m->stop = e;
    return e;
}

/* Try to parse "=?cs?e?text?=" at p; on success set the pieces and *len. */
static bool ew_parse(ew_memo *m, const char *p, const char *end, const char **cs, size_t *csl,
                     char *enc, const char **text, size_t *tl, size_t *len)
{
    if (end - p < 8 || p[0] != '=' || p[1] != '?')
        return false;
    const char *c = p + 2, *q = c;
    while (q < end && *q != '?' && *q != ' ' && *q != '\t' && q - c < 64)
        q++;
    if (q >= end || *q != '?' || q == c)
        return false;
    *cs = c;
    *csl = (size_t)(q - c);
    if (q + 3 >= end || !strchr("BbQq", q[1]) || q[2] != '?')
        return false;
    *enc = q[1];
    const char *t = q + 3;
    /* Q text may legitimately contain '?' only as =3F; stop at "?=". */
    const char *e = ew_text_stop(m, t, end);
    if (e + 1 >= end || e[0] != '?' || e[1] != '=') {
        m->unterminated = true;
        return false;
    }
    *text = t;
    *tl = (size_t)(e - t);
    *len = (size_t)(e + 2 - p);
    return true;
}

typedef struct {
    mb_buf bytes;   /* decoded bytes of the current run of encoded words */
    char cs[64];    /* their charset */
} ew_run;

static mb_status run_flush(ew_run *r, mb_buf *out, mb_mime_defects *d, const char *what)
{
    if (!r->bytes.len && !r->cs[0])
        return MB_OK;
    bool unknown = false;
    mb_status s = mb_mime_to_utf8(r->cs, r->bytes.data ? r->bytes.data : "", r->bytes.len,
                                  out, &unknown);
    if (unknown && d)
        mb_mime_defect(d, "unknown charset '%s' in %s", r->cs, what);
    mb_buf_reset(&r->bytes);
    r->cs[0] = '\0';
    return s;
}

mb_status mb_mime_decode_header(const char *in, size_t n, mb_buf *out, mb_mime_defects *d,
                                const char *what)
{
    const char *p = in, *end = in + n, *lit = in;
    ew_run run = {MB_BUF_INIT, ""};
    ew_memo memo = {NULL, NULL, false};
    bool prev_ew = false; /* last token was an encoded word */
    mb_status s = MB_OK;
    size_t start_len = out->len;
    while (p < end && !s && !(s = mime_budget_check())) {
        const char *cs, *text;
        size_t csl, tl, len;
        char enc;
        const char *q = p;
        if (!(*q == '=' && ew_parse(&memo, q, end, &cs, &csl, &enc, &text, &tl, &len))) {
            p++;
            continue;
        }
        /* Literal text before this word: dropped if it is only whitespace
         * between two encoded words. */
        bool ws_only = true;
        for (const char *w = lit; w < q; w++)
            if (*w != ' ' && *w != '\t' && *w != '\r' && *w != '\n')
                ws_only = false;
        char csbuf[64];
        size_t cpl = csl < sizeof csbuf - 1 ? csl : sizeof csbuf - 1;
        memcpy(csbuf, cs, cpl);
        csbuf[cpl] = '\0';
        char *star = strchr(csbuf, '*'); /* RFC 2231 language suffix */
        if (star)
            *star = '\0';
        if (!(prev_ew && ws_only) || strcasecmp(csbuf, run.cs)) {
            if ((s = run_flush(&run, out, d, what)))
                break;
            if (!(prev_ew && ws_only) && q > lit)
                s = mb_mime_to_utf8(NULL, lit, (size_t)(q - lit), out, NULL);
        }
        size_t before = run.bytes.len;
        if (!s && !ew_decode(enc, text, tl, &run.bytes, &s)) {
            /* Malformed: keep it literal. */
            run.bytes.len = before;
            if (run.bytes.data)
                run.bytes.data[before] = '\0';
            if (!s)
                s = run_flush(&run, out, d, what);
            if (!s)
                s = mb_mime_to_utf8(NULL, q, len, out, NULL);
            if (d)
                mb_mime_defect(d, "malformed encoded word in %s", what);
            prev_ew = false;
        } else {
            memcpy(run.cs, csbuf, strlen(csbuf) + 1);
            prev_ew = true;
        }
        p = lit = q + len;
    }
    if (!s)
        s = run_flush(&run, out, d, what);
    if (memo.unterminated && d)
        mb_mime_defect(d, "unterminated encoded word in %s, kept literal", what);
    if (!s && lit < end)
        s = mb_mime_to_utf8(NULL, lit, (size_t)(end - lit), out, NULL);
    mb_buf_free(&run.bytes);
    if (!s && !out->data)
        s = mb_buf_append(out, "", 0);
    (void)start_len;
    return s;
}
