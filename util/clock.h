/* clock.h — monotonic milliseconds and plain sleeps, for timeouts, leases,
 * waits and rate limits (never for dates: those are wall-clock). */
#ifndef MB_CLOCK_H
#define MB_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC (not affected by clock changes). */
int64_t mb_mono_ms(void);
/* Sleep ms milliseconds; a signal may end it early. */
void mb_nap_ms(int64_t ms);

#endif
