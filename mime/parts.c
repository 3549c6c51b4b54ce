/* parts.c — walking the MIME tree: multipart boundaries, leaves, paths.
 *
 * The walk only reads headers and finds boundaries; it never copies bodies.
 * Each leaf is recorded with its body span in the caller's memory, so that
 * mb_mime_parse can hash it and mb_mime_part_decode can stream it later by
 * the same path. Boundaries follow RFC 2046: a delimiter is "--boundary" at
 * the start of a line followed only by optional "--" and whitespace (which
 * is also what keeps a nested boundary that extends the outer one from
 * matching it); the line break before a delimiter belongs to it; preamble
 * and epilogue are ignored. Limits (depth, part count) become defects. */
#include "mime/parts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void mime_tree_free(mime_tree *t)
{
    for (size_t i = 0; i < t->n; i++) {
        mime_leaf *l = &t->v[i];
        free(l->path);
        free(l->type);
        free(l->charset);
        free(l->filename);
        free(l->disposition);
        free(l->cid);
    }
    free(t->v);
    memset(t, 0, sizeof *t);
}

static int parse_cte(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strcspn(v, " \t;(");
    if (!n || (n == 4 && !strncasecmp(v, "7bit", 4)) || (n == 4 && !strncasecmp(v, "8bit", 4)) ||
        (n == 6 && !strncasecmp(v, "binary", 6)))
        return CTE_IDENTITY;
    if (n == 6 && !strncasecmp(v, "base64", 6))
        return CTE_BASE64;
    if (n == 16 && !strncasecmp(v, "quoted-printable", 16))
        return CTE_QP;
    return CTE_UNKNOWN;
}

static bool valid_type(const char *t)
{
    const char *sl = strchr(t, '/');
    if (!sl || sl == t || !sl[1] || strchr(sl + 1, '/'))
        return false;
    for (const char *p = t; *p; p++)
        if (*p <= ' ' || *p >= 127 || strchr("()<>@,;:\\\"[]?=", *p))
            return false;
    return true;
}

typedef struct {
    mime_tree *t;
    mb_mime_defects *d;
    mb_buf val;        /* scratch: unfolded header */
    bool parts_capped;
    bool depth_capped;
} walker;

static mb_status add_path(char **out, const char *parent, size_t idx)
{
    char b[32];
    snprintf(b, sizeof b, "%zu", idx);
    size_t pl = parent && *parent ? strlen(parent) : 0;
    char *p = malloc(pl + strlen(b) + 2);
    if (!p)
        return mb_errf(MB_ERR_NOMEM, "part path");
    if (pl) {
        memcpy(p, parent, pl);
        p[pl] = '.';
        strcpy(p + pl + 1, b);
    } else {
        strcpy(p, b);
    }
    *out = p;
    return MB_OK;
}

