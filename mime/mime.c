/* mime.c — mb_mime_parse and mb_mime_part_decode: from a raw message in
 * memory to an mb_rec_parsed (see mime.h for the rules), plus the defect
 * list every piece of the parser reports into. */
#include "mime/parts.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- defects ---- */

void mb_mime_defect(mb_mime_defects *d, const char *fmt, ...)
{
    if (!d || d->v.n > MB_MIME_MAX_DEFECTS)
        return;
    char msg[512];
    if (d->v.n == MB_MIME_MAX_DEFECTS) {
        snprintf(msg, sizeof msg, "too many defects, rest not recorded");
    } else {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    mb_buf u = MB_BUF_INIT; /* defect text may quote raw input */
    char *s = NULL;
    if (mb_mime_to_utf8(NULL, msg, strlen(msg), &u, NULL) == MB_OK)
        s = mb_strndup(mb_buf_cstr(&u), u.len);
    mb_buf_free(&u);
    char **nv = s ? mb_grow(d->v.v, d->v.n, sizeof *nv) : NULL;
    if (!nv) {
        free(s);
        d->nomem = true;
        return;
    }
    d->v.v = nv;
    d->v.v[d->v.n++] = s;
}

void mb_mime_defects_free(mb_mime_defects *d)
{
    for (size_t i = 0; i < d->v.n; i++)
        free(d->v.v[i]);
    free(d->v.v);
    memset(d, 0, sizeof *d);
}

/* ---- record cleanup ---- */

static void strv_free(mb_strv *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->v[i]);
    free(v->v);
    v->v = NULL;
    v->n = 0;
}

void mb_mime_parsed_clear(mb_rec_parsed *r)
{
    free(r->message_id);
    free(r->in_reply_to);
    strv_free(&r->references);
    free(r->thread_id);
    free(r->subject);
    mb_mime_addresses_free(&r->from);
    mb_mime_addresses_free(&r->to);
    mb_mime_addresses_free(&r->cc);
    mb_mime_addresses_free(&r->bcc);
    mb_mime_addresses_free(&r->reply_to);
    free(r->snippet);
    for (size_t i = 0; i < r->attachments.n; i++) {
        mb_attachment *a = &r->attachments.v[i];
        free(a->part);
        free(a->filename);
        free(a->content_type);
        free(a->disposition);
        free(a->content_id);
        free(a->sha256);
    }
    free(r->attachments.v);
    strv_free(&r->defects);
    mb_rec_rawmsg raw = r->raw;
    memset(r, 0, sizeof *r);
    r->raw = raw;
}

/* ---- ids ---- */

/* Ids in <...>; if there are none, whitespace-separated words. */
static mb_status parse_ids(const char *v, size_t n, mb_strv *out, size_t max)
{
    const char *p = v, *end = v + n;
    bool angle = memchr(v, '<', n) != NULL;
    mb_buf u = MB_BUF_INIT;
    mb_status s = MB_OK;
    while (p < end && out->n < max && !s) {
        const char *a, *e;
        if (angle) {
            a = memchr(p, '<', (size_t)(end - p));
            if (!a)
                break;
            a++;
            e = memchr(a, '>', (size_t)(end - a));
            if (!e)
                e = end;
            p = e < end ? e + 1 : end;
        } else {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            a = p;
            while (p < end && *p != ' ' && *p != '\t' && *p != ',' && *p != '(')
                p++;
            e = p;
            if (p < end && *p == '(') { /* comment: skip */
                const char *c = memchr(p, ')', (size_t)(end - p));
                p = c ? c + 1 : end;
            }
        }
        while (a < e && (*a == ' ' || *a == '\t'))
            a++;
        while (e > a && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e == a)
            continue;
        mb_buf_reset(&u);
        if ((s = mb_mime_to_utf8(NULL, a, (size_t)(e - a), &u, NULL)))
            break;
        char **nv = mb_grow(out->v, out->n, sizeof *nv);
        char *id = mb_strndup(mb_buf_cstr(&u), u.len);
        if (!nv || !id) {
            if (nv)
                out->v = nv;
            free(id);
            s = mb_errf(MB_ERR_NOMEM, "message ids");
            break;
        }
        out->v = nv;
        out->v[out->n++] = id;
    }
    mb_buf_free(&u);
    return s;
}

