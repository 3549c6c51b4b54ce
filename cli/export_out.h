/* export_out.h — the writing side of `mailbus export` (cmd_export.c): each
 * stored message copied from the blob store in chunks with its SHA-256 and
 * size checked on the way, into Maildir++ files, an mbox (mboxrd) or plain
 * .eml files, and the index DIR/mailbus-export.tsv.
 *
 * cmd_export.c reads Postgres and calls, per folder, exp_folder_begin, then
 * exp_message for each of its messages in (uidvalidity, uid) order, then
 * exp_folder_end; folders in ascending order of their index path (the mbox
 * resume reads the previous index alongside, in the same order).
 *
 * Errors: a failure that concerns one message (its blob missing, unreadable
 * or not hashing to its name) is that message's: exp_message returns MB_OK
 * with *res = EXP_FAILED and the reason in mb_err_last(). Anything else
 * (the output directory not writable, a full disk, the index) is returned as
 * an error and ends the export. */
#ifndef MB_CLI_EXPORT_OUT_H
#define MB_CLI_EXPORT_OUT_H

#include "blob/blob.h"
#include "util/buf.h"
#include "util/mb.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum { EXP_MAILDIR, EXP_MBOX, EXP_EML } exp_format;
typedef enum { EXP_WRITTEN, EXP_SKIPPED, EXP_FAILED } exp_result;

typedef struct exp_out exp_out;

#define EXP_INDEX "mailbus-export.tsv"

/* One stored message location. */
typedef struct {
    uint64_t uidvalidity, uid, size;
    int64_t internal_date; /* unix seconds; 0: unknown */
    const char *sha;       /* 64 lowercase hex: the blob's name */
    const char *flags;     /* as stored (keywords maybe in mb_imap_escape form),
                            * sorted bytewise, separated by '\n'; "" for none */
} exp_msg;

/* Start an export into dir (created, mode 700, if missing): opens the new
 * index (<dir>/mailbus-export.tsv.tmp) and, for mbox, the previous one.
 * blobs is borrowed. *out: exp_out_free. */
mb_status exp_out_open(const char *dir, exp_format fmt, mb_blob_store *blobs, exp_out **out);
/* Make what was written durable (one syncfs) and put the new index in place
 * of the old one. */
mb_status exp_out_finish(exp_out *o);
/* Frees o; an unfinished index is removed (the previous one stays). */
void exp_out_free(exp_out *o);

/* folder: its display name (for the index); rel: where it goes, relative to
 * dir (cmd_export.c's folder paths: maildir "" for INBOX or ".a.b", mbox
 * "a/b.mbox", eml "a/b"). Creates the directories (the mbox file). */
mb_status exp_folder_begin(exp_out *o, const char *folder, const char *rel);
mb_status exp_message(exp_out *o, const exp_msg *m, exp_result *res);
mb_status exp_folder_end(exp_out *o);

/* Keywords a Maildir folder could not name (Dovecot's dovecot-keywords holds
 * at most 26 per folder, without spaces or control characters): each left
 * out of the file names, warned about once per folder. */
uint64_t exp_keywords_dropped(const exp_out *o);
/* Bytes written to files so far. */
uint64_t exp_bytes_written(const exp_out *o);

/* Append s with every control byte (< 0x20, 0x7f) as \xNN: how text goes
 * into the index, whose fields are tab-separated. */
mb_status exp_tsv_escape(mb_buf *b, const char *s);

#endif
