/* snippet.c — the short plain-text preview of a message.
 *
 * Input is already UTF-8. Output: at most MB_MIME_SNIPPET_CHARS characters
 * (code points, never a cut sequence), whitespace runs (incl. NBSP and
 * control characters) collapsed to one space, trimmed. For HTML: tags are
 * dropped (block tags become a space), <script>, <style>, <head>, comments
 * are skipped entirely, and common named plus all numeric entities are
 * decoded. */
#include "mime/mime_int.h"
#include "util/utf8.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    mb_buf out;
    size_t chars;
    bool pending_space;
    bool full;
} snip;

static mb_status snip_put(snip *s, const char *p, size_t n) /* one code point */
{
    if (s->full)
        return MB_OK;
    unsigned char c = (unsigned char)p[0];
    bool ws = (n == 1 && (c <= ' ' || c == 0x7F)) ||
              (n == 2 && c == 0xC2 && (unsigned char)p[1] == 0xA0);
    if (ws) {
        s->pending_space = s->chars > 0;
        return MB_OK;
    }
    if (s->pending_space) {
        if (s->chars + 1 >= MB_MIME_SNIPPET_CHARS) {
            s->full = true;
            return MB_OK;
        }
        mb_status st = mb_buf_putc(&s->out, ' ');
        if (st)
            return st;
        s->chars++;
        s->pending_space = false;
    }
    s->chars++;
    if (s->chars >= MB_MIME_SNIPPET_CHARS)
        s->full = true;
    return mb_buf_append(&s->out, p, n);
}

static size_t cp_len(const char *p, size_t n)
{
    unsigned char c = (unsigned char)p[0];
    size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    return l > n ? n : l;
}

static mb_status snip_text(snip *s, const char *p, size_t n)
{
    mb_status st = MB_OK;
    for (size_t i = 0; i < n && !st && !s->full;) {
        size_t l = cp_len(p + i, n - i);
        st = snip_put(s, p + i, l);
        i += l;
    }
    return st;
}

static mb_status snip_done(snip *s, char **out)
{
    mb_status st = MB_OK;
    if (!s->out.data)
        st = mb_buf_append(&s->out, "", 0);
    if (!st && !(*out = mb_buf_steal(&s->out)))
        st = MB_ERR_NOMEM;
    mb_buf_free(&s->out);
    return st;
}

mb_status mb_mime_snippet_text(const char *utf8, size_t n, char **out)
{
    snip s = {MB_BUF_INIT, 0, false, false};
    mb_status st = snip_text(&s, utf8, n);
    if (st) {
        mb_buf_free(&s.out);
        return st;
    }
    return snip_done(&s, out);
}

static mb_status put_cp(snip *s, unsigned cp)
{
    char b[4];
    return snip_put(s, b, mb_utf8_encode(cp, b));
}

static const struct { const char *n; unsigned cp; } entities[] = {
    {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''},
    {"nbsp", 0xA0}, {"copy", 0xA9}, {"reg", 0xAE}, {"trade", 0x2122}, {"hellip", 0x2026},
    {"mdash", 0x2014}, {"ndash", 0x2013}, {"lsquo", 0x2018}, {"rsquo", 0x2019},
    {"ldquo", 0x201C}, {"rdquo", 0x201D}, {"sbquo", 0x201A}, {"bdquo", 0x201E},
    {"bull", 0x2022}, {"middot", 0xB7}, {"euro", 0x20AC}, {"pound", 0xA3}, {"yen", 0xA5},
    {"cent", 0xA2}, {"sect", 0xA7}, {"deg", 0xB0}, {"plusmn", 0xB1}, {"times", 0xD7},
    {"divide", 0xF7}, {"laquo", 0xAB}, {"raquo", 0xBB}, {"iexcl", 0xA1}, {"iquest", 0xBF},
    {"auml", 0xE4}, {"ouml", 0xF6}, {"uuml", 0xFC}, {"Auml", 0xC4}, {"Ouml", 0xD6},
    {"Uuml", 0xDC}, {"szlig", 0xDF}, {"eacute", 0xE9}, {"Eacute", 0xC9}, {"egrave", 0xE8},
    {"agrave", 0xE0}, {"aacute", 0xE1}, {"iacute", 0xED}, {"oacute", 0xF3}, {"uacute", 0xFA},
    {"ccedil", 0xE7}, {"ntilde", 0xF1}, {"ecirc", 0xEA}, {"acirc", 0xE2}, {"ocirc", 0xF4},
    {"aring", 0xE5}, {"oslash", 0xF8}, {"aelig", 0xE6}, {"zwnj", 0x200C}, {"zwj", 0x200D},
    {"shy", 0xAD}, {"ensp", 0x2002}, {"emsp", 0x2003}, {"thinsp", 0x2009}, {"rarr", 0x2192},
    {"larr", 0x2190}, {"hearts", 0x2665}, {"para", 0xB6}, {"frac12", 0xBD},
};

