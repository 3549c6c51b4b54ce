/* test_mime.c — unit tests for the MIME parser's pieces (RFC 2047/2231,
 * charsets, addresses, dates, snippets) and for whole-message behaviour:
 * a 30 MB attachment hashed with bounded memory, mb_mime_part_decode
 * returning exact bytes, and malformed messages yielding defects. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <malloc.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mime/mime.h"
#include "schemas/schema.h"

/* ---- helpers ---- */

static char *hdr(const char *in, mb_mime_defects *d)
{
    mb_buf b = MB_BUF_INIT;
    assert_int_equal(mb_mime_decode_header(in, strlen(in), &b, d, "Subject"), MB_OK);
    return mb_buf_steal(&b);
}

static void check_hdr(const char *in, const char *want)
{
    char *got = hdr(in, NULL);
    if (strcmp(got, want))
        fail_msg("decode '%s': got '%s', want '%s'", in, got, want);
    free(got);
}

static bool has_defect(const mb_strv *v, const char *sub)
{
    for (size_t i = 0; i < v->n; i++)
        if (strstr(v->v[i], sub))
            return true;
    return false;
}

static mb_rec_parsed parse_str(const char *msg)
{
    mb_rec_parsed r;
    memset(&r, 0, sizeof r);
    assert_int_equal(mb_mime_parse(msg, strlen(msg), 777, &r), MB_OK);
    return r;
}

/* ---- RFC 2047 ---- */

static void test_rfc2047(void **state)
{
    (void)state;
    check_hdr("=?UTF-8?Q?a_b=3Dc?=", "a b=c");
    check_hdr("=?iso-8859-1?q?Caf=E9?= au lait", "Café au lait");
    check_hdr("=?ISO-8859-1?B?SGFsbG8g5Pb8?=", "Hallo äöü");
    /* whitespace between adjacent encoded words is dropped */
    check_hdr("=?utf-8?q?a?= =?utf-8?q?b?=", "ab");
    check_hdr("=?utf-8?q?a?=\t  =?iso-8859-1?q?=E9?=", "aé");
    /* ...but kept between an encoded word and plain text */
    check_hdr("=?utf-8?q?a?= b =?utf-8?q?c?=", "a b c");
    /* a multibyte character split across two words */
    check_hdr("=?UTF-8?B?4oI=?= =?UTF-8?B?rA==?=", "€");
    /* language suffix (RFC 2231 section 5) */
    check_hdr("=?utf-8*en?q?hi?=", "hi");
    /* malformed ones stay literal */
    check_hdr("=?utf-8?x?abc?=", "=?utf-8?x?abc?=");
    check_hdr("=?utf-8?q?no end", "=?utf-8?q?no end");
    check_hdr("a =? b ?= c", "a =? b ?= c");
    mb_mime_defects d;
    memset(&d, 0, sizeof d);
    char *s = hdr("x =?utf-8?B?ab$c?= y", &d);
    assert_string_equal(s, "x =?utf-8?B?ab$c?= y");
    assert_true(has_defect(&d.v, "malformed encoded word"));
    free(s);
    mb_mime_defects_free(&d);
    /* unknown charset: defect, best effort */
    s = hdr("=?x-foo?q?abc?=", &d);
    assert_string_equal(s, "abc");
    assert_true(has_defect(&d.v, "unknown charset 'x-foo' in Subject"));
    free(s);
    mb_mime_defects_free(&d);
    /* invalid UTF-8 inside a word becomes U+FFFD */
    check_hdr("=?utf-8?q?a=FFb?=", "a\xEF\xBF\xBD" "b");
}

/* ---- charsets ---- */

