/* decode.c — generic msgpack decoder with its own bounds-checked cursor.
 *
 * Why not msgpack-c's unpacker: it allocates by the declared element count
 * before reading the elements, so a 5-byte record declaring 4 billion array
 * entries makes it allocate (and under ASan abort). Here every read checks
 * the bytes left, and a declared length that cannot fit in what remains is
 * an error before anything is allocated. */
#include "schemas/internal.h"

#include <stdlib.h>

typedef enum { K_NIL, K_BOOL, K_UINT, K_NINT, K_FLOAT, K_STR, K_BIN, K_ARRAY, K_MAP, K_EXT } kind;

static const char *kind_name(kind k)
{
    static const char *names[] = {"nil", "bool", "unsigned integer", "negative integer",
                                  "float", "str", "bin", "array", "map", "ext"};
    return names[k];
}

typedef struct {
    kind k;
    bool b;
    uint64_t u;  /* K_UINT */
    int64_t i;   /* K_NINT */
    uint32_t n;  /* str/bin/ext bytes, array elements, map pairs */
    const unsigned char *data; /* str/bin/ext */
} head;

typedef struct {
    const unsigned char *p, *end;
    mb_path path;
    int depth;
} dec;

static mb_status truncated(dec *d)
{
    return mb_path_err(&d->path, MB_ERR_TRUNCATED, "truncated");
}

static inline size_t left(const dec *d) { return (size_t)(d->end - d->p); }

static mb_status rd_be(dec *d, size_t n, uint64_t *v)
{
    if (left(d) < n) return truncated(d);
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) x = x << 8 | d->p[i];
    d->p += n;
    *v = x;
    return MB_OK;
}

/* Read one value's header. For str/bin/ext the payload is consumed too; for
 * arrays/maps the cursor stays at the first element. Declared sizes that
 * cannot fit in the remaining input are rejected here. */
static mb_status rd_head(dec *d, head *h)
{
    if (!left(d)) return truncated(d);
    unsigned char c = *d->p++;
    uint64_t v = 0;
    mb_status st;
    memset(h, 0, sizeof *h);
    if (c <= 0x7f) { h->k = K_UINT; h->u = c; return MB_OK; }
    if (c >= 0xe0) { h->k = K_NINT; h->i = (int8_t)c; return MB_OK; }
    if (c >= 0x80 && c <= 0x8f) { h->k = K_MAP; v = c & 0x0f; goto container; }
    if (c >= 0x90 && c <= 0x9f) { h->k = K_ARRAY; v = c & 0x0f; goto container; }
    if (c >= 0xa0 && c <= 0xbf) { h->k = K_STR; v = c & 0x1f; goto payload; }
    switch (c) {
    case 0xc0: h->k = K_NIL; return MB_OK;
    case 0xc2: case 0xc3: h->k = K_BOOL; h->b = c == 0xc3; return MB_OK;
    case 0xc4: case 0xc5: case 0xc6:
        h->k = K_BIN;
        if ((st = rd_be(d, (size_t)1 << (c - 0xc4), &v))) return st;
        goto payload;
    case 0xc7: case 0xc8: case 0xc9:
        h->k = K_EXT;
        if ((st = rd_be(d, (size_t)1 << (c - 0xc7), &v))) return st;
        v += 1; /* type byte */
        goto payload;
    case 0xca: h->k = K_FLOAT; return rd_be(d, 4, &v);
    case 0xcb: h->k = K_FLOAT; return rd_be(d, 8, &v);
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        h->k = K_UINT;
        return rd_be(d, (size_t)1 << (c - 0xcc), &h->u);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size_t n = (size_t)1 << (c - 0xd0);
        if ((st = rd_be(d, n, &v))) return st;
        int64_t x;
        if (n == 1) x = (int8_t)v;
        else if (n == 2) x = (int16_t)v;
        else if (n == 4) x = (int32_t)v;
        else memcpy(&x, &v, sizeof x);
        if (x >= 0) { h->k = K_UINT; h->u = (uint64_t)x; }
        else { h->k = K_NINT; h->i = x; }
        return MB_OK;
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        h->k = K_EXT;
        v = ((uint64_t)1 << (c - 0xd4)) + 1;
        goto payload;
    case 0xd9: case 0xda: case 0xdb:
        h->k = K_STR;
        if ((st = rd_be(d, (size_t)1 << (c - 0xd9), &v))) return st;
        goto payload;
    case 0xdc: case 0xdd:
        h->k = K_ARRAY;
        if ((st = rd_be(d, (size_t)2 << (c - 0xdc), &v))) return st;
        goto container;
    case 0xde: case 0xdf:
        h->k = K_MAP;
        if ((st = rd_be(d, (size_t)2 << (c - 0xde), &v))) return st;
        goto container;
    default:
        return mb_path_err(&d->path, MB_ERR_INVALID, "invalid msgpack byte 0x%02x", c);
    }
payload:
    if (v > left(d))
        return mb_path_err(&d->path, MB_ERR_TRUNCATED,
                           "truncated: %s of %llu bytes but %zu bytes left", kind_name(h->k),
                           (unsigned long long)v, left(d));
    h->n = (uint32_t)v;
    h->data = d->p;
    d->p += v;
    return MB_OK;
container:
    /* Each element takes at least one byte (two per map pair). */
    if (v > MB_REC_MAX_ARRAY)
        return mb_path_err(&d->path, MB_ERR_TOOBIG, "%s of %llu elements exceeds %u",
                           kind_name(h->k), (unsigned long long)v, MB_REC_MAX_ARRAY);
    if (v * (h->k == K_MAP ? 2 : 1) > left(d))
        return mb_path_err(&d->path, MB_ERR_TRUNCATED,
                           "truncated: %s of %llu elements but %zu bytes left",
                           kind_name(h->k), (unsigned long long)v, left(d));
    h->n = (uint32_t)v;
    return MB_OK;
}

