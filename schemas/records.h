/* records.h — every record that crosses a stage boundary, as C structs.
 *
 * Each struct has exactly one descriptor (mb_type, see schema.h) from which
 * msgpack encode, bounds-checked decode, JSON rendering and JSON parsing all
 * come; nobody writes msgpack by hand outside schemas/.
 *
 * Ownership: a record owns every pointer in it (strings, arrays, bytes).
 * mb_rec_free(type, rec) releases them; a zeroed struct is an empty record.
 * Strings are NUL-terminated UTF-8 or NULL (absent).
 *
 * Top-level records carry their schema name ("fetch/1") under key "t"; the
 * same name travels in the Mailbus-Schema NATS header. */
#ifndef MB_RECORDS_H
#define MB_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Owned vectors. Layout {v, n} is relied on by the generic codec. */
typedef struct { char **v; size_t n; } mb_strv;
typedef struct { uint64_t *v; size_t n; } mb_u64v;
typedef struct { unsigned char *p; size_t n; } mb_bytes;

/* A mailbox: display name (decoded to UTF-8, may be NULL) and address. */
typedef struct { char *name; char *addr; } mb_address;
typedef struct { mb_address *v; size_t n; } mb_addressv;

/* cmd/1 — a command (import start/pause/resume/cancel/status, sync start,
 * schedule set, dlq list/show/retry/purge). Arrives as msgpack or JSON on <p>.cmd.<op>. */
typedef struct {
    char *op;               /* "o": "import.start", "import.cancel", ... */
    char *account;          /* "a": account name or id */
    char *job;              /* "j": job id (decimal) for job commands */
    mb_strv folders;        /* "f": folders to include (empty: all) */
    char *since;            /* "s": YYYY-MM-DD, inclusive */
    char *until;            /* "u": YYYY-MM-DD, exclusive */
    bool defer_attachments; /* "da" */
    uint64_t id;            /* "i": dead letter (DLQ sequence) for dlq.show/retry */
    bool all;               /* "al": dlq.retry every dead letter (of stage) */
    char *stage;            /* "sg": dlq.*: only this stage's dead letters */
    char *older_than;       /* "ot": dlq.purge: only those older than 30s, 15m, 12h, 7d */
    char *every;            /* "ev": schedule.set: 10m, 2h, 1d, off, or auto */
    bool discover;          /* "dc": a sync of some folders also looks for folders
                             * created, renamed or deleted on the server */
    char *origin;           /* "or": who started a job: NULL (a command),
                             * "scheduler", "idle" */
} mb_rec_command;

/* One message the scan found, carried in a fetch task. */
typedef struct {
    uint64_t uid;          /* "u" */
    uint64_t size;         /* "z": RFC822.SIZE */
    int64_t internal_date; /* "d": unix seconds, UTC */
    mb_strv flags;         /* "f": \Seen, \Flagged, keywords */
} mb_fetch_item;
typedef struct { mb_fetch_item *v; size_t n; } mb_fetch_itemv;

/* fetch/1 — scan -> fetch: one chunk (<= 500 messages, <= 32 MB) of one folder. */
typedef struct {
    uint64_t job;           /* "j" */
    uint64_t account_id;    /* "a" */
    uint64_t chunk_id;      /* "c" */
    uint64_t folder_id;     /* "fi" */
    char *folder;           /* "f": folder name as on the server */
    uint64_t uidvalidity;   /* "v" */
    bool defer_attachments; /* "da" */
    mb_fetch_itemv items;   /* "i" */
} mb_rec_fetch;

/* parse/1 — fetch -> parse: one raw message now in the blob store. */
typedef struct {
    uint64_t job;           /* "j" */
    uint64_t account_id;    /* "a" */
    uint64_t chunk_id;      /* "c" */
    uint64_t folder_id;     /* "fi" */
    uint64_t uidvalidity;   /* "v" */
    uint64_t uid;           /* "u" */
    char *sha256;           /* "h": hex SHA-256 of the raw bytes = blob name */
    uint64_t size;          /* "z": raw bytes */
    int64_t internal_date;  /* "d": unix seconds */
    mb_strv flags;          /* "f" */
    bool defer_attachments; /* "da" */
} mb_rec_rawmsg;

