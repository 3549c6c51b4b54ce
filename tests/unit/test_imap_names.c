/* test_imap_names.c — sources/imap/utf7.c on hostile folder names and
 * keywords: strict modified UTF-7, and the escaped form that keeps any server
 * name storable (valid UTF-8), reversible and distinct. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "sources/imap/imap.h"
#include "util/utf8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void decodes(const char *in, const char *want)
{
    char *out = NULL;
    assert_int_equal(mb_imap_utf7_decode(in, &out), MB_OK);
    assert_string_equal(out, want);
    free(out);
}

static void rejects(const char *in)
{
    char *out = NULL;
    if (mb_imap_utf7_decode(in, &out) == MB_OK)
        fail_msg("'%s' decoded to '%s', want rejected", in, out);
    assert_null(out);
}

static void test_utf7_valid(void **state)
{
    (void)state;
    decodes("INBOX", "INBOX");
    decodes("Entw&APw-rfe", "Entw\xc3\xbcrfe");
    decodes("R&-D", "R&D");
    decodes("&-&-", "&&");
    decodes("&ZeVnLIqe-", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
    decodes("&2D3eAA-", "\xf0\x9f\x98\x80"); /* U+1F600 as a surrogate pair */
    decodes("a&AOQ-b&APY-c", "a\xc3\xa4" "b\xc3\xb6" "c");
    decodes("", "");
    decodes("Caf&,,0-", "Caf\xef\xbf\xbd"); /* what Dovecot makes of "Caf\xe9" on disk */
}

static void test_utf7_noncanonical(void **state)
{
    (void)state;
    rejects("R&D");          /* bare '&' */
    rejects("&APw");         /* unterminated */
    rejects("&-&APw");
    rejects("&AEE-");        /* 'A' must stand for itself */
    rejects("&ACY-");        /* '&' must be "&-" */
    rejects("&APw-&APw-");   /* adjacent runs: "&APwA,A-" is the one spelling */
    rejects("&APwA-");       /* surplus padding */
    rejects("&APx-");        /* non-zero padding bits */
    rejects("&AAA-");        /* NUL */
    rejects("&AAo-");        /* LF */
    rejects("&AIU-");        /* C1 control */
    rejects("&,,0-x");       /* a leading U+FFFD, the escape mark */
    rejects("&2D0-");        /* lone high surrogate */
    rejects("&3gA-");        /* lone low surrogate */
    rejects("&2D3YPQ-");     /* high surrogate twice */
    rejects("&A*w-");        /* not base64 */
    rejects("Caf\xe9");      /* 8-bit Latin-1 */
    rejects("Entw\xc3\xbcrfe"); /* raw UTF-8 */
    rejects("a\tb");
    rejects("a\x7f");
}

static char *esc(const char *in, size_t n, bool force, bool *escaped)
{
    char *out = NULL;
    assert_int_equal(mb_imap_escape(in, n, force, &out, escaped), MB_OK);
    assert_non_null(out);
    assert_true(mb_utf8_valid(out, strlen(out)));
    return out;
}

static void test_escape(void **state)
{
    (void)state;
    bool e;
    char *s = esc("$Label1", 7, false, &e);
    assert_false(e);
    assert_string_equal(s, "$Label1");
    free(s);
    s = esc("caf\xe9", 4, false, &e);
    assert_true(e);
    assert_string_equal(s, "\xef\xbf\xbd" "caf\\xE9");
    free(s);
    s = esc("\xc3\xa4\\x", 4, false, &e); /* clean: kept, backslash and all */
    assert_false(e);
    assert_string_equal(s, "\xc3\xa4\\x");
    free(s);
    s = esc("\xc3\xa4\\x\xff", 5, false, &e); /* dirty: the backslash is escaped too */
    assert_true(e);
    assert_string_equal(s, "\xef\xbf\xbd\xc3\xa4\\x5Cx\\xFF");
    free(s);
    s = esc("\xef\xbf\xbd", 3, false, &e); /* a leading U+FFFD would look escaped */
    assert_true(e);
    assert_string_equal(s, "\xef\xbf\xbd\xef\xbf\xbd");
    free(s);
    s = esc("a\xef\xbf\xbd", 4, false, &e); /* elsewhere it is just a character */
    assert_false(e);
    assert_string_equal(s, "a\xef\xbf\xbd");
    free(s);
    s = esc("R&D", 3, true, &e);
    assert_true(e);
    assert_string_equal(s, "\xef\xbf\xbdR&D");
    free(s);
    s = esc("a\r\nb\xc2\x85", 6, false, &e); /* controls, C1 included */
    assert_true(e);
    assert_string_equal(s, "\xef\xbf\xbd" "a\\x0D\\x0Ab\\xC2\\x85");
    free(s);
    /* Overlong, surrogate, too-large encodings are bytes, not characters. */
    s = esc("\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80", 9, false, &e);
    assert_true(e);
    assert_string_equal(s, "\xef\xbf\xbd\\xC0\\xAF\\xED\\xA0\\x80\\xF4\\x90\\x80\\x80");
    free(s);

    char *raw = NULL;
    size_t len = 0;
    assert_int_equal(mb_imap_unescape("\xef\xbf\xbdx\\x4", &raw, &len), MB_ERR_INVALID);
    assert_int_equal(mb_imap_unescape("\xef\xbf\xbdx\\q41", &raw, &len), MB_ERR_INVALID);
    assert_int_equal(mb_imap_unescape("plain", &raw, &len), MB_OK);
    assert_string_equal(raw, "plain");
    free(raw);
}

