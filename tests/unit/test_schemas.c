/* test_schemas.c — the record codec: round trips of every schema (msgpack and
 * JSON), truncation at every byte, deterministic mutation fuzzing, error
 * messages that name the field, unknown keys, limits, and the JSON parser.
 *
 * Records are filled and compared by walking the descriptors with code
 * written here (independent of the codec), and the wire keys are checked
 * against hand-packed msgpack so a table typo cannot round-trip unnoticed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schemas/json.h"
#include "schemas/schema.h"

/* ---- helpers: fill, compare ---- */

static const char *const sample_strs[] = {
    "", "héllo wörld — ✓ 𝄞 日本語", "plain ascii", "quote \" backslash \\ tab \t nl \n",
};

static char *xstr(const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    char *s = strdup(tmp);
    assert_non_null(s);
    return s;
}

typedef struct { void *v; size_t n; } anyvec;

/* Every field gets a value distinct from its neighbours (the field name is in
 * the strings, numbers depend on the field index), so a swapped offset or key
 * shows up as a mismatch. */
static void fill(const mb_type *t, void *rec, unsigned seed)
{
    for (size_t i = 0; i < t->nfields; i++) {
        const mb_field *f = &t->fields[i];
        char *p = (char *)rec + f->off;
        unsigned k = seed * 31 + (unsigned)i;
        switch (f->type) {
        case MB_F_STR:
            /* Alternate empty, non-ASCII and named strings. */
            *(char **)p = k % 4 == 0 ? xstr("") : xstr("%s:%s#%u", f->name, sample_strs[k % 4], k);
            break;
        case MB_F_U64: *(uint64_t *)p = k % 3 == 0 ? UINT64_MAX : (uint64_t)k * 1000003u + 1; break;
        case MB_F_I64: *(int64_t *)p = k % 2 ? INT64_MIN : -(int64_t)k * 7919 - 1; break;
        case MB_F_BOOL: *(bool *)p = true; break;
        case MB_F_BYTES: {
            mb_bytes *b = (mb_bytes *)p;
            b->n = 300 + k % 3;
            b->p = malloc(b->n);
            for (size_t j = 0; j < b->n; j++) b->p[j] = (unsigned char)(j * 7 + k);
            break;
        }
        case MB_F_STRV: {
            mb_strv *v = (mb_strv *)p;
            v->n = 3;
            v->v = calloc(3, sizeof *v->v);
            v->v[0] = xstr("");
            v->v[1] = xstr("\\Seen %s", f->name);
            v->v[2] = xstr("ключ-%u", k);
            break;
        }
        case MB_F_U64V: {
            mb_u64v *v = (mb_u64v *)p;
            v->n = 2;
            v->v = calloc(2, sizeof *v->v);
            v->v[0] = UINT64_MAX;
            v->v[1] = k;
            break;
        }
        case MB_F_REC: fill(f->sub, p, k + 1); break;
        case MB_F_RECV: {
            anyvec a = {calloc(4, f->sub->size), 4};
            for (size_t j = 0; j < a.n; j++) fill(f->sub, (char *)a.v + j * f->sub->size, k + (unsigned)j + 1);
            memcpy(p, &a, sizeof a);
            break;
        }
        }
    }
}

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    return !strcmp(a, b);
}

/* Deep compare; on mismatch fail naming the field. */
static void expect_equal(const mb_type *t, const void *a, const void *b, const char *ctx)
{
    for (size_t i = 0; i < t->nfields; i++) {
        const mb_field *f = &t->fields[i];
        const char *pa = (const char *)a + f->off, *pb = (const char *)b + f->off;
        bool ok = true;
        switch (f->type) {
        case MB_F_STR: ok = str_eq(*(char *const *)pa, *(char *const *)pb); break;
        case MB_F_U64: ok = *(const uint64_t *)pa == *(const uint64_t *)pb; break;
        case MB_F_I64: ok = *(const int64_t *)pa == *(const int64_t *)pb; break;
        case MB_F_BOOL: ok = *(const bool *)pa == *(const bool *)pb; break;
        case MB_F_BYTES: {
            const mb_bytes *x = (const mb_bytes *)pa, *y = (const mb_bytes *)pb;
            ok = x->n == y->n && (!x->n || !memcmp(x->p, y->p, x->n));
            break;
        }
        case MB_F_STRV: {
            const mb_strv *x = (const mb_strv *)pa, *y = (const mb_strv *)pb;
            ok = x->n == y->n;
            for (size_t j = 0; ok && j < x->n; j++) ok = str_eq(x->v[j], y->v[j]);
            break;
        }
        case MB_F_U64V: {
            const mb_u64v *x = (const mb_u64v *)pa, *y = (const mb_u64v *)pb;
            ok = x->n == y->n && (!x->n || !memcmp(x->v, y->v, x->n * sizeof *x->v));
            break;
        }
        case MB_F_REC: expect_equal(f->sub, pa, pb, ctx); break;
        case MB_F_RECV: {
            anyvec x, y;
            memcpy(&x, pa, sizeof x);
            memcpy(&y, pb, sizeof y);
            ok = x.n == y.n;
            for (size_t j = 0; ok && j < x.n; j++)
                expect_equal(f->sub, (char *)x.v + j * f->sub->size, (char *)y.v + j * f->sub->size, ctx);
            break;
        }
        }
        if (!ok) fail_msg("%s: %s field %s differs", ctx, t->name, f->name);
    }
}

static bool all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i]) return false;
    return true;
}

