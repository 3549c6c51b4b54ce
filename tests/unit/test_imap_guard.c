/* test_imap_guard.c — sources/imap/guard.c: the limits on what an IMAP server
 * may send (line length, literal size, an answer that never ends, a server too
 * slow to be honest), with the server's bytes cut at every possible place. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "sources/imap/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mb_imap_limits lim = {
    .max_line = 200, .max_literal = 1000, .grace_ms = 5000, .min_rate = 1024};

static mb_imap_guard fresh(void)
{
    mb_imap_guard g;
    mb_imap_guard_init(&g, &lim);
    return g;
}

/* A FETCH answer with two literals, a line after them, and the tagged OK. */
static const char fetch_answer[] = "* 1 FETCH (UID 7 BODY[] {12}\r\nHello\r\nWorld)\r\n"
                                   "* 2 FETCH (UID 8 BODY[HEADER] {5+}\r\n}{3}\n FLAGS (\\Seen))\r\n"
                                   "* OK [ALERT] {3}\r\n"
                                   "abc\r\n"
                                   "5 OK FETCH done\r\n";

static void test_split_everywhere(void **state)
{
    (void)state;
    size_t n = strlen(fetch_answer);
    for (size_t cut = 0; cut <= n; cut++) {
        mb_imap_guard g = fresh();
        mb_imap_guard_sent(&g, 0);
        assert_true(mb_imap_guard_recv(&g, fetch_answer, cut, 10));
        assert_true(mb_imap_guard_recv(&g, fetch_answer + cut, n - cut, 20));
        assert_false(g.busy); /* the tagged OK ended the command */
        assert_int_equal(g.line_bytes, 0);
        assert_int_equal(g.literal_left, 0);
        assert_string_equal(g.error, "");
    }
    /* and one byte at a time */
    mb_imap_guard g = fresh();
    mb_imap_guard_sent(&g, 0);
    for (size_t i = 0; i < n; i++)
        assert_true(mb_imap_guard_recv(&g, fetch_answer + i, 1, 10));
    assert_false(g.busy);
}

/* A literal inside a literal's data is data: "{999}" in the body of a
 * literal does not start another one. */
static void test_literal_data_is_data(void **state)
{
    (void)state;
    const char s[] = "* 1 FETCH (BODY[] {7}\r\n{9999}\n)\r\nA1 OK\r\n";
    mb_imap_guard g = fresh();
    mb_imap_guard_sent(&g, 0);
    assert_true(mb_imap_guard_recv(&g, s, strlen(s), 0));
    assert_false(g.busy);
}

static void test_literal_too_large(void **state)
{
    (void)state;
    const char ok[] = "* 1 FETCH (BODY[] {1000}\r\n";
    mb_imap_guard g = fresh();
    assert_true(mb_imap_guard_recv(&g, ok, strlen(ok), 0));
    assert_int_equal(g.literal_left, 1000);
    const char big[] = "* 1 FETCH (BODY[] {2147483648}\r\n";
    g = fresh();
    assert_false(mb_imap_guard_recv(&g, big, strlen(big), 0));
    assert_non_null(strstr(g.error, "literal of 2147483648 bytes"));
    /* broken stays broken, even for harmless bytes */
    assert_false(mb_imap_guard_recv(&g, "* OK\r\n", 6, 0));
}

static void test_line_too_long(void **state)
{
    (void)state;
    char line[400];
    memset(line, 'a', sizeof line);
    mb_imap_guard g = fresh();
    assert_true(mb_imap_guard_recv(&g, line, 200, 0));
    assert_false(mb_imap_guard_recv(&g, line, 1, 0));
    assert_non_null(strstr(g.error, "line longer than 200 bytes"));
    /* literal bytes do not count towards the line */
    g = fresh();
    const char head[] = "* 1 FETCH (BODY[] {1000}\r\n";
    assert_true(mb_imap_guard_recv(&g, head, strlen(head), 0));
    char body[1000];
    memset(body, 'b', sizeof body);
    assert_true(mb_imap_guard_recv(&g, body, sizeof body, 0));
    assert_true(mb_imap_guard_recv(&g, ")\r\n", 3, 0));
}

