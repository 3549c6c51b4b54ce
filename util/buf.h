/* buf.h — mb_buf, the one growable byte buffer every module uses.
 *
 * The buffer owns data; data is always NUL-terminated (when non-NULL) so it
 * can be used as a C string, but may also hold binary bytes (len counts them,
 * not the terminator). A zeroed mb_buf ({0}) is a valid empty buffer. */
#ifndef MB_BUF_H
#define MB_BUF_H

#include "util/mb.h"

#include <stdarg.h>
#include <stdbool.h>

typedef struct {
    char *data;  /* owned; NULL until first growth */
    size_t len;  /* bytes used, excluding the NUL */
    size_t cap;  /* bytes allocated */
} mb_buf;

#define MB_BUF_INIT {NULL, 0, 0}

void mb_buf_free(mb_buf *b);                 /* release memory, back to {0} */
void mb_buf_reset(mb_buf *b);                /* len = 0, keep memory */
mb_status mb_buf_reserve(mb_buf *b, size_t extra);
mb_status mb_buf_append(mb_buf *b, const void *p, size_t n);
mb_status mb_buf_puts(mb_buf *b, const char *s);
mb_status mb_buf_putc(mb_buf *b, char c);
mb_status mb_buf_printf(mb_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
mb_status mb_buf_vprintf(mb_buf *b, const char *fmt, va_list ap);
/* Append s (n bytes) as a JSON string literal with quotes; invalid UTF-8
 * bytes become U+FFFD so the output is always valid JSON. */
mb_status mb_buf_json_str(mb_buf *b, const char *s, size_t n);
/* Append n bytes as lowercase hex. */
mb_status mb_buf_hex(mb_buf *b, const unsigned char *p, size_t n);
/* The contents as a C string ("" for an empty buffer). */
const char *mb_buf_cstr(const mb_buf *b);
/* Take ownership of the data (caller frees); the buffer becomes empty.
 * Returns a malloc'd "" for an empty buffer; NULL only on allocation failure. */
char *mb_buf_steal(mb_buf *b);

/* strdup that reports failure through mb_errf. */
char *mb_strdup(const char *s);
char *mb_strndup(const char *s, size_t n);

/* Room for element n of array v (n elements of size bytes), for arrays that
 * grow one element at a time: used like realloc(v, (n + 1) * size), but the
 * capacity doubles (it is implied by n: the next power of two), so n appends
 * copy O(n) bytes in all, not O(n^2) (3,000 attachments of one message took
 * 1.8 s under ASan). Returns v or its new place; NULL (mb_errf, v untouched
 * and still owned by the caller) on failure. Only for arrays grown by
 * this function alone, from NULL (or from one malloc'd element). */
void *mb_grow(void *v, size_t n, size_t size);

#endif
