/* blob.h — the content-addressed store of raw .eml files.
 *
 * Layout: <root>/ab/<sha256hex>, where ab is the first byte (two hex
 * characters) of the lowercase hex SHA-256 of the file's bytes. One level,
 * not the design's ab/cd/: a second level means a new directory for almost
 * every blob of a fresh store, and creating 10,000 files that way took 7.3 s
 * against 2.7 s with one level (ext4 here; docs/ARCHITECTURE.md notes).
 * 256 directories hold 40k files each at 10M messages, which ext4's hashed
 * directories handle. In-progress writes
 * live in <root>/tmp/ (same file system, so publishing is a rename).
 *
 * Writing a message:
 *
 *     mb_blob_writer *w;
 *     mb_blob_writer_open(store, &w);
 *     while (more) if (mb_blob_write(w, p, n) != MB_OK) { mb_blob_writer_abort(w); ... }
 *     mb_blob_writer_commit(w, hex, &size);    // consumes w, success or not
 *     ... commit more messages ...
 *     mb_blob_sync(store);                      // one durability point per batch
 *     ... only now publish records that name these blobs ...
 *
 * DURABILITY CONTRACT (the fetch stage relies on this):
 *   - mb_blob_writer_commit() makes the blob visible at its final path but does
 *     NOT make it durable: it costs no fsync, so committing 500 messages costs
 *     500 renames, not 500 fsyncs.
 *   - After mb_blob_sync() returns MB_OK, every blob committed through this
 *     store before the call started (including commits that found the blob
 *     already present) is durable: its bytes and its directory entry survive a
 *     power loss. Publish downstream records only after that.
 *   - If mb_blob_sync() fails, durability of the pending blobs is unknown (on
 *     Linux a failed fsync may drop the dirty pages). Do not publish or ack;
 *     the safe reaction is to exit and let redelivery fetch the batch again.
 *   - A crash between commit and sync can leave a truncated or empty file at a
 *     final path. Commit therefore never trusts an existing blob blindly: it
 *     checks the size and SHA-256 of the existing file, keeps it if it matches
 *     (the normal dedup case — an intact blob is never rewritten), and replaces
 *     it atomically only if it is damaged (logged as a warning).
 *   - A commit that finds the blob already there (dedup) sets the blob's mtime
 *     to now: "recently wanted" is visible on disk, which is what keeps the
 *     cleanup job (mb_blob_gc_remove) away from it. If the blob vanished
 *     between the check and the touch (the cleanup moved it out of sight),
 *     the commit publishes its own copy instead: a successful commit always
 *     leaves the blob at its final path.
 *
 * Sync strategies (mb_blob_set_sync_mode): MB_BLOB_SYNC_FS uses one syncfs(2)
 * on the store's file system (default: measured fastest, see blob.c);
 * MB_BLOB_SYNC_FILES fdatasyncs every pending blob and fsyncs every touched
 * directory.
 *
 * Threads: a store may be shared by threads; a writer belongs to one thread.
 * Ownership: every object returned through an out-parameter is owned by the
 * caller and released with its _free / _abort / _commit / _unmap. */
#ifndef MB_BLOB_H
#define MB_BLOB_H

#include "util/mb.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct mb_blob_store mb_blob_store;
typedef struct mb_blob_writer mb_blob_writer;
typedef struct mb_blob_mapping mb_blob_mapping; /* a function is named mb_blob_map */

typedef enum {
    MB_BLOB_SYNC_FS,    /* syncfs(2) on the store's file system */
    MB_BLOB_SYNC_FILES, /* fdatasync each pending blob + fsync touched dirs */
} mb_blob_sync_mode;

/* Temp files older than this at open time are crash leftovers (a live writer
 * never takes this long) and are removed by mb_blob_store_open(), as are, at
 * once, those of a writer on this host whose process no longer exists (its
 * pid is free, taken by a process started after the file was named, or a
 * zombie's).
 * A cleanup tombstone (see mb_blob_gc_remove) left by a dead or stale
 * cleanup is put back at its final path instead (or dropped if a fresh copy
 * is there): it may still be wanted, and restoring errs on the safe side. */
#define MB_BLOB_STALE_TMP_MINUTES 60

/* Open (creating root and root/tmp if needed) and clean stale temp files. */
mb_status mb_blob_store_open(const char *root, mb_blob_store **out);
void mb_blob_store_free(mb_blob_store *s);
const char *mb_blob_store_root(const mb_blob_store *s);
void mb_blob_set_sync_mode(mb_blob_store *s, mb_blob_sync_mode mode);

/* Remove files in root/tmp/ last modified more than older_than_minutes ago,
 * and those of dead writers on this host (0 removes all — only safe when no
 * other writer shares the store). */
mb_status mb_blob_cleanup_tmp(mb_blob_store *s, int older_than_minutes, unsigned *removed);

/* Streaming writer: hashes incrementally, buffers at most 64 KB in memory. */
mb_status mb_blob_writer_open(mb_blob_store *s, mb_blob_writer **out);
/* On failure the writer stays valid and must be aborted. */
mb_status mb_blob_write(mb_blob_writer *w, const void *p, size_t n);
/* Publish at <root>/ab/<hex>. Always consumes w (frees it); on failure
 * nothing is left at the final path and the temp file is removed. */
