/* test_util.c — mb_buf, mb_grow, error text, number parsing, log line escaping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <string.h>

#include "util/buf.h"
#include "util/env.h"
#include "util/log.h"
#include "util/utf8.h"

#include <stdlib.h>
#include <unistd.h>

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

/* mb_grow: element n is always writable (ASan would catch a short array),
 * and the array moves only when n reaches a power of two. */
static void test_grow(void **state)
{
    (void)state;
    int *v = NULL;
    size_t moves = 0;
    for (size_t n = 0; n < 5000; n++) {
        int *nv = mb_grow(v, n, sizeof *nv);
        assert_non_null(nv);
        if (n & (n - 1))
            assert_ptr_equal(nv, v);
        else
            moves++;
        v = nv;
        v[n] = (int)n;
    }
    assert_int_equal(moves, 14); /* 0, 1, 2, 4, ..., 4096 */
    for (size_t n = 0; n < 5000; n++)
        assert_int_equal(v[n], (int)n);
    assert_null(mb_grow(v, (size_t)1 << 62, 16));
    assert_non_null(strstr(mb_err_last(), "too large"));
    free(v);
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

/* A log line quoting hostile bytes stays one line with no control byte. */
static void test_log_escapes(void **state)
{
    (void)state;
    char path[] = "/tmp/mb-test-log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    mb_log_init("test");
    MB_WARN("j\x1b" "1", "acct\n2", "Subject '%s' end", "\x1b[2J\x07" "bell\r\nFAKE ERROR line\x7f");
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "job=j\\x1b1 account=acct 2 Subject '\\x1b[2J\\x07bell  FAKE ERROR line\\x7f' end\n"));
    for (ssize_t i = 0; i < n - 1; i++)
        assert_true((unsigned char)buf[i] >= 0x20 && buf[i] != 0x7f);
    assert_int_equal(buf[n - 1], '\n');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_grow_and_json),
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_errors_name_input),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_log_escapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
