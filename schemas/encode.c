/* encode.c — generic msgpack encoder: walks an mb_type table and writes
 * with msgpack-c's packer into an mb_buf. It enforces the same limits as the
 * decoder so that whatever we publish, every stage can read back. */
#include "schemas/internal.h"

#include <msgpack.h>

typedef struct {
    msgpack_packer pk;
    mb_buf *out;
    mb_path path;
    int depth;
} enc;

static int write_cb(void *data, const char *buf, size_t len)
{
    return mb_buf_append(data, buf, len) == MB_OK ? 0 : -1;
}

#define PK(call)                                                              \
    do {                                                                      \
        if ((call) != 0) return mb_path_err(&e->path, MB_ERR_NOMEM, "out of memory"); \
    } while (0)

static mb_status enc_str(enc *e, const char *s, size_t n)
{
    if (n > MB_REC_MAX_STR)
        return mb_path_err(&e->path, MB_ERR_TOOBIG, "string of %zu bytes exceeds %u", n,
                           MB_REC_MAX_STR);
    PK(msgpack_pack_str_with_body(&e->pk, s, n));
    return MB_OK;
}

static mb_status enc_count(enc *e, size_t n, const void *v)
{
    if (n > MB_REC_MAX_ARRAY)
        return mb_path_err(&e->path, MB_ERR_TOOBIG, "%zu elements exceed %u", n,
                           MB_REC_MAX_ARRAY);
    if (n && !v) return mb_path_err(&e->path, MB_ERR_INVALID, "%zu elements but no array", n);
    PK(msgpack_pack_array(&e->pk, n));
    return MB_OK;
}

static mb_status enc_map(enc *e, const mb_type *t, const void *rec, bool top);

static mb_status enc_field(enc *e, const mb_field *f, const void *rec)
{
    const char *p = (const char *)rec + f->off;
    mb_status st;
    switch (f->type) {
    case MB_F_STR: {
        const char *s = *(char *const *)p;
        return enc_str(e, s, strlen(s));
    }
    case MB_F_U64: PK(msgpack_pack_uint64(&e->pk, *(const uint64_t *)p)); return MB_OK;
    case MB_F_I64: PK(msgpack_pack_int64(&e->pk, *(const int64_t *)p)); return MB_OK;
    case MB_F_BOOL:
        PK(*(const bool *)p ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk));
        return MB_OK;
    case MB_F_BYTES: {
        const mb_bytes *b = (const mb_bytes *)p;
        if (b->n > MB_REC_MAX_BYTES)
            return mb_path_err(&e->path, MB_ERR_TOOBIG, "%zu bytes exceed %u", b->n,
                               MB_REC_MAX_BYTES);
        if (b->n && !b->p) return mb_path_err(&e->path, MB_ERR_INVALID, "%zu bytes but no data", b->n);
        PK(msgpack_pack_bin_with_body(&e->pk, b->p, b->n));
        return MB_OK;
    }
    case MB_F_STRV: {
        const mb_strv *v = (const mb_strv *)p;
        if ((st = enc_count(e, v->n, v->v))) return st;
        for (size_t i = 0; i < v->n; i++) {
            size_t mark = mb_path_push_index(&e->path, i);
            if (!v->v[i]) return mb_path_err(&e->path, MB_ERR_INVALID, "NULL string in vector");
            if ((st = enc_str(e, v->v[i], strlen(v->v[i])))) return st;
            mb_path_pop(&e->path, mark);
        }
        return MB_OK;
    }
    case MB_F_U64V: {
        const mb_u64v *v = (const mb_u64v *)p;
        if ((st = enc_count(e, v->n, v->v))) return st;
        for (size_t i = 0; i < v->n; i++) PK(msgpack_pack_uint64(&e->pk, v->v[i]));
        return MB_OK;
    }
    case MB_F_REC: return enc_map(e, f->sub, p, false);
    case MB_F_RECV: {
        mb_anyvec a = mb_vec_get(p);
        if ((st = enc_count(e, a.n, a.v))) return st;
        for (size_t i = 0; i < a.n; i++) {
            size_t mark = mb_path_push_index(&e->path, i);
            if ((st = enc_map(e, f->sub, (const char *)a.v + i * f->sub->size, false)))
                return st;
            mb_path_pop(&e->path, mark);
        }
        return MB_OK;
    }
    }
    return mb_path_err(&e->path, MB_ERR_INTERNAL, "unknown field type %d", (int)f->type);
}

static mb_status enc_map(enc *e, const mb_type *t, const void *rec, bool top)
{
    if (++e->depth > MB_REC_MAX_DEPTH)
        return mb_path_err(&e->path, MB_ERR_TOOBIG, "nesting deeper than %d", MB_REC_MAX_DEPTH);
    size_t n = top ? 1 : 0;
    for (size_t i = 0; i < t->nfields; i++) n += mb_field_present(&t->fields[i], rec);
    PK(msgpack_pack_map(&e->pk, n));
    mb_status st;
    if (top) {
        PK(msgpack_pack_str_with_body(&e->pk, "t", 1));
        PK(msgpack_pack_str_with_body(&e->pk, t->schema, strlen(t->schema)));
    }
    for (size_t i = 0; i < t->nfields; i++) {
        const mb_field *f = &t->fields[i];
        if (!mb_field_present(f, rec)) continue;
        size_t mark = mb_path_push_name(&e->path, f->name);
        PK(msgpack_pack_str_with_body(&e->pk, f->key, strlen(f->key)));
        if ((st = enc_field(e, f, rec))) return st;
        mb_path_pop(&e->path, mark);
    }
    e->depth--;
    return MB_OK;
}

mb_status mb_rec_encode(const mb_type *t, const void *rec, mb_buf *out)
{
    enc e = {.out = out};
    mb_path_init(&e.path, t);
    msgpack_packer_init(&e.pk, out, write_cb);
    size_t start = out->len;
    mb_status st = enc_map(&e, t, rec, t->schema != NULL);
    if (!st && out->len - start > MB_REC_MAX_BYTES)
        st = mb_path_err(&e.path, MB_ERR_TOOBIG, "record of %zu bytes exceeds %u",
                         out->len - start, MB_REC_MAX_BYTES);
    if (st) {
        out->len = start;
        if (out->data) out->data[start] = '\0';
    }
    return st;
}