static void test_charsets(void **state)
{
    (void)state;
    check_hdr("Caf\xe9 cr\xe8me", "Café crème");           /* raw Latin-1 */
    check_hdr("\x93quoted\x94", "\xE2\x80\x9Cquoted\xE2\x80\x9D"); /* windows-1252 */
    check_hdr("Caf\xc3\xa9", "Café");                       /* raw UTF-8 kept */
    check_hdr("=?koi8-r?B?8NLJ18XU?=", "Привет");
    check_hdr("=?KOI8-R?Q?=F0=D2=C9=D7=C5=D4?=", "Привет");
    check_hdr("=?ISO-2022-JP?B?GyRCJDMkcyRLJEEkTxsoQg==?=", "こんにちは");
    check_hdr("=?windows-1251?Q?=CF=F0=E8=E2=E5=F2?=", "Привет");
    check_hdr("=?gb2312?B?xOO6ww==?=", "你好");
    check_hdr("=?utf-7?Q?Hi_+AOk-?=", "Hi é");
    mb_buf b = MB_BUF_INIT;
    bool unknown = true;
    const char sjis[] = "\x82\xb1\x82\xf1"; /* こん */
    assert_int_equal(mb_mime_to_utf8("Shift_JIS", sjis, 4, &b, &unknown), MB_OK);
    assert_false(unknown);
    assert_string_equal(mb_buf_cstr(&b), "こん");
    mb_buf_reset(&b);
    /* truncated multibyte at the end: replacement, not a crash */
    assert_int_equal(mb_mime_to_utf8("euc-jp", "\xa4", 1, &b, &unknown), MB_OK);
    assert_true(mb_mime_utf8_valid(b.data, b.len));
    mb_buf_free(&b);
    assert_false(mb_mime_utf8_valid("\xc0\x80", 2));     /* overlong */
    assert_false(mb_mime_utf8_valid("\xed\xa0\x80", 3)); /* surrogate */
    assert_true(mb_mime_utf8_valid("\xf0\x9f\x98\x80", 4));
}

/* ---- RFC 2231 ---- */

static char *param(const char *v, const char *name, mb_mime_defects *d)
{
    mb_mime_params ps;
    assert_int_equal(mb_mime_params_parse(v, strlen(v), &ps), MB_OK);
    char *out = NULL;
    assert_int_equal(mb_mime_param_get(&ps, name, &out, d), MB_OK);
    mb_mime_params_free(&ps);
    return out;
}

static void check_param(const char *v, const char *name, const char *want)
{
    char *got = param(v, name, NULL);
    if (want == NULL ? got != NULL : (got == NULL || strcmp(got, want)))
        fail_msg("param %s of '%s': got '%s', want '%s'", name, v, got ? got : "(null)",
                 want ? want : "(null)");
    free(got);
}

static void test_rfc2231(void **state)
{
    (void)state;
    const char *v = "text/plain; charset=us-ascii;\t title*0*=\"us-ascii'en'This%20is%20even%20more%20\";"
                    " title*1*=\"%2A%2A%2Afun%2A%2A%2A%20\"; title*2=\"isn't it!\"";
    check_param(v, "title", "This is even more ***fun*** isn't it!");
    check_param(v, "charset", "us-ascii");
    check_param("attachment; filename*=UTF-8''na%C3%AFve%20file.txt", "filename", "naïve file.txt");
    check_param("attachment; filename*=iso-8859-1'de'%E4rger.pdf", "filename", "ärger.pdf");
    /* sections out of order, a gap ends the value */
    check_param("a/b; n*1=bar; n*0=foo; n*3=zzz", "n", "foobar");
    /* 2231 beats the plain value; quoted escapes; 2047 in a quoted value */
    check_param("a/b; name=\"plain.txt\"; name*=utf-8''better.txt", "name", "better.txt");
    check_param("a/b; name=\"a \\\"q\\\" b\"", "name", "a \"q\" b");
    check_param("a/b; name=\"=?UTF-8?B?w6l0w6k=?=.doc\"", "name", "été.doc");
    check_param("a/b; name=unquoted value.txt ; x=1", "name", "unquoted value.txt");
    check_param("a/b; NAME=Upper", "name", "Upper");
    check_param("a/b; other=1", "name", NULL);
    check_param("a/b; name=\"Gr\xfc\xdf" "e.txt\"", "name", "Grüße.txt"); /* raw Latin-1 */
    mb_mime_params ps;
    assert_int_equal(mb_mime_params_parse(" Multipart/Mixed (comment); boundary=x", 38, &ps), MB_OK);
    assert_string_equal(ps.value, "multipart/mixed");
    mb_mime_params_free(&ps);
    mb_mime_defects d;
    memset(&d, 0, sizeof d);
    char *s = param("a/b; f*=x-nope''abc", "f", &d);
    assert_string_equal(s, "abc");
    assert_true(has_defect(&d.v, "unknown charset 'x-nope'"));
    free(s);
    mb_mime_defects_free(&d);
}

