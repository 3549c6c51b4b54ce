/* address.c — From/To/Cc/Bcc/Reply-To lists into mb_address values.
 *
 * A forgiving RFC 5322 reader: groups ("undisclosed-recipients:;" yields
 * nothing, members of named groups are kept), quoted names with escapes,
 * comments (used as the name of a bare "addr (Name)"; inside an address
 * they are dropped: "<pete(his account)@silly.test>" is pete@silly.test),
 * angle addresses with obsolete routes ("<@relay:user@host>" keeps
 * user@host), bare addresses, quoted local parts (kept quoted:
 * "Big Bug"@x is another mailbox than BigBug@x), and RFC 2047 words in
 * names (even inside quotes, as many mailers write). Addresses are kept as
 * written, without the whitespace between their parts; names are decoded to
 * UTF-8. */
#include "mime/mime_int.h"

#include <stdlib.h>
#include <string.h>

void mb_mime_addresses_free(mb_addressv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free(v->v[i].name);
        free(v->v[i].addr);
    }
    free(v->v);
    v->v = NULL;
    v->n = 0;
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

/* Collapse runs of whitespace and trim; in place on a buffer. */
static void collapse(mb_buf *b)
{
    size_t o = 0;
    bool sp = false;
    for (size_t i = 0; i < b->len; i++) {
        char c = b->data[i];
        if (is_ws(c)) {
            sp = o > 0;
            continue;
        }
        if (sp)
            b->data[o++] = ' ';
        sp = false;
        b->data[o++] = c;
    }
    b->len = o;
    if (b->data)
        b->data[o] = '\0';
}

/* p at '(': past the comment (nested, with escapes), or end. */
static const char *skip_comment(const char *p, const char *end)
{
    int depth = 0;
    while (p < end) {
        if (*p == '\\' && p + 1 < end) { p += 2; continue; }
        if (*p == '(') depth++;
        else if (*p == ')' && --depth == 0) return p + 1;
        p++;
    }
    return end;
}

/* p at '"': past the quoted string (with escapes), or end. */
static const char *skip_quoted(const char *p, const char *end)
{
    for (p++; p < end && *p != '"'; p++)
        if (*p == '\\' && p + 1 < end)
            p++;
    return p < end ? p + 1 : end;
}

/* The address between '<' and '>' (as .. ae), as written but without
 * comments and the whitespace around its parts: a quoted local part keeps
 * its quotes and what is inside them ("Big Bug"@x is not BigBug@x). An
 * obsolete route ("@relay,@b:user@host") goes. */
static mb_status angle_addr(const char *as, const char *ae, mb_buf *addr)
{
    const char *colon = NULL;
    for (const char *q = as; q < ae;) {
        if (*q == '"') q = skip_quoted(q, ae);
        else if (*q == '(') q = skip_comment(q, ae);
        else { if (*q == ':') colon = q; q++; }
    }
    while (as < ae && is_ws(*as))
        as++;
    if (colon && as < ae && *as == '@')
        as = colon + 1;
    mb_status s = MB_OK;
    for (const char *q = as; q < ae && !s;) {
        if (*q == '"') {
            const char *qe = skip_quoted(q, ae);
            s = mb_buf_append(addr, q, (size_t)(qe - q));
            q = qe;
        } else if (*q == '(') {
            q = skip_comment(q, ae);
        } else {
            if (!is_ws(*q))
                s = mb_buf_putc(addr, *q);
            q++;
        }
    }
    return s;
}

/* Whether a quoted string ending at p is a local part: '@' follows. */
static bool local_part_follows(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    return p < end && *p == '@';
}