/* ---- round trips ---- */

static void test_roundtrip_all(void **state)
{
    (void)state;
    for (size_t ti = 0; mb_types_all[ti]; ti++) {
        const mb_type *t = mb_types_all[ti];
        void *a = calloc(1, t->size), *b = calloc(1, t->size), *c = calloc(1, t->size);
        fill(t, a, (unsigned)ti);
        mb_buf enc = MB_BUF_INIT, js = MB_BUF_INIT, js2 = MB_BUF_INIT;
        assert_int_equal(mb_rec_encode(t, a, &enc), MB_OK);
        assert_int_equal(mb_rec_decode(t, enc.data, enc.len, b), MB_OK);
        expect_equal(t, a, b, "msgpack");

        /* JSON: render, parse back, equal; pretty too; and render is stable. */
        assert_int_equal(mb_rec_to_json(t, a, &js), MB_OK);
        assert_non_null(strstr(js.data, t->schema));
        assert_int_equal(mb_rec_from_json(t, js.data, js.len, c), MB_OK);
        expect_equal(t, a, c, "json");
        mb_rec_free(t, c);
        assert_int_equal(mb_rec_to_json_pretty(t, a, &js2), MB_OK);
        assert_non_null(strchr(js2.data, '\n'));
        assert_int_equal(mb_rec_decode_auto(t, js2.data, js2.len, c), MB_OK);
        expect_equal(t, a, c, "json pretty");
        mb_rec_free(t, c);
        assert_int_equal(mb_rec_decode_auto(t, enc.data, enc.len, c), MB_OK);
        expect_equal(t, a, c, "auto msgpack");
        mb_rec_free(t, c);

        /* decode_any finds the type from "t". */
        const mb_type *got = NULL;
        void *any = NULL;
        assert_int_equal(mb_rec_decode_any(enc.data, enc.len, &got, &any), MB_OK);
        assert_ptr_equal(got, t);
        expect_equal(t, a, any, "any");
        mb_rec_free(got, any);
        free(any);

        /* Appending keeps what was already in the buffer. */
        size_t first = enc.len;
        assert_int_equal(mb_rec_encode(t, a, &enc), MB_OK);
        assert_int_equal(enc.len, 2 * first);
        assert_memory_equal(enc.data, enc.data + first, first);

        mb_rec_free(t, a);
        assert_true(all_zero(a, t->size));
        mb_rec_free(t, b);
        free(a); free(b); free(c);
        mb_buf_free(&enc); mb_buf_free(&js); mb_buf_free(&js2);
    }
}

static void test_empty_and_null_vs_empty(void **state)
{
    (void)state;
    mb_rec_command cmd = {0}, out;
    mb_buf b = MB_BUF_INIT;
    assert_int_equal(mb_rec_encode(&mb_type_command, &cmd, &b), MB_OK);
    /* {"t":"cmd/1"} and nothing else: absent fields cost nothing. */
    assert_int_equal(b.len, 1 + 2 + 6);
    assert_int_equal(mb_rec_decode(&mb_type_command, b.data, b.len, &out), MB_OK);
    assert_true(all_zero(&out, sizeof out));
    mb_buf_reset(&b);
    cmd.op = "";  /* empty string is not absent */
    assert_int_equal(mb_rec_encode(&mb_type_command, &cmd, &b), MB_OK);
    assert_int_equal(mb_rec_decode(&mb_type_command, b.data, b.len, &out), MB_OK);
    assert_non_null(out.op);
    assert_string_equal(out.op, "");
    assert_null(out.account);
    mb_rec_free(&mb_type_command, &out);
    mb_buf_reset(&b);
    assert_int_equal(mb_rec_to_json(&mb_type_command, &cmd, &b), MB_OK);
    assert_string_equal(b.data, "{\"schema\":\"cmd/1\",\"op\":\"\",\"account\":null,\"job\":null,"
                                "\"folders\":[],\"since\":null,\"until\":null,"
                                "\"defer_attachments\":false,\"id\":0,\"all\":false,"
                                "\"stage\":null,\"older_than\":null,\"every\":null,"
                                "\"discover\":false,\"origin\":null}");
    mb_buf_free(&b);
}

/* ---- hand-packed msgpack ---- */

static int pk_write(void *data, const char *buf, size_t len)
{
    return mb_buf_append(data, buf, len) ? -1 : 0;
}

static void pk_str(msgpack_packer *pk, const char *s) { msgpack_pack_str_with_body(pk, s, strlen(s)); }

/* fetch/1 written by hand with the keys from records.h, plus unknown keys of
 * every shape (which must be skipped), and nil for an absent field. */