static mb_status skip_value(dec *d, int depth)
{
    head h;
    mb_status st = rd_head(d, &h);
    if (st) return st;
    if (h.k != K_ARRAY && h.k != K_MAP) return MB_OK;
    if (depth + 1 > MB_REC_MAX_DEPTH)
        return mb_path_err(&d->path, MB_ERR_TOOBIG, "nesting deeper than %d", MB_REC_MAX_DEPTH);
    uint64_t n = (uint64_t)h.n * (h.k == K_MAP ? 2 : 1);
    for (uint64_t i = 0; i < n; i++)
        if ((st = skip_value(d, depth + 1))) return st;
    return MB_OK;
}

static mb_status wrong(dec *d, const char *want, const head *h)
{
    return mb_path_err(&d->path, MB_ERR_INVALID, "expected %s, got %s", want, kind_name(h->k));
}

/* str or bin -> fresh NUL-terminated string. */
static mb_status take_str(dec *d, const head *h, char **out)
{
    if (h->k != K_STR && h->k != K_BIN) return wrong(d, "string", h);
    if (h->n > MB_REC_MAX_STR)
        return mb_path_err(&d->path, MB_ERR_TOOBIG, "string of %u bytes exceeds %u", h->n,
                           MB_REC_MAX_STR);
    if (memchr(h->data, 0, h->n))
        return mb_path_err(&d->path, MB_ERR_INVALID, "string contains a NUL byte");
    char *s = malloc((size_t)h->n + 1);
    if (!s) return mb_path_err(&d->path, MB_ERR_NOMEM, "out of memory");
    memcpy(s, h->data, h->n);
    s[h->n] = '\0';
    *out = s;
    return MB_OK;
}

static mb_status take_u64(dec *d, const head *h, uint64_t *out)
{
    if (h->k == K_NINT)
        return mb_path_err(&d->path, MB_ERR_INVALID, "expected unsigned integer, got %lld",
                           (long long)h->i);
    if (h->k != K_UINT) return wrong(d, "unsigned integer", h);
    *out = h->u;
    return MB_OK;
}

static mb_status take_i64(dec *d, const head *h, int64_t *out)
{
    if (h->k == K_NINT) { *out = h->i; return MB_OK; }
    if (h->k != K_UINT) return wrong(d, "integer", h);
    if (h->u > INT64_MAX)
        return mb_path_err(&d->path, MB_ERR_INVALID, "integer %llu out of range",
                           (unsigned long long)h->u);
    *out = (int64_t)h->u;
    return MB_OK;
}

static mb_status dec_map(dec *d, const mb_type *t, void *rec);

