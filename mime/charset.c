/* charset.c — everything that turns bytes in some charset into valid UTF-8.
 *
 * Mail carries every legacy charset there is, plus raw 8-bit bytes with no
 * declared charset at all. Rules: a declared charset goes through glibc
 * iconv after alias clean-up; undeclared or unknown 8-bit text is taken as
 * UTF-8 when it is valid UTF-8 and as windows-1252 otherwise (what mail
 * clients do). Invalid sequences become U+FFFD, so output is always valid. */
#include "mime/mime.h"

#include <ctype.h>
#include <errno.h>
#include <iconv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/utf8.h"

static const char REPL[] = "\xEF\xBF\xBD";


bool mb_mime_utf8_valid(const char *p, size_t n) { return mb_utf8_valid(p, n); }

/* Copy UTF-8, replacing each invalid byte with U+FFFD and NUL with space. */
static mb_status utf8_sanitize(const char *p, size_t n, mb_buf *out)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t i = 0, run = 0;
    mb_status s = mb_buf_reserve(out, n);
    if (s)
        return s;
    while (i < n) {
        size_t l = u[i] ? mb_utf8_seq(u + i, n - i) : 0;
        if (l) {
            i += l;
            continue;
        }
        if ((s = mb_buf_append(out, p + run, i - run)))
            return s;
        if ((s = mb_buf_append(out, u[i] ? REPL : " ", u[i] ? 3 : 1)))
            return s;
        run = ++i;
    }
    return mb_buf_append(out, p + run, i - run);
}

static mb_status put_cp(mb_buf *out, unsigned cp)
{
    char b[4];
    return mb_buf_append(out, b, mb_utf8_encode(cp, b));
}

/* windows-1252 0x80..0x9F; bytes it leaves undefined map to the C1 control
 * of the same value, as ISO-8859-1 would. */
static const unsigned short cp1252_hi[32] = {
    0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
    0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D, 0x017D, 0x8F,
    0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
};

static mb_status from_cp1252(const char *p, size_t n, mb_buf *out)
{
    mb_status s = mb_buf_reserve(out, n + n / 2);
    for (size_t i = 0; !s && i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == 0)
            s = mb_buf_putc(out, ' ');
        else if (c < 0x80)
            s = mb_buf_putc(out, (char)c);
        else
            s = put_cp(out, c < 0xA0 ? cp1252_hi[c - 0x80] : c);
    }
    return s ? s : mb_buf_append(out, "", 0); /* terminate even when n == 0 */
}

static mb_status raw_to_utf8(const char *p, size_t n, mb_buf *out)
{
    if (mb_mime_utf8_valid(p, n))
        return utf8_sanitize(p, n, out); /* still maps NUL */
    return from_cp1252(p, n, out);
}

/* Names mail uses that iconv does not know, or knows as something worse. */
static const struct { const char *mail, *iconv; } aliases[] = {
    {"utf8", "UTF-8"}, {"utf-8", "UTF-8"},
    {"gb2312", "GB18030"}, {"gbk", "GB18030"}, {"x-gbk", "GB18030"}, {"cp936", "GB18030"},
    {"euc-cn", "GB18030"}, {"x-euc-cn", "GB18030"},
    {"ks_c_5601-1987", "CP949"}, {"ks_c_5601", "CP949"}, {"euc-kr", "CP949"},
    {"x-sjis", "CP932"}, {"shift-jis", "CP932"}, {"shift_jis", "CP932"}, {"sjis", "CP932"},
    {"ms932", "CP932"}, {"windows-31j", "CP932"},
    {"iso-8859-8-i", "ISO-8859-8"}, {"iso-8859-6-i", "ISO-8859-6"},
    {"windows-874", "CP874"}, {"tis-620", "TIS-620"},
    {"unicode-1-1-utf-7", "UTF-7"}, {"x-unicode-2-0-utf-7", "UTF-7"},
    {"big5-hkscs", "BIG5-HKSCS"}, {"x-big5", "BIG5"}, {"cn-big5", "BIG5"},
    {"x-mac-roman", "MACINTOSH"}, {"mac", "MACINTOSH"}, {"macintosh", "MACINTOSH"},
    {"x-mac-cyrillic", "MAC-CYRILLIC"}, {"koi8-u", "KOI8-U"}, {"koi8r", "KOI8-R"},
    {"iso-2022-jp-2", "ISO-2022-JP-2"}, {"csiso2022jp", "ISO-2022-JP"},
};