/* ---- addresses ---- */

static void check_addrs(const char *in, const char *want)
{
    mb_addressv v = {NULL, 0};
    mb_mime_defects d;
    memset(&d, 0, sizeof d);
    assert_int_equal(mb_mime_addresses_parse(in, strlen(in), &v, &d, "To"), MB_OK);
    mb_buf b = MB_BUF_INIT;
    for (size_t i = 0; i < v.n; i++)
        mb_buf_printf(&b, "%s[%s|%s]", i ? "," : "", v.v[i].name ? v.v[i].name : "-", v.v[i].addr);
    if (strcmp(mb_buf_cstr(&b), want))
        fail_msg("addresses '%s': got '%s', want '%s'", in, mb_buf_cstr(&b), want);
    mb_buf_free(&b);
    mb_mime_addresses_free(&v);
    mb_mime_defects_free(&d);
}

static void test_addresses(void **state)
{
    (void)state;
    check_addrs("John Doe <john@example.com>", "[John Doe|john@example.com]");
    check_addrs("\"Doe, John\" <j@x.org>, b@y.org", "[Doe, John|j@x.org],[-|b@y.org]");
    check_addrs("\"A \\\"quoted\\\" name\" <q@x>", "[A \"quoted\" name|q@x]");
    check_addrs("undisclosed-recipients:;", "");
    check_addrs("friends: a@x, B <b@y>;, c@z", "[-|a@x],[B|b@y],[-|c@z]");
    check_addrs("bbb@ddd.com (John X. Doe)", "[John X. Doe|bbb@ddd.com]");
    check_addrs("John (the man) Doe <j@x>", "[John Doe|j@x]");
    check_addrs("<@relay.net,@b.org:user@host.com>", "[-|user@host.com]");
    check_addrs("=?utf-8?q?J=C3=B6rn?= Reder <j@z.de>", "[Jörn Reder|j@z.de]");
    check_addrs("\"=?utf-8?B?w6l0w6k=?=\" <e@x>", "[été|e@x]");
    check_addrs("  plain@example.com  ", "[-|plain@example.com]");
    check_addrs("<a@x>,,<b@y>", "[-|a@x],[-|b@y]");
    check_addrs("Ren\xe9 <r@x>", "[René|r@x]");
    check_addrs("", "");
    check_addrs("\"unterminated <a@b>", "[-|unterminated<a@b>]"); /* no crash, one entry */
    /* RFC 5322 3.4.1 and A.5: comments inside an address are not part of it */
    check_addrs("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
                "[Pete|pete@silly.test]");
    check_addrs("pete(his account)@silly.test(his host)", "[his account|pete@silly.test]");
    check_addrs("< a @ x . org >", "[-|a@x.org]");
    /* a quoted local part is kept as written: another mailbox than BigBugbb@bug.com */
    check_addrs("\"Big Bug bb\"@bug.com", "[-|\"Big Bug bb\"@bug.com]");
    check_addrs("Bug <\"Big Bug bb\"@bug.com>", "[Bug|\"Big Bug bb\"@bug.com]");
    check_addrs("\"a\\\"b, c\"@x.org, d@y", "[-|\"a\\\"b, c\"@x.org],[-|d@y]");
    check_addrs("<\"x>y\"@z>", "[-|\"x>y\"@z]"); /* '>' inside quotes */
    /* obsolete syntax: spaces around the dots and the '@', routes, a group with CFWS */
    check_addrs("John . Q . Public @ example . com", "[-|John.Q.Public@example.com]");
    check_addrs("Mary Smith <@node.test:mary@example.net>", "[Mary Smith|mary@example.net]");
    check_addrs("A Group(Some people):Chris Jones <c@(Chris's host.)public.example>, "
                "joe@example.org;", "[Chris Jones|c@public.example],[-|joe@example.org]");
    /* RFC 6532: UTF-8 in local parts and domains */
    check_addrs("J\xc3\xb6rg <j\xc3\xb6rg@b\xc3\xbc" "cher.de>",
                "[J\xc3\xb6rg|j\xc3\xb6rg@b\xc3\xbc" "cher.de]");
}