/* Headers of one entity into *l (type, params, cte, ...) and *boundary. */
static mb_status read_entity_headers(walker *w, const mime_hsect *h, const char *path,
                                     const char *dflt_type, mime_leaf *l, char **boundary)
{
    mb_status s = MB_OK;
    const char *it = h->start;
    mime_field f;
    bool have_ct = false, have_cd = false;
    *boundary = NULL;
    while (!s && !(s = mime_budget_check()) && mime_field_next(h, &it, &f)) {
        bool capped;
        int which = mime_field_is(&f, "content-type") ? 1
                    : mime_field_is(&f, "content-transfer-encoding") ? 2
                    : mime_field_is(&f, "content-disposition") ? 3
                    : mime_field_is(&f, "content-id") ? 4 : 0;
        if (!which)
            continue;
        if ((s = mime_unfold(&f, &w->val, &capped)))
            break;
        const char *v = mb_buf_cstr(&w->val);
        if (which == 1 && !have_ct) {
            have_ct = true;
            mb_mime_params ps;
            if ((s = mb_mime_params_parse(v, w->val.len, &ps)))
                break;
            if (valid_type(ps.value)) {
                l->type = ps.value;
                ps.value = NULL;
            } else {
                mb_mime_defect(w->d, "invalid content type '%.60s' in part %s", ps.value,
                               *path ? path : "1");
                l->type = mb_strdup("application/octet-stream");
            }
            if (!l->type)
                s = MB_ERR_NOMEM;
            if (!s)
                s = mb_mime_param_get(&ps, "charset", &l->charset, w->d);
            if (!s && !l->filename)
                s = mb_mime_param_get(&ps, "name", &l->filename, w->d);
            if (!s)
                s = mb_mime_param_get(&ps, "boundary", boundary, w->d);
            mb_mime_params_free(&ps);
        } else if (which == 2) {
            l->cte = parse_cte(v);
            if (l->cte == CTE_UNKNOWN)
                mb_mime_defect(w->d, "unknown transfer encoding '%.40s' in part %s, used as is",
                               v, *path ? path : "1");
        } else if (which == 3 && !have_cd) {
            have_cd = true;
            mb_mime_params ps;
            if ((s = mb_mime_params_parse(v, w->val.len, &ps)))
                break;
            if (!strcmp(ps.value, "attachment") || !strcmp(ps.value, "inline")) {
                l->disposition = ps.value;
                ps.value = NULL;
            }
            char *fn = NULL;
            s = mb_mime_param_get(&ps, "filename", &fn, w->d);
            if (fn && *fn) {
                free(l->filename); /* filename= beats name= */
                l->filename = fn;
            } else {
                free(fn);
            }
            mb_mime_params_free(&ps);
        } else if (which == 4 && !l->cid) {
            const char *a = v, *e = v + w->val.len;
            while (a < e && (*a == '<' || *a == ' '))
                a++;
            while (e > a && (e[-1] == '>' || e[-1] == ' '))
                e--;
            mb_buf tmp = MB_BUF_INIT;
            s = mb_mime_to_utf8(NULL, a, (size_t)(e - a), &tmp, NULL);
            if (!s && !(l->cid = mb_strndup(mb_buf_cstr(&tmp), tmp.len)))
                s = MB_ERR_NOMEM;
            mb_buf_free(&tmp);
        }
    }
    if (!s && !l->type && !(l->type = mb_strdup(dflt_type)))
        s = MB_ERR_NOMEM;
    if (!s && l->filename && !*l->filename) {
        free(l->filename);
        l->filename = NULL;
    }
    return s;
}

static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl + 1 : end;
}

/* 0: not a delimiter, 1: delimiter, 2: close delimiter */
static int delimiter(const char *p, const char *end, const char *b, size_t bl)
{
    if ((size_t)(end - p) < bl + 2 || p[0] != '-' || p[1] != '-' || memcmp(p + 2, b, bl))
        return 0;
    const char *q = p + 2 + bl;
    int kind = 1;
    if (end - q >= 2 && q[0] == '-' && q[1] == '-') {
        kind = 2;
        q += 2;
    }
    for (; q < end && *q != '\n'; q++)
        if (*q != ' ' && *q != '\t' && *q != '\r')
            return 0;
    return kind;
}

static mb_status walk(walker *w, const char *p, const char *end, const char *path, int depth,
                      const char *dflt_type, mime_hsect *top_h);

static mb_status walk_multipart(walker *w, const char *body, const char *end, const char *path,
                                int depth, const char *boundary, bool digest)
{
    size_t bl = strlen(boundary);
    const char *p = body, *part = NULL;
    size_t idx = 0;
    bool closed = false, any = false;
    mb_status s = MB_OK;
    const char *ptype = digest ? "message/rfc822" : "text/plain";
    while (p < end && !s && !(s = mime_budget_check())) {
        const char *ln = line_end(p, end);
        int k = *p == '-' ? delimiter(p, end, boundary, bl) : 0;
        if (k) {
            any = true;
            if (part) {
                const char *pe = p; /* the line break before belongs to the delimiter */
                if (pe > part && pe[-1] == '\n')
                    pe--;
                if (pe > part && pe[-1] == '\r')
                    pe--;
                char *cp;
                if ((s = add_path(&cp, path, ++idx)))
                    break;
                s = walk(w, part, pe, cp, depth + 1, ptype, NULL);
                free(cp);
            }
            if (k == 2) {
                closed = true;
                part = NULL;
                break;
            }
            part = ln;
        }
        p = ln;
    }
    if (s)
        return s;
    if (part) {
        char *cp;
        if ((s = add_path(&cp, path, ++idx)))
            return s;
        mb_mime_defect(w->d, "missing closing boundary for part %s", cp);
        s = walk(w, part, end, cp, depth + 1, ptype, NULL);
        free(cp);
    } else if (!any) {
        mb_mime_defect(w->d, "boundary '%.70s' not found in multipart %s", boundary,
                       *path ? path : "message");
    } else if (!idx && closed) {
        mb_mime_defect(w->d, "multipart %s has no parts", *path ? path : "message");
    }
    return s;
}

