/* pending.c — whether a work stream still holds records on a subject: the
 * coordinator's sweep asks before it calls a chunk's work lost. */
#include "bus/internal.h"

mb_status mb_bus_has_records(mb_bus *b, const char *stream_suffix, const char *subject_suffix,
                             bool *has)
{
    char stream[MB_BUS_PREFIX_MAX + 32], subject[MB_BUS_SUBJECT_MAX + 1];
    *has = false;
    mb_status rc = mb_bus_stream_name(b, stream_suffix, stream, sizeof stream);
    if (!rc) rc = mb_bus_subjectf(b, subject, sizeof subject, "%s", subject_suffix);
    if (rc)
        return rc;
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetLastMsg(&m, b->js, stream, subject, NULL, &jerr);
    if (s == NATS_OK) {
        *has = true;
        natsMsg_Destroy(m);
        return MB_OK;
    }
    if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr)
        return MB_OK;
    return mb_bus_nats_err(s, jerr, "last record on %s in %s", subject, stream);
}
