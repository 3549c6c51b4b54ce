/* schema.h — record descriptors and the generic codec built on them.
 *
 * Every record in records.h is described once by an mb_type: a table of
 * fields (short msgpack key, long JSON name, type, offset). Encode, decode,
 * JSON rendering, JSON parsing and freeing are generic walkers over that
 * table, so adding a field is adding one line to types.c.
 *
 * Wire format: a msgpack map with short string keys. Top-level records carry
 * their schema name under "t" (written first; a reader takes the first "t"
 * and ignores any later one). Absent values (NULL strings,
 * zero numbers, false, empty vectors/bytes) are omitted by the encoder and
 * read back as NULL/0/false/empty; nil is accepted as "absent" for any field.
 * Unknown keys are skipped, so a newer writer can add fields.
 *
 * JSON: long names as keys, plus "schema" for top-level records; NULL strings
 * render as null; mb_bytes render as standard base64 (RFC 4648, padded).
 * mb_rec_from_json accepts both long names and short keys.
 *
 * Strings are NUL-terminated: a msgpack/JSON string containing a NUL byte is
 * rejected. Strings are otherwise passed through as bytes (no UTF-8 check on
 * decode); the JSON renderer replaces invalid UTF-8 with U+FFFD. */
#ifndef MB_SCHEMA_H
#define MB_SCHEMA_H

#include "schemas/records.h"
#include "util/buf.h"
#include "util/mb.h"

/* Limits enforced by decode, from_json and (so nothing we write can be
 * refused by a reader) encode. */
#define MB_REC_MAX_BYTES (16u * 1024 * 1024) /* whole record; also one mb_bytes */
#define MB_REC_MAX_STR (1024u * 1024)        /* one string */
#define MB_REC_MAX_ARRAY 100000u             /* elements of one vector */
#define MB_REC_MAX_DEPTH 16                  /* map/array nesting */

typedef enum {
    MB_F_STR,   /* char *  (NULL = absent) */
    MB_F_U64,   /* uint64_t */
    MB_F_I64,   /* int64_t */
    MB_F_BOOL,  /* bool */
    MB_F_BYTES, /* mb_bytes */
    MB_F_STRV,  /* mb_strv (no NULL elements) */
    MB_F_U64V,  /* mb_u64v */
    MB_F_REC,   /* embedded struct described by sub */
    MB_F_RECV,  /* {T *v; size_t n;} of sub->size elements */
} mb_ftype;

struct mb_type;

typedef struct mb_field {
    const char *key;  /* short msgpack key */
    const char *name; /* long name: JSON key and error messages */
    mb_ftype type;
    size_t off;       /* offsetof the member */
    const struct mb_type *sub; /* REC / RECV element type, else NULL */
} mb_field;

typedef struct mb_type {
    const char *schema; /* "fetch/1"; NULL for nested types */
    const char *name;   /* C-ish name for messages: "fetch", "attachment" */
    size_t size;        /* sizeof the struct */
    const mb_field *fields;
    size_t nfields;
} mb_type;

/* Top-level records. */
extern const mb_type mb_type_command; /* cmd/1    mb_rec_command */
extern const mb_type mb_type_fetch;   /* fetch/1  mb_rec_fetch */
extern const mb_type mb_type_rawmsg;  /* parse/1  mb_rec_rawmsg */
extern const mb_type mb_type_parsed;  /* store/1  mb_rec_parsed */
extern const mb_type mb_type_avscan;  /* avscan/1 mb_rec_avscan */
extern const mb_type mb_type_event;   /* event/1  mb_rec_event */
extern const mb_type mb_type_dead;    /* dead/1   mb_rec_dead */
/* Nested. */
extern const mb_type mb_type_address;
extern const mb_type mb_type_fetch_item;
extern const mb_type mb_type_attachment;

/* NULL-terminated list of the top-level types. */
extern const mb_type *const mb_types_all[];

/* The top-level type named schema ("store/1"), or NULL. */
const mb_type *mb_type_by_schema(const char *schema);

/* Append rec's msgpack encoding to out. On error out is left as it was. */
mb_status mb_rec_encode(const mb_type *t, const void *rec, mb_buf *out);

/* Decode one msgpack record into rec (zeroed first; caller owns members,
 * release with mb_rec_free). On error rec is left zeroed and mb_err_last()
 * names the schema and field path. A top-level type requires "t" == schema. */
mb_status mb_rec_decode(const mb_type *t, const void *data, size_t len, void *rec);

/* Decode a record of whatever schema its "t" names. *rec is malloc'd; free
 * with mb_rec_free(*type, *rec) then free(*rec). */
mb_status mb_rec_decode_any(const void *data, size_t len, const mb_type **type, void **rec);

/* Read the "t" of a msgpack record without decoding it (schema gets at most
 * size-1 bytes, NUL-terminated). */
mb_status mb_rec_peek_schema(const void *data, size_t len, char *schema, size_t size);

/* Decode msgpack or JSON: input whose first non-blank byte is '{' is JSON
 * (that byte is a msgpack fixint, so no msgpack record starts with it).
 * For command handlers that accept `nats req ... '{"op":...}'`. */
mb_status mb_rec_decode_auto(const mb_type *t, const void *data, size_t len, void *rec);

/* Append rec as one line of JSON (no newline). */
mb_status mb_rec_to_json(const mb_type *t, const void *rec, mb_buf *out);
/* Same, indented with two spaces per level, for humans. */
mb_status mb_rec_to_json_pretty(const mb_type *t, const void *rec, mb_buf *out);

/* Parse a JSON object into rec (zeroed first). Keys may be long names or
 * short keys; unknown keys are ignored; "schema"/"t", if present at the top
 * level, must equal t->schema. On error rec is left zeroed. */
mb_status mb_rec_from_json(const mb_type *t, const char *json, size_t len, void *rec);

/* Free every member and re-zero rec (not rec itself). NULL-safe. */
void mb_rec_free(const mb_type *t, void *rec);

#endif
