/* internal.h — helpers shared by the schema walkers (not for other modules):
 * the field path used in error messages, generic vector access, base64. */
#ifndef MB_SCHEMAS_INTERNAL_H
#define MB_SCHEMAS_INTERNAL_H

#include "schemas/schema.h"

#include <stdbool.h>
#include <string.h>

/* "attachments[3].size" while walking; errors quote it. */
typedef struct {
    char s[256];
    size_t len;
    const char *schema; /* top-level schema name for messages */
} mb_path;

void mb_path_init(mb_path *p, const mb_type *t);
size_t mb_path_push_name(mb_path *p, const char *name); /* returns mark */
size_t mb_path_push_index(mb_path *p, size_t i);
static inline void mb_path_pop(mb_path *p, size_t mark)
{
    p->len = mark;
    p->s[mark] = '\0';
}
/* mb_errf with "<schema>: field \"<path>\": <msg>" (or "<schema>: <msg>"
 * when the path is empty). */
mb_status mb_path_err(const mb_path *p, mb_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* All vector structs in records.h are {T *v; size_t n;}. Accessed through
 * memcpy so the generic code does not alias the concrete struct types. */
typedef struct { void *v; size_t n; } mb_anyvec;
static inline mb_anyvec mb_vec_get(const void *field)
{
    mb_anyvec a;
    memcpy(&a, field, sizeof a);
    return a;
}
static inline void mb_vec_set(void *field, void *v, size_t n)
{
    mb_anyvec a = {v, n};
    memcpy(field, &a, sizeof a);
}

/* Release one field's value and zero it. */
void mb_field_free(const mb_field *f, void *rec);
/* Whether the encoder writes the field (not NULL / 0 / false / empty). */
bool mb_field_present(const mb_field *f, const void *rec);

/* Standard base64 with padding. decode: MB_ERR_INVALID on bad input;
 * *out is malloc'd (NULL when n == 0). */
mb_status mb_base64_encode(mb_buf *b, const unsigned char *p, size_t n);
mb_status mb_base64_decode(const char *s, size_t len, unsigned char **out, size_t *n);

#endif