mb_status mb_blob_writer_commit(mb_blob_writer *w, char hex_out[65], uint64_t *size_out);
/* Discard the temp file and free w. NULL is a no-op. */
void mb_blob_writer_abort(mb_blob_writer *w);

/* Make every blob committed before this call durable (see contract above). */
mb_status mb_blob_sync(mb_blob_store *s);
/* Blobs committed since the last successful sync. */
size_t mb_blob_pending(mb_blob_store *s);

/* Path of a blob; MB_ERR_INVALID unless hex is exactly 64 lowercase hex
 * characters, MB_ERR_TOOBIG if outlen is too small. */
mb_status mb_blob_path(const mb_blob_store *s, const char *hex, char *out, size_t outlen);
mb_status mb_blob_exists(mb_blob_store *s, const char *hex, bool *out);

/* Read-only mapping of a blob (MADV_SEQUENTIAL). An empty blob maps to a
 * zero-length, non-NULL data pointer. *m owns the mapping; data is valid until
 * mb_blob_unmap(*m). MB_ERR_NOTFOUND if absent. */
mb_status mb_blob_map(mb_blob_store *s, const char *hex, const char **data, size_t *len,
                      mb_blob_mapping **m);
void mb_blob_unmap(mb_blob_mapping *m);

/* Recompute the SHA-256 of a stored blob: MB_OK if it matches its name,
 * MB_ERR_INVALID if damaged, MB_ERR_NOTFOUND if absent. */
mb_status mb_blob_verify(mb_blob_store *s, const char *hex);

/* Fault injection (tests): the n-th next write/fsync/rename/mkdir issued by
 * this store (n >= 1) fails with errno_value; n = 0 disarms. One-shot. */
void mb_blob_fault_after(mb_blob_store *s, int n, int errno_value);

/* ---- garbage collection (the cleanup job, stages/store/cleanup.h) --------
 *
 * Removing a blob races with a fetch that is about to reference it again
 * (same bytes, another account or the message back on the server): fetch
 * commits (a dedup hit touches the mtime, see the contract above), and the
 * emails row that references it is written by store possibly much later.
 * mb_blob_gc_remove removes a blob only when that cannot be happening:
 *
 *   1. its mtime is before `cutoff` (the caller passes a time before the
 *      start of its pass, before the retention, and before the oldest job
 *      that may still reference the blob: nothing wanted it since);
 *   2. it is renamed out of sight (root/tmp/g.<pid>.<seq>.<time>.<hex>.<host>,
 *      a tombstone) — from now on a fetch sees no blob and publishes a fresh
 *      copy, so it never counts on this file;
 *   3. the tombstone's mtime is read again (a touch that landed between 1 and
 *      2 is seen) and `check` asks the database again whether an email
 *      references the blob now (a reference committed between the caller's
 *      first look and 2 is seen);
 *   4. only then is the tombstone unlinked; otherwise it is put back with a
 *      no-replace rename, and if a fresh copy took its place meanwhile (same
 *      bytes: content addressing) the tombstone is dropped instead.
 *
 * A crash between 2 and 4 leaves a tombstone: the next store open on this
 * host (its owner's pid is gone) or any open an hour later restores it. */

typedef enum {
    MB_BLOB_GC_REMOVED,    /* unlinked (dry run: would be) */
    MB_BLOB_GC_ABSENT,     /* there was no such blob */
    MB_BLOB_GC_RECENT,     /* modified at or after cutoff: kept */
    MB_BLOB_GC_REFERENCED, /* check said it is referenced: kept */
} mb_blob_gc_result;

/* Called with the blob out of sight (step 3): set *referenced. An error
 * keeps the blob and is returned by mb_blob_gc_remove. */
typedef mb_status (*mb_blob_gc_check_fn)(void *ctx, const char *hex, bool *referenced);

/* The store file system's "now" (the mtime a touch would give a blob right
 * now, read back from root/tmp/ after touching it): the clock blob mtimes
 * are compared with, even on a volume shared by hosts whose clocks differ. */
mb_status mb_blob_gc_clock(mb_blob_store *s, struct timespec *now);
/* Remove blob hex if nothing wants it (steps above). check may not be NULL.
 * MB_ERR_INVALID for a bad name; MB_ERR_IO (blob kept) on a file system
 * error. Removals become durable with the next mb_blob_sync(). */
mb_status mb_blob_gc_remove(mb_blob_store *s, const char *hex, const struct timespec *cutoff,
                            mb_blob_gc_check_fn check, void *ctx, mb_blob_gc_result *out);
/* Dry run: what mb_blob_gc_remove would decide from the mtime alone
 * (REMOVED, ABSENT or RECENT); touches nothing. */
mb_status mb_blob_gc_probe(mb_blob_store *s, const char *hex, const struct timespec *cutoff,
                           mb_blob_gc_result *out);
/* Test hook: fn(arg, hex) runs in mb_blob_gc_remove between its mtime
 * check and the rename (where a concurrent fetch could land). NULL disarms. */
void mb_blob_gc_test_hook(mb_blob_store *s, void (*fn)(void *arg, const char *hex), void *arg);

#endif