/* Every raw name: both forms valid UTF-8, name round-trips to the raw bytes. */
static void check_names(const char *raw, char **name, char **display)
{
    bool e;
    assert_int_equal(mb_imap_folder_names(raw, name, display, &e), MB_OK);
    assert_true(mb_utf8_valid(*name, strlen(*name)));
    assert_true(mb_utf8_valid(*display, strlen(*display)));
    char *back = NULL;
    size_t len = 0;
    assert_int_equal(mb_imap_unescape(*name, &back, &len), MB_OK);
    if (len != strlen(raw) || memcmp(back, raw, len) != 0)
        fail_msg("name '%s' does not round-trip", *name);
    free(back);
    char *dec = NULL;
    bool valid = mb_imap_utf7_decode(raw, &dec) == MB_OK;
    if (valid)
        assert_string_equal(*display, dec);
    else
        assert_memory_equal(*display, "\xef\xbf\xbd", 3);
    free(dec);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void assert_distinct(char **v, size_t n, const char *what)
{
    qsort(v, n, sizeof *v, cmp_str);
    for (size_t i = 1; i < n; i++)
        if (strcmp(v[i - 1], v[i]) == 0)
            fail_msg("two distinct raw names share the %s '%s'", what, v[i]);
}

static void test_folder_names_hostile(void **state)
{
    (void)state;
    static const char *raws[] = {
        "INBOX", "Entw&APw-rfe", "Entw\xc3\xbcrfe", "Entw\xfc" "rfe", "R&D", "R&-D",
        "\xef\xbf\xbdR&D", "&APw-&APw-", "&APwA,A-", "&APwA-", "&APw-", "\xc3\xbc",
        "a\\b", "a\\x5Cb", "\xef\xbf\xbd" "a\\x5Cb", "&AEE-", "A", "&//0-", "\xef\xbf\xbd",
        "\xef\xbf\xbd\\xEF\\xBF\\xBD", "\xff", "\\xFF", "\xef\xbf\xbd\\xFF", "x\x01y", "x\\x01y",
        "Sent/\xa0\xa1", "Sent/&AKAAoQ-", "\xc0\x80", "", "&", "-", "&-", "Caf&,,0-",
        "Caf\xef\xbf\xbd", "&,,0-", "\xef\xbf\xbd\xef\xbf\xbd",
    };
    size_t n = MB_ARRAY_LEN(raws);
    char *names[MB_ARRAY_LEN(raws)], *displays[MB_ARRAY_LEN(raws)];
    for (size_t i = 0; i < n; i++)
        check_names(raws[i], &names[i], &displays[i]);
    /* Deterministic. */
    for (size_t i = 0; i < n; i++) {
        char *a, *b;
        check_names(raws[i], &a, &b);
        assert_string_equal(a, names[i]);
        assert_string_equal(b, displays[i]);
        free(a);
        free(b);
    }
    assert_string_equal(displays[1], "Entw\xc3\xbcrfe");
    assert_string_equal(names[1], "Entw&APw-rfe");
    assert_string_equal(names[2], "Entw\xc3\xbcrfe"); /* clean: sent back as is */
    assert_string_equal(displays[2], "\xef\xbf\xbd" "Entw\xc3\xbcrfe");
    assert_string_equal(displays[3], "\xef\xbf\xbd" "Entw\\xFCrfe");
    assert_string_equal(displays[4], "\xef\xbf\xbdR&D");
    assert_string_equal(displays[5], "R&D");
    assert_distinct(names, n, "name");
    assert_distinct(displays, n, "display name");
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
        free(displays[i]);
    }
}

/* Random names over an alphabet rich in the troublesome bytes. */
static void test_folder_names_random(void **state)
{
    (void)state;
    static const char alpha[] = "&-A+,/aZ09\\ \x80\xa0\xbd\xbf\xc3\xef\xfc\xff\x01";
    enum { N = 6000 };
    char **raws = calloc(N, sizeof *raws);
    assert_non_null(raws);
    unsigned seed = 12345;
    for (size_t i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % 10;
        raws[i] = calloc(len + 1, 1);
        assert_non_null(raws[i]);
        for (size_t k = 0; k < len; k++) {
            seed = seed * 1103515245u + 12345u;
            raws[i][k] = alpha[(seed >> 16) % (sizeof alpha - 1)];
        }
    }
    qsort(raws, N, sizeof *raws, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < N; i++) /* distinct raw names only */
        if (u == 0 || strcmp(raws[u - 1], raws[i]) != 0)
            raws[u++] = raws[i];
        else
            free(raws[i]);
    char **names = calloc(u, sizeof *names), **displays = calloc(u, sizeof *displays);
    assert_non_null(names);
    assert_non_null(displays);
    for (size_t i = 0; i < u; i++)
        check_names(raws[i], &names[i], &displays[i]);
    assert_distinct(names, u, "name");
    assert_distinct(displays, u, "display name");
    for (size_t i = 0; i < u; i++) {
        free(raws[i]);
        free(names[i]);
        free(displays[i]);
    }
    free(raws);
    free(names);
    free(displays);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf7_valid),
        cmocka_unit_test(test_utf7_noncanonical),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_folder_names_hostile),
        cmocka_unit_test(test_folder_names_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
