/* env.c — reading configuration from the environment (see env.h). */
#include "util/env.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const char *mb_env(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

mb_status mb_env_int(const char *name, long dflt, long min, long max, long *out)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = dflt;
        return MB_OK;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < min || n > max)
        return mb_errf(MB_ERR_CONFIG, "%s=%s: expected an integer in [%ld, %ld]",
                       name, v, min, max);
    *out = n;
    return MB_OK;
}

mb_status mb_env_require(const char *name, const char **out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return mb_errf(MB_ERR_CONFIG, "%s is not set (see `scripts/services env`)", name);
    *out = v;
    return MB_OK;
}

mb_status mb_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s)
        return mb_errf(MB_ERR_INVALID, "empty number");
    uint64_t n = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return mb_errf(MB_ERR_INVALID, "'%s' is not a non-negative integer", s);
        unsigned d = (unsigned)(*p - '0');
        if (n > (max - d) / 10)
            return mb_errf(MB_ERR_INVALID, "'%s' is out of range (max %llu)", s,
                           (unsigned long long)max);
        n = n * 10 + d;
    }
    *out = n;
    return MB_OK;
}

mb_status mb_env_double(const char *name, double dflt, double min, double max, double *out)
{
    const char *v = getenv(name);
    if (!v || !*v) {
        *out = dflt;
        return MB_OK;
    }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || !(x >= min && x <= max))
        return mb_errf(MB_ERR_CONFIG, "%s=%s: expected a number in [%g, %g]", name, v, min, max);
    *out = x;
    return MB_OK;
}

mb_status mb_parse_duration(const char *s, int64_t *seconds)
{
    uint64_t n = 0;
    size_t i = 0;
    for (; s && s[i] >= '0' && s[i] <= '9' && n < 100000000; i++)
        n = n * 10 + (uint64_t)(s[i] - '0');
    const char *u = s ? s + i : "";
    int64_t unit = !*u || !strcmp(u, "s") ? 1 : !strcmp(u, "m") ? 60 : !strcmp(u, "h") ? 3600
                   : !strcmp(u, "d") ? 86400 : 0;
    if (!i || !unit)
        return mb_errf(MB_ERR_INVALID, "duration '%s': expected a number of seconds or 30s, "
                                       "15m, 12h, 7d", s ? s : "");
    *seconds = (int64_t)n * unit;
    return MB_OK;
}
