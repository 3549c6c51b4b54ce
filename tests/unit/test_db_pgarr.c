/* test_db_pgarr.c — the parts of db/ that need no server: array-literal
 * building (exact text), DSN rendering without the password, and the
 * embedded migration table. The server round trip of the same literals is
 * in tests/integration/db_check.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "db/db.h"

static void test_literals(void **state)
{
    (void)state;
    mb_pgarr a = MB_PGARR_INIT;
    assert_string_equal(mb_pgarr_cstr(&a), "{}");
    assert_int_equal(mb_pgarr_add_str(&a, "a"), MB_OK);
    assert_int_equal(mb_pgarr_add_str(&a, ""), MB_OK);
    assert_int_equal(mb_pgarr_add_str(&a, NULL), MB_OK);
    assert_int_equal(mb_pgarr_add_str(&a, "q\"b\\,{}"), MB_OK);
    assert_int_equal(mb_pgarr_add_str(&a, "NULL"), MB_OK);
    assert_string_equal(mb_pgarr_cstr(&a), "{\"a\",\"\",NULL,\"q\\\"b\\\\,{}\",\"NULL\"}");
    /* cstr() then add continues the same array */
    assert_int_equal(mb_pgarr_add_i64(&a, -5), MB_OK);
    assert_string_equal(mb_pgarr_cstr(&a),
                        "{\"a\",\"\",NULL,\"q\\\"b\\\\,{}\",\"NULL\",-5}");
    assert_int_equal(a.n, 6);

    mb_pgarr_reset(&a);
    assert_string_equal(mb_pgarr_cstr(&a), "{}");
    assert_int_equal(mb_pgarr_add_bool(&a, true), MB_OK);
    assert_string_equal(mb_pgarr_cstr(&a), "{t}");
    mb_pgarr_reset(&a);
    const unsigned char bytes[] = {0x00, 0xff, 0x10};
    assert_int_equal(mb_pgarr_add_bytea(&a, bytes, 3), MB_OK);
    assert_int_equal(mb_pgarr_add_bytea(&a, NULL, 0), MB_OK);
    assert_int_equal(mb_pgarr_add_u64(&a, UINT64_MAX), MB_OK);
    assert_string_equal(mb_pgarr_cstr(&a), "{\"\\\\x00ff10\",NULL,18446744073709551615}");
    mb_pgarr_reset(&a);
    assert_int_equal(mb_pgarr_add_time(&a, 0), MB_OK);
    assert_int_equal(mb_pgarr_add_time(&a, 1700000000), MB_OK);
    assert_string_equal(mb_pgarr_cstr(&a),
                        "{\"1970-01-01 00:00:00+00\",\"2023-11-14 22:13:20+00\"}");
    mb_pgarr_free(&a);
}

static void test_rejects(void **state)
{
    (void)state;
    mb_pgarr a = MB_PGARR_INIT;
    assert_int_equal(mb_pgarr_add_strn(&a, "a\0b", 3), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), "NUL"));
    assert_int_equal(mb_pgarr_add_str(&a, "bad \xff utf8"), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), "offset 4"));
    assert_int_equal(mb_pgarr_add_str(&a, "\xc0\xaf"), MB_ERR_INVALID);     /* overlong */
    assert_int_equal(mb_pgarr_add_str(&a, "\xed\xa0\x80"), MB_ERR_INVALID); /* surrogate */
    assert_int_equal(mb_pgarr_add_str(&a, "\xe2\x82"), MB_ERR_INVALID);     /* truncated */
    assert_int_equal(mb_pgarr_add_str(&a, "ok \xf0\x9f\x8e\x89 \xc3\xa9"), MB_OK);
    assert_int_equal(mb_pgarr_add_time(&a, 253402300800LL), MB_ERR_INVALID); /* year 10000 */
    assert_int_equal(mb_pgarr_add_time(&a, -62135596801LL), MB_ERR_INVALID); /* year 0 */
    assert_int_equal(a.n, 1);
    mb_pgarr_free(&a);
}

static void test_dsn_describe(void **state)
{
    (void)state;
    mb_buf b = MB_BUF_INIT;
    assert_int_equal(mb_db_dsn_describe("postgresql://bob:s3cret@db.example:5433/mail", &b), MB_OK);
    assert_string_equal(mb_buf_cstr(&b), "bob@db.example:5433/mail");
    mb_buf_reset(&b);
    assert_int_equal(mb_db_dsn_describe("host=h port=1 user=u password=s3cret dbname=d", &b),
                     MB_OK);
    assert_string_equal(mb_buf_cstr(&b), "u@h:1/d");
    mb_buf_reset(&b);
    assert_int_equal(mb_db_dsn_describe("postgresql:///mail?password=s3cret", &b), MB_OK);
    assert_null(strstr(mb_buf_cstr(&b), "s3cret"));
    mb_buf_reset(&b);
    assert_int_equal(mb_db_dsn_describe("postgresql://bob:s3cret@h:notaport/x=%zz", &b),
                     MB_ERR_CONFIG);
    assert_null(strstr(mb_err_last(), "s3cret"));
    assert_int_equal(mb_db_dsn_describe("this is = not valid", &b), MB_ERR_CONFIG);
    mb_buf_free(&b);
}

static void test_embedded_migrations(void **state)
{
    (void)state;
    assert_true(mb_migrations_count >= 1);
    assert_int_equal(mb_migrations[0].version, 1);
    assert_string_equal(mb_migrations[0].name, "init");
    for (size_t i = 0; i < mb_migrations_count; i++) {
        assert_int_equal(strlen(mb_migrations[i].sql), mb_migrations[i].sql_len);
        if (i > 0)
            assert_true(mb_migrations[i].version > mb_migrations[i - 1].version);
    }
    const char *tables[] = {"accounts", "folders", "emails", "email_locations", "addresses",
                            "attachments", "av_verdicts", "sync_jobs", "job_chunks",
                            "job_messages", "dead_letters", "sync_history"};
    for (size_t i = 0; i < MB_ARRAY_LEN(tables); i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "CREATE TABLE %s (", tables[i]);
        assert_non_null(strstr(mb_migrations[0].sql, needle));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_dsn_describe),
        cmocka_unit_test(test_embedded_migrations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