/* Charsets for which 8-bit bytes are best read with the raw rule. */
static bool is_raw_charset(const char *cs)
{
    static const char *const raw[] = {
        "us-ascii", "ascii", "ansi_x3.4-1968", "ansi-x3.4-1968", "iso646-us", "iso-8859-1", "iso8859-1", "iso_8859-1",
        "latin1", "latin-1", "l1", "windows-1252", "cp1252", "cp-1252", "x-user-defined",
        "unknown-8bit", "x-unknown", "unknown", "default", "8bit", "us"};
    for (size_t i = 0; i < MB_ARRAY_LEN(raw); i++)
        if (!strcasecmp(cs, raw[i]))
            return true;
    return false;
}

mb_status mb_mime_to_utf8(const char *charset, const char *in, size_t n, mb_buf *out,
                          bool *unknown)
{
    if (unknown)
        *unknown = false;
    char cs[64];
    size_t cl = 0;
    if (charset) {
        while (*charset == ' ' || *charset == '"' || *charset == '\t')
            charset++;
        while (charset[cl] && charset[cl] != '"' && charset[cl] != ' ' && cl < sizeof cs - 1) {
            cs[cl] = (char)tolower((unsigned char)charset[cl]);
            cl++;
        }
    }
    cs[cl] = '\0';
    if (!cl || is_raw_charset(cs))
        return raw_to_utf8(in, n, out);
    if (!strcmp(cs, "utf-8") || !strcmp(cs, "utf8"))
        return utf8_sanitize(in, n, out);
    /* Pure ASCII input needs no conversion for ASCII-compatible charsets;
     * this skips iconv_open for most header words and bodies. */
    bool ascii = true;
    for (size_t i = 0; i < n && ascii; i++)
        if ((unsigned char)in[i] >= 0x80 || in[i] == 0x1B || in[i] == '+' || in[i] == '~')
            ascii = false;
    const char *name = cs;
    for (size_t i = 0; i < MB_ARRAY_LEN(aliases); i++)
        if (!strcmp(cs, aliases[i].mail)) {
            name = aliases[i].iconv;
            break;
        }
    iconv_t cd = iconv_open("UTF-8", name);
    if (cd == (iconv_t)-1) {
        if (unknown)
            *unknown = true;
        return raw_to_utf8(in, n, out);
    }
    if (ascii) {
        iconv_close(cd);
        return utf8_sanitize(in, n, out);
    }
    mb_status s = MB_OK;
    char tmp[4096];
    char *ip = (char *)in;
    size_t il = n;
    while (il > 0 && !s) {
        char *op = tmp;
        size_t ol = sizeof tmp;
        size_t r = iconv(cd, &ip, &il, &op, &ol);
        int e = errno;
        if (op > tmp)
            s = mb_buf_append(out, tmp, (size_t)(op - tmp));
        if (r != (size_t)-1 || s)
            continue;
        if (e == E2BIG)
            continue;
        /* EILSEQ or EINVAL (truncated at the end): one replacement char
         * per bad byte keeps going without losing the rest. */
        s = mb_buf_append(out, REPL, 3);
        ip++;
        il--;
        iconv(cd, NULL, NULL, NULL, NULL);
    }
    if (!s) { /* flush shift state (ISO-2022-JP) */
        char *op = tmp;
        size_t ol = sizeof tmp;
        iconv(cd, NULL, NULL, &op, &ol);
        if (op > tmp)
            s = mb_buf_append(out, tmp, (size_t)(op - tmp));
    }
    iconv_close(cd);
    return s;
}