/* ---- dates ---- */

static void check_date(const char *in, int64_t want)
{
    int64_t got = 0;
    mb_status s = mb_mime_date_parse(in, strlen(in), &got);
    if (s != MB_OK || got != want)
        fail_msg("date '%s': status %d got %lld want %lld", in, s, (long long)got, (long long)want);
}

static void test_dates(void **state)
{
    (void)state;
    /* expected values from: date -u -d '<date>' +%s */
    check_date("Fri, 20 Apr 2001 19:35:02 -0400", 987809702);
    check_date("20 Apr 2001 19:35:02 -0400", 987809702);          /* no weekday */
    check_date("Fri, 20 Apr 01 19:35:02 -0400", 987809702);       /* 2-digit year */
    check_date("Mon, 23 Dec 96 00:08 MET", 851296080);              /* no seconds, named zone */
    check_date("Fri, 20 Apr 2001 16:35:02 PDT", 987809702);
    check_date("Fri, 20 Apr 2001 18:35:02 EST", 987809702);
    check_date("Fri, 20 Apr 2001 23:35:02 GMT", 987809702);
    check_date("Fri, 20 Apr 2001 23:35:02 UT", 987809702);
    check_date("Fri, 20 Apr 2001 23:35:02 Z", 987809702);
    check_date("Fri, 20 Apr 2001 23:35:02", 987809702);            /* no zone: UTC */
    check_date("Fri, 20 Apr 2001 19:35:02 -0400 (EDT)", 987809702);
    check_date("Fri, 20 Apr 2001 19:35:02 -0400 junk after zone", 987809702);
    check_date("Fri,20 Apr 2001 23:35:02 +0000", 987809702);
    check_date("Wed Dec 18 18:55:21 1996", 850935321);             /* asctime */
    check_date("2001-04-20T23:35:02Z", 987809702);                  /* ISO 8601 */
    check_date("Sat, 1 Jan 2000 00:00:00 +1400", 946634400);
    check_date("Thu, 1 Jan 1970 00:00:00 +0000", 0);
    int64_t t;
    assert_int_not_equal(mb_mime_date_parse("Malformed Date.", 15, &t), MB_OK);
    assert_int_not_equal(mb_mime_date_parse("", 0, &t), MB_OK);
    assert_int_not_equal(mb_mime_date_parse("32 Jan 2001 10:00", 17, &t), MB_OK);
    assert_int_not_equal(mb_mime_date_parse("1 Foo 2001 10:00", 16, &t), MB_OK);
    assert_int_not_equal(mb_mime_date_parse("1 Jan 2001 25:00", 16, &t), MB_OK);
}

/* ---- snippets ---- */

static void test_snippet_html(void **state)
{
    (void)state;
    char *s = NULL;
    const char *html =
        "<html><head><title>T</title><style>p{color:red}</style></head><body>"
        "<script>var x = '<p>no</p>';</script><p>Fish &amp; chips&nbsp;&lt;3</p>"
        "<!-- hidden --><div>caf&eacute; &#233;&#x20AC; &bogus; a<b>b</b>c</div>\n\n  end"
        "</body></html>";
    assert_int_equal(mb_mime_snippet_html(html, strlen(html), &s), MB_OK);
    assert_string_equal(s, "Fish & chips <3 café é€ &bogus; abc end");
    free(s);
    /* 256 characters, never bytes: 300 two-byte characters */
    mb_buf b = MB_BUF_INIT;
    for (int i = 0; i < 300; i++)
        mb_buf_puts(&b, "é");
    assert_int_equal(mb_mime_snippet_text(b.data, b.len, &s), MB_OK);
    assert_int_equal(strlen(s), 2 * MB_MIME_SNIPPET_CHARS);
    assert_true(mb_mime_utf8_valid(s, strlen(s)));
    free(s);
    mb_buf_free(&b);
    assert_int_equal(mb_mime_snippet_text("  a \r\n\t b  ", 11, &s), MB_OK);
    assert_string_equal(s, "a b");
    free(s);
}

