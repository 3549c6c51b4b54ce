/* test_mime_hostile.c — the shapes of mail that once froze the parse stage,
 * each at a size where the old quadratic (or endless) code took seconds to
 * forever, parsed under a work budget that only linear code meets; and the
 * budget itself: a parse or part decode past it stops with MB_ERR_BUDGET.
 *
 * The budget is thread CPU time, so a busy machine does not make these
 * fail; the margin is wide (the old code needed 41 s for a third of the
 * <head> input below, the fixed code well under 100 ms). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mime/mime.h"
#include "schemas/schema.h"

/* Generous for ASan + UBSan on a shared machine, far below quadratic. */
#define BUDGET_MS 3000

static bool has_defect(const mb_strv *v, const char *sub)
{
    for (size_t i = 0; i < v->n; i++)
        if (strstr(v->v[i], sub))
            return true;
    return false;
}

/* A message made of head, then `rep` copies of unit, then tail. */
static char *build(const char *head, const char *unit, size_t rep, const char *tail,
                   size_t *len)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *m = malloc(hl + ul * rep + tl + 1);
    assert_non_null(m);
    memcpy(m, head, hl);
    for (size_t i = 0; i < rep; i++)
        memcpy(m + hl + i * ul, unit, ul);
    memcpy(m + hl + ul * rep, tail, tl + 1);
    *len = hl + ul * rep + tl;
    return m;
}

static void parse_ok(const char *m, size_t len, mb_rec_parsed *r)
{
    memset(r, 0, sizeof *r);
    mb_mime_budget(BUDGET_MS);
    mb_status s = mb_mime_parse(m, len, 1700000000, r);
    mb_mime_budget(0);
    if (s)
        fail_msg("parse of a %zu-byte hostile message: %s (%s)", len, mb_status_str(s),
                 mb_err_last());
}

/* 1. A second angle address in one mailbox stopped the address loop. */
static void test_two_angle_addresses(void **state)
{
    (void)state;
    static const char m[] = "From: <a><b>\r\nTo: <a@x> <b@y>, \"C\" <c@z>\r\n"
                            "Cc: Name <p@q> trailing <r@s> <t@u>\r\nSubject: s\r\n\r\nbody\r\n";
    mb_rec_parsed r;
    parse_ok(m, sizeof m - 1, &r);
    assert_int_equal(r.from.n, 1);
    assert_string_equal(r.from.v[0].addr, "a");
    assert_int_equal(r.to.n, 2);
    assert_string_equal(r.to.v[0].addr, "a@x");
    assert_string_equal(r.to.v[1].addr, "c@z");
    assert_int_equal(r.cc.n, 1);
    assert_string_equal(r.cc.v[0].addr, "p@q");
    assert_true(has_defect(&r.defects, "more than one <address> in one mailbox of From"));
    assert_true(has_defect(&r.defects, "more than one <address> in one mailbox of To"));
    mb_mime_parsed_clear(&r);
}

/* 2. Every unclosed <head> searched the rest of the body for "</head". */
static void test_unclosed_heads(void **state)
{
    (void)state;
    size_t len;
    char *m = build("From: a@b\r\nSubject: heads\r\nContent-Type: text/html\r\n\r\n", "<head>",
                    170000, "visible text", &len);
    assert_true(len > 1000000);
    mb_rec_parsed r;
    parse_ok(m, len, &r);
    assert_string_equal(r.snippet, "visible text");
    assert_true(has_defect(&r.defects, "unclosed <head>"));
    mb_mime_parsed_clear(&r);
    free(m);
}

/* 3. Every "=?x?Q?a" start with no "?=" rescanned the rest of the value. */
static void test_unterminated_encoded_words(void **state)
{
    (void)state;
    size_t len;
    char *m = build("From: a@b\r\nSubject: ", "=?x?Q?a", 36000, "\r\n\r\nbody\r\n", &len);
    assert_true(len > 250000);
    mb_rec_parsed r;
    parse_ok(m, len, &r);
    assert_int_equal(strlen(r.subject), 7 * 36000); /* kept literal */
    assert_memory_equal(r.subject, "=?x?Q?a=?x?Q?a", 14);
    assert_true(has_defect(&r.defects, "unterminated encoded word in Subject"));
    mb_mime_parsed_clear(&r);
    /* The same in an address's display name. */
    m = (free(m), build("From: ", "=?x?Q?a", 30000, " <x@y>\r\n\r\nbody\r\n", &len));
    parse_ok(m, len, &r);
    assert_int_equal(r.from.n, 1);
    assert_string_equal(r.from.v[0].addr, "x@y");
    mb_mime_parsed_clear(&r);
    free(m);
}

/* 4. A header after the 1 MB mark was parsed although the section was
 * reported as truncated. */
static void test_header_limit_enforced(void **state)
{
    (void)state;
    size_t len;
    char *m = build("From: a@b\r\n", "X-Filler: 0123456789012345678901234567890123456789\r\n",
                    (MB_MIME_MAX_HEADER_BYTES / 52) + 100,
                    "Subject: after the limit\r\nMessage-ID: <late@x>\r\n\r\nthe body\r\n", &len);
    mb_rec_parsed r;
    parse_ok(m, len, &r);
    assert_string_equal(r.subject, "");
    assert_null(r.message_id);
    assert_int_equal(r.from.n, 1);
    assert_string_equal(r.snippet, "the body");
    assert_true(has_defect(&r.defects, "truncated at"));
    mb_mime_parsed_clear(&r);
    free(m);
}

/* A large, valid message: 8 MB of base64 attachment. */
static char *big_message(size_t *len)
{
    return build("From: a@b\r\nSubject: big\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n"
                 "--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX\r\n"
                 "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
                 "Content-Disposition: attachment; filename=big.bin\r\n\r\n",
                 "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n",
                 8 << 20 >> 6, "--XX--\r\n", len);
}

static mb_status count_sink(void *ctx, const void *p, size_t n)
{
    (void)p;
    *(size_t *)ctx += n;
    return MB_OK;
}

/* The budget: past it a parse and a part decode stop with MB_ERR_BUDGET and
 * leave nothing allocated; lifted, the same calls succeed. */
static void test_budget(void **state)
{
    (void)state;
    size_t len;
    char *m = big_message(&len);
    mb_rec_parsed r;
    memset(&r, 0, sizeof r);
    mb_mime_budget(1);
    assert_int_equal(mb_mime_parse(m, len, 0, &r), MB_ERR_BUDGET);
    assert_non_null(strstr(mb_err_last(), "work budget of 1 ms CPU exceeded"));
    assert_null(r.subject);
    assert_int_equal(r.attachments.n, 0);
    size_t n = 0;
    mb_mime_budget(1);
    assert_int_equal(mb_mime_part_decode(m, len, "2", count_sink, &n), MB_ERR_BUDGET);
    mb_mime_budget(0);
    assert_int_equal(mb_mime_parse(m, len, 0, &r), MB_OK);
    assert_int_equal(r.attachments.n, 1);
    assert_int_equal(r.attachments.v[0].size, (8 << 20 >> 6) * 54);
    mb_mime_parsed_clear(&r);
    n = 0;
    assert_int_equal(mb_mime_part_decode(m, len, "2", count_sink, &n), MB_OK);
    assert_int_equal(n, (8 << 20 >> 6) * 54);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_angle_addresses),
        cmocka_unit_test(test_unclosed_heads),
        cmocka_unit_test(test_unterminated_encoded_words),
        cmocka_unit_test(test_header_limit_enforced),
        cmocka_unit_test(test_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
