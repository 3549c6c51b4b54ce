/* rec_json.c — records as JSON: rendering (for `mailbus decode`, logs, the
 * API) and parsing (commands sent with `nats req` as JSON), both generic
 * walkers over the mb_type tables. */
#include "schemas/internal.h"
#include "schemas/json.h"

#include <inttypes.h>
#include <stdlib.h>

/* ---- rendering ---- */

typedef struct {
    mb_buf *out;
    int indent; /* < 0: compact */
} jw;

static mb_status nl(jw *w, int level)
{
    if (w->indent < 0) return MB_OK;
    mb_status st = mb_buf_putc(w->out, '\n');
    for (int i = 0; !st && i < level * w->indent; i++) st = mb_buf_putc(w->out, ' ');
    return st;
}

static mb_status key(jw *w, const char *k, int level, bool first)
{
    mb_status st = first ? MB_OK : mb_buf_putc(w->out, ',');
    if (!st) st = nl(w, level);
    if (!st) st = mb_buf_json_str(w->out, k, strlen(k));
    if (!st) st = mb_buf_puts(w->out, w->indent < 0 ? ":" : ": ");
    return st;
}

static mb_status str_or_null(jw *w, const char *s)
{
    return s ? mb_buf_json_str(w->out, s, strlen(s)) : mb_buf_puts(w->out, "null");
}

static mb_status render_map(jw *w, const mb_type *t, const void *rec, int level, bool top);

/* Arrays of scalars stay on one line even in pretty mode. */
static mb_status render_field(jw *w, const mb_field *f, const void *rec, int level)
{
    const char *p = (const char *)rec + f->off;
    mb_buf *o = w->out;
    mb_status st = MB_OK;
    switch (f->type) {
    case MB_F_STR: return str_or_null(w, *(char *const *)p);
    case MB_F_U64: return mb_buf_printf(o, "%" PRIu64, *(const uint64_t *)p);
    case MB_F_I64: return mb_buf_printf(o, "%" PRId64, *(const int64_t *)p);
    case MB_F_BOOL: return mb_buf_puts(o, *(const bool *)p ? "true" : "false");
    case MB_F_BYTES: {
        const mb_bytes *b = (const mb_bytes *)p;
        if ((st = mb_buf_putc(o, '"'))) return st;
        if (b->n && (st = mb_base64_encode(o, b->p, b->n))) return st;
        return mb_buf_putc(o, '"');
    }
    case MB_F_STRV: {
        const mb_strv *v = (const mb_strv *)p;
        st = mb_buf_putc(o, '[');
        for (size_t i = 0; !st && i < v->n; i++) {
            if (i) st = mb_buf_puts(o, w->indent < 0 ? "," : ", ");
            if (!st) st = str_or_null(w, v->v[i]);
        }
        return st ? st : mb_buf_putc(o, ']');
    }
    case MB_F_U64V: {
        const mb_u64v *v = (const mb_u64v *)p;
        st = mb_buf_putc(o, '[');
        for (size_t i = 0; !st && i < v->n; i++)
            st = mb_buf_printf(o, i ? (w->indent < 0 ? ",%" PRIu64 : ", %" PRIu64) : "%" PRIu64,
                               v->v[i]);
        return st ? st : mb_buf_putc(o, ']');
    }
    case MB_F_REC: return render_map(w, f->sub, p, level, false);
    case MB_F_RECV: {
        mb_anyvec a = mb_vec_get(p);
        st = mb_buf_putc(o, '[');
        for (size_t i = 0; !st && i < a.n; i++) {
            if (i) st = mb_buf_putc(o, ',');
            if (!st) st = nl(w, level + 1);
            if (!st) st = render_map(w, f->sub, (const char *)a.v + i * f->sub->size, level + 1, false);
        }
        if (!st && a.n) st = nl(w, level);
        return st ? st : mb_buf_putc(o, ']');
    }
    }
    return mb_errf(MB_ERR_INTERNAL, "unknown field type %d", (int)f->type);
}

