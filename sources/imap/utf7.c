/* utf7.c — IMAP modified UTF-7 (RFC 3501 5.1.3) folder names to UTF-8, so
 * "Entw&APw-rfe" can be shown and stored as "Entwürfe" while commands keep
 * using the server's raw name. */
#include "sources/imap/imap.h"
#include "util/buf.h"

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
    while (*p && st == MB_OK) {
        if (*p != '&') {
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
            continue;
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
                } else {
                    st = put_utf8(&b, u);
                }
            }
        }
        if (st != MB_OK)
            break;
        /* Must end with '-', encode something, no half surrogate, and the
         * leftover bits must be zero padding. */
        if (*p != '-' || nunits == 0 || hi || (bits & ((1u << nbits) - 1)) != 0) {
            st = mb_errf(MB_ERR_INVALID, "folder name '%s': malformed &...- sequence", in);
            break;
        }
        p++;
    }
    if (st == MB_OK) {
        *out = mb_buf_steal(&b);
        if (!*out)
            st = mb_errf(MB_ERR_NOMEM, "folder name '%s': out of memory", in);
    }
    mb_buf_free(&b);
    return st;
}
