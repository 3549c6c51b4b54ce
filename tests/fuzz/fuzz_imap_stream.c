/* fuzz_imap_stream.c — the bytes an IMAP server sends, through the guard
 * (sources/imap/guard.c) that frames them (lines, literals, tagged answers)
 * and cuts a server that breaks a limit. The first byte of the input picks
 * how the rest is cut into reads; fed whole or in reads of that size, the
 * guard must come to the same verdict, the same error and the same state,
 * and never let a line or a literal past its limit. */
#include "sources/imap/guard.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = data[0] % 64 + 1;
    const char *s = (const char *)data + 1;
    size--;
    /* No time passes, and the size of one answer cannot be reached by an
     * input (max_len 256 KiB), so only framing, line and literal limits act. */
    const mb_imap_limits lim = {
        .max_line = 512, .max_literal = 1u << 20, .grace_ms = 1000, .min_rate = 1};
    mb_imap_guard whole, parts;
    mb_imap_guard_init(&whole, &lim);
    mb_imap_guard_init(&parts, &lim);
    mb_imap_guard_sent(&whole, 0);
    mb_imap_guard_sent(&parts, 0);
    bool a = mb_imap_guard_recv(&whole, s, size, 0);
    bool b = true;
    for (size_t i = 0; i < size && b; i += step)
        b = mb_imap_guard_recv(&parts, s + i, size - i < step ? size - i : step, 0);
    if (a != b || strcmp(whole.error, parts.error) != 0)
        abort();
    if (a && (whole.literal_left != parts.literal_left || whole.line_len != parts.line_len ||
              whole.line_bytes != parts.line_bytes || whole.busy != parts.busy ||
              whole.ntail != parts.ntail || memcmp(whole.tail, parts.tail, whole.ntail) != 0))
        abort();
    if (a && (whole.literal_left > lim.max_literal || whole.line_len > lim.max_line))
        abort();
    long long n = mb_imap_line_literal(s, size);
    if (n < -1 || n > 999999999999LL)
        abort();
    return 0;
}