static mb_status render_map(jw *w, const mb_type *t, const void *rec, int level, bool top)
{
    mb_status st = mb_buf_putc(w->out, '{');
    bool first = true;
    if (!st && top) {
        if (!(st = key(w, "schema", level + 1, true))) st = str_or_null(w, t->schema);
        first = false;
    }
    for (size_t i = 0; !st && i < t->nfields; i++) {
        st = key(w, t->fields[i].name, level + 1, first);
        if (!st) st = render_field(w, &t->fields[i], rec, level + 1);
        first = false;
    }
    if (!st && t->nfields) st = nl(w, level);
    return st ? st : mb_buf_putc(w->out, '}');
}

static mb_status to_json(const mb_type *t, const void *rec, mb_buf *out, int indent)
{
    jw w = {out, indent};
    size_t start = out->len;
    mb_status st = render_map(&w, t, rec, 0, t->schema != NULL);
    if (st) {
        out->len = start;
        if (out->data) out->data[start] = '\0';
        return mb_errf(st, "%s: cannot render JSON: out of memory", t->schema ? t->schema : t->name);
    }
    return MB_OK;
}

mb_status mb_rec_to_json(const mb_type *t, const void *rec, mb_buf *out)
{
    return to_json(t, rec, out, -1);
}

mb_status mb_rec_to_json_pretty(const mb_type *t, const void *rec, mb_buf *out)
{
    return to_json(t, rec, out, 2);
}

/* ---- parsing ---- */

static mb_status expect(const mb_path *p, const char *want, const mb_json *v)
{
    return mb_path_err(p, MB_ERR_INVALID, "expected %s, got %s", want, mb_json_kind_name(v->kind));
}

static mb_status fj_str(const mb_path *p, const mb_json *v, char **out)
{
    if (v->kind != MB_JSON_STR) return expect(p, "string", v);
    if (v->len > MB_REC_MAX_STR)
        return mb_path_err(p, MB_ERR_TOOBIG, "string of %zu bytes exceeds %u", v->len, MB_REC_MAX_STR);
    if (memchr(v->str, 0, v->len)) return mb_path_err(p, MB_ERR_INVALID, "string contains a NUL");
    if (!(*out = mb_strndup(v->str, v->len))) return mb_path_err(p, MB_ERR_NOMEM, "out of memory");
    return MB_OK;
}

static mb_status fj_int(const mb_path *p, mb_status st)
{
    return st ? mb_path_err(p, st, "%s", mb_err_last()) : MB_OK;
}

static mb_status fj_map(mb_path *p, const mb_type *t, const mb_json *obj, void *rec, int depth);