static void pack_fetch_by_hand(mb_buf *b, bool with_unknown)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, b, pk_write);
    msgpack_pack_map(&pk, 9 + (with_unknown ? 4 : 0));
    if (with_unknown) {
        pk_str(&pk, "zz");
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, "a");
        msgpack_pack_array(&pk, 3);
        msgpack_pack_nil(&pk);
        msgpack_pack_double(&pk, 1.5);
        msgpack_pack_ext_with_body(&pk, "abcd", 4, 5);
        pk_str(&pk, "b");
        msgpack_pack_bin_with_body(&pk, "xy", 2);
    }
    pk_str(&pk, "t"); pk_str(&pk, "fetch/1");
    pk_str(&pk, "j"); msgpack_pack_uint8(&pk, 42);
    pk_str(&pk, "a"); msgpack_pack_uint16(&pk, 7);
    pk_str(&pk, "c"); msgpack_pack_uint32(&pk, 9);
    pk_str(&pk, "fi"); msgpack_pack_uint64(&pk, UINT64_MAX);
    pk_str(&pk, "f"); pk_str(&pk, "Boîte");
    pk_str(&pk, "v"); msgpack_pack_int64(&pk, 1234); /* signed wire type, positive: fine */
    pk_str(&pk, "da"); msgpack_pack_nil(&pk);
    if (with_unknown) {
        pk_str(&pk, "new_field"); msgpack_pack_int8(&pk, -3);
        pk_str(&pk, "another"); msgpack_pack_float(&pk, 2.0f);
        pk_str(&pk, "more"); msgpack_pack_array(&pk, 0);
    }
    pk_str(&pk, "i");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 4 + (with_unknown ? 1 : 0));
    pk_str(&pk, "u"); msgpack_pack_uint64(&pk, 100);
    pk_str(&pk, "z"); msgpack_pack_uint64(&pk, 2048);
    pk_str(&pk, "d"); msgpack_pack_int64(&pk, -5);
    if (with_unknown) { pk_str(&pk, "q"); msgpack_pack_true(&pk); }
    pk_str(&pk, "f"); msgpack_pack_array(&pk, 2); pk_str(&pk, "\\Seen"); pk_str(&pk, "$Label");
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "u"); msgpack_pack_uint64(&pk, 101);
}

static void check_hand_fetch(const mb_rec_fetch *f)
{
    assert_int_equal(f->job, 42);
    assert_int_equal(f->account_id, 7);
    assert_int_equal(f->chunk_id, 9);
    assert_true(f->folder_id == UINT64_MAX);
    assert_string_equal(f->folder, "Boîte");
    assert_int_equal(f->uidvalidity, 1234);
    assert_false(f->defer_attachments);
    assert_int_equal(f->items.n, 2);
    assert_int_equal(f->items.v[0].uid, 100);
    assert_int_equal(f->items.v[0].size, 2048);
    assert_int_equal(f->items.v[0].internal_date, -5);
    assert_int_equal(f->items.v[0].flags.n, 2);
    assert_string_equal(f->items.v[0].flags.v[1], "$Label");
    assert_int_equal(f->items.v[1].uid, 101);
    assert_int_equal(f->items.v[1].flags.n, 0);
}

static void test_hand_packed_and_unknown_keys(void **state)
{
    (void)state;
    for (int unk = 0; unk < 2; unk++) {
        mb_buf b = MB_BUF_INIT;
        pack_fetch_by_hand(&b, unk);
        mb_rec_fetch f;
        assert_int_equal(mb_rec_decode(&mb_type_fetch, b.data, b.len, &f), MB_OK);
        check_hand_fetch(&f);
        mb_rec_free(&mb_type_fetch, &f);
        mb_buf_free(&b);
    }
}

/* The short keys of the other schemas, from the records.h comments, checked
 * by decoding records packed by hand. */
static void test_keys_match_records_h(void **state)
{
    (void)state;
    mb_buf b = MB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, pk_write);
    msgpack_pack_map(&pk, 6);
    pk_str(&pk, "t"); pk_str(&pk, "store/1");
    pk_str(&pk, "r"); msgpack_pack_map(&pk, 3);
    pk_str(&pk, "h"); pk_str(&pk, "abc");
    pk_str(&pk, "d"); msgpack_pack_int64(&pk, -9);
    pk_str(&pk, "da"); msgpack_pack_true(&pk);
    pk_str(&pk, "ir"); pk_str(&pk, "parent@x");
    pk_str(&pk, "dt"); msgpack_pack_int32(&pk, -100);
    pk_str(&pk, "bc"); msgpack_pack_array(&pk, 1); msgpack_pack_map(&pk, 2);
    pk_str(&pk, "n"); pk_str(&pk, "Zoë"); pk_str(&pk, "a"); pk_str(&pk, "z@x");
    pk_str(&pk, "at"); msgpack_pack_array(&pk, 1); msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"); pk_str(&pk, "image/png");
    pk_str(&pk, "i"); pk_str(&pk, "cid1");
    pk_str(&pk, "z"); msgpack_pack_uint64(&pk, 5);
    mb_rec_parsed p;
    assert_int_equal(mb_rec_decode(&mb_type_parsed, b.data, b.len, &p), MB_OK);
    assert_string_equal(p.raw.sha256, "abc");
    assert_int_equal(p.raw.internal_date, -9);
    assert_true(p.raw.defer_attachments);
    assert_string_equal(p.in_reply_to, "parent@x");
    assert_int_equal(p.date, -100);
    assert_int_equal(p.bcc.n, 1);
    assert_string_equal(p.bcc.v[0].name, "Zoë");
    assert_string_equal(p.bcc.v[0].addr, "z@x");
    assert_int_equal(p.attachments.n, 1);
    assert_string_equal(p.attachments.v[0].content_type, "image/png");
    assert_string_equal(p.attachments.v[0].content_id, "cid1");
    assert_int_equal(p.attachments.v[0].size, 5);
    mb_rec_free(&mb_type_parsed, &p);

    mb_buf_reset(&b);
    msgpack_pack_map(&pk, 5);
    pk_str(&pk, "t"); pk_str(&pk, "event/1");
    pk_str(&pk, "sg"); pk_str(&pk, "store");
    pk_str(&pk, "st"); pk_str(&pk, "running");
    pk_str(&pk, "ap"); msgpack_pack_uint64(&pk, 3);
    pk_str(&pk, "e"); pk_str(&pk, "boom");
    mb_rec_event e;
    assert_int_equal(mb_rec_decode(&mb_type_event, b.data, b.len, &e), MB_OK);
    assert_string_equal(e.stage, "store");
    assert_string_equal(e.status, "running");
    assert_int_equal(e.av_pending, 3);
    assert_string_equal(e.error, "boom");
    mb_rec_free(&mb_type_event, &e);
    mb_buf_free(&b);

    /* Tables: keys and names unique; no short key is another field's long
     * name (from_json accepts both); top-level records do not use "t". */
    const mb_type *all[] = {&mb_type_command, &mb_type_fetch, &mb_type_rawmsg, &mb_type_parsed,
                            &mb_type_avscan, &mb_type_event, &mb_type_dead, &mb_type_address,
                            &mb_type_fetch_item, &mb_type_attachment};
    for (size_t ti = 0; ti < MB_ARRAY_LEN(all); ti++) {
        const mb_type *t = all[ti];
        for (size_t i = 0; i < t->nfields; i++) {
            if (t->schema) assert_string_not_equal(t->fields[i].key, "t");
            for (size_t j = 0; j < t->nfields; j++) {
                if (i == j) continue;
                assert_string_not_equal(t->fields[i].key, t->fields[j].key);
                assert_string_not_equal(t->fields[i].name, t->fields[j].name);
                assert_string_not_equal(t->fields[i].key, t->fields[j].name);
            }
        }
    }
    assert_ptr_equal(mb_type_by_schema("parse/1"), &mb_type_rawmsg);
    assert_ptr_equal(mb_type_by_schema("store/1"), &mb_type_parsed);
    assert_ptr_equal(mb_type_by_schema("dead/1"), &mb_type_dead);
    assert_null(mb_type_by_schema("store/2"));
}

