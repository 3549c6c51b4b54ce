/* test_util.c — mb_buf, error text, number parsing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "util/buf.h"
#include "util/env.h"
#include "util/utf8.h"

static void test_buf_grow_and_json(void **state)
{
    (void)state;
    mb_buf b = MB_BUF_INIT;
    assert_string_equal(mb_buf_cstr(&b), "");
    for (int i = 0; i < 1000; i++)
        assert_int_equal(mb_buf_printf(&b, "%d,", i), MB_OK);
    assert_true(b.len > 2000);
    mb_buf_reset(&b);
    const char in[] = "a\"b\\\n\x01\xff\xc3\xa9";
    assert_int_equal(mb_buf_json_str(&b, in, sizeof in - 1), MB_OK);
    assert_string_equal(mb_buf_cstr(&b), "\"a\\\"b\\\\\\n\\u0001\xEF\xBF\xBD\xC3\xA9\"");
    mb_buf_free(&b);
}

static void test_errors_name_input(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(mb_parse_u64("123", 1000, &v), MB_OK);
    assert_int_equal(v, 123);
    assert_int_equal(mb_parse_u64("1001", 1000, &v), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), "1001"));
    assert_int_equal(mb_parse_u64("12x", 1000, &v), MB_ERR_INVALID);
    assert_int_equal(mb_parse_u64("18446744073709551616", UINT64_MAX, &v), MB_ERR_INVALID);
    assert_int_equal(mb_err_wrap(MB_ERR_INVALID, "config"), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), "config: '18446744073709551616'"));
}

static void test_utf8(void **state)
{
    (void)state;
    /* valid: ASCII, 2-, 3-, 4-byte */
    assert_true(mb_utf8_valid("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 10));
    /* overlong, surrogate, above U+10FFFF, truncated, lone continuation */
    assert_false(mb_utf8_valid("\xC0\xAF", 2));
    assert_false(mb_utf8_valid("\xED\xA0\x80", 3));
    assert_false(mb_utf8_valid("\xF4\x90\x80\x80", 4));
    assert_false(mb_utf8_valid("\xE2\x82", 2));
    assert_false(mb_utf8_valid("\x80", 1));
    char b[4];
    assert_int_equal(mb_utf8_encode(0x20AC, b), 3);
    assert_memory_equal(b, "\xE2\x82\xAC", 3);
    assert_int_equal(mb_utf8_encode(0xD800, b), 3); /* surrogate -> U+FFFD */
    assert_memory_equal(b, "\xEF\xBF\xBD", 3);
    assert_int_equal(mb_utf8_encode(0x1F600, b), 4);
    mb_buf out = MB_BUF_INIT;
    assert_int_equal(mb_utf8_clean(&out, "a\xFF\0b\xC3\xA9", 6), MB_OK);
    assert_int_equal(out.len, 10);
    assert_memory_equal(out.data, "a\xEF\xBF\xBD\xEF\xBF\xBD" "b\xC3\xA9", 10);
    assert_true(mb_utf8_valid(out.data, out.len));
    mb_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_grow_and_json),
        cmocka_unit_test(test_errors_name_input),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
