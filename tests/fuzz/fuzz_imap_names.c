/* fuzz_imap_names.c — folder names from an IMAP server: modified UTF-7
 * (RFC 3501 5.1.3) decoding, the escaping of names that are not valid UTF-8,
 * and the round trip back to the server's bytes. */
#include "sources/imap/imap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *raw = malloc(size + 1);
    if (!raw)
        return 0;
    memcpy(raw, data, size);
    raw[size] = '\0'; /* names come NUL-terminated from libetpan */
    char *s = NULL, *name = NULL, *display = NULL, *back = NULL;
    bool esc;
    mb_imap_utf7_decode(raw, &s);
    free(s);
    if (mb_imap_folder_names(raw, &name, &display, &esc) == MB_OK) {
        size_t n;
        /* the escaped name must give the server's bytes back */
        if (mb_imap_unescape(name, &back, &n) == MB_OK && strlen(raw) == n &&
            memcmp(back, raw, n) != 0)
            abort();
    }
    free(name);
    free(display);
    free(back);
    free(raw);
    return 0;
}
