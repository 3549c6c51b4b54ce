/* env.h — the environment the binaries read (printed by `scripts/services env`).
 *
 *   MAILBUS_NATS_URL         nats://127.0.0.1:14222
 *   MAILBUS_PREFIX           subject prefix, default "mailbus"
 *   MAILBUS_PG_DSN           postgresql://mailbus@127.0.0.1:15432/mailbus
 *   MAILBUS_IMAP_HOST/PORT   the local Dovecot (tests and demo)
 *   MAILBUS_CLAMD_SOCKET     clamd unix socket
 *   MAILBUS_BLOB_DIR         root of the .eml blob store
 *   MAILBUS_SECRET_KEY_FILE  32-byte key for credentials at rest
 */
#ifndef MB_ENV_H
#define MB_ENV_H

#include "util/mb.h"

#define MB_DEFAULT_NATS_URL "nats://127.0.0.1:14222"
#define MB_DEFAULT_PREFIX "mailbus"
#define MB_DEFAULT_PG_DSN "postgresql://mailbus@127.0.0.1:15432/mailbus"

/* getenv with a default for unset or empty variables. */
const char *mb_env(const char *name, const char *dflt);
/* Integer variable; MB_ERR_CONFIG naming the variable if not a number in
 * [min, max]. Unset gives dflt. */
mb_status mb_env_int(const char *name, long dflt, long min, long max, long *out);
/* Floating-point variable, likewise. */
mb_status mb_env_double(const char *name, double dflt, double min, double max, double *out);
/* A variable that must be set: MB_ERR_CONFIG naming it otherwise. */
mb_status mb_env_require(const char *name, const char **out);

/* "90", "30s", "15m", "12h", "7d" to seconds (at most 10^8 units);
 * MB_ERR_INVALID naming s otherwise. */
mb_status mb_parse_duration(const char *s, int64_t *seconds);

/* Parse a non-negative decimal integer that must fit in [0, max]. */
mb_status mb_parse_u64(const char *s, uint64_t max, uint64_t *out);

#endif
