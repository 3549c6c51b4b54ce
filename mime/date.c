/* date.c — Date header to UTC unix seconds.
 *
 * RFC 5322 dates plus the forms seen in old and broken mail: missing
 * weekday, 2- and 3-digit years, missing seconds, named zones (UT, GMT, Z,
 * EST/EDT..PST/PDT, a few European/Asian ones, military letters = 0 as RFC
 * 5322 says), zone in a comment, asctime order ("Wed Dec 18 18:55:21 1996"),
 * ISO 8601 ("2023-01-02T03:04:05Z"), and junk after the zone. Tokens are
 * classified by shape, so the order of fields barely matters. */
#include "mime/mime.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static const struct { const char *n; int mins; } zones[] = {
    {"UT", 0}, {"UTC", 0}, {"GMT", 0}, {"Z", 0}, {"WET", 0},
    {"EST", -300}, {"EDT", -240}, {"CST", -360}, {"CDT", -300},
    {"MST", -420}, {"MDT", -360}, {"PST", -480}, {"PDT", -420},
    {"AKST", -540}, {"AKDT", -480}, {"HST", -600},
    {"CET", 60}, {"CEST", 120}, {"MET", 60}, {"MEST", 120}, {"MEZ", 60}, {"MESZ", 120},
    {"BST", 60}, {"EET", 120}, {"EEST", 180}, {"WEST", 60}, {"MSK", 180},
    {"JST", 540}, {"KST", 540}, {"HKT", 480}, {"SGT", 480}, {"AEST", 600}, {"AEDT", 660},
    {"NZST", 720}, {"NZDT", 780},
};

static int month_of(const char *t, size_t n)
{
    static const char *const m[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                    "jul", "aug", "sep", "oct", "nov", "dec"};
    if (n < 3)
        return 0;
    for (int i = 0; i < 12; i++)
        if (!strncasecmp(t, m[i], 3))
            return i + 1;
    return 0;
}

/* The decimal number at *p (at most 4 digits, never past end); *p moves
 * past every digit. */
static int bounded_num(const char **p, const char *end)
{
    int v = 0, n = 0;
    for (; *p < end && isdigit((unsigned char)**p); (*p)++)
        if (n++ < 4)
            v = v * 10 + (**p - '0');
    return v;
}

mb_status mb_mime_date_parse(const char *in, size_t n, int64_t *out)
{
    int day = -1, mon = 0, hh = -1, mi = -1, ss = 0;
    long year = -1;
    int zone = 0;
    bool have_zone = false;
    const char *p = in, *end = in + n;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '(') { /* comment: a zone name inside counts only if none seen */
            const char *q = p + 1;
            while (q < end && *q != ')')
                q++;
            if (!have_zone) {
                const char *z = p + 1;
                while (z < q && *z == ' ')
                    z++;
                size_t zl = 0;
                while (z + zl < q && isalpha((unsigned char)z[zl]))
                    zl++;
                for (size_t i = 0; zl && i < MB_ARRAY_LEN(zones); i++)
                    if (strlen(zones[i].n) == zl && !strncasecmp(z, zones[i].n, zl)) {
                        zone = zones[i].mins;
                        have_zone = true;
                    }
            }
            p = q < end ? q + 1 : q;
            continue;
        }
        if ((c == '+' || c == '-') && p + 1 < end && isdigit((unsigned char)p[1]) &&
            hh >= 0 && !have_zone) {
            const char *q = p + 1;
            int v = 0, nd = 0;
            while (q < end && (isdigit((unsigned char)*q) || *q == ':') && nd < 4) {
                if (*q != ':') { v = v * 10 + (*q - '0'); nd++; }
                q++;
            }
            if (nd == 4 || nd == 2) {
                if (nd == 2)
                    v *= 100;
                int mins = (v / 100) * 60 + v % 100;
                if (v / 100 <= 23 && v % 100 <= 59) {
                    zone = c == '-' ? -mins : mins;
                    have_zone = true;
                }
            }
            p = q;
            continue;
        }
        if (isdigit(c)) {
            const char *q = p;
            long v = 0;
            int nd = 0;
            while (q < end && isdigit((unsigned char)*q) && nd < 9) {
                v = v * 10 + (*q - '0');
                nd++;
                q++;
            }
            if (q < end && *q == ':' && hh < 0) { /* time */
                hh = (int)v;
                q++;
                int m = 0, md = 0;
                while (q < end && isdigit((unsigned char)*q) && md < 2) { m = m * 10 + (*q++ - '0'); md++; }
                if (!md)
                    return mb_errf(MB_ERR_INVALID, "date: bad time");
                mi = m;
                if (q < end && *q == ':') {
                    q++;
                    int sv = 0, sd = 0;
                    while (q < end && isdigit((unsigned char)*q) && sd < 2) { sv = sv * 10 + (*q++ - '0'); sd++; }
                    ss = sv;
                }
                if (q < end && *q == '.') { /* fractional seconds */
                    q++;
                    while (q < end && isdigit((unsigned char)*q))
                        q++;
                }
            } else if (q < end && *q == '-' && nd == 4 && year < 0 && q + 6 <= end &&
                       isdigit((unsigned char)q[1])) { /* ISO 8601 date */
                year = v;
                const char *r = q + 1;
                mon = bounded_num(&r, end);
                if (r < end && *r == '-') {
                    r++;
                    day = bounded_num(&r, end);
                }
                if (r < end && (*r == 'T' || *r == 't'))
                    r++;
                q = r;
            } else if (nd <= 2 && day < 0 && (mon == 0 || year < 0) && v >= 1 && v <= 31 &&
                       !(hh >= 0 && year < 0 && mon)) {
                day = (int)v;
            } else if (year < 0 && (nd >= 2 || day >= 0)) {
                year = v;
            }
            p = q;
            continue;
        }
        if (isalpha(c)) {
            const char *q = p;
            while (q < end && isalpha((unsigned char)*q))
                q++;
            size_t l = (size_t)(q - p);
            int m = month_of(p, l);
            if (m && !mon && l <= 9) {
                mon = m;
            } else if (hh >= 0 && !have_zone) {
                for (size_t i = 0; i < MB_ARRAY_LEN(zones); i++)
                    if (strlen(zones[i].n) == l && !strncasecmp(p, zones[i].n, l)) {
                        zone = zones[i].mins;
                        have_zone = true;
                    }
                if (!have_zone && l == 1) /* military zones: RFC 5322 says treat as 0 */
                    have_zone = true;
            }
            p = q;
            continue;
        }
        p++;
    }
    if (day < 1 || day > 31 || mon < 1 || mon > 12 || year < 0 || hh < 0 || hh > 23 ||
        mi < 0 || mi > 59 || ss < 0 || ss > 60)
        return mb_errf(MB_ERR_INVALID, "date '%.*s' is not a date", (int)(n > 80 ? 80 : n), in);
    if (year < 50)
        year += 2000;
    else if (year < 1000)
        year += 1900;
    if (year > 9999)
        return mb_errf(MB_ERR_INVALID, "date: year %ld out of range", year);
    int64_t t = days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400 + hh * 3600 +
                mi * 60 + ss;
    *out = t - (int64_t)zone * 60;
    return MB_OK;
}