/* ---- errors ---- */

static mb_status decode_expect_fail(const mb_type *t, const mb_buf *b, const char *msg)
{
    void *rec = malloc(t->size);
    memset(rec, 0xAB, t->size);
    mb_status st = mb_rec_decode(t, b->data, b->len, rec);
    assert_int_not_equal(st, MB_OK);
    assert_true(all_zero(rec, t->size));
    if (msg && !strstr(mb_err_last(), msg)) fail_msg("error '%s' lacks '%s'", mb_err_last(), msg);
    free(rec);
    return st;
}

static void test_wrong_types_name_field(void **state)
{
    (void)state;
    mb_buf b = MB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, pk_write);
    /* attachments[3].size is a string. */
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "t"); pk_str(&pk, "store/1");
    pk_str(&pk, "s"); pk_str(&pk, "subject is decoded before the error");
    pk_str(&pk, "at"); msgpack_pack_array(&pk, 4);
    for (int i = 0; i < 4; i++) {
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, "n"); pk_str(&pk, "file.txt");
        pk_str(&pk, "z");
        if (i == 3) pk_str(&pk, "12"); else msgpack_pack_uint64(&pk, 12);
    }
    assert_int_equal(decode_expect_fail(&mb_type_parsed, &b,
        "store/1: field \"attachments[3].size\": expected unsigned integer, got str"), MB_ERR_INVALID);

    struct { const char *key; int kind; const char *msg; } cases[] = {
        {"j", 0, "fetch/1: field \"job\": expected unsigned integer, got -1"},
        {"f", 1, "fetch/1: field \"folder\": expected string, got unsigned integer"},
        {"da", 2, "fetch/1: field \"defer_attachments\": expected bool, got str"},
        {"i", 3, "fetch/1: field \"items\": expected array, got map"},
        {"i", 4, "fetch/1: field \"items[0]\": expected map, got unsigned integer"},
        {"i", 5, "fetch/1: field \"items[0].internal_date\": integer 18446744073709551615 out of range"},
        {"i", 6, "fetch/1: field \"items[0].flags[1]\": string contains a NUL byte"},
        {"i", 7, "fetch/1: field \"items[0].flags[0]\": expected string, got float"},
    };
    for (size_t c = 0; c < MB_ARRAY_LEN(cases); c++) {
        mb_buf_reset(&b);
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, "t"); pk_str(&pk, "fetch/1");
        pk_str(&pk, cases[c].key);
        switch (cases[c].kind) {
        case 0: msgpack_pack_int8(&pk, -1); break;
        case 1: msgpack_pack_uint8(&pk, 1); break;
        case 2: pk_str(&pk, "true"); break;
        case 3: msgpack_pack_map(&pk, 0); break;
        case 4: msgpack_pack_array(&pk, 1); msgpack_pack_uint8(&pk, 1); break;
        case 5: msgpack_pack_array(&pk, 1); msgpack_pack_map(&pk, 1); pk_str(&pk, "d");
                msgpack_pack_uint64(&pk, UINT64_MAX); break;
        case 6: msgpack_pack_array(&pk, 1); msgpack_pack_map(&pk, 1); pk_str(&pk, "f");
                msgpack_pack_array(&pk, 2); pk_str(&pk, "ok");
                msgpack_pack_str_with_body(&pk, "a\0b", 3); break;
        case 7: msgpack_pack_array(&pk, 1); msgpack_pack_map(&pk, 1); pk_str(&pk, "f");
                msgpack_pack_array(&pk, 1); msgpack_pack_double(&pk, 1.0); break;
        }
        decode_expect_fail(&mb_type_fetch, &b, cases[c].msg);
    }

    /* Truncation names the field being read. */
    mb_rec_fetch f = {0};
    f.items.n = 8;
    f.items.v = calloc(8, sizeof *f.items.v);
    char *flags[] = {"\\Seen", "\\Answered"};
    f.items.v[7].flags.v = flags;
    f.items.v[7].flags.n = 2;
    mb_buf_reset(&b);
    assert_int_equal(mb_rec_encode(&mb_type_fetch, &f, &b), MB_OK);
    b.len -= 3;
    assert_int_equal(decode_expect_fail(&mb_type_fetch, &b,
        "fetch/1: field \"items[7].flags[1]\": truncated"), MB_ERR_TRUNCATED);
    /* Garbage after the record. */
    b.len += 3;
    assert_int_equal(mb_buf_putc(&b, 0), MB_OK);
    decode_expect_fail(&mb_type_fetch, &b, "garbage after the record");
    free(f.items.v);
    mb_buf_free(&b);
}