static mb_status fj_field(mb_path *p, const mb_field *f, const mb_json *v, void *rec, int depth)
{
    char *fp = (char *)rec + f->off;
    if (v->kind == MB_JSON_NULL) return MB_OK; /* absent */
    mb_status st;
    switch (f->type) {
    case MB_F_STR: {
        char *s = NULL;
        if ((st = fj_str(p, v, &s))) return st;
        memcpy(fp, &s, sizeof s);
        return MB_OK;
    }
    case MB_F_U64: return fj_int(p, mb_json_u64(v, (uint64_t *)fp));
    case MB_F_I64: return fj_int(p, mb_json_i64(v, (int64_t *)fp));
    case MB_F_BOOL:
        if (v->kind != MB_JSON_BOOL) return expect(p, "true or false", v);
        *(bool *)fp = v->boolean;
        return MB_OK;
    case MB_F_BYTES: {
        if (v->kind != MB_JSON_STR) return expect(p, "base64 string", v);
        mb_bytes *b = (mb_bytes *)fp;
        if (v->len / 4 * 3 > MB_REC_MAX_BYTES)
            return mb_path_err(p, MB_ERR_TOOBIG, "bytes exceed %u", MB_REC_MAX_BYTES);
        return fj_int(p, mb_base64_decode(v->str, v->len, &b->p, &b->n));
    }
    case MB_F_REC: return fj_map(p, f->sub, v, fp, depth + 1);
    case MB_F_STRV:
    case MB_F_U64V:
    case MB_F_RECV: {
        if (v->kind != MB_JSON_ARR) return expect(p, "array", v);
        if (v->n > MB_REC_MAX_ARRAY)
            return mb_path_err(p, MB_ERR_TOOBIG, "%zu elements exceed %u", v->n, MB_REC_MAX_ARRAY);
        size_t elem = f->type == MB_F_STRV ? sizeof(char *)
                      : f->type == MB_F_U64V ? sizeof(uint64_t) : f->sub->size;
        void *a = v->n ? calloc(v->n, elem) : NULL;
        if (v->n && !a) return mb_path_err(p, MB_ERR_NOMEM, "out of memory");
        mb_vec_set(fp, a, v->n); /* owned by rec from here, freed on error */
        for (size_t i = 0; i < v->n; i++) {
            size_t mark = mb_path_push_index(p, i);
            const mb_json *e = &v->elems[i];
            if (f->type == MB_F_STRV) st = fj_str(p, e, (char **)a + i);
            else if (f->type == MB_F_U64V) st = fj_int(p, mb_json_u64(e, (uint64_t *)a + i));
            else st = fj_map(p, f->sub, e, (char *)a + i * elem, depth + 1);
            if (st) return st;
            mb_path_pop(p, mark);
        }
        return MB_OK;
    }
    }
    return mb_path_err(p, MB_ERR_INTERNAL, "unknown field type %d", (int)f->type);
}

static const mb_field *fj_find(const mb_type *t, const char *k)
{
    for (size_t i = 0; i < t->nfields; i++)
        if (!strcmp(t->fields[i].name, k)) return &t->fields[i];
    for (size_t i = 0; i < t->nfields; i++)
        if (!strcmp(t->fields[i].key, k)) return &t->fields[i];
    return NULL;
}

static mb_status fj_map(mb_path *p, const mb_type *t, const mb_json *obj, void *rec, int depth)
{
    if (obj->kind != MB_JSON_OBJ) return expect(p, "object", obj);
    if (depth > MB_REC_MAX_DEPTH)
        return mb_path_err(p, MB_ERR_TOOBIG, "nesting deeper than %d", MB_REC_MAX_DEPTH);
    for (size_t i = 0; i < obj->n; i++) {
        const mb_json_member *m = &obj->members[i];
        if (strlen(m->key) != m->keylen) continue; /* key with a NUL: not ours */
        const mb_field *f = fj_find(t, m->key);
        if (!f) continue;
        size_t mark = mb_path_push_name(p, f->name);
        mb_field_free(f, rec); /* repeated key: last wins */
        mb_status st = fj_field(p, f, &m->value, rec, depth);
        if (st) return st;
        mb_path_pop(p, mark);
    }
    return MB_OK;
}

mb_status mb_rec_from_json(const mb_type *t, const char *json, size_t len, void *rec)
{
    memset(rec, 0, t->size);
    mb_path p;
    mb_path_init(&p, t);
    if (len > MB_REC_MAX_BYTES)
        return mb_path_err(&p, MB_ERR_TOOBIG, "JSON of %zu bytes exceeds %u", len, MB_REC_MAX_BYTES);
    mb_json *doc = NULL;
    mb_status st = mb_json_parse(json, len, &doc);
    if (st) return mb_path_err(&p, st, "%s", mb_err_last());
    if (t->schema) {
        for (size_t i = 0; !st && i < doc->n && doc->kind == MB_JSON_OBJ; i++) {
            const mb_json_member *m = &doc->members[i];
            if (strcmp(m->key, "schema") && strcmp(m->key, "t")) continue;
            if (m->value.kind != MB_JSON_STR || strcmp(m->value.str, t->schema))
                st = mb_path_err(&p, MB_ERR_INVALID, "\"%s\" does not name schema %s", m->key, t->schema);
        }
    }
    if (!st) st = fj_map(&p, t, doc, rec, 1);
    mb_json_free(doc);
    if (st) mb_rec_free(t, rec);
    return st;
}