static mb_status first_id(const char *v, size_t n, char **out)
{
    mb_strv ids = {NULL, 0};
    mb_status s = parse_ids(v, n, &ids, 1);
    if (!s && ids.n) {
        *out = ids.v[0];
        ids.v[0] = NULL;
    }
    strv_free(&ids);
    return s;
}

static mb_status sha_hex(const void *p, size_t n, size_t hexlen, char **out)
{
    unsigned char md[32];
    unsigned int ml = 0;
    if (!EVP_Digest(p, n, md, &ml, EVP_sha256(), NULL))
        return mb_errf(MB_ERR_INTERNAL, "SHA-256 failed");
    mb_buf b = MB_BUF_INIT;
    mb_status s = mb_buf_hex(&b, md, hexlen / 2);
    if (!s && !(*out = mb_buf_steal(&b)))
        s = MB_ERR_NOMEM;
    mb_buf_free(&b);
    return s;
}

/* Subject without reply/forward prefixes, lower-cased: the fallback root. */
static mb_status thread_fallback(const mb_rec_parsed *r, mb_buf *b)
{
    const char *s = r->subject ? r->subject : "";
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        size_t l = 0;
        while (isalpha((unsigned char)s[l]))
            l++;
        if (l >= 2 && l <= 3 && (s[l] == ':' || s[l] == '[')) {
            if (!strncasecmp(s, "re", l) || !strncasecmp(s, "fw", l) ||
                !strncasecmp(s, "fwd", l) || !strncasecmp(s, "aw", l) ||
                !strncasecmp(s, "wg", l) || !strncasecmp(s, "sv", l)) {
                const char *c = strchr(s + l, ':');
                if (c) {
                    s = c + 1;
                    continue;
                }
            }
        }
        break;
    }
    mb_status st = mb_buf_puts(b, "subject:");
    for (; *s && !st; s++)
        st = mb_buf_putc(b, (char)tolower((unsigned char)*s));
    if (!st)
        st = mb_buf_putc(b, '\n');
    if (!st && r->from.n && r->from.v[0].addr)
        for (const char *a = r->from.v[0].addr; *a && !st; a++)
            st = mb_buf_putc(b, (char)tolower((unsigned char)*a));
    return st;
}

/* ---- headers of the message ---- */

