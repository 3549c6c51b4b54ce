/* types.c — the descriptor of every record in records.h: one line per field.
 *
 * MB_FIELD checks at compile time that the declared field type matches the C
 * member's type, so a table cannot silently disagree with its struct. */
#include "schemas/internal.h"

#include <stddef.h>
#include <string.h>

#define MB_FTYPE_OF(x)                                                        \
    _Generic((x), char *: MB_F_STR, uint64_t: MB_F_U64, int64_t: MB_F_I64,    \
             bool: MB_F_BOOL, mb_bytes: MB_F_BYTES, mb_strv: MB_F_STRV,       \
             mb_u64v: MB_F_U64V, default: -1)
/* REC/RECV members are struct types the _Generic does not list (-1). */
#define MB_FTYPE_OK(T, m, ty)                                                 \
    (MB_FTYPE_OF(((T *)0)->m) == (int)(ty) ||                                 \
     (MB_FTYPE_OF(((T *)0)->m) == -1 && ((ty) == MB_F_REC || (ty) == MB_F_RECV)))
#define MB_FIELD(T, key, m, ty, sub)                                          \
    {key, #m, ty,                                                             \
     offsetof(T, m) + 0 * sizeof(char[MB_FTYPE_OK(T, m, ty) ? 1 : -1]), sub}

/* The generic codec reads every vector as {void *v; size_t n;}. */
_Static_assert(offsetof(mb_strv, n) == sizeof(void *), "vector layout");
_Static_assert(offsetof(mb_u64v, n) == sizeof(void *), "vector layout");
_Static_assert(offsetof(mb_addressv, n) == sizeof(void *), "vector layout");
_Static_assert(offsetof(mb_fetch_itemv, n) == sizeof(void *), "vector layout");
_Static_assert(offsetof(mb_attachmentv, n) == sizeof(void *), "vector layout");
_Static_assert(sizeof(mb_attachmentv) == sizeof(mb_anyvec), "vector layout");

#define TYPE(var, sch, nm, T, tbl)                                            \
    const mb_type var = {sch, nm, sizeof(T), tbl, MB_ARRAY_LEN(tbl)}

/* ---- nested ---- */
#define F(k, m, ty) MB_FIELD(mb_address, k, m, MB_F_##ty, NULL)
static const mb_field address_f[] = {
    F("n", name, STR),
    F("a", addr, STR),
};
#undef F
TYPE(mb_type_address, NULL, "address", mb_address, address_f);

#define F(k, m, ty) MB_FIELD(mb_fetch_item, k, m, MB_F_##ty, NULL)
static const mb_field fetch_item_f[] = {
    F("u", uid, U64),
    F("z", size, U64),
    F("d", internal_date, I64),
    F("f", flags, STRV),
};
#undef F
TYPE(mb_type_fetch_item, NULL, "fetch_item", mb_fetch_item, fetch_item_f);

#define F(k, m, ty) MB_FIELD(mb_attachment, k, m, MB_F_##ty, NULL)
static const mb_field attachment_f[] = {
    F("p", part, STR),
    F("n", filename, STR),
    F("t", content_type, STR),
    F("d", disposition, STR),
    F("i", content_id, STR),
    F("z", size, U64),
    F("h", sha256, STR),
};
#undef F
TYPE(mb_type_attachment, NULL, "attachment", mb_attachment, attachment_f);

/* ---- top level ---- */
#define F(k, m, ty) MB_FIELD(mb_rec_command, k, m, MB_F_##ty, NULL)
static const mb_field command_f[] = {
    F("o", op, STR),
    F("a", account, STR),
    F("j", job, STR),
    F("f", folders, STRV),
    F("s", since, STR),
    F("u", until, STR),
    F("da", defer_attachments, BOOL),
    F("i", id, U64),
    F("al", all, BOOL),
    F("sg", stage, STR),
    F("ot", older_than, STR),
    F("ev", every, STR),
    F("dc", discover, BOOL),
    F("or", origin, STR),
};
#undef F
TYPE(mb_type_command, "cmd/1", "command", mb_rec_command, command_f);

#define F(k, m, ty) MB_FIELD(mb_rec_fetch, k, m, MB_F_##ty, NULL)
static const mb_field fetch_f[] = {
    F("j", job, U64),
    F("a", account_id, U64),
    F("c", chunk_id, U64),
    F("fi", folder_id, U64),
    F("f", folder, STR),
    F("v", uidvalidity, U64),
    F("da", defer_attachments, BOOL),
    MB_FIELD(mb_rec_fetch, "i", items, MB_F_RECV, &mb_type_fetch_item),
};
#undef F
TYPE(mb_type_fetch, "fetch/1", "fetch", mb_rec_fetch, fetch_f);

