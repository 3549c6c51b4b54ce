/* mime.h — the MIME parser the parse stage uses.
 *
 * mb_mime_parse() reads one raw message held in memory (the parse stage
 * mmaps the .eml blob) and fills an mb_rec_parsed: decoded headers,
 * addresses, date, ids, thread id, snippet and attachment metadata (with
 * size and SHA-256 of the decoded bytes). It never copies the message and
 * never allocates in proportion to an attachment's size: bodies are decoded
 * in 64 KB chunks straight into SHA-256.
 *
 * A message that cannot be fully parsed still yields a record: whatever was
 * extracted plus human-readable `defects`. Only out-of-memory is a failure.
 *
 * Part paths use IMAP BODYSTRUCTURE numbering: a non-multipart message's
 * body is "1"; the children of a top-level multipart are "1", "2", ...; the
 * children of part "2" (itself multipart) are "2.1", "2.2", ...
 * message/rfc822 parts are leaves (one attachment each, not descended into).
 *
 * Thread id: the root id is the first References id, else In-Reply-To, else
 * the message's own Message-ID, else "subject:<normalized subject>\n<from
 * address>" (Re:/Fwd: prefixes stripped, lower-cased). thread_id is the
 * first 16 hex chars of SHA-256 of that root, so equal roots give equal ids.
 *
 * Everything is thread-safe; the only state is the per-thread work budget. */
#ifndef MB_MIME_H
#define MB_MIME_H

#include "schemas/records.h"
#include "util/buf.h"
#include "util/mb.h"

#include <stdbool.h>

/* Limits. Exceeding one is recorded as a defect, never a failure. */
#define MB_MIME_MAX_DEPTH 32               /* nested multiparts */
#define MB_MIME_MAX_PARTS 10000            /* leaf parts per message */
#define MB_MIME_MAX_HEADER_BYTES (1 << 20) /* one header section */
#define MB_MIME_MAX_FIELD_BYTES (256 << 10) /* one unfolded header value */
#define MB_MIME_MAX_DEFECTS 64
#define MB_MIME_MAX_ADDRESSES 2000         /* per address header */
#define MB_MIME_MAX_REFERENCES 500
#define MB_MIME_SNIPPET_CHARS 256
#define MB_MIME_CHUNK (64 << 10)           /* decode/sink chunk size */

/* Parse a whole raw message of len bytes. Fills every field of *out except
 * out->raw, which is left untouched (the caller sets it). Fields that were
 * set before are overwritten without being freed, so pass a zeroed record
 * (apart from raw). Every string and vector is malloc'd; release them with
 * mb_rec_free(&mb_type_parsed, out) or mb_mime_parsed_clear(out).
 * internal_date (unix seconds) is used when the Date header is missing or
 * unparseable. Returns MB_OK (possibly with defects), MB_ERR_NOMEM, or
 * MB_ERR_BUDGET when the thread's work budget ran out (then *out holds
 * nothing of ours). */
mb_status mb_mime_parse(const char *data, size_t len, int64_t internal_date,
                        mb_rec_parsed *out);

/* Free every field mb_mime_parse fills (everything but raw) and zero them. */
void mb_mime_parsed_clear(mb_rec_parsed *rec);

/* Receives decoded bytes in chunks of at most MB_MIME_CHUNK. A non-MB_OK
 * return stops decoding and is returned by mb_mime_part_decode. */
typedef mb_status (*mb_mime_sink)(void *ctx, const void *p, size_t n);

/* Work budget for the calling thread: from now on, mb_mime_parse and
 * mb_mime_part_decode (and the building blocks below) may spend cpu_ms of
 * this thread's CPU time; past it they stop with MB_ERR_BUDGET. Every parser
 * loop is linear in its input, but the next bug may not be: the parse stage
 * sets a budget per message, avscan per attachment, so that no single
 * message can hold a stage. 0 lifts the limit (the default). */
void mb_mime_budget(int64_t cpu_ms);