static mb_status read_top_headers(const mime_hsect *h, int64_t internal_date, mb_rec_parsed *r,
                                  mb_mime_defects *d)
{
    mb_buf v = MB_BUF_INIT, dec = MB_BUF_INIT;
    mb_status s = MB_OK;
    const char *it = h->start;
    mime_field f;
    bool have_date = false, date_ok = false;
    static const char *const addr_names[] = {"from", "to", "cc", "bcc", "reply-to"};
    mb_addressv *addr_vecs[] = {&r->from, &r->to, &r->cc, &r->bcc, &r->reply_to};
    static const char *const addr_disp[] = {"From", "To", "Cc", "Bcc", "Reply-To"};
    while (!s && !(s = mime_budget_check()) && mime_field_next(h, &it, &f)) {
        bool capped = false;
        int ai = -1;
        for (int i = 0; i < 5; i++)
            if (mime_field_is(&f, addr_names[i]))
                ai = i;
        bool want = ai >= 0 || mime_field_is(&f, "subject") || mime_field_is(&f, "date") ||
                    mime_field_is(&f, "message-id") || mime_field_is(&f, "in-reply-to") ||
                    mime_field_is(&f, "references");
        if (!want)
            continue;
        if ((s = mime_unfold(&f, &v, &capped)))
            break;
        if (capped)
            mb_mime_defect(d, "header %.*s longer than %d bytes, cut", (int)(f.nlen > 40 ? 40 : f.nlen),
                           f.name, MB_MIME_MAX_FIELD_BYTES);
        const char *val = mb_buf_cstr(&v);
        if (ai >= 0) {
            /* Repeated To/Cc headers add up (seen in the wild); From too. */
            s = mb_mime_addresses_parse(val, v.len, addr_vecs[ai], d, addr_disp[ai]);
        } else if (mime_field_is(&f, "subject")) {
            if (r->subject)
                continue;
            mb_buf_reset(&dec);
            if (!(s = mb_mime_decode_header(val, v.len, &dec, d, "Subject")) &&
                !(r->subject = mb_strndup(mb_buf_cstr(&dec), dec.len)))
                s = MB_ERR_NOMEM;
        } else if (mime_field_is(&f, "date")) {
            if (have_date)
                continue;
            have_date = true;
            int64_t t;
            if (mb_mime_date_parse(val, v.len, &t) == MB_OK) {
                r->date = t;
                date_ok = true;
            } else {
                mb_mime_defect(d, "unparseable Date '%.80s', used internal date", val);
            }
        } else if (mime_field_is(&f, "message-id")) {
            if (!r->message_id)
                s = first_id(val, v.len, &r->message_id);
        } else if (mime_field_is(&f, "in-reply-to")) {
            if (!r->in_reply_to)
                s = first_id(val, v.len, &r->in_reply_to);
        } else if (mime_field_is(&f, "references")) {
            if (!r->references.n)
                s = parse_ids(val, v.len, &r->references, MB_MIME_MAX_REFERENCES);
        }
    }
    if (!s && !date_ok) {
        r->date = internal_date;
        if (!have_date)
            mb_mime_defect(d, "no Date header, used internal date");
    }
    mb_buf_free(&v);
    mb_buf_free(&dec);
    return s;
}

/* ---- bodies ---- */

typedef struct {
    EVP_MD_CTX *md;
    uint64_t size;
} hash_sink;

static mb_status hash_put(void *ctx, const void *p, size_t n)
{
    hash_sink *h = ctx;
    h->size += n;
    return EVP_DigestUpdate(h->md, p, n) ? MB_OK : mb_errf(MB_ERR_INTERNAL, "SHA-256 update");
}

typedef struct {
    mb_buf b;
    size_t cap;
} cap_sink;

/* Collects up to cap bytes, then stops the decoder with MB_ERR_TOOBIG. */
static mb_status cap_put(void *ctx, const void *p, size_t n)
{
    cap_sink *c = ctx;
    size_t room = c->cap - c->b.len;
    mb_status s = mb_buf_append(&c->b, p, n < room ? n : room);
    if (s)
        return s;
    return c->b.len >= c->cap ? MB_ERR_TOOBIG : MB_OK;
}

static bool is_body_text(const mime_leaf *l)
{
    return (!strcmp(l->type, "text/plain") || !strcmp(l->type, "text/html")) &&
           !l->filename && !(l->disposition && !strcmp(l->disposition, "attachment"));
}

static mb_status make_snippet(const mime_leaf *l, char *buf, mb_mime_defects *d, char **out)
{
    bool html = !strcmp(l->type, "text/html");
    /* Enough decoded bytes for 256 characters; HTML may carry a big head. */
    cap_sink c = {MB_BUF_INIT, html ? (size_t)1 << 20 : (size_t)64 << 10};
    bool bad = false;
    mb_status s = mime_decode_body(l->cte, l->body, l->body_end, buf, cap_put, &c, &bad);
    bool truncated = s == MB_ERR_TOOBIG;
    if (truncated)
        s = MB_OK;
    mb_buf u = MB_BUF_INIT;
    if (!s) {
        size_t n = c.b.len;
        if (truncated) /* do not turn a cut multibyte char into U+FFFD */
            while (n > 0 && n > c.b.len - 4 && ((unsigned char)c.b.data[n - 1] & 0x80))
                n--;
        bool unknown = false;
        s = mb_mime_to_utf8(l->charset, c.b.data ? c.b.data : "", n, &u, &unknown);
        if (unknown)
            mb_mime_defect(d, "unknown charset '%.40s' in part %s", l->charset, l->path);
    }
    bool unclosed = false;
    if (!s)
        s = html ? mime_snippet_html(mb_buf_cstr(&u), u.len, out, &unclosed)
                 : mb_mime_snippet_text(mb_buf_cstr(&u), u.len, out);
    if (!s && unclosed)
        mb_mime_defect(d, "unclosed <head>, <script> or <style> in HTML part %s", l->path);
    mb_buf_free(&u);
    mb_buf_free(&c.b);
    return s;
}

