/* verify.h — what the mail server has now against what mailbus holds, for
 * one account, folder by folder (`mailbus verify`).
 *
 * Only cheap server calls: LIST, then per folder EXAMINE and the scan's
 * FETCH of UID, size and flags in windows — never a body. The server's
 * listing (ascending UIDs) is merged with the folder's stored locations,
 * read from Postgres a page at a time in UID order, so memory stays flat
 * on a folder of a million messages (only the UIDs found missing are kept,
 * to look up why in one query per folder).
 *
 * Each difference goes to opts->on_diff as it is found, and is counted by
 * kind in the result:
 *   not_stored    on the server, not stored; detail says why, from the jobs'
 *                 records (given up on, with the reason; not stored yet by a
 *                 running job; new since the last import or sync; stored but
 *                 its location row is gone; "no record of it", a bug)
 *   gone          stored, no longer on the server (a sync is due)
 *   flags         flags differ (server's, then stored)
 *   blob_missing  stored, but its .eml is not in the blob store
 *   blob_corrupt  (deep only) its .eml no longer hashes to its name
 *   unscanned     attachments never scanned, or scanned with an error
 *   folder_new    a folder on the server that is not stored (its messages
 *                 are also reported, as not_stored)
 *   folder_gone   a stored folder the server no longer lists
 *   uidvalidity   a folder stored under another UIDVALIDITY than the server's:
 *                 one difference per old UIDVALIDITY, with how many stored
 *                 messages it holds; the server's messages are not_stored
 */
#ifndef MB_STAGE_VERIFY_H
#define MB_STAGE_VERIFY_H

#include "blob/blob.h"
#include "db/db.h"
#include "schemas/records.h"
#include "sources/account.h"
#include "sources/source.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    MB_VERIFY_NOT_STORED,
    MB_VERIFY_GONE,
    MB_VERIFY_FLAGS,
    MB_VERIFY_BLOB_MISSING,
    MB_VERIFY_BLOB_CORRUPT,
    MB_VERIFY_UNSCANNED,
    MB_VERIFY_FOLDER_NEW,
    MB_VERIFY_FOLDER_GONE,
    MB_VERIFY_UIDVALIDITY,
    MB_VERIFY_KINDS
} mb_verify_kind;

/* "not_stored", "gone", ... as above. */
const char *mb_verify_kind_name(mb_verify_kind k);
/* Whether a difference of this kind means mail is missing or damaged in
 * mailbus (not only a sync that is due). */
bool mb_verify_kind_missing(mb_verify_kind k);

/* One difference; valid during the callback only. */
typedef struct {
    mb_verify_kind kind;
    const char *folder;   /* display name */
    uint64_t uid;         /* 0: the folder itself */
    const char *detail;   /* never NULL */
    uint64_t folder_id;   /* the stored folder, 0 if not stored */
    uint64_t uidvalidity; /* the server's */
    bool repair;          /* fetching the message again mends it (repair_items); the
                             rest is a sync's to mend, or (unscanned) avscan's */
    const char *blob;     /* blob_missing / blob_corrupt: its SHA-256 (hex) */
} mb_verify_diff;

typedef struct {
    bool deep;                    /* hash every stored blob */
    const mb_strv *folders;       /* only these (display or server names); NULL or empty: all */
    void (*on_diff)(void *ctx, const mb_verify_diff *d); /* may be NULL */
    void *ctx;
} mb_verify_opts;

typedef struct {
    uint64_t folders;         /* folders compared */
    uint64_t server_messages; /* listed by the server */
    uint64_t stored_messages; /* stored locations looked at */
    uint64_t count[MB_VERIFY_KINDS];
    uint64_t missing;         /* differences whose kind is missing */
    uint64_t total;           /* all differences */
} mb_verify_result;

/* Verify account a over src (a source for it, not yet connected: connects).
 * blobs: the blob store the account's mail is in. Differences are not
 * errors: the status is MB_OK when the comparison ran to its end. */
mb_status mb_verify_account(mb_db *db, mb_blob_store *blobs, const mb_account *a, mb_source *src,
                            const mb_verify_opts *o, mb_verify_result *r);

/* Record a finished verification in verify_runs (the account's latest
 * completed job is the one it vouches for; `mailbus jobs` shows it). */
mb_status mb_verify_record(mb_db *db, const mb_account *a, const mb_verify_result *r,
                           bool deep, int64_t started_unix, int64_t ms);

#endif