/* One byte a second: cut after the grace. */
static void test_slow_line(void **state)
{
    (void)state;
    mb_imap_guard g = fresh();
    const char s[] = "* 2 FETCH (UID 2 BODY[] {900}\r\n";
    assert_true(mb_imap_guard_recv(&g, s, strlen(s), 0));
    int64_t t = 0;
    bool ok = true;
    while (ok && t < 60000) {
        t += 1000;
        ok = mb_imap_guard_recv(&g, "x", 1, t);
    }
    assert_false(ok);
    assert_true(t > lim.grace_ms && t <= lim.grace_ms + 1000);
    assert_non_null(strstr(g.error, "too slow"));
}

/* Whole lines, each quick, but the answer to the command crawls: cut; the
 * same crawl while IDLE is fine, and the tagged answer after DONE ends IDLE. */
static void test_slow_answer_and_idle(void **state)
{
    (void)state;
    mb_imap_guard g = fresh();
    mb_imap_guard_sent(&g, 0);
    int64_t t = 0;
    bool ok = true;
    while (ok && t < 60000) {
        t += 1000;
        ok = mb_imap_guard_recv(&g, "* 3 EXISTS\r\n", 12, t);
    }
    assert_false(ok);
    assert_non_null(strstr(g.error, "answering a command"));

    g = fresh();
    mb_imap_guard_idle(&g, true);
    mb_imap_guard_sent(&g, 0);
    assert_true(mb_imap_guard_recv(&g, "+ idling\r\n", 10, 10));
    for (t = 100000; t < 1600000; t += 100000)
        assert_true(mb_imap_guard_recv(&g, "* 3 EXISTS\r\n", 12, t));
    mb_imap_guard_sent(&g, t); /* DONE */
    assert_true(mb_imap_guard_recv(&g, "9 OK Idle done\r\n", 16, t + 5));
    assert_false(g.idle);
    assert_false(g.busy);
    /* nothing waits between commands: silence and slow unsolicited lines are fine */
    assert_true(mb_imap_guard_recv(&g, "* 4 EXISTS\r\n", 12, t + 100000));
}

/* An answer that never ends, each line quick and short. */
static void test_answer_never_ends(void **state)
{
    (void)state;
    mb_imap_guard g = fresh();
    mb_imap_guard_sent(&g, 0);
    uint64_t sent = 0;
    bool ok = true;
    while (ok && sent < 100000) {
        ok = mb_imap_guard_recv(&g, "* OK still here\r\n", 17, 1);
        sent += 17;
    }
    assert_false(ok);
    assert_true(sent > lim.max_literal + 4 * lim.max_line);
    assert_non_null(strstr(g.error, "answering one command"));
}

static void test_line_literal(void **state)
{
    (void)state;
    static const struct {
        const char *l;
        long long want;
    } cases[] = {
        {"* 1 FETCH (BODY[] {12}\r\n", 12},
        {"A1 APPEND x {12+}\r\n", 12},
        {"{0}", 0},
        {"x {999999999999}\n", 999999999999LL},
        {"x {1000000000000}\r\n", -1}, /* 13 digits */
        {"x {}\r\n", -1},
        {"x {+}\r\n", -1},
        {"x 12}\r\n", -1},
        {"}\r\n", -1},
        {"x {12} \r\n", -1},
        {"x {1a}\r\n", -1},
        {"", -1},
        {"\r\n", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long long got = mb_imap_line_literal(cases[i].l, strlen(cases[i].l));
        if (got != cases[i].want)
            fail_msg("'%s': %lld, want %lld", cases[i].l, got, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_everywhere),   cmocka_unit_test(test_literal_data_is_data),
        cmocka_unit_test(test_literal_too_large),  cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_slow_line),          cmocka_unit_test(test_slow_answer_and_idle),
        cmocka_unit_test(test_answer_never_ends),  cmocka_unit_test(test_line_literal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