/* Allocate a vector of n zeroed elements and store it in the field at once,
 * so a failure halfway leaves something mb_field_free can release. */
static mb_status alloc_vec(dec *d, void *field, size_t n, size_t elem, void **v)
{
    *v = NULL;
    if (n) {
        *v = calloc(n, elem);
        if (!*v) return mb_path_err(&d->path, MB_ERR_NOMEM, "out of memory");
    }
    mb_vec_set(field, *v, n);
    return MB_OK;
}

static mb_status dec_field(dec *d, const mb_field *f, void *rec)
{
    char *p = (char *)rec + f->off;
    const unsigned char *save = d->p;
    head h;
    mb_status st = rd_head(d, &h);
    if (st) return st;
    if (h.k == K_NIL) return MB_OK; /* absent: the field was freed and zeroed */
    if (f->type == MB_F_REC) {
        d->p = save; /* dec_map reads the header itself */
        return dec_map(d, f->sub, p);
    }
    switch (f->type) {
    case MB_F_STR: {
        char *s = NULL;
        if ((st = take_str(d, &h, &s))) return st;
        memcpy(p, &s, sizeof s);
        return MB_OK;
    }
    case MB_F_U64: return take_u64(d, &h, (uint64_t *)p);
    case MB_F_I64: return take_i64(d, &h, (int64_t *)p);
    case MB_F_BOOL:
        if (h.k != K_BOOL) return wrong(d, "bool", &h);
        *(bool *)p = h.b;
        return MB_OK;
    case MB_F_BYTES: {
        if (h.k != K_BIN && h.k != K_STR) return wrong(d, "bin", &h);
        mb_bytes *b = (mb_bytes *)p;
        if (h.n) {
            if (!(b->p = malloc(h.n))) return mb_path_err(&d->path, MB_ERR_NOMEM, "out of memory");
            memcpy(b->p, h.data, h.n);
            b->n = h.n;
        }
        return MB_OK;
    }
    case MB_F_STRV:
    case MB_F_U64V:
    case MB_F_RECV: {
        if (h.k != K_ARRAY) return wrong(d, "array", &h);
        if (d->depth + 1 > MB_REC_MAX_DEPTH)
            return mb_path_err(&d->path, MB_ERR_TOOBIG, "nesting deeper than %d", MB_REC_MAX_DEPTH);
        size_t elem = f->type == MB_F_STRV ? sizeof(char *)
                      : f->type == MB_F_U64V ? sizeof(uint64_t) : f->sub->size;
        void *v;
        if ((st = alloc_vec(d, p, h.n, elem, &v))) return st;
        d->depth++;
        for (size_t i = 0; i < h.n; i++) {
            size_t mark = mb_path_push_index(&d->path, i);
            if (f->type == MB_F_RECV) {
                st = dec_map(d, f->sub, (char *)v + i * elem);
            } else {
                head eh;
                if ((st = rd_head(d, &eh))) return st;
                if (f->type == MB_F_STRV) st = take_str(d, &eh, (char **)v + i);
                else st = take_u64(d, &eh, (uint64_t *)v + i);
            }
            if (st) return st;
            mb_path_pop(&d->path, mark);
        }
        d->depth--;
        return MB_OK;
    }
    case MB_F_REC: break; /* handled above */
    }
    return mb_path_err(&d->path, MB_ERR_INTERNAL, "unknown field type %d", (int)f->type);
}

static const mb_field *find_field(const mb_type *t, const unsigned char *key, size_t n)
{
    for (size_t i = 0; i < t->nfields; i++)
        if (strlen(t->fields[i].key) == n && !memcmp(t->fields[i].key, key, n))
            return &t->fields[i];
    return NULL;
}

