/* json.h — a small strict JSON (RFC 8259) parser producing a tiny DOM.
 *
 * Used by mb_rec_from_json so commands can be sent as JSON with `nats req`;
 * reusable by any module that reads JSON (HTTP API bodies, Gmail replies).
 * Strings are unescaped to UTF-8 (\u escapes incl. surrogate pairs); raw
 * string bytes must be valid UTF-8. Numbers keep their source text so
 * integers convert exactly (no double rounding) with mb_json_u64/_i64.
 * Nesting is limited to MB_JSON_MAX_DEPTH; the caller bounds the input. */
#ifndef MB_JSON_H
#define MB_JSON_H

#include "util/mb.h"

#include <stdbool.h>

#define MB_JSON_MAX_DEPTH 64

typedef enum {
    MB_JSON_NULL,
    MB_JSON_BOOL,
    MB_JSON_NUM,
    MB_JSON_STR,
    MB_JSON_ARR,
    MB_JSON_OBJ,
} mb_json_kind;

typedef struct mb_json mb_json;
typedef struct mb_json_member mb_json_member;

struct mb_json {
    mb_json_kind kind;
    bool boolean;            /* BOOL */
    char *str;               /* STR: unescaped UTF-8, NUL-terminated (may hold
                                NULs, len counts bytes); NUM: the number text */
    size_t len;              /* STR/NUM: bytes in str */
    mb_json *elems;          /* ARR: n elements */
    mb_json_member *members; /* OBJ: n members, in document order */
    size_t n;
};

struct mb_json_member {
    char *key; /* unescaped, NUL-terminated */
    size_t keylen;
    mb_json value;
};

/* Parse exactly one JSON value (surrounding whitespace allowed) into *out,
 * which the caller releases with mb_json_free. Errors name the byte offset. */
mb_status mb_json_parse(const char *text, size_t len, mb_json **out);
void mb_json_free(mb_json *v); /* NULL-safe; frees v itself */

/* Member of an object by key (the last one if repeated), or NULL. */
const mb_json *mb_json_get(const mb_json *obj, const char *key);

/* Integer value of a NUM with no fraction or exponent, range-checked.
 * MB_ERR_INVALID otherwise (message says why, without naming the field). */
mb_status mb_json_u64(const mb_json *v, uint64_t *out);
mb_status mb_json_i64(const mb_json *v, int64_t *out);

/* "null", "bool", "number", "string", "array", "object". */
const char *mb_json_kind_name(mb_json_kind k);

#endif