static void test_snippet_in_message(void **state)
{
    (void)state;
    /* no text/plain: snippet from the HTML part, charset + QP decoded */
    mb_rec_parsed r = parse_str(
        "From: a@b\r\nDate: Fri, 20 Apr 2001 19:35:02 -0400\r\nSubject: s\r\n"
        "Content-Type: multipart/alternative; boundary=XX\r\n\r\n"
        "--XX\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        "<p>Gr=FC=DF=\r\ne  <b>dich</b></p><script>x</script>\r\n--XX--\r\n");
    assert_string_equal(r.snippet, "Grüße dich");
    assert_int_equal(r.attachments.n, 0);
    assert_int_equal(r.defects.n, 0);
    assert_int_equal(r.date, 987809702);
    mb_mime_parsed_clear(&r);
}

/* ---- whole messages ---- */

static void test_headers_and_thread(void **state)
{
    (void)state;
    mb_rec_parsed r = parse_str(
        "From: =?utf-8?q?Ren=C3=A9?= <rene@x.org>\n"
        "To: a@x, \"B, b\" <b@y>\nCc: undisclosed-recipients:;\n"
        "Reply-To: list@x\n"
        "Subject: =?utf-8?B?SGVsbG8g?=\n =?utf-8?B?V29ybGQ=?= again\n"
        "Message-ID: <own@id>\nIn-Reply-To: <parent@id> (comment)\n"
        "References: <root@id>\n\t<parent@id>\n"
        "Date: 20 Apr 2001 23:35 +0000\n\nbody\n");
    assert_string_equal(r.subject, "Hello World again");
    assert_int_equal(r.from.n, 1);
    assert_string_equal(r.from.v[0].name, "René");
    assert_string_equal(r.from.v[0].addr, "rene@x.org");
    assert_int_equal(r.to.n, 2);
    assert_string_equal(r.to.v[1].name, "B, b");
    assert_int_equal(r.cc.n, 0);
    assert_int_equal(r.reply_to.n, 1);
    assert_string_equal(r.message_id, "own@id");
    assert_string_equal(r.in_reply_to, "parent@id");
    assert_int_equal(r.references.n, 2);
    assert_string_equal(r.references.v[0], "root@id");
    assert_string_equal(r.snippet, "body");
    assert_int_equal(r.date, 987809700);
    /* thread id: first 16 hex of SHA-256("root@id") */
    unsigned char md[32];
    unsigned int ml;
    EVP_Digest("root@id", 7, md, &ml, EVP_sha256(), NULL);
    char hex[17];
    for (int i = 0; i < 8; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    assert_string_equal(r.thread_id, hex);
    mb_rec_parsed r2 = parse_str("Message-ID: <root@id>\n\nx");
    assert_string_equal(r2.thread_id, r.thread_id); /* the root itself: same thread */
    assert_int_equal(r2.date, 777);
    assert_true(has_defect(&r2.defects, "no Date header"));
    mb_mime_parsed_clear(&r2);
    mb_mime_parsed_clear(&r);
    /* no ids at all: subject + from fallback, Re: stripped */
    r = parse_str("From: a@x\nSubject: Re: Hi\n\nx");
    r2 = parse_str("From: a@x\nSubject: hi\n\ny");
    assert_string_equal(r.thread_id, r2.thread_id);
    mb_mime_parsed_clear(&r);
    mb_mime_parsed_clear(&r2);
}

static void test_attachment_rules(void **state)
{
    (void)state;
    mb_rec_parsed r = parse_str(
        "Subject: x\nDate: 1 Jan 2020 00:00:00 +0000\n"
        "Content-Type: multipart/mixed; boundary=\"b1\"\n\npreamble\n"
        "--b1\nContent-Type: multipart/related; boundary=b1x\n\n"
        "--b1x\nContent-Type: text/plain\n\nmain text\n"
        "--b1x\nContent-Type: image/png\nContent-ID: <img1@x>\nContent-Transfer-Encoding: base64\n\n"
        "aGVs\nbG8=\n"
        "--b1x--\n"
        "--b1\nContent-Type: Application/PDF; name=\"r.pdf\"\nContent-Disposition: ATTACHMENT\n\n%PDF\n"
        "--b1\nContent-Type: message/rfc822\n\nSubject: inner one\n\nhi\n"
        "--b1\nContent-Type: bogus\n\nzz\n"
        "--b1--\nepilogue\n");
    assert_string_equal(r.snippet, "main text");
    assert_int_equal(r.attachments.n, 4);
    mb_attachment *a = r.attachments.v;
    assert_string_equal(a[0].part, "1.2");
    assert_string_equal(a[0].content_type, "image/png");
    assert_string_equal(a[0].disposition, "inline");
    assert_string_equal(a[0].content_id, "img1@x");
    assert_int_equal(a[0].size, 5); /* "hello" */
    assert_string_equal(a[0].sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    assert_null(a[0].filename);
    assert_string_equal(a[1].part, "2");
    assert_string_equal(a[1].content_type, "application/pdf");
    assert_string_equal(a[1].disposition, "attachment");
    assert_string_equal(a[1].filename, "r.pdf");
    assert_int_equal(a[1].size, 4);
    assert_string_equal(a[2].part, "3");
    assert_string_equal(a[2].filename, "inner one.eml");
    assert_string_equal(a[3].content_type, "application/octet-stream");
    assert_true(has_defect(&r.defects, "invalid content type 'bogus' in part 4"));
    mb_mime_parsed_clear(&r);
}

typedef struct {
    mb_buf got;
} collect;

static mb_status collect_put(void *ctx, const void *p, size_t n)
{
    collect *c = ctx;
    assert_true(n <= MB_MIME_CHUNK);
    return mb_buf_append(&c->got, p, n);
}

static void test_part_decode(void **state)
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
    collect c = {MB_BUF_INIT};
    assert_int_equal(mb_mime_part_decode(msg, len, "2", collect_put, &c), MB_OK);
    /* soft break joined, =00 kept, trailing blanks dropped, the CRLF before
     * the delimiter is not part of the body */
    assert_int_equal(c.got.len, 12);
    assert_memory_equal(c.got.data, "a=bc\0\r\nline2", 12);
    mb_buf_reset(&c.got);
    assert_int_equal(mb_mime_part_decode(msg, len, "3.1", collect_put, &c), MB_OK);
    assert_int_equal(c.got.len, 5);
    assert_memory_equal(c.got.data, "\x01\x02\r\n\x03", 5);
    mb_buf_reset(&c.got);
    assert_int_equal(mb_mime_part_decode(msg, len, "1", collect_put, &c), MB_OK);
    assert_string_equal(c.got.data, "body");
    assert_int_equal(mb_mime_part_decode(msg, len, "3", collect_put, &c), MB_ERR_NOTFOUND);
    assert_int_equal(mb_mime_part_decode(msg, len, "4", collect_put, &c), MB_ERR_NOTFOUND);
    assert_non_null(strstr(mb_err_last(), "'4'"));
    mb_buf_free(&c.got);
    /* a non-multipart message's body is part "1" */
    collect c2 = {MB_BUF_INIT};
    assert_int_equal(mb_mime_part_decode("Subject: x\n\nhello", 17, "1", collect_put, &c2), MB_OK);
    assert_string_equal(c2.got.data, "hello");
    mb_buf_free(&c2.got);
}

static void test_malformed(void **state)
{
    (void)state;
    /* missing closing boundary, bad base64, no Date, unknown charset */
    mb_rec_parsed r = parse_str(
        "Subject: =?x-foo?q?hi?=\nContent-Type: multipart/mixed; boundary=zz\n\n"
        "--zz\nContent-Type: text/plain\n\nhello\n"
        "--zz\nContent-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
        "aGVs!!bG8=\n");
    assert_string_equal(r.subject, "hi");
    assert_string_equal(r.snippet, "hello");
    assert_int_equal(r.attachments.n, 1);
    assert_int_equal(r.attachments.v[0].size, 5);
    assert_true(has_defect(&r.defects, "missing closing boundary for part 2"));
    assert_true(has_defect(&r.defects, "invalid base64 in part 2"));
    assert_true(has_defect(&r.defects, "no Date header, used internal date"));
    assert_true(has_defect(&r.defects, "unknown charset 'x-foo' in Subject"));
    assert_int_equal(r.date, 777);
    mb_mime_parsed_clear(&r);
    /* header section cut off in the middle of a line */
    r = parse_str("From: a@b\nSubject: cut\nDate: garbage\nX-Trunc");
    assert_string_equal(r.subject, "cut");
    assert_true(has_defect(&r.defects, "unparseable Date 'garbage'"));
    assert_true(has_defect(&r.defects, "malformed header line"));
    mb_mime_parsed_clear(&r);
    /* empty input and binary junk still give a record */
    r = parse_str("");
    assert_string_equal(r.subject, "");
    assert_string_equal(r.snippet, "");
    mb_mime_parsed_clear(&r);
    char junk[4096];
    unsigned x = 12345;
    for (size_t i = 0; i < sizeof junk; i++) {
        x = x * 1103515245 + 12345;
        junk[i] = (char)(x >> 16);
    }
    memset(&r, 0, sizeof r);
    assert_int_equal(mb_mime_parse(junk, sizeof junk, 1, &r), MB_OK);
    mb_mime_parsed_clear(&r);
    /* nesting deeper than the limit is a defect, not a crash */
    mb_buf deep = MB_BUF_INIT;
    for (int i = 0; i < 40; i++)
        mb_buf_printf(&deep, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i);
    mb_buf_puts(&deep, "Content-Type: text/plain\n\ndeep\n");
    memset(&r, 0, sizeof r);
    assert_int_equal(mb_mime_parse(deep.data, deep.len, 1, &r), MB_OK);
    assert_true(has_defect(&r.defects, "nesting deeper than 32"));
    mb_mime_parsed_clear(&r);
    mb_buf_free(&deep);
}

/* ---- 30 MB message, bounded memory ---- */

extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

static size_t heap_now(void)
{
    if (__sanitizer_get_current_allocated_bytes)
        return __sanitizer_get_current_allocated_bytes();
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

typedef struct {
    volatile int stop;
    size_t peak;
} sampler;

static void *sample(void *arg)
{
    sampler *s = arg;
    while (!s->stop) {
        size_t h = heap_now();
        if (h > s->peak)
            s->peak = h;
        usleep(500);
    }
    return NULL;
}

static void test_big_message(void **state)
{
    (void)state;
    const size_t raw_n = 22u << 20; /* 22 MB raw -> ~30 MB base64 */
    unsigned char *raw = malloc(raw_n);
    assert_non_null(raw);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < raw_n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        raw[i] = (unsigned char)x;
    }
    unsigned char md[32];
    unsigned int ml;
    EVP_Digest(raw, raw_n, md, &ml, EVP_sha256(), NULL);
    char want[65];
    for (int i = 0; i < 32; i++)
        sprintf(want + 2 * i, "%02x", md[i]);
    mb_buf m = MB_BUF_INIT;
    mb_buf_puts(&m, "From: big@x\r\nSubject: big\r\nDate: 1 Jan 2020 00:00:00 +0000\r\n"
                    "Content-Type: multipart/mixed; boundary=BIG\r\n\r\n--BIG\r\n"
                    "Content-Type: text/plain\r\n\r\nsee attachment\r\n--BIG\r\n"
                    "Content-Type: application/octet-stream; name=big.bin\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\n");
    size_t b64n = 4 * ((raw_n + 2) / 3);
    unsigned char *b64 = malloc(b64n + 1);
    assert_non_null(b64);
    EVP_EncodeBlock(b64, raw, (int)raw_n);
    free(raw);
    mb_buf_reserve(&m, b64n + b64n / 76 * 2 + 64);
    for (size_t i = 0; i < b64n; i += 76) {
        mb_buf_append(&m, b64 + i, b64n - i < 76 ? b64n - i : 76);
        mb_buf_puts(&m, "\r\n");
    }
    free(b64);
    mb_buf_puts(&m, "--BIG--\r\n");
    assert_true(m.len > 30u * 1000 * 1000);

    sampler smp = {0, 0};
    size_t base = heap_now();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, sample, &smp), 0);
    mb_rec_parsed r;
    memset(&r, 0, sizeof r);
    assert_int_equal(mb_mime_parse(m.data, m.len, 0, &r), MB_OK);
    collect c = {MB_BUF_INIT};
    (void)c;
    smp.stop = 1;
    pthread_join(th, NULL);
    size_t extra = smp.peak > base ? smp.peak - base : 0;
    print_message("30 MB message: peak extra heap %zu bytes\n", extra);
    assert_true(extra < (4u << 20)); /* independent of the attachment size */
    assert_int_equal(r.attachments.n, 1);
    assert_string_equal(r.attachments.v[0].part, "2");
    assert_string_equal(r.attachments.v[0].filename, "big.bin");
    assert_int_equal(r.attachments.v[0].size, raw_n);
    assert_string_equal(r.attachments.v[0].sha256, want);
    assert_string_equal(r.snippet, "see attachment");
    assert_int_equal(r.defects.n, 0);
    mb_mime_parsed_clear(&r);

    /* streamed back through part_decode: same bytes, chunks <= 64 KB */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    struct { EVP_MD_CTX *c; size_t n; } hs = {ctx, 0};
    mb_status put(void *p, const void *d, size_t n);
    assert_int_equal(mb_mime_part_decode(m.data, m.len, "2", put, &hs), MB_OK);
    EVP_DigestFinal_ex(ctx, md, &ml);
    EVP_MD_CTX_free(ctx);
    char got[65];
    for (int i = 0; i < 32; i++)
        sprintf(got + 2 * i, "%02x", md[i]);
    assert_int_equal(hs.n, raw_n);
    assert_string_equal(got, want);
    mb_buf_free(&m);
}