/* Stream the transfer-decoded bytes of the leaf part at part_path (as
 * assigned by mb_mime_parse) to sink. MB_ERR_NOTFOUND for an unknown path
 * or a multipart container. */
mb_status mb_mime_part_decode(const char *data, size_t len, const char *part_path,
                              mb_mime_sink sink, void *ctx);

/* The same for many parts of one message: the MIME tree is walked once
 * (mb_mime_tree_open, under the thread's work budget) and each part is then
 * found by path in O(log parts). The tree points into data, which must
 * outlive it; mb_mime_tree_decode only reads the tree, so several threads
 * may decode parts of one tree at once. Owned by the caller:
 * mb_mime_tree_free. */
typedef struct mb_mime_tree mb_mime_tree;
mb_status mb_mime_tree_open(const char *data, size_t len, mb_mime_tree **out);
/* Leaf parts in the tree. */
size_t mb_mime_tree_parts(const mb_mime_tree *t);
/* As mb_mime_part_decode, on a tree from mb_mime_tree_open. */
mb_status mb_mime_tree_decode(const mb_mime_tree *t, const char *part_path, mb_mime_sink sink,
                              void *ctx);
void mb_mime_tree_free(mb_mime_tree *t);

/* ---- Building blocks, public so they can be tested and reused. ---- */

/* Collects defects: at most MB_MIME_MAX_DEFECTS strings, then one
 * "too many defects" line. `ctx` names where the caller is ("Subject"). */
typedef struct {
    mb_strv v;   /* owned */
    bool nomem;  /* an allocation failed while recording */
} mb_mime_defects;
void mb_mime_defect(mb_mime_defects *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void mb_mime_defects_free(mb_mime_defects *d);

/* Convert n bytes in charset to UTF-8, appending to out. NULL/empty charset
 * means "raw": UTF-8 if valid, else windows-1252. Invalid sequences become
 * U+FFFD. *unknown (may be NULL) is set when the charset is not known, in
 * which case the raw rule is used. */
mb_status mb_mime_to_utf8(const char *charset, const char *in, size_t n, mb_buf *out,
                          bool *unknown);
/* True if p[0..n) is valid UTF-8 (no overlongs, surrogates, > U+10FFFF). */
bool mb_mime_utf8_valid(const char *p, size_t n);

/* Decode an unfolded header value: RFC 2047 encoded words, raw 8-bit
 * text. Appends UTF-8 to out. what names the header for defects. */
mb_status mb_mime_decode_header(const char *in, size_t n, mb_buf *out, mb_mime_defects *d,
                                const char *what);

/* A parsed Content-Type / Content-Disposition value. */
typedef struct {
    char *value;  /* lowercased "type/subtype" or disposition token, owned */
    struct mb_mime_param { char *name; int section; bool ext; char *val; } *p;
    size_t n;
} mb_mime_params;
mb_status mb_mime_params_parse(const char *in, size_t n, mb_mime_params *out);
void mb_mime_params_free(mb_mime_params *ps);
/* Parameter `name` decoded to UTF-8 (RFC 2231 continuations and charsets,
 * RFC 2047 words in plain values), or *out = NULL if absent. Owned. */
mb_status mb_mime_param_get(const mb_mime_params *ps, const char *name, char **out,
                            mb_mime_defects *d);

/* Parse an address-list header value (unfolded, raw). Appends to *out. */
mb_status mb_mime_addresses_parse(const char *in, size_t n, mb_addressv *out,
                                  mb_mime_defects *d, const char *what);
void mb_mime_addresses_free(mb_addressv *v);

/* Parse an RFC 5322 date (and common obsolete forms) to UTC unix seconds. */
mb_status mb_mime_date_parse(const char *in, size_t n, int64_t *out);

/* Snippet builders: UTF-8 text in, <= MB_MIME_SNIPPET_CHARS characters of
 * whitespace-collapsed text out (malloc'd). */
mb_status mb_mime_snippet_text(const char *utf8, size_t n, char **out);
mb_status mb_mime_snippet_html(const char *utf8, size_t n, char **out);

#endif