/* One mailbox: the text between top-level separators. */
static mb_status one_mailbox(const char *p, const char *end, mb_addressv *out,
                             mb_mime_defects *d, const char *what)
{
    mb_buf name = MB_BUF_INIT, addr = MB_BUF_INIT, comment = MB_BUF_INIT, dec = MB_BUF_INIT;
    mb_status s = MB_OK;
    bool angle = false, extra_angle = false;
    const char *last_word_end = NULL; /* for spacing between words */
    /* Every branch below advances p by at least one byte. */
    while (p < end && !s && !(s = mime_budget_check())) {
        char c = *p;
        if (c == '"' && !angle && local_part_follows(skip_quoted(p, end), end)) {
            /* A quoted local part of a bare address, kept as written. */
            const char *qe = skip_quoted(p, end);
            if (name.len)
                s = mb_buf_putc(&name, ' ');
            if (!s) s = mb_buf_append(&name, p, (size_t)(qe - p));
            p = last_word_end = qe;
        } else if (c == '"') {
            if (last_word_end && !angle)
                s = mb_buf_putc(&name, ' ');
            p++;
            while (p < end && *p != '"' && !s) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                s = mb_buf_putc(angle ? &addr : &name, *p);
                p++;
            }
            if (p < end)
                p++;
            last_word_end = p;
        } else if (c == '(') {
            const char *cs = p;
            p = skip_comment(p, end);
            const char *ce = p;
            if (ce > cs + 1 && ce[-1] == ')')
                ce--;
            if (!comment.len && ce > cs + 1)
                s = mb_buf_append(&comment, cs + 1, (size_t)(ce - cs - 1));
        } else if (c == '<' && !angle) {
            angle = true;
            mb_buf_reset(&addr); /* text before '<' was the name, not an address */
            p++;
            const char *as = p;
            while (p < end && *p != '>') {
                if (*p == '"') p = skip_quoted(p, end);
                else if (*p == '(') p = skip_comment(p, end);
                else p++;
            }
            s = angle_addr(as, p, &addr);
            if (p < end)
                p++;
        } else if (c == '<') {
            /* A second angle address in one mailbox ("<a><b>", "<a@x> <b@y>"):
             * the first one stands, the rest is skipped up to its '>'. */
            if (!extra_angle)
                mb_mime_defect(d, "more than one <address> in one mailbox of %s, first kept",
                               what);
            extra_angle = true;
            const char *gt = memchr(p, '>', (size_t)(end - p));
            p = gt ? gt + 1 : end;
        } else if (is_ws(c)) {
            p++;
        } else {
            const char *ws = p;
            while (p < end && !is_ws(*p) && *p != '"' && *p != '(' && *p != '<')
                p++;
            if (!angle) {
                if (name.len && !s)
                    s = mb_buf_putc(&name, ' ');
                if (!s)
                    s = mb_buf_append(&name, ws, (size_t)(p - ws));
            }
            last_word_end = p;
        }
    }
    if (s)
        goto done;
    if (!angle) {
        /* Bare addr-spec: what we collected as "name" is the address, a
         * comment (if any) is the name. */
        mb_buf tmp = name;
        name = comment;
        comment = tmp;
        bool quoted = false; /* inside a quoted local part: kept as written */
        for (size_t i = 0; i < comment.len && !s; i++) {
            char ch = comment.data[i];
            if (ch == '\\' && quoted && i + 1 < comment.len) {
                s = mb_buf_putc(&addr, ch);
                ch = comment.data[++i];
            } else if (ch == '"') {
                quoted = !quoted;
            } else if (is_ws(ch) && !quoted) {
                continue;
            }
            if (!s) s = mb_buf_putc(&addr, ch);
        }
    }
    collapse(&name);
    if (!addr.len && !name.len)
        goto done;
    if (out->n >= MB_MIME_MAX_ADDRESSES) {
        mb_mime_defect(d, "more than %d addresses in %s, rest ignored", MB_MIME_MAX_ADDRESSES,
                       what);
        goto done;
    }
    mb_address a = {NULL, NULL};
    if (name.len) {
        if ((s = mb_mime_decode_header(name.data, name.len, &dec, d, what)))
            goto done;
        collapse(&dec);
        if (dec.len && !(a.name = mb_strndup(dec.data, dec.len))) {
            s = MB_ERR_NOMEM;
            goto done;
        }
    }
    mb_buf_reset(&dec);
    if ((s = mb_mime_to_utf8(NULL, addr.data ? addr.data : "", addr.len, &dec, NULL)) ||
        !(a.addr = mb_strndup(dec.data ? dec.data : "", dec.len))) {
        free(a.name);
        s = s ? s : MB_ERR_NOMEM;
        goto done;
    }
    mb_address *nv = mb_grow(out->v, out->n, sizeof *nv);
    if (!nv) {
        free(a.name);
        free(a.addr);
        s = mb_errf(MB_ERR_NOMEM, "address list");
        goto done;
    }
    out->v = nv;
    out->v[out->n++] = a;
done:
    mb_buf_free(&name);
    mb_buf_free(&addr);
    mb_buf_free(&comment);
    mb_buf_free(&dec);
    return s;
}

mb_status mb_mime_addresses_parse(const char *in, size_t n, mb_addressv *out,
                                  mb_mime_defects *d, const char *what)
{
    const char *p = in, *end = in + n, *start = in;
    mb_status s = MB_OK;
    while (p <= end && !s && !(s = mime_budget_check())) {
        if (p == end || *p == ',' || *p == ';') {
            s = one_mailbox(start, p, out, d, what);
            start = ++p;
            continue;
        }
        switch (*p) {
        case '"':
            p = skip_quoted(p, end);
            break;
        case '(':
            p = skip_comment(p, end);
            break;
        case '<':
            while (p < end && *p != '>') {
                if (*p == '"') p = skip_quoted(p, end);
                else if (*p == '(') p = skip_comment(p, end);
                else p++;
            }
            if (p < end)
                p++;
            break;
        case ':':
            /* group name: drop it, members follow */
            start = ++p;
            break;
        default:
            p++;
        }
    }
    return s;
}
