/* utf8.h — the one UTF-8 validator and encoder every module uses (JSON
 * output, Postgres text, the MIME parser's charset conversion). */
#ifndef MB_UTF8_H
#define MB_UTF8_H

#include "util/buf.h"

#include <stdbool.h>

/* Length (1..4) of the well-formed UTF-8 sequence at p (n bytes available),
 * or 0 if it is not one: overlong forms, surrogates and code points above
 * U+10FFFF are rejected. */
size_t mb_utf8_seq(const unsigned char *p, size_t n);
/* Whether all n bytes are well-formed UTF-8. */
bool mb_utf8_valid(const char *p, size_t n);
/* Encode cp into out; returns its length. NUL, surrogates and values above
 * U+10FFFF become U+FFFD. */
size_t mb_utf8_encode(unsigned cp, char out[4]);
/* Append n bytes of p to out, each byte that does not start a well-formed
 * sequence (and NUL) replaced by U+FFFD. */
mb_status mb_utf8_clean(mb_buf *out, const char *p, size_t n);

#endif