static void test_schema_mismatch(void **state)
{
    (void)state;
    mb_rec_avscan a = {.job = 1, .sha256 = "ff"};
    mb_buf b = MB_BUF_INIT;
    assert_int_equal(mb_rec_encode(&mb_type_avscan, &a, &b), MB_OK);
    decode_expect_fail(&mb_type_fetch, &b, "record is schema \"avscan/1\", expected \"fetch/1\"");
    /* No "t" at all. */
    mb_buf_reset(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, pk_write);
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "j"); msgpack_pack_uint8(&pk, 1);
    decode_expect_fail(&mb_type_avscan, &b, "avscan/1: no schema \"t\"");
    const mb_type *t;
    void *rec;
    assert_int_not_equal(mb_rec_decode_any(b.data, b.len, &t, &rec), MB_OK);
    assert_null(rec);
    /* Unknown schema. */
    mb_buf_reset(&b);
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "t"); pk_str(&pk, "nope/9");
    assert_int_equal(mb_rec_decode_any(b.data, b.len, &t, &rec), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), "nope/9"));
    /* Not a map. */
    mb_buf_reset(&b);
    msgpack_pack_array(&pk, 0);
    decode_expect_fail(&mb_type_avscan, &b, "avscan/1: expected map, got array");
    /* JSON naming another schema. */
    const char *js = "{\"schema\":\"fetch/1\",\"job\":1}";
    mb_rec_avscan out;
    assert_int_equal(mb_rec_from_json(&mb_type_avscan, js, strlen(js), &out), MB_ERR_INVALID);
    assert_true(all_zero(&out, sizeof out));
    mb_buf_free(&b);
}

static void test_duplicate_keys_and_nil(void **state)
{
    (void)state;
    mb_buf b = MB_BUF_INIT;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, pk_write);
    msgpack_pack_map(&pk, 7);
    pk_str(&pk, "t"); pk_str(&pk, "dead/1");
    pk_str(&pk, "sg"); pk_str(&pk, "first");
    pk_str(&pk, "hd"); msgpack_pack_array(&pk, 1); pk_str(&pk, "A: 1");
    pk_str(&pk, "sg"); pk_str(&pk, "second");
    pk_str(&pk, "hd"); msgpack_pack_array(&pk, 2); pk_str(&pk, "B: 2"); pk_str(&pk, "C: 3");
    pk_str(&pk, "d"); msgpack_pack_bin_with_body(&pk, "\x00\x01", 2);
    pk_str(&pk, "d"); msgpack_pack_nil(&pk); /* nil after a value: absent again */
    mb_rec_dead d;
    assert_int_equal(mb_rec_decode(&mb_type_dead, b.data, b.len, &d), MB_OK);
    assert_string_equal(d.stage, "second");
    assert_int_equal(d.headers.n, 2);
    assert_string_equal(d.headers.v[1], "C: 3");
    assert_int_equal(d.data.n, 0);
    assert_null(d.data.p);
    mb_rec_free(&mb_type_dead, &d);
    mb_buf_free(&b);
}

