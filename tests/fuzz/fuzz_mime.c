/* fuzz_mime.c — the MIME parser end to end: mb_mime_parse of the input as
 * a whole message, then every attachment it found decoded (mb_mime_part_decode)
 * into a sink that only counts. */
#include "mime/mime.h"
#include "schemas/schema.h"

#include <stdint.h>
#include <string.h>

static mb_status count(void *ctx, const void *p, size_t n)
{
    (void)p;
    *(size_t *)ctx += n;
    return MB_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mb_mime_budget(10000); /* as the parse stage: no input may hold it longer */
    mb_rec_parsed p;
    memset(&p, 0, sizeof p);
    if (mb_mime_parse((const char *)data, size, 0, &p) == MB_OK) {
        for (size_t i = 0; i < p.attachments.n && i < 16; i++) {
            size_t n = 0;
            mb_mime_part_decode((const char *)data, size, p.attachments.v[i].part, count, &n);
        }
    }
    mb_mime_parsed_clear(&p);
    return 0;
}