/* Decode an entity at p ('&'); returns bytes consumed, 0 if not one. */
static size_t entity(snip *s, const char *p, const char *end, mb_status *st)
{
    const char *q = p + 1;
    if (q < end && *q == '#') {
        q++;
        bool hex = q < end && (*q == 'x' || *q == 'X');
        if (hex)
            q++;
        unsigned long v = 0;
        const char *ds = q;
        while (q < end && (hex ? isxdigit((unsigned char)*q) : isdigit((unsigned char)*q)) &&
               q - ds < 8) {
            int c = (unsigned char)*q;
            v = v * (hex ? 16 : 10) +
                (unsigned long)(isdigit(c) ? c - '0' : tolower(c) - 'a' + 10);
            q++;
        }
        if (q == ds)
            return 0;
        if (q < end && *q == ';')
            q++;
        *st = put_cp(s, v > 0x10FFFF ? 0xFFFD : (unsigned)v);
        return (size_t)(q - p);
    }
    const char *ns = q;
    while (q < end && isalnum((unsigned char)*q) && q - ns < 10)
        q++;
    size_t l = (size_t)(q - ns);
    for (size_t i = 0; l && i < MB_ARRAY_LEN(entities); i++)
        if (strlen(entities[i].n) == l && !strncmp(ns, entities[i].n, l)) {
            if (q < end && *q == ';')
                q++;
            *st = put_cp(s, entities[i].cp);
            return (size_t)(q - p);
        }
    return 0;
}

static const char *find_ci(const char *p, const char *end, const char *needle)
{
    size_t nl = strlen(needle);
    for (; p + nl <= end; p++)
        if (!strncasecmp(p, needle, nl))
            return p;
    return NULL;
}

/* Index of name in the NULL-terminated list, or -1. */
static int tag_index(const char *name, size_t l, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (strlen(list[i]) == l && !strncasecmp(name, list[i], l))
            return i;
    return -1;
}

static bool tag_is(const char *name, size_t l, const char *const *list)
{
    return tag_index(name, l, list) >= 0;
}

mb_status mb_mime_snippet_html(const char *utf8, size_t n, char **out)
{
    bool unclosed;
    return mime_snippet_html(utf8, n, out, &unclosed);
}

mb_status mime_snippet_html(const char *utf8, size_t n, char **out, bool *unclosed)
{
    static const char *const skip[] = {"script", "style", "head", "title", "template", NULL};
    static const char *const block[] = {"br", "p", "div", "tr", "td", "th", "li", "ul", "ol",
                                        "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr",
                                        "blockquote", "body", "section", "article", "pre",
                                        "header", "footer", "center", NULL};
    snip s = {MB_BUF_INIT, 0, false, false};
    const char *p = utf8, *end = utf8 + n;
    mb_status st = MB_OK;
    /* absent[i]: no closing tag for skip[i] follows, so it is not searched
     * for again (each unclosed <head> searched the rest: quadratic). */
    bool absent[MB_ARRAY_LEN(skip)] = {false};
    *unclosed = false;
    while (p < end && !st && !s.full && !(st = mime_budget_check())) {
        if (*p == '<') {
            if (end - p >= 4 && !memcmp(p, "<!--", 4)) {
                const char *c = find_ci(p + 4, end, "-->");
                p = c ? c + 3 : end;
                continue;
            }
            const char *q = p + 1;
            bool closing = q < end && *q == '/';
            if (closing)
                q++;
            if (q >= end || !(isalpha((unsigned char)*q) || *q == '!' || *q == '?')) {
                st = snip_put(&s, p, 1); /* a lone '<' is text */
                p++;
                continue;
            }
            const char *ns = q;
            while (q < end && (isalnum((unsigned char)*q) || *q == '-' || *q == ':'))
                q++;
            size_t nl = (size_t)(q - ns);
            char quote = 0;
            while (q < end && (quote || *q != '>')) { /* attributes may quote '>' */
                if (quote && *q == quote)
                    quote = 0;
                else if (!quote && (*q == '"' || *q == '\''))
                    quote = *q;
                q++;
            }
            p = q < end ? q + 1 : end;
            int sk = closing ? -1 : tag_index(ns, nl, skip);
            if (sk >= 0 && p[-1] == '>' && p[-2] != '/') {
                char close[16] = "</";
                memcpy(close + 2, ns, nl);
                close[2 + nl] = '\0';
                const char *c = absent[sk] ? NULL : find_ci(p, end, close);
                if (c) {
                    const char *gt = memchr(c, '>', (size_t)(end - c));
                    p = gt ? gt + 1 : end;
                } else {
                    absent[sk] = true;
                    *unclosed = true;
                    if (strncasecmp(ns, "head", nl))
                        p = end; /* unterminated script/style: nothing readable follows */
                }
            }
            if (tag_is(ns, nl, block))
                s.pending_space = s.chars > 0;
            continue;
        }
        if (*p == '&') {
            size_t used = entity(&s, p, end, &st);
            if (used) {
                p += used;
                continue;
            }
        }
        size_t l = cp_len(p, (size_t)(end - p));
        st = snip_put(&s, p, l);
        p += l;
    }
    if (st) {
        mb_buf_free(&s.out);
        return st;
    }
    return snip_done(&s, out);
}