static void test_limits(void **state)
{
    (void)state;
    mb_buf b = MB_BUF_INIT;
    /* Declared lengths far beyond the input: refused before allocating
     * (under ASan a 4 GiB or 4G-element allocation would abort the test). */
    #define C(lit, st) {lit, sizeof lit - 1, st}
    static const struct { const char *bytes; size_t n; mb_status st; } cases[] = {
        C("\x82\xa1t\xa7""fetch/1\xa1""f\xdb\xff\xff\xff\xff", MB_ERR_TRUNCATED),
        C("\x82\xa1t\xa7""fetch/1\xa1""f\xc6\xff\xff\xff\xff", MB_ERR_TRUNCATED),
        C("\x82\xa1t\xa7""fetch/1\xa1i\xdd\xff\xff\xff\xff", MB_ERR_TOOBIG),
        C("\x82\xa1t\xa7""fetch/1\xa1i\xdd\x00\x01\x86\xa1", MB_ERR_TOOBIG), /* 100001 */
        C("\x82\xa1t\xa7""fetch/1\xa1i\xdd\x00\x00\x10\x00", MB_ERR_TRUNCATED),
        C("\xdf\xff\xff\xff\xff", MB_ERR_TOOBIG),
        C("\xde\x7f\xff", MB_ERR_TRUNCATED),
        C("\x82\xa1t\xa7""fetch/1\xa2zz\xc9\xff\xff\xff\xff\x01", MB_ERR_TRUNCATED),
    };
#undef C
    for (size_t i = 0; i < MB_ARRAY_LEN(cases); i++) {
        mb_buf_reset(&b);
        assert_int_equal(mb_buf_append(&b, cases[i].bytes, cases[i].n), MB_OK);
        if (decode_expect_fail(&mb_type_fetch, &b, NULL) != cases[i].st)
            fail_msg("case %zu: %s", i, mb_err_last());
    }

    /* A 1 MiB + 1 string: present in full, still refused; encoder refuses too. */
    size_t big = MB_REC_MAX_STR + 1;
    char *s = malloc(big + 1);
    memset(s, 'x', big);
    s[big] = '\0';
    mb_rec_avscan a = {.part = s};
    mb_buf_reset(&b);
    assert_int_equal(mb_buf_puts(&b, "keep"), MB_OK);
    assert_int_equal(mb_rec_encode(&mb_type_avscan, &a, &b), MB_ERR_TOOBIG);
    assert_non_null(strstr(mb_err_last(), "avscan/1: field \"part\""));
    assert_int_equal(b.len, 4);
    mb_buf_reset(&b);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b, pk_write);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "t"); pk_str(&pk, "avscan/1");
    pk_str(&pk, "p"); msgpack_pack_str_with_body(&pk, s, big);
    assert_int_equal(decode_expect_fail(&mb_type_avscan, &b, "field \"part\""), MB_ERR_TOOBIG);
    /* Exactly the limit is fine. */
    s[big - 1] = '\0';
    mb_buf_reset(&b);
    assert_int_equal(mb_rec_encode(&mb_type_avscan, &a, &b), MB_OK);
    mb_rec_avscan out;
    assert_int_equal(mb_rec_decode(&mb_type_avscan, b.data, b.len, &out), MB_OK);
    assert_int_equal(strlen(out.part), MB_REC_MAX_STR);
    mb_rec_free(&mb_type_avscan, &out);
    free(s);

    /* Unknown values nested deeper than the limit. */
    mb_buf_reset(&b);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "t"); pk_str(&pk, "avscan/1");
    pk_str(&pk, "deep");
    for (int i = 0; i < MB_REC_MAX_DEPTH + 2; i++) msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    decode_expect_fail(&mb_type_avscan, &b, "nesting deeper");

    /* Whole record over 16 MiB. */
    assert_int_equal(mb_rec_decode(&mb_type_avscan, b.data, MB_REC_MAX_BYTES + 1, &out), MB_ERR_TOOBIG);
    mb_buf_free(&b);
}

/* ---- truncation and fuzzing ---- */