/* Filename for a message/rfc822 part without one: its Subject + ".eml". */
static mb_status rfc822_name(const mime_leaf *l, mb_mime_defects *d, char **out)
{
    *out = NULL;
    if (l->cte != CTE_IDENTITY)
        return MB_OK;
    mime_hsect h;
    mime_headers_scan(l->body, l->body_end, false, &h);
    const char *it = h.start;
    mime_field f;
    while (mime_field_next(&h, &it, &f)) {
        if (!mime_field_is(&f, "subject"))
            continue;
        mb_buf v = MB_BUF_INIT, dec = MB_BUF_INIT;
        bool capped;
        mb_status s = mime_unfold(&f, &v, &capped);
        if (!s)
            s = mb_mime_decode_header(mb_buf_cstr(&v), v.len, &dec, d, "attached message Subject");
        if (!s && dec.len)
            s = mb_buf_puts(&dec, ".eml");
        if (!s && dec.len && !(*out = mb_strndup(dec.data, dec.len)))
            s = MB_ERR_NOMEM;
        mb_buf_free(&v);
        mb_buf_free(&dec);
        return s;
    }
    return MB_OK;
}

static mb_status add_attachment(mime_leaf *l, char *buf, EVP_MD_CTX *md, mb_mime_defects *d,
                                mb_rec_parsed *r)
{
    mb_attachment a;
    memset(&a, 0, sizeof a);
    hash_sink hs = {md, 0};
    if (!EVP_DigestInit_ex(md, EVP_sha256(), NULL))
        return mb_errf(MB_ERR_INTERNAL, "SHA-256 init");
    bool bad = false;
    mb_status s = mime_decode_body(l->cte, l->body, l->body_end, buf, hash_put, &hs, &bad);
    if (s)
        return s;
    if (bad)
        mb_mime_defect(d, "invalid %s in part %s",
                       l->cte == CTE_BASE64 ? "base64" : "quoted-printable", l->path);
    unsigned char dg[32];
    unsigned int dl = 0;
    if (!EVP_DigestFinal_ex(md, dg, &dl))
        return mb_errf(MB_ERR_INTERNAL, "SHA-256 final");
    mb_buf hex = MB_BUF_INIT;
    if ((s = mb_buf_hex(&hex, dg, 32)))
        return s;
    a.sha256 = mb_buf_steal(&hex);
    a.size = hs.size;
    a.part = l->path;
    a.content_type = l->type;
    a.disposition = l->disposition;
    a.content_id = l->cid;
    a.filename = l->filename;
    if (!a.filename && !strcmp(l->type, "message/rfc822") &&
        (s = rfc822_name(l, d, &a.filename))) {
        free(a.sha256);
        return s;
    }
    if (!a.disposition && a.content_id && !(a.disposition = mb_strdup("inline"))) {
        free(a.sha256);
        free(a.filename != l->filename ? a.filename : NULL);
        return MB_ERR_NOMEM;
    }
    mb_attachment *nv = mb_grow(r->attachments.v, r->attachments.n, sizeof *nv);
    if (!nv) {
        free(a.sha256);
        if (a.filename != l->filename)
            free(a.filename);
        if (a.disposition != l->disposition)
            free(a.disposition);
        return mb_errf(MB_ERR_NOMEM, "attachment list");
    }
    r->attachments.v = nv;
    r->attachments.v[r->attachments.n++] = a;
    /* ownership moved into the record */
    l->path = l->type = l->cid = l->filename = l->disposition = NULL;
    return MB_OK;
}

