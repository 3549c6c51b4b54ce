/* fuzz_records.c — bus records and commands from outside: the input decoded
 * as msgpack for every schema (mb_rec_decode_any, and each type by name),
 * and as the JSON of a command (what `nats req` sends). */
#include "schemas/schema.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const mb_type *t = NULL;
    void *rec = NULL;
    if (mb_rec_decode_any(data, size, &t, &rec) == MB_OK) {
        mb_buf b = MB_BUF_INIT;
        mb_rec_encode(t, rec, &b); /* what decodes must encode */
        mb_buf_free(&b);
        mb_rec_free(t, rec);
        free(rec);
    }
    for (size_t i = 0; mb_types_all[i]; i++) {
        void *r = calloc(1, mb_types_all[i]->size);
        if (!r)
            return 0;
        if (mb_rec_decode(mb_types_all[i], data, size, r) == MB_OK)
            mb_rec_free(mb_types_all[i], r);
        free(r);
    }
    mb_rec_command c;
    memset(&c, 0, sizeof c);
    if (mb_rec_from_json(&mb_type_command, (const char *)data, size, &c) == MB_OK)
        mb_rec_free(&mb_type_command, &c);
    return 0;
}