#define F(k, m, ty) MB_FIELD(mb_rec_rawmsg, k, m, MB_F_##ty, NULL)
static const mb_field rawmsg_f[] = {
    F("j", job, U64),
    F("a", account_id, U64),
    F("c", chunk_id, U64),
    F("fi", folder_id, U64),
    F("v", uidvalidity, U64),
    F("u", uid, U64),
    F("h", sha256, STR),
    F("z", size, U64),
    F("d", internal_date, I64),
    F("f", flags, STRV),
    F("da", defer_attachments, BOOL),
};
#undef F
TYPE(mb_type_rawmsg, "parse/1", "rawmsg", mb_rec_rawmsg, rawmsg_f);

#define F(k, m, ty) MB_FIELD(mb_rec_parsed, k, m, MB_F_##ty, NULL)
#define ADDRS(k, m) MB_FIELD(mb_rec_parsed, k, m, MB_F_RECV, &mb_type_address)
static const mb_field parsed_f[] = {
    MB_FIELD(mb_rec_parsed, "r", raw, MB_F_REC, &mb_type_rawmsg),
    F("m", message_id, STR),
    F("ir", in_reply_to, STR),
    F("rf", references, STRV),
    F("th", thread_id, STR),
    F("s", subject, STR),
    F("dt", date, I64),
    ADDRS("fr", from),
    ADDRS("to", to),
    ADDRS("cc", cc),
    ADDRS("bc", bcc),
    ADDRS("rt", reply_to),
    F("sn", snippet, STR),
    MB_FIELD(mb_rec_parsed, "at", attachments, MB_F_RECV, &mb_type_attachment),
    F("df", defects, STRV),
    F("up", unparsed, BOOL),
};
#undef ADDRS
#undef F
TYPE(mb_type_parsed, "store/1", "parsed", mb_rec_parsed, parsed_f);

#define F(k, m, ty) MB_FIELD(mb_rec_avscan, k, m, MB_F_##ty, NULL)
static const mb_field avscan_f[] = {
    F("j", job, U64),
    F("a", account_id, U64),
    F("e", email_sha256, STR),
    F("h", sha256, STR),
    F("p", part, STR),
    F("z", size, U64),
};
#undef F
TYPE(mb_type_avscan, "avscan/1", "avscan", mb_rec_avscan, avscan_f);

#define F(k, m, ty) MB_FIELD(mb_rec_event, k, m, MB_F_##ty, NULL)
static const mb_field event_f[] = {
    F("j", job, U64),
    F("k", kind, STR),
    F("sg", stage, STR),
    F("st", status, STR),
    F("ts", ts_ms, I64),
    F("n", total, U64),
    F("nb", total_bytes, U64),
    F("sc", scanned, U64),
    F("fe", fetched, U64),
    F("pa", parsed, U64),
    F("so", stored, U64),
    F("b", bytes, U64),
    F("av", av_scanned, U64),
    F("ap", av_pending, U64),
    F("ai", av_infected, U64),
    F("er", errors, U64),
    F("e", error, STR),
};
#undef F
TYPE(mb_type_event, "event/1", "event", mb_rec_event, event_f);

#define F(k, m, ty) MB_FIELD(mb_rec_dead, k, m, MB_F_##ty, NULL)
static const mb_field dead_f[] = {
    F("sg", stage, STR),
    F("su", subject, STR),
    F("re", reason, STR),
    F("dc", deliveries, U64),
    F("sq", stream_seq, U64),
    F("ts", ts_ms, I64),
    F("hd", headers, STRV),
    F("d", data, BYTES),
};
#undef F
TYPE(mb_type_dead, "dead/1", "dead", mb_rec_dead, dead_f);

const mb_type *const mb_types_all[] = {
    &mb_type_command, &mb_type_fetch, &mb_type_rawmsg, &mb_type_parsed,
    &mb_type_avscan,  &mb_type_event, &mb_type_dead,   NULL,
};

const mb_type *mb_type_by_schema(const char *schema)
{
    if (!schema) return NULL;
    for (size_t i = 0; mb_types_all[i]; i++)
        if (!strcmp(mb_types_all[i]->schema, schema)) return mb_types_all[i];
    return NULL;
}