/* Attachment metadata; the bytes stay in the .eml. */
typedef struct {
    char *part;         /* "p": MIME part path, IMAP style "2", "1.3" */
    char *filename;     /* "n": decoded to UTF-8, may be NULL */
    char *content_type; /* "t": lowercase type/subtype */
    char *disposition;  /* "d": "attachment", "inline" or NULL */
    char *content_id;   /* "i": without <> */
    uint64_t size;      /* "z": decoded bytes */
    char *sha256;       /* "h": hex SHA-256 of the decoded bytes */
} mb_attachment;
typedef struct { mb_attachment *v; size_t n; } mb_attachmentv;

/* store/1 — parse -> store: the raw message ref plus what parse extracted. */
typedef struct {
    mb_rec_rawmsg raw;       /* "r" */
    char *message_id;        /* "m": without <> */
    char *in_reply_to;       /* "ir" */
    mb_strv references;      /* "rf" */
    char *thread_id;         /* "th" */
    char *subject;           /* "s": UTF-8 */
    int64_t date;            /* "dt": unix seconds UTC (internal date if none) */
    mb_addressv from;        /* "fr" */
    mb_addressv to;          /* "to" */
    mb_addressv cc;          /* "cc" */
    mb_addressv bcc;         /* "bc" */
    mb_addressv reply_to;    /* "rt" */
    char *snippet;           /* "sn": <= 256 chars of plain text */
    mb_attachmentv attachments; /* "at" */
    mb_strv defects;         /* "df": what could not be parsed */
    bool unparsed;           /* "up": parse gave up (budget, watchdog): raw only */
} mb_rec_parsed;

/* avscan/1 — parse/store -> avscan: one attachment to scan. */
typedef struct {
    uint64_t job;        /* "j" */
    uint64_t account_id; /* "a" */
    char *email_sha256;  /* "e": blob holding the attachment */
    char *sha256;        /* "h": SHA-256 of the decoded attachment */
    char *part;          /* "p": MIME part path inside the blob */
    uint64_t size;       /* "z" */
} mb_rec_avscan;

/* event/1 — progress, completion and errors on <p>.events.<job>.<kind>. */
typedef struct {
    uint64_t job;           /* "j" */
    char *kind;             /* "k": "progress", "completed", "failed", "error" */
    char *stage;            /* "sg": stage that emitted it */
    char *status;           /* "st": job status */
    int64_t ts_ms;          /* "ts": unix milliseconds */
    uint64_t total;         /* "n":  messages to import */
    uint64_t total_bytes;   /* "nb" */
    uint64_t scanned;       /* "sc" */
    uint64_t fetched;       /* "fe" */
    uint64_t parsed;        /* "pa" */
    uint64_t stored;        /* "so" */
    uint64_t bytes;         /* "b":  bytes fetched */
    uint64_t av_scanned;    /* "av" */
    uint64_t av_pending;    /* "ap" */
    uint64_t av_infected;   /* "ai" */
    uint64_t errors;        /* "er" */
    char *error;            /* "e": error text */
} mb_rec_event;

/* dead/1 — a record that exhausted its deliveries or failed permanently. */
typedef struct {
    char *stage;        /* "sg" */
    char *subject;      /* "su": original subject */
    char *reason;       /* "re" */
    uint64_t deliveries;/* "dc" */
    uint64_t stream_seq;/* "sq" */
    int64_t ts_ms;      /* "ts" */
    mb_strv headers;    /* "hd": "Name: value" of the original headers */
    mb_bytes data;      /* "d": the original payload */
} mb_rec_dead;

#endif