mb_status put(void *p, const void *d, size_t n)
{
    struct { EVP_MD_CTX *c; size_t n; } *hs = p;
    assert_true(n <= MB_MIME_CHUNK);
    hs->n += n;
    EVP_DigestUpdate(hs->c, d, n);
    return MB_OK;
}

/* The record we fill must be releasable by the generic schema code. */
static void test_rec_free_compatible(void **state)
{
    (void)state;
    mb_rec_parsed r = parse_str(
        "From: A <a@x>\nTo: b@y, c@z\nCc: d@w\nBcc: e@v\nReply-To: f@u\nSubject: s\n"
        "Message-ID: <m@x>\nIn-Reply-To: <p@x>\nReferences: <r@x> <p@x>\n"
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n"
        "--b\nContent-Type: image/gif; name=x.gif\nContent-ID: <c@x>\n\nGIF\n");
    r.raw.sha256 = strdup("abc");
    assert_int_equal(r.attachments.n, 1);
    assert_true(r.defects.n >= 2);
    mb_rec_free(&mb_type_parsed, &r); /* ASan: no leak, no double free */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc2047),
        cmocka_unit_test(test_charsets),
        cmocka_unit_test(test_rfc2231),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_snippet_html),
        cmocka_unit_test(test_snippet_in_message),
        cmocka_unit_test(test_headers_and_thread),
        cmocka_unit_test(test_attachment_rules),
        cmocka_unit_test(test_part_decode),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_big_message),
        cmocka_unit_test(test_rec_free_compatible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
