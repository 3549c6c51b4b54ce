/* test_mime_tree.c — mb_mime_tree: one walk of a message, then its parts
 * decoded by path, with the same bytes mb_mime_part_decode gives. */
#include "mime/mime.h"
#include "util/buf.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static mb_status put(void *ctx, const void *p, size_t n)
{
    return mb_buf_append(ctx, p, n);
}

static void test_tree_decode(void **state)
{
    (void)state;
    const char *msg =
        "Content-Type: multipart/mixed; boundary=Q\r\n\r\n"
        "--Q\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        "--Q\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        "a=3Db=\r\nc=00\r\nline2  \r\n"
        "--Q\r\nContent-Type: multipart/alternative; boundary=QQ\r\n\r\n"
        "--QQ\r\nContent-Type: application/x-raw\r\n\r\n\x01\x02\r\n\x03\r\n"
        "--QQ--\r\n"
        "--Q--\r\n";
    size_t len = strlen(msg);
    mb_mime_tree *t = NULL;
    assert_int_equal(mb_mime_tree_open(msg, len, &t), MB_OK);
    assert_int_equal(mb_mime_tree_parts(t), 3);
    const char *paths[] = {"1", "2", "3.1"};
    for (size_t i = 0; i < 3; i++) {
        mb_buf a = MB_BUF_INIT, b = MB_BUF_INIT;
        assert_int_equal(mb_mime_tree_decode(t, paths[i], put, &a), MB_OK);
        assert_int_equal(mb_mime_part_decode(msg, len, paths[i], put, &b), MB_OK);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(a.data, b.data, a.len);
        mb_buf_free(&a);
        mb_buf_free(&b);
    }
    mb_buf c = MB_BUF_INIT;
    assert_int_equal(mb_mime_tree_decode(t, "3", put, &c), MB_ERR_NOTFOUND);
    assert_int_equal(mb_mime_tree_decode(t, "4", put, &c), MB_ERR_NOTFOUND);
    assert_non_null(strstr(mb_err_last(), "'4'"));
    assert_int_equal(c.len, 0);
    mb_buf_free(&c);
    mb_mime_tree_free(t);
    mb_mime_tree_free(NULL);
}

/* Every part of a 5,000-part message found by path from one walk (paths
 * sort as strings: "10" before "9"). */
static void test_tree_many_parts(void **state)
{
    (void)state;
    enum { N = 5000 };
    mb_buf m = MB_BUF_INIT;
    char line[128];
    assert_int_equal(mb_buf_append(&m, "Content-Type: multipart/mixed; boundary=P\r\n\r\n", 45), MB_OK);
    for (int i = 1; i <= N; i++) {
        int n = snprintf(line, sizeof line, "--P\r\nContent-Type: application/octet-stream\r\n\r\n"
                                            "part %05d\r\n", i);
        assert_int_equal(mb_buf_append(&m, line, (size_t)n), MB_OK);
    }
    assert_int_equal(mb_buf_append(&m, "--P--\r\n", 7), MB_OK);
    mb_mime_tree *t = NULL;
    assert_int_equal(mb_mime_tree_open(m.data, m.len, &t), MB_OK);
    assert_int_equal(mb_mime_tree_parts(t), N);
    for (int i = N; i >= 1; i--) {
        char path[16], want[16];
        snprintf(path, sizeof path, "%d", i);
        snprintf(want, sizeof want, "part %05d", i);
        mb_buf got = MB_BUF_INIT;
        assert_int_equal(mb_mime_tree_decode(t, path, put, &got), MB_OK);
        assert_int_equal(got.len, strlen(want));
        assert_memory_equal(got.data, want, got.len);
        mb_buf_free(&got);
    }
    mb_mime_tree_free(t);
    mb_buf_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_decode),
        cmocka_unit_test(test_tree_many_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