mb_status mb_mime_parse(const char *data, size_t len, int64_t internal_date, mb_rec_parsed *out)
{
    mb_rec_rawmsg raw = out->raw;
    memset(out, 0, sizeof *out);
    out->raw = raw;
    if (!data)
        len = 0;
    if (!data)
        data = "";
    mb_mime_defects d;
    memset(&d, 0, sizeof d);
    mime_tree t;
    mime_hsect top;
    char *buf = malloc(MB_MIME_CHUNK);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    mb_status s = (!buf || !md) ? mb_errf(MB_ERR_NOMEM, "mime parse buffers") : MB_OK;
    memset(&t, 0, sizeof t);
    if (!s)
        s = mime_tree_walk(data, len, &t, &d, &top);
    if (!s)
        s = read_top_headers(&top, internal_date, out, &d);
    /* body text for the snippet: first text/plain, else first text/html */
    const mime_leaf *plain = NULL, *html = NULL;
    for (size_t i = 0; !s && i < t.n; i++) {
        if (!is_body_text(&t.v[i]))
            continue;
        if (!plain && !strcmp(t.v[i].type, "text/plain"))
            plain = &t.v[i];
        if (!html && !strcmp(t.v[i].type, "text/html"))
            html = &t.v[i];
    }
    if (!s && (plain || html))
        s = make_snippet(plain ? plain : html, buf, &d, &out->snippet);
    if (!s && !out->snippet && !(out->snippet = mb_strdup("")))
        s = MB_ERR_NOMEM;
    for (size_t i = 0; !s && i < t.n; i++)
        if (!is_body_text(&t.v[i]))
            s = add_attachment(&t.v[i], buf, md, &d, out);
    if (!s && !out->subject && !(out->subject = mb_strdup("")))
        s = MB_ERR_NOMEM;
    if (!s) {
        mb_buf root = MB_BUF_INIT;
        const char *id = out->references.n ? out->references.v[0]
                         : out->in_reply_to ? out->in_reply_to : out->message_id;
        if (id)
            s = mb_buf_puts(&root, id);
        else
            s = thread_fallback(out, &root);
        if (!s)
            s = sha_hex(mb_buf_cstr(&root), root.len, 16, &out->thread_id);
        mb_buf_free(&root);
    }
    if (!s && d.nomem)
        s = mb_errf(MB_ERR_NOMEM, "recording defects");
    if (!s) {
        out->defects = d.v;
        d.v.v = NULL;
        d.v.n = 0;
    }
    mb_mime_defects_free(&d);
    mime_tree_free(&t);
    EVP_MD_CTX_free(md);
    free(buf);
    if (s)
        mb_mime_parsed_clear(out);
    return s;
}

mb_status mb_mime_part_decode(const char *data, size_t len, const char *part_path,
                              mb_mime_sink sink, void *ctx)
{
    if (!data || !part_path || !sink)
        return mb_errf(MB_ERR_INVALID, "mb_mime_part_decode: missing argument");
    mb_mime_defects d;
    memset(&d, 0, sizeof d);
    mime_tree t;
    mime_hsect top;
    mb_status s = mime_tree_walk(data, len, &t, &d, &top);
    mb_mime_defects_free(&d);
    if (s)
        return s;
    const mime_leaf *l = NULL;
    for (size_t i = 0; i < t.n && !l; i++)
        if (!strcmp(t.v[i].path, part_path))
            l = &t.v[i];
    if (!l) {
        mime_tree_free(&t);
        return mb_errf(MB_ERR_NOTFOUND, "no leaf MIME part '%.64s' in message", part_path);
    }
    char *buf = malloc(MB_MIME_CHUNK);
    if (!buf) {
        mime_tree_free(&t);
        return mb_errf(MB_ERR_NOMEM, "decode buffer");
    }
    bool bad = false;
    s = mime_decode_body(l->cte, l->body, l->body_end, buf, sink, ctx, &bad);
    free(buf);
    mime_tree_free(&t);
    return s;
}