static mb_status dec_map(dec *d, const mb_type *t, void *rec)
{
    head h;
    mb_status st = rd_head(d, &h);
    if (st) return st;
    if (h.k != K_MAP) return wrong(d, "map", &h);
    if (d->depth + 1 > MB_REC_MAX_DEPTH)
        return mb_path_err(&d->path, MB_ERR_TOOBIG, "nesting deeper than %d", MB_REC_MAX_DEPTH);
    d->depth++;
    for (size_t i = 0; i < h.n; i++) {
        head k;
        if ((st = rd_head(d, &k))) return st;
        if (k.k != K_STR) return mb_path_err(&d->path, MB_ERR_INVALID, "map key is %s, expected str", kind_name(k.k));
        const mb_field *f = find_field(t, k.data, k.n);
        if (!f) {
            /* Unknown key, or the "t" checked before decoding. */
            if ((st = skip_value(d, d->depth))) return st;
            continue;
        }
        size_t mark = mb_path_push_name(&d->path, f->name);
        mb_field_free(f, rec); /* duplicate key: last wins */
        if ((st = dec_field(d, f, rec))) return st;
        mb_path_pop(&d->path, mark);
    }
    d->depth--;
    return MB_OK;
}

/* Find the top-level "t" (the first one) and check it is a string. */
static mb_status find_schema(dec *d, const unsigned char **s, size_t *n)
{
    head h;
    mb_status st = rd_head(d, &h);
    if (st) return st;
    if (h.k != K_MAP) return wrong(d, "map", &h);
    *s = NULL;
    for (size_t i = 0; i < h.n; i++) {
        head k;
        if ((st = rd_head(d, &k))) return st;
        if (k.k != K_STR) return mb_path_err(&d->path, MB_ERR_INVALID, "map key is %s, expected str", kind_name(k.k));
        if (k.n == 1 && k.data[0] == 't') {
            head v;
            if ((st = rd_head(d, &v))) return st;
            if (v.k != K_STR) return mb_path_err(&d->path, MB_ERR_INVALID, "schema \"t\" is %s, expected str", kind_name(v.k));
            /* The encoder writes "t" first; stopping here lets a damaged
             * record's error name its schema and field. Later "t" keys are
             * ignored by the field decoder. */
            *s = v.data;
            *n = v.n;
            return MB_OK;
        } else if ((st = skip_value(d, 1))) {
            return st;
        }
    }
    if (!*s) return mb_path_err(&d->path, MB_ERR_INVALID, "no schema \"t\" in record");
    return MB_OK;
}

static mb_status check_size(const mb_path *p, size_t len)
{
    if (len > MB_REC_MAX_BYTES)
        return mb_path_err(p, MB_ERR_TOOBIG, "record of %zu bytes exceeds %u", len, MB_REC_MAX_BYTES);
    if (!len) return mb_path_err(p, MB_ERR_TRUNCATED, "empty record");
    return MB_OK;
}

mb_status mb_rec_peek_schema(const void *data, size_t len, char *schema, size_t size)
{
    dec d = {.p = data, .end = (const unsigned char *)data + len};
    d.path.s[0] = '\0';
    d.path.len = 0;
    d.path.schema = "record";
    if (size) schema[0] = '\0';
    const unsigned char *s;
    size_t n;
    mb_status st = check_size(&d.path, len);
    if (!st) st = find_schema(&d, &s, &n);
    if (st) return st;
    if (n >= size || memchr(s, 0, n))
        return mb_errf(MB_ERR_INVALID, "record: schema \"t\" is not a schema name");
    memcpy(schema, s, n);
    schema[n] = '\0';
    return MB_OK;
}

mb_status mb_rec_decode(const mb_type *t, const void *data, size_t len, void *rec)
{
    memset(rec, 0, t->size);
    dec d = {.p = data, .end = (const unsigned char *)data + len};
    mb_path_init(&d.path, t);
    mb_status st = check_size(&d.path, len);
    if (st) return st;
    if (t->schema) {
        const unsigned char *s;
        size_t n;
        if ((st = find_schema(&d, &s, &n))) return st;
        if (n != strlen(t->schema) || memcmp(s, t->schema, n)) {
            char got[64];
            size_t m = n < sizeof got - 1 ? n : sizeof got - 1;
            for (size_t i = 0; i < m; i++) got[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
            got[m] = '\0';
            return mb_path_err(&d.path, MB_ERR_INVALID, "record is schema \"%s\", expected \"%s\"", got, t->schema);
        }
        d.p = data;
    }
    st = dec_map(&d, t, rec);
    if (!st && d.p != d.end)
        st = mb_path_err(&d.path, MB_ERR_INVALID, "%zu bytes of garbage after the record", left(&d));
    if (st) mb_rec_free(t, rec);
    return st;
}
