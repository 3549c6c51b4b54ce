/* fuzz_headers.c — the header-level parsers on their own, the first byte
 * choosing which: addresses (RFC 5322), dates, RFC 2047 words and charsets,
 * parameters (RFC 2231), the text and HTML snippets. */
#include "mime/mime.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    mb_mime_budget(10000);
    mb_mime_defects d;
    memset(&d, 0, sizeof d);
    mb_buf out = MB_BUF_INIT;
    char *s = NULL;
    switch (data[0] % 6) {
    case 0: {
        mb_addressv v = {NULL, 0};
        mb_mime_addresses_parse(in, n, &v, &d, "To");
        mb_mime_addresses_free(&v);
        break;
    }
    case 1: {
        int64_t t;
        mb_mime_date_parse(in, n, &t);
        break;
    }
    case 2:
        mb_mime_decode_header(in, n, &out, &d, "Subject");
        break;
    case 3: {
        mb_mime_params ps;
        if (mb_mime_params_parse(in, n, &ps) == MB_OK) {
            mb_mime_param_get(&ps, "filename", &s, &d);
            mb_mime_params_free(&ps);
        }
        break;
    }
    case 4:
    case 5: {
        /* the snippets take UTF-8 (the parser's output): make it so */
        if (mb_mime_to_utf8("utf-8", in, n, &out, NULL) == MB_OK)
            (data[0] % 6 == 4 ? mb_mime_snippet_text : mb_mime_snippet_html)(
                mb_buf_cstr(&out), out.len, &s);
        break;
    }
    }
    free(s);
    mb_buf_free(&out);
    mb_mime_defects_free(&d);
    return 0;
}
