/* utf7.c — IMAP modified UTF-7 (RFC 3501 5.1.3) folder names to UTF-8, so
 * "Entw&APw-rfe" can be shown and stored as "Entwürfe" while commands keep
 * using the server's raw name; and the escaped, always valid UTF-8 form of
 * names and keywords a server sends that are not (see imap.h). */
#include "sources/imap/imap.h"
#include "util/buf.h"
#include "util/utf8.h"

#include <stdio.h>
#include <string.h>

static int b64val(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == ',')
        return 63;
    return -1;
}

static mb_status put_utf8(mb_buf *b, uint32_t cp) {
    char t[4];
    size_t n;
    if (cp < 0x80) {
        t[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return mb_buf_append(b, t, n);
}

mb_status mb_imap_utf7_decode(const char *in, char **out) {
    mb_buf b = MB_BUF_INIT;
    mb_status st = MB_OK;
    const unsigned char *p = (const unsigned char *)in;
    *out = NULL;
    bool after_run = false; /* the last thing read was a closed &...- run */
    while (*p && st == MB_OK) {
        if (*p != '&') {
            after_run = false;
            if (*p < 0x20 || *p > 0x7e) {
                st = mb_errf(MB_ERR_INVALID, "folder name '%s': byte 0x%02x is not modified UTF-7",
                             in, *p);
                break;
            }
            st = mb_buf_putc(&b, (char)*p++);
            continue;
        }
        p++;
        if (*p == '-') { /* "&-" is a literal '&' */
            st = mb_buf_putc(&b, '&');
            p++;
            after_run = false;
            continue;
        }
        if (after_run) {
            /* "&AOQ-&APY-" must be written "&AOQA9g-": two spellings of one
             * name would map two server folders to one display name. */
            st = mb_errf(MB_ERR_INVALID, "folder name '%s': adjacent &...- sequences", in);
            break;
        }
        uint32_t bits = 0, hi = 0;
        int nbits = 0, nunits = 0;
        while (*p && *p != '-') {
            int v = b64val(*p);
            if (v < 0) {
                st = mb_errf(MB_ERR_INVALID, "folder name '%s': bad base64 character '%c'", in, *p);
                break;
            }
            p++;
            bits = (bits << 6) | (uint32_t)v;
            nbits += 6;
            if (nbits >= 16) {
                nbits -= 16;
                uint32_t u = (bits >> nbits) & 0xFFFF;
                nunits++;
                if (hi) {
                    if (u < 0xDC00 || u > 0xDFFF) {
                        st = mb_errf(MB_ERR_INVALID, "folder name '%s': unpaired surrogate", in);
                        break;
                    }
                    st = put_utf8(&b, 0x10000 + ((hi - 0xD800) << 10) + (u - 0xDC00));
                    hi = 0;
                } else if (u >= 0xD800 && u <= 0xDBFF) {
                    hi = u;
                } else if (u >= 0xDC00 && u <= 0xDFFF) {
                    st = mb_errf(MB_ERR_INVALID, "folder name '%s': unpaired surrogate", in);
                    break;
                } else if (u < 0x20 || (u >= 0x7f && u <= 0x9f) || (u == 0xFFFD && b.len == 0)) {
                    /* A leading U+FFFD would look like an escaped form. */
                    st = mb_errf(MB_ERR_INVALID, "folder name '%s': control character or "
                                 "leading U+FFFD U+%04X", in, (unsigned)u);
                    break;
                } else if (u < 0x7f) {
                    st = mb_errf(MB_ERR_INVALID, "folder name '%s': printable ASCII '%c' "
                                 "inside &...-", in, (char)u);
                    break;
                } else {
                    st = put_utf8(&b, u);
                }
            }
        }
        if (st != MB_OK)
            break;
        /* Must end with '-', encode something, no half surrogate, and the
         * leftover bits must be zero padding. */
        if (*p != '-' || nunits == 0 || hi || nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0) {
            st = mb_errf(MB_ERR_INVALID, "folder name '%s': malformed &...- sequence", in);
            break;
        }
        p++;
        after_run = true;
    }
    if (st == MB_OK) {
        *out = mb_buf_steal(&b);
        if (!*out)
            st = mb_errf(MB_ERR_NOMEM, "folder name '%s': out of memory", in);
    }
    mb_buf_free(&b);
    return st;
}

/* ---- escaped forms --------------------------------------------------------- */

static bool starts_with_mark(const char *s, size_t n) {
    return n >= 3 && memcmp(s, "\xEF\xBF\xBD", 3) == 0;
}

/* Needs escaping: not well-formed UTF-8, or a control character, or starts
 * with U+FFFD (the mark of escaped forms, so that no clean text looks like
 * one). */
static bool needs_escape(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    if (starts_with_mark(s, n))
        return true;
    for (size_t i = 0; i < n;) {
        size_t l = mb_utf8_seq(p + i, n - i);
        if (l == 0 || p[i] < 0x20 || p[i] == 0x7f)
            return true;
        if (l == 2 && p[i] == 0xC2 && p[i + 1] <= 0x9F)
            return true; /* C1 control */
        i += l;
    }
    return false;
}

mb_status mb_imap_escape(const char *in, size_t n, bool force, char **out, bool *escaped) {
    *out = NULL;
    bool esc = force || needs_escape(in, n);
    if (escaped)
        *escaped = esc;
    mb_buf b = MB_BUF_INIT;
    mb_status st = MB_OK;
    if (!esc) {
        st = mb_buf_append(&b, in, n);
    } else {
        st = mb_buf_append(&b, "\xEF\xBF\xBD", 3);
        const unsigned char *p = (const unsigned char *)in;
        for (size_t i = 0; i < n && st == MB_OK;) {
            size_t l = mb_utf8_seq(p + i, n - i);
            bool keep = l > 0 && p[i] >= 0x20 && p[i] != 0x7f && p[i] != '\\' &&
                        !(l == 2 && p[i] == 0xC2 && p[i + 1] <= 0x9F);
            if (keep) {
                st = mb_buf_append(&b, in + i, l);
                i += l;
            } else {
                char x[5];
                snprintf(x, sizeof x, "\\x%02X", p[i]);
                st = mb_buf_append(&b, x, 4);
                i++;
            }
        }
    }
    if (st == MB_OK && !(*out = mb_buf_steal(&b)))
        st = MB_ERR_NOMEM;
    mb_buf_free(&b);
    return st == MB_OK ? MB_OK : mb_errf(st, "escaping a name: out of memory");
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

mb_status mb_imap_unescape(const char *in, char **out, size_t *len) {
    *out = NULL;
    size_t n = strlen(in);
    mb_buf b = MB_BUF_INIT;
    mb_status st = MB_OK;
    if (!starts_with_mark(in, n)) {
        st = mb_buf_append(&b, in, n);
    } else {
        for (size_t i = 3; i < n && st == MB_OK;) {
            if (in[i] != '\\') {
                st = mb_buf_putc(&b, in[i++]);
                continue;
            }
            int h = i + 3 < n && in[i + 1] == 'x' ? hexval(in[i + 2]) : -1;
            int l = h >= 0 ? hexval(in[i + 3]) : -1;
            if (l < 0) {
                mb_buf_free(&b);
                return mb_errf(MB_ERR_INVALID, "escaped name '%s': bad \\x escape at byte %zu", in, i);
            }
            st = mb_buf_putc(&b, (char)(h * 16 + l));
            i += 4;
        }
    }
    if (len)
        *len = b.len;
    if (st == MB_OK && !(*out = mb_buf_steal(&b)))
        st = MB_ERR_NOMEM;
    mb_buf_free(&b);
    return st == MB_OK ? MB_OK : mb_errf(st, "unescaping a name: out of memory");
}

mb_status mb_imap_folder_names(const char *raw, char **name, char **display, bool *escaped) {
    *name = *display = NULL;
    bool esc_name = false, esc_display = false;
    mb_status st = mb_imap_escape(raw, strlen(raw), false, name, &esc_name);
    if (st == MB_OK && mb_imap_utf7_decode(raw, display) != MB_OK) {
        esc_display = true;
        st = mb_imap_escape(raw, strlen(raw), true, display, NULL);
    }
    if (st != MB_OK) {
        free(*name);
        free(*display);
        *name = *display = NULL;
        return st;
    }
    mb_err_clear();
    if (escaped)
        *escaped = esc_name || esc_display;
    return MB_OK;
}