static mb_status walk(walker *w, const char *p, const char *end, const char *path, int depth,
                      const char *dflt_type, mime_hsect *top_h)
{
    mime_hsect h;
    mime_headers_scan(p, end, top_h != NULL, &h);
    if (top_h)
        *top_h = h;
    const char *where = *path ? path : "message";
    if (h.truncated)
        mb_mime_defect(w->d, "header section of %s truncated at %d bytes", where,
                       MB_MIME_MAX_HEADER_BYTES);
    if (h.bad_line && (top_h || h.start != h.end))
        mb_mime_defect(w->d, "malformed header line in %s ended its header section", where);
    mime_leaf l;
    memset(&l, 0, sizeof l);
    char *boundary = NULL;
    mb_status s = read_entity_headers(w, &h, path, dflt_type, &l, &boundary);
    if (!s && !strncmp(l.type, "multipart/", 10)) {
        if (depth >= MB_MIME_MAX_DEPTH) {
            if (!w->depth_capped)
                mb_mime_defect(w->d, "MIME nesting deeper than %d at %s, not descended",
                               MB_MIME_MAX_DEPTH, where);
            w->depth_capped = true;
        } else if (boundary && *boundary) {
            s = walk_multipart(w, h.body, end, path, depth, boundary,
                               !strcmp(l.type, "multipart/digest"));
        } else {
            mb_mime_defect(w->d, "multipart %s without boundary, treated as text", where);
            free(l.type);
            if (!(l.type = mb_strdup("text/plain")))
                s = MB_ERR_NOMEM;
            goto leaf;
        }
        free(boundary);
        free(l.type);
        free(l.charset);
        free(l.filename);
        free(l.disposition);
        free(l.cid);
        return s;
    }
leaf:
    free(boundary);
    if (!s && w->t->n >= MB_MIME_MAX_PARTS) {
        if (!w->parts_capped)
            mb_mime_defect(w->d, "more than %d parts, rest ignored", MB_MIME_MAX_PARTS);
        w->parts_capped = true;
        s = MB_OK;
        goto drop;
    }
    if (!s && !(l.path = mb_strdup(*path ? path : "1")))
        s = MB_ERR_NOMEM;
    if (!s && w->t->n == w->t->cap) {
        size_t nc = w->t->cap ? w->t->cap * 2 : 8;
        mime_leaf *nv = realloc(w->t->v, nc * sizeof *nv);
        if (!nv)
            s = mb_errf(MB_ERR_NOMEM, "part list");
        else {
            w->t->v = nv;
            w->t->cap = nc;
        }
    }
    if (s)
        goto drop;
    l.hdr = h;
    l.body = h.body;
    l.body_end = end;
    w->t->v[w->t->n++] = l;
    return MB_OK;
drop:
    free(l.path);
    free(l.type);
    free(l.charset);
    free(l.filename);
    free(l.disposition);
    free(l.cid);
    return s;
}

mb_status mime_tree_walk(const char *data, size_t len, mime_tree *t, mb_mime_defects *d,
                         mime_hsect *top)
{
    memset(t, 0, sizeof *t);
    walker w = {t, d, MB_BUF_INIT, false, false};
    mb_status s = walk(&w, data, data + len, "", 0, "text/plain", top);
    mb_buf_free(&w.val);
    if (s)
        mime_tree_free(t);
    return s;
}