static void test_truncation_every_prefix(void **state)
{
    (void)state;
    for (size_t ti = 0; mb_types_all[ti]; ti++) {
        const mb_type *t = mb_types_all[ti];
        void *a = calloc(1, t->size), *b = malloc(t->size);
        fill(t, a, 3);
        mb_buf enc = MB_BUF_INIT;
        assert_int_equal(mb_rec_encode(t, a, &enc), MB_OK);
        for (size_t n = 0; n < enc.len; n++) {
            /* A private copy of exactly n bytes, so ASan sees any overread. */
            char *copy = malloc(n ? n : 1);
            memcpy(copy, enc.data, n);
            memset(b, 0x5A, t->size);
            if (mb_rec_decode(t, copy, n, b) == MB_OK) fail_msg("%s: prefix %zu decoded", t->schema, n);
            assert_true(all_zero(b, t->size));
            free(copy);
        }
        mb_rec_free(t, a);
        free(a); free(b);
        mb_buf_free(&enc);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return rng_state = x;
}

static void mutate(mb_buf *m)
{
    static const unsigned char lenbytes[] = {0xdb, 0xda, 0xd9, 0xc6, 0xdc, 0xdd, 0xde, 0xdf,
                                             0x9f, 0x8f, 0xbf, 0xff, 0x00, 0xc0, 0xcf, 0xd3};
    int rounds = 1 + (int)(rnd() % 3);
    for (int r = 0; r < rounds; r++) {
        size_t pos = m->len ? (size_t)(rnd() % m->len) : 0;
        switch (rnd() % 6) {
        case 0: if (m->len) m->data[pos] ^= (char)(1u << (rnd() % 8)); break;
        case 1: if (m->len) m->data[pos] = (char)rnd(); break;
        case 2: { /* insert */
            char c = (char)rnd();
            if (mb_buf_append(m, "", 1)) return;
            memmove(m->data + pos + 1, m->data + pos, m->len - 1 - pos);
            m->data[pos] = c;
            break;
        }
        case 3: /* delete */
            if (m->len) {
                memmove(m->data + pos, m->data + pos + 1, m->len - pos - 1);
                m->len--;
            }
            break;
        case 4: if (m->len) m->data[pos] = (char)lenbytes[rnd() % sizeof lenbytes]; break;
        case 5: /* corrupt a length field: 0xff run */
            for (size_t i = pos; i < pos + 4 && i < m->len; i++) m->data[i] = (char)(rnd() % 2 ? 0xff : 0x7f);
            break;
        }
    }
}

static void test_fuzz_mutations(void **state)
{
    (void)state;
    rng_state = 0x9E3779B97F4A7C15ull;
    for (size_t ti = 0; mb_types_all[ti]; ti++) {
        const mb_type *t = mb_types_all[ti];
        void *a = calloc(1, t->size), *b = calloc(1, t->size), *c = calloc(1, t->size);
        fill(t, a, 5);
        /* Smaller vectors keep the records short so 10k runs stay fast. */
        mb_buf enc = MB_BUF_INIT, m = MB_BUF_INIT, re = MB_BUF_INIT;
        assert_int_equal(mb_rec_encode(t, a, &enc), MB_OK);
        int ok = 0;
        for (int iter = 0; iter < 10000; iter++) {
            mb_buf_reset(&m);
            assert_int_equal(mb_buf_append(&m, enc.data, enc.len), MB_OK);
            mutate(&m);
            char *copy = malloc(m.len ? m.len : 1);
            memcpy(copy, m.data, m.len);
            if (mb_rec_decode(t, copy, m.len, b) == MB_OK) {
                /* A valid record: it re-encodes and decodes to itself. */
                ok++;
                mb_buf_reset(&re);
                assert_int_equal(mb_rec_encode(t, b, &re), MB_OK);
                assert_int_equal(mb_rec_decode(t, re.data, re.len, c), MB_OK);
                expect_equal(t, b, c, "fuzz re-encode");
                mb_rec_free(t, b);
                mb_rec_free(t, c);
            } else {
                assert_true(all_zero(b, t->size));
            }
            free(copy);
        }
        /* Some mutations (a flipped value bit) keep the record valid; all of
         * them being rejected would mean the fuzzer tests nothing useful. */
        assert_true(ok > 0);
        assert_true(ok < 10000);
        mb_rec_free(t, a);
        free(a); free(b); free(c);
        mb_buf_free(&enc); mb_buf_free(&m); mb_buf_free(&re);
    }
}

/* ---- JSON ---- */

static void test_json_parser(void **state)
{
    (void)state;
    mb_json *v;
    const char *ok = " {\"a\":[1,-2,3.5e2,true,false,null,\"\\u00e9\\ud834\\udd1e\\n\\/\"],\"a\":{}} ";
    assert_int_equal(mb_json_parse(ok, strlen(ok), &v), MB_OK);
    const mb_json *a = mb_json_get(v, "a");
    assert_int_equal(a->kind, MB_JSON_OBJ); /* last wins */
    assert_int_equal(v->members[0].value.n, 7);
    assert_string_equal(v->members[0].value.elems[6].str, "é𝄞\n/");
    int64_t i;
    assert_int_equal(mb_json_i64(&v->members[0].value.elems[1], &i), MB_OK);
    assert_int_equal(i, -2);
    uint64_t u;
    assert_int_equal(mb_json_u64(&v->members[0].value.elems[1], &u), MB_ERR_INVALID);
    assert_int_equal(mb_json_u64(&v->members[0].value.elems[2], &u), MB_ERR_INVALID);
    mb_json_free(v);

    const char *nums[] = {"18446744073709551615", "-9223372036854775808"};
    assert_int_equal(mb_json_parse(nums[0], strlen(nums[0]), &v), MB_OK);
    assert_int_equal(mb_json_u64(v, &u), MB_OK);
    assert_true(u == UINT64_MAX);
    mb_json_free(v);
    assert_int_equal(mb_json_parse(nums[1], strlen(nums[1]), &v), MB_OK);
    assert_int_equal(mb_json_i64(v, &i), MB_OK);
    assert_true(i == INT64_MIN);
    mb_json_free(v);
    const char *range[] = {"18446744073709551616", "9223372036854775808"};
    assert_int_equal(mb_json_parse(range[0], strlen(range[0]), &v), MB_OK);
    assert_int_equal(mb_json_u64(v, &u), MB_ERR_INVALID);
    mb_json_free(v);
    assert_int_equal(mb_json_parse(range[1], strlen(range[1]), &v), MB_OK);
    assert_int_equal(mb_json_i64(v, &i), MB_ERR_INVALID);
    mb_json_free(v);

    const char *bad[] = {"", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "+1", ".5", "1e",
                         "\"\\ud834\"", "\"\\udd1e\"", "\"\\x\"", "\"a\nb\"", "\"\xff\"",
                         "\"\xc0\x80\"", "tru", "nul", "{\"a\" 1}", "{1:2}", "[1] x", "\"abc",
                         "\"\\u12\"", "{\"a\":}", "[\"\\"};
    for (size_t k = 0; k < MB_ARRAY_LEN(bad); k++) {
        if (mb_json_parse(bad[k], strlen(bad[k]), &v) == MB_OK) fail_msg("accepted bad JSON '%s'", bad[k]);
        assert_null(v);
        assert_non_null(strstr(mb_err_last(), "JSON: offset"));
    }
    /* Depth limit. */
    char deep[2 * MB_JSON_MAX_DEPTH + 10];
    size_t n = 0;
    for (int k = 0; k < MB_JSON_MAX_DEPTH + 1; k++) deep[n++] = '[';
    for (int k = 0; k < MB_JSON_MAX_DEPTH + 1; k++) deep[n++] = ']';
    assert_int_equal(mb_json_parse(deep, n, &v), MB_ERR_INVALID);
    assert_int_equal(mb_json_parse(deep + 1, n - 2, &v), MB_OK);
    mb_json_free(v);
}

static void test_from_json_commands(void **state)
{
    (void)state;
    /* What an operator types with `nats req`: short keys or long names. */
    const char *js[] = {
        "{\"o\":\"import.start\",\"a\":\"alice\",\"f\":[\"INBOX\",\"Archiv/2019\"],\"da\":true,\"zz\":[1,{}]}",
        "\n {\"schema\":\"cmd/1\",\"op\":\"import.start\",\"account\":\"alice\","
        "\"folders\":[\"INBOX\",\"Archiv/2019\"],\"defer_attachments\":true,\"since\":null}",
    };
    for (size_t k = 0; k < 2; k++) {
        mb_rec_command c;
        assert_int_equal(mb_rec_decode_auto(&mb_type_command, js[k], strlen(js[k]), &c), MB_OK);
        assert_string_equal(c.op, "import.start");
        assert_string_equal(c.account, "alice");
        assert_int_equal(c.folders.n, 2);
        assert_string_equal(c.folders.v[1], "Archiv/2019");
        assert_true(c.defer_attachments);
        assert_null(c.since);
        mb_rec_free(&mb_type_command, &c);
    }
    struct { const char *json; const char *msg; } bad[] = {
        {"{\"op\":1}", "cmd/1: field \"op\": expected string, got number"},
        {"{\"folders\":[\"a\",2]}", "cmd/1: field \"folders[1]\": expected string, got number"},
        {"{\"op\":\"a\\u0000b\"}", "field \"op\": string contains a NUL"},
        {"[]", "cmd/1: expected object, got array"},
        {"{\"op\":", "cmd/1: JSON: offset 6"},
    };
    for (size_t k = 0; k < MB_ARRAY_LEN(bad); k++) {
        mb_rec_command c;
        assert_int_not_equal(mb_rec_from_json(&mb_type_command, bad[k].json, strlen(bad[k].json), &c), MB_OK);
        assert_true(all_zero(&c, sizeof c));
        if (!strstr(mb_err_last(), bad[k].msg)) fail_msg("error '%s' lacks '%s'", mb_err_last(), bad[k].msg);
    }
    const char *ev = "{\"job\":18446744073709551616}";
    mb_rec_event e;
    assert_int_equal(mb_rec_from_json(&mb_type_event, ev, strlen(ev), &e), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), "event/1: field \"job\": integer 18446744073709551616 out of range"));
    const char *ts = "{\"ts\":-5,\"st\":\"x\",\"e\":\"\\ud83d\\ude00\"}";
    assert_int_equal(mb_rec_from_json(&mb_type_event, ts, strlen(ts), &e), MB_OK);
    assert_int_equal(e.ts_ms, -5);
    assert_string_equal(e.status, "x");
    assert_string_equal(e.error, "\xf0\x9f\x98\x80");
    mb_rec_free(&mb_type_event, &e);
}

