/* mime_int.h — internals shared by the files of the MIME parser (not API). */
#ifndef MB_MIME_INT_H
#define MB_MIME_INT_H

#include "mime/mime.h"

/* A header section [start, end) and the body that follows it. */
typedef struct {
    const char *start, *end;   /* fields, up to (not incl.) the blank line */
    const char *body;          /* first body byte */
    bool truncated;            /* section exceeded MB_MIME_MAX_HEADER_BYTES */
    bool bad_line;             /* a non-header line ended the section */
    bool no_blank;             /* input ended without a blank line */
} mime_hsect;

/* Find the header section at [p, end). Skips a leading mbox "From " line
 * when top is set. */
void mime_headers_scan(const char *p, const char *end, bool top, mime_hsect *h);

/* Iterate fields: *it starts at h->start; returns false when done. The
 * value span is raw (folds included). */
typedef struct { const char *name; size_t nlen; const char *val; size_t vlen; } mime_field;
bool mime_field_next(const mime_hsect *h, const char **it, mime_field *f);
bool mime_field_is(const mime_field *f, const char *name);

/* Unfold a raw value (drop CR/LF, NUL to space, trim), capped at
 * MB_MIME_MAX_FIELD_BYTES; appends to out (which is reset first). Sets
 * *capped when the cap cut it. */
mb_status mime_unfold(const mime_field *f, mb_buf *out, bool *capped);

/* Transfer encodings. */
enum { CTE_IDENTITY, CTE_BASE64, CTE_QP, CTE_UNKNOWN };

/* Stream-decode [p, end) with the given encoding into sink, in chunks of
 * <= MB_MIME_CHUNK through buf (MB_MIME_CHUNK bytes, caller's). *bad is set
 * when invalid input was skipped. */
mb_status mime_decode_body(int cte, const char *p, const char *end, char *buf,
                           mb_mime_sink sink, void *ctx, bool *bad);

/* MB_ERR_BUDGET once this thread's work budget (mb_mime_budget) is spent;
 * cheap enough for inner loops. */
mb_status mime_budget_check(void);

/* mb_mime_snippet_html that also says whether a <head>, <script>, ... was
 * never closed. */
mb_status mime_snippet_html(const char *utf8, size_t n, char **out, bool *unclosed);

#endif