static void test_bytes_base64(void **state)
{
    (void)state;
    unsigned char raw[] = {0x00, 0xff, 'a', 'b'};
    mb_rec_dead d = {.stage = "parse", .data = {raw, sizeof raw}};
    mb_buf b = MB_BUF_INIT;
    assert_int_equal(mb_rec_to_json(&mb_type_dead, &d, &b), MB_OK);
    assert_non_null(strstr(b.data, "\"data\":\"AP9hYg==\""));
    mb_rec_dead out;
    assert_int_equal(mb_rec_from_json(&mb_type_dead, b.data, b.len, &out), MB_OK);
    assert_int_equal(out.data.n, 4);
    assert_memory_equal(out.data.p, raw, 4);
    mb_rec_free(&mb_type_dead, &out);
    /* 1 and 2 byte tails, and rejects. */
    const char *in[] = {"{\"d\":\"YQ==\"}", "{\"d\":\"YWI=\"}", "{\"d\":\"YWJj\"}", "{\"d\":\"\"}"};
    const size_t len[] = {1, 2, 3, 0};
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(mb_rec_from_json(&mb_type_dead, in[k], strlen(in[k]), &out), MB_OK);
        assert_int_equal(out.data.n, len[k]);
        if (len[k]) assert_memory_equal(out.data.p, "abc", len[k]);
        mb_rec_free(&mb_type_dead, &out);
    }
    const char *badb[] = {"{\"d\":\"YQ=\"}", "{\"d\":\"Y!==\"}", "{\"d\":\"=QYQ\"}", "{\"d\":\"YQ==YQ==\"}"};
    for (size_t k = 0; k < MB_ARRAY_LEN(badb); k++) {
        assert_int_not_equal(mb_rec_from_json(&mb_type_dead, badb[k], strlen(badb[k]), &out), MB_OK);
        assert_non_null(strstr(mb_err_last(), "dead/1: field \"data\""));
    }
    mb_buf_free(&b);
}

static void test_encode_rejects_bad_structs(void **state)
{
    (void)state;
    char *flags[] = {"a", NULL};
    mb_rec_rawmsg r = {.flags = {flags, 2}};
    mb_buf b = MB_BUF_INIT;
    assert_int_equal(mb_rec_encode(&mb_type_rawmsg, &r, &b), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), "parse/1: field \"flags[1]\": NULL string"));
    assert_int_equal(b.len, 0);
    mb_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_empty_and_null_vs_empty),
        cmocka_unit_test(test_hand_packed_and_unknown_keys),
        cmocka_unit_test(test_keys_match_records_h),
        cmocka_unit_test(test_wrong_types_name_field),
        cmocka_unit_test(test_schema_mismatch),
        cmocka_unit_test(test_duplicate_keys_and_nil),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_truncation_every_prefix),
        cmocka_unit_test(test_fuzz_mutations),
        cmocka_unit_test(test_json_parser),
        cmocka_unit_test(test_from_json_commands),
        cmocka_unit_test(test_bytes_base64),
        cmocka_unit_test(test_encode_rejects_bad_structs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
