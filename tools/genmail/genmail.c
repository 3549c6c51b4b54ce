/* genmail.c — mailbus-genmail: writes a realistic, deterministic mailbox straight into a
 * Dovecot Maildir++ tree, so the demo, the import tests and the benchmark can have
 * 2,000 to 100,000+ messages in seconds instead of APPENDing them over IMAP.
 *
 * Every message is a pure function of (seed, index, message count): its own PRNG stream
 * is derived from the seed and its index, so the same arguments give byte-identical
 * files with identical names. What a message looks like:
 *   - kind, stratified per block of 50 messages so the size mix is stable for any seed:
 *     70 % short text/plain, 20 % multipart/alternative (text + HTML), 8 % multipart/mixed
 *     with one 20–200 KiB attachment, 2 % with a 1–3 MiB attachment; --eicar K turns K
 *     evenly spaced messages into ones carrying eicar.com;
 *   - folder, stratified per block of 20: INBOX 60 %, Sent 20 %, Archive 15 %, Drafts 5 %;
 *   - Date spread over five years ending 2025-01-01, increasing with the index; the file's
 *     mtime is set to it because Dovecot's maildir INTERNALDATE is the file's mtime;
 *   - about 35 % replies (In-Reply-To/References to an earlier message, "Re: " subject);
 *   - RFC 2047 subjects and display names (UTF-8 B and Q, ISO-8859-1 Q), bodies in
 *     us-ascii 7bit, ISO-8859-1 / UTF-8 quoted-printable, UTF-8 8bit and base64;
 *   - attachment bytes are pseudo-random (splitmix64) behind a real magic number, i.e.
 *     incompressible like the pdf/png/zip/jpeg files they imitate, so compression in
 *     the pipeline cannot look better than it would on real mail.
 * Files are CRLF-terminated and written directly into cur/ with O_EXCL (this is an
 * offline tool: the caller hands the tree to Dovecot afterwards), without fsync. Worker
 * threads (--jobs) take contiguous index ranges; since a message depends only on its
 * index, the output is the same for any number of threads. */
#include "util/buf.h"
#include "util/env.h"
#include "util/log.h"
#include "util/mb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GM_MAX_MESSAGES 10000000ull
#define GM_MAX_EXTRA_FILE (256u << 20) /* a corpus file bigger than this is a mistake */
#define GM_END_TIME 1735689600LL       /* 2025-01-01T00:00:00Z */
#define GM_SPAN (1826LL * 86400)       /* five years */
#define GM_HOST "genmail"
#define GM_OWNER_NAME "Robin Lefèvre"
#define GM_OWNER_ADDR "robin.lefevre@mailbus.example"

static const char EICAR[] =
    "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

enum kind { K_PLAIN, K_ALT, K_MEDIUM, K_LARGE, K_EICAR };
enum folder { F_INBOX, F_SENT, F_ARCHIVE, F_DRAFTS, F_EXTRA, F_COUNT };
static const char *const folder_names[] = {"INBOX", "Sent", "Archive", "Drafts"};
/* Salts keep the per-message PRNG streams for different purposes independent. */
enum { S_BODY = 1, S_TIME, S_SUBJ, S_FROM, S_ID, S_KIND, S_FOLDER, S_PARENT };

/* ---- PRNG ------------------------------------------------------------------------- */

typedef struct {
    uint64_t s;
} rng;

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rng_next(rng *r)
{
    r->s += 0x9E3779B97F4A7C15ull;
    return mix64(r->s);
}

/* Uniform in [0, n) (n > 0); the modulo bias is irrelevant for test data. */
static inline uint64_t rng_below(rng *r, uint64_t n) { return rng_next(r) % n; }
static inline double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) / 9007199254740992.0; }
static inline uint64_t rng_range(rng *r, uint64_t lo, uint64_t hi) { return lo + rng_below(r, hi - lo + 1); }

static rng rng_for(uint64_t seed, uint64_t index, uint64_t salt)
{
    rng r = {mix64(seed * 0x2545F4914F6CDD1Dull ^ mix64(index + 1) ^ (salt << 56))};
    return r;
}

static uint64_t hash_for(uint64_t seed, uint64_t index, uint64_t salt)
{
    rng r = rng_for(seed, index, salt);
    return rng_next(&r);
}

/* ---- word lists ------------------------------------------------------------------- */

typedef struct {
    const char *disp; /* UTF-8 display form */
    const char *slug; /* ASCII form for the address local part */
} gm_name;

static const gm_name first_names[] = {
    {"Anna", "anna"},     {"Ben", "ben"},         {"Carla", "carla"},   {"David", "david"},
    {"Emma", "emma"},     {"Frank", "frank"},     {"Grace", "grace"},   {"Hiro", "hiro"},
    {"Ingrid", "ingrid"}, {"José", "jose"},       {"Zoë", "zoe"},       {"Łukasz", "lukasz"},
    {"Søren", "soren"},   {"François", "francois"}, {"Ольга", "olga"},  {"太郎", "taro"},
    {"Αλέξης", "alexis"}, {"Chloé", "chloe"},     {"Björn", "bjorn"},   {"Mia", "mia"},
    {"Noah", "noah"},     {"Priya", "priya"},     {"Omar", "omar"},     {"Lena", "lena"},
};
static const gm_name last_names[] = {
    {"Smith", "smith"},       {"Müller", "mueller"},     {"García", "garcia"},
    {"Nowak", "nowak"},       {"Dubois", "dubois"},      {"Rossi", "rossi"},
    {"Jensen", "jensen"},     {"Петрова", "petrova"},    {"田中", "tanaka"},
    {"O'Brien", "obrien"},    {"Nakamura", "nakamura"},  {"Kowalski", "kowalski"},
    {"Andersson", "andersson"}, {"Papadopoulos", "papadopoulos"}, {"Silva", "silva"},
    {"Novák", "novak"},
};
static const char *const domains[] = {
    "example.com", "example.org", "example.net", "corp.example", "mail.example",
    "uni.example.edu", "shop.example", "lists.example.org",
};
static const char *const subjects[] = {
    "Quarterly report", "Meeting notes", "Lunch on Friday?", "Project Phoenix status",
    "Invoice for March", "Your order has shipped", "Draft proposal", "Weekend plans",
    "Budget review", "Server maintenance window", "Contract renewal", "Team offsite",
    "Question about the API", "Holiday schedule", "Release candidate 2", "Welcome aboard!",
    "Café meeting tomorrow", "Résumé review", "Überweisung bestätigt", "Réunion d'équipe",
    "¡Feliz cumpleaños!", "Señal de prueba", "Smörgåsbord at the office", "Façade repairs",
    "Презентация проекта", "会議の議事録", "Ζητήματα προϋπολογισμού", "🎉 Party on Friday",
    "Zürich trip – itinerary", "Données trimestrielles", "Angebot für Straße 5", "Crème brûlée recipe",
};
static const char *const words_ascii[] = {
    "the", "project", "meeting", "report", "we", "should", "review", "budget", "next",
    "week", "please", "send", "me", "your", "thoughts", "on", "draft", "and", "a", "of",
    "to", "in", "is", "for", "that", "with", "as", "it", "this", "by", "from", "at", "be",
    "have", "are", "not", "team", "customer", "server", "update", "release", "schedule",
    "invoice", "contract", "numbers", "figures", "deadline", "tomorrow", "morning",
    "afternoon", "quickly", "attached", "document", "version", "latest", "changes",
    "agree", "think", "could", "would", "maybe", "after", "before", "lunch", "office",
    "travel", "hotel", "flight", "confirm", "booking", "details", "question", "answer",
    "issue", "fixed", "tested", "deploy", "staging", "production", "backup", "storage",
    "network", "latency", "throughput", "import", "mailbox", "folder", "message", "thread",
    "archive", "summary", "decision", "approve", "sign", "legal", "finance", "quarter",
};
static const char *const words_latin[] = {
    "café", "résumé", "naïve", "façade", "über", "Straße", "Grüße", "müssen", "déjà",
    "voilà", "señor", "año", "mañana", "crème", "brûlée", "Zürich", "smörgåsbord",
    "fjørd", "Ærø", "élève", "coöperate", "piñata", "jalapeño", "Übersicht", "Größe",
    "garçon", "français", "español", "Björk", "Ångström",
};
static const char *const words_other[] = {
    "привет", "проект", "встреча", "会議", "資料", "確認", "γεια", "σας", "ευχαριστώ",
    "שלום", "مرحبا", "नमस्ते", "🙂", "👍", "✓",
};

typedef struct {
    const char *name;  /* UTF-8 */
    const char *ctype;
} gm_attach_name;

static const gm_attach_name attach_ascii[] = {
    {"report-Q3.pdf", "application/pdf"},       {"invoice-2041.pdf", "application/pdf"},
    {"photo.png", "image/png"},                 {"scan_0012.png", "image/png"},
    {"archive.zip", "application/zip"},         {"slides.pdf", "application/pdf"},
    {"IMG_4032.jpg", "image/jpeg"},
    {"contract.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
};
static const gm_attach_name attach_intl[] = {
    {"Résumé.pdf", "application/pdf"},
    {"Überweisung März 2021.pdf", "application/pdf"},
    {"фотография с отпуска.png", "image/png"},
    {"報告書.pdf", "application/pdf"},
    {"Präsentation – final version.zip", "application/zip"},
    {"año nuevo.jpg", "image/jpeg"},
    {"Größenübersicht für Zürich und Genève.docx",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
};

static const int zones[] = {0, 60, 120, -300, -480, 330, 540, -180, 60, 0};

/* ---- generator state -------------------------------------------------------------- */

typedef struct {
    /* options */
    const char *maildir;
    uint64_t n;
    uint64_t seed;
    uint64_t eicar;
    double seen_ratio;
    const char *extra_dir;
    const char *extra_folder;
    const char *manifest_path;
    bool dry_run;
    unsigned jobs;

    /* plan, one entry per generated message */
    uint8_t *kind;
    uint8_t *folder;
    int32_t *parent; /* -1 for a thread root */
    int32_t *root;

    /* scratch reused for every message */
    mb_buf msg;
    mb_buf raw;   /* body text before transfer encoding */
    mb_buf tmp;
    unsigned char *att; /* attachment bytes */
    size_t att_cap;
    mb_status st; /* sticky: the first failure while building a message */

    /* Per worker: manifest lines for its index range, concatenated in order at the end
     * (about 170 bytes a message). */
    mb_buf manifest;
    bool want_manifest;
    uint64_t count[F_COUNT];
    uint64_t bytes;
    uint64_t extra_count;
} gm;

/* ---- output helpers: failures stick in g->st, checked once per message -------------- */

static void put(gm *g, mb_buf *b, const void *p, size_t n)
{
    if (g->st == MB_OK)
        g->st = mb_buf_append(b, p, n);
}
static void puts_(gm *g, mb_buf *b, const char *s) { put(g, b, s, strlen(s)); }

static void putf(gm *g, mb_buf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void putf(gm *g, mb_buf *b, const char *fmt, ...)
{
    if (g->st != MB_OK)
        return;
    va_list ap;
    va_start(ap, fmt);
    g->st = mb_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

static bool reserve(gm *g, mb_buf *b, size_t n)
{
    if (g->st == MB_OK)
        g->st = mb_buf_reserve(b, n);
    return g->st == MB_OK;
}

static const char b64tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 without line breaks (for encoded-words); returns chars written to out. */
static size_t b64_plain(const unsigned char *p, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64tab[v >> 18];
        out[o++] = b64tab[(v >> 12) & 63];
        out[o++] = b64tab[(v >> 6) & 63];
        out[o++] = b64tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = b64tab[v >> 18];
        out[o++] = b64tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    return o;
}

/* Base64 body in 76-character CRLF lines, written straight into the buffer. */
static void b64_body(gm *g, mb_buf *b, const unsigned char *p, size_t n)
{
    size_t lines = n / 57 + 1;
    if (!reserve(g, b, lines * 78 + 8))
        return;
    char *o = b->data + b->len;
    for (size_t i = 0; i < n; i += 57) {
        size_t c = n - i < 57 ? n - i : 57;
        o += b64_plain(p + i, c, o);
        *o++ = '\r';
        *o++ = '\n';
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

/* Quoted-printable for text whose lines end in CRLF; soft breaks keep lines <= 76. */
static void qp_body(gm *g, mb_buf *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (!reserve(g, b, n * 3 + n / 24 + 8))
        return;
    char *o = b->data + b->len;
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
            *o++ = '\r';
            *o++ = '\n';
            i++;
            col = 0;
            continue;
        }
        bool eol = i + 1 >= n || p[i + 1] == '\r';
        bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !eol);
        size_t w = literal ? 1 : 3;
        if (col + w > 75) {
            *o++ = '=';
            *o++ = '\r';
            *o++ = '\n';
            col = 0;
        }
        if (literal) {
            *o++ = (char)c;
        } else {
            *o++ = '=';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        col += w;
    }
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

static bool is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return false;
    return true;
}

/* UTF-8 to ISO-8859-1; false if some character has no Latin-1 form. */
static bool to_latin1(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned cp;
        if (*p < 0x80) {
            cp = *p++;
        } else if ((*p & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
            cp = (unsigned)(*p & 0x1F) << 6 | (p[1] & 0x3F);
            p += 2;
        } else {
            return false;
        }
        if (cp > 0xFF || o + 1 >= cap)
            return false;
        out[o++] = (char)cp;
    }
    out[o] = '\0';
    return true;
}

static size_t utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
}

enum enc { E_B_UTF8, E_Q_UTF8, E_Q_LATIN1 };

/* RFC 2047 encoded-words for UTF-8 text s, split on character boundaries into words of
 * at most ~62 characters, separated by folding whitespace (ignored when decoding). */
static void encode_words(gm *g, mb_buf *b, const char *s, enum enc e)
{
    char latin[512];
    const char *src = s;
    if (e == E_Q_LATIN1) {
        if (!to_latin1(s, latin, sizeof latin))
            e = E_Q_UTF8;
        else
            src = latin;
    }
    const char *cs = e == E_Q_LATIN1 ? "ISO-8859-1" : "UTF-8";
    size_t n = strlen(src), i = 0;
    bool first = true;
    while (i < n) {
        char word[160];
        size_t wl = 0;
        if (e == E_B_UTF8) {
            size_t j = i;
            while (j < n) {
                size_t cl = utf8_len((unsigned char)src[j]);
                if (j + cl - i > 36)
                    break;
                j += cl;
            }
            if (j == i)
                j = i + 1;
            if (j > n)
                j = n;
            wl = b64_plain((const unsigned char *)src + i, j - i, word);
            i = j;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            while (i < n) {
                size_t cl = e == E_Q_UTF8 ? utf8_len((unsigned char)src[i]) : 1;
                if (i + cl > n)
                    cl = n - i;
                char tok[16];
                size_t tl = 0;
                for (size_t k = 0; k < cl; k++) {
                    unsigned char c = (unsigned char)src[i + k];
                    if (c == ' ') {
                        tok[tl++] = '_';
                    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                               (c >= '0' && c <= '9') || c == '!' || c == '*' || c == '+' ||
                               c == '-' || c == '/') {
                        tok[tl++] = (char)c;
                    } else {
                        tok[tl++] = '=';
                        tok[tl++] = hex[c >> 4];
                        tok[tl++] = hex[c & 15];
                    }
                }
                if (wl > 0 && wl + tl > 45)
                    break;
                memcpy(word + wl, tok, tl);
                wl += tl;
                i += cl;
            }
        }
        if (!first)
            puts_(g, b, "\r\n ");
        first = false;
        putf(g, b, "=?%s?%c?%.*s?=", cs, e == E_B_UTF8 ? 'B' : 'Q', (int)wl, word);
    }
}

/* A phrase (display name): atom, quoted string, or encoded-words. */
static void put_phrase(gm *g, mb_buf *b, const char *s, enum enc e)
{
    if (!is_ascii(s)) {
        encode_words(g, b, s, e);
    } else if (strpbrk(s, "()<>[]:;@\\,.\"")) {
        put(g, b, "\"", 1);
        for (; *s; s++) {
            if (*s == '"' || *s == '\\')
                put(g, b, "\\", 1);
            put(g, b, s, 1);
        }
        put(g, b, "\"", 1);
    } else {
        puts_(g, b, s);
    }
}

/* ---- per-message facts that other messages refer to --------------------------------- */

typedef struct {
    char name[96];  /* UTF-8 display name */
    char addr[96];
    bool last_first; /* "Last, First" form */
} person;

static void contact(uint64_t c, person *p)
{
    const gm_name *f = &first_names[c % MB_ARRAY_LEN(first_names)];
    const gm_name *l = &last_names[(c / MB_ARRAY_LEN(first_names)) % MB_ARRAY_LEN(last_names)];
    const char *d = domains[(c * 7 + c / 5) % MB_ARRAY_LEN(domains)];
    p->last_first = is_ascii(f->disp) && is_ascii(l->disp) && c % 10 == 3;
    if (p->last_first)
        snprintf(p->name, sizeof p->name, "%s, %s", l->disp, f->disp);
    else
        snprintf(p->name, sizeof p->name, "%s %s", f->disp, l->disp);
    snprintf(p->addr, sizeof p->addr, "%s.%s@%s", f->slug, l->slug, d);
}

static void owner(person *p)
{
    snprintf(p->name, sizeof p->name, "%s", GM_OWNER_NAME);
    snprintf(p->addr, sizeof p->addr, "%s", GM_OWNER_ADDR);
    p->last_first = false;
}

#define N_CONTACTS ((uint64_t)MB_ARRAY_LEN(first_names) * MB_ARRAY_LEN(last_names))

static void sender_of(const gm *g, uint64_t j, person *p)
{
    if (g->folder[j] == F_SENT || g->folder[j] == F_DRAFTS)
        owner(p);
    else
        contact(hash_for(g->seed, j, S_FROM) % N_CONTACTS, p);
}

static int64_t time_of(const gm *g, uint64_t j)
{
    int64_t step = GM_SPAN / (int64_t)g->n;
    if (step < 1)
        step = 1;
    int64_t t = GM_END_TIME - GM_SPAN + (int64_t)((__int128)GM_SPAN * (int64_t)j / (int64_t)g->n);
    return t + (int64_t)(hash_for(g->seed, j, S_TIME) % (uint64_t)step);
}

static int zone_of(const gm *g, uint64_t j)
{
    return zones[hash_for(g->seed, j, S_TIME + 100) % MB_ARRAY_LEN(zones)];
}

static void format_date(int64_t t, int zone_min, char *out, size_t cap)
{
    static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t lt = (time_t)(t + zone_min * 60);
    struct tm tm;
    gmtime_r(&lt, &tm);
    int z = zone_min < 0 ? -zone_min : zone_min;
    snprintf(out, cap, "%s, %d %s %04d %02d:%02d:%02d %c%02d%02d", wd[tm.tm_wday], tm.tm_mday,
             mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
             zone_min < 0 ? '-' : '+', z / 60, z % 60);
}

static void msgid_of(const gm *g, uint64_t j, char *out, size_t cap)
{
    person p;
    sender_of(g, j, &p);
    const char *dom = strchr(p.addr, '@');
    uint64_t h = hash_for(g->seed, j, S_ID);
    snprintf(out, cap, "<%016llx.%llu@%s>", (unsigned long long)h, (unsigned long long)j,
             dom ? dom + 1 : GM_HOST);
}

typedef struct {
    const char *text; /* UTF-8 */
    enum enc enc;
    unsigned suffix;  /* 0 = none */
} subject;

static void subject_of(const gm *g, uint64_t root, subject *s)
{
    rng r = rng_for(g->seed, root, S_SUBJ);
    s->text = subjects[rng_below(&r, MB_ARRAY_LEN(subjects))];
    uint64_t e = rng_below(&r, 10);
    s->enc = e < 5 ? E_B_UTF8 : e < 8 ? E_Q_UTF8 : E_Q_LATIN1;
    s->suffix = rng_below(&r, 3) == 0 ? (unsigned)rng_range(&r, 2, 999) : 0;
}

static void put_subject(gm *g, mb_buf *b, uint64_t i)
{
    subject s;
    subject_of(g, (uint64_t)g->root[i], &s);
    puts_(g, b, "Subject: ");
    if (g->parent[i] >= 0)
        puts_(g, b, "Re: ");
    char text[256];
    if (s.suffix)
        snprintf(text, sizeof text, "%s #%u", s.text, s.suffix);
    else
        snprintf(text, sizeof text, "%s", s.text);
    if (is_ascii(text))
        puts_(g, b, text);
    else
        encode_words(g, b, text, s.enc);
    puts_(g, b, "\r\n");
}

/* ---- bodies ------------------------------------------------------------------------- */

enum lang { L_ASCII, L_LATIN, L_UTF8 };

static bool name_fits(const char *name, enum lang l)
{
    char tmp[256];
    return l == L_UTF8 || (l == L_ASCII ? is_ascii(name) : to_latin1(name, tmp, sizeof tmp));
}

static const char *pick_word(rng *r, enum lang l)
{
    uint64_t x = rng_below(r, 100);
    if (l != L_ASCII && x < 14)
        return words_latin[rng_below(r, MB_ARRAY_LEN(words_latin))];
    if (l == L_UTF8 && x < 26)
        return words_other[rng_below(r, MB_ARRAY_LEN(words_other))];
    return words_ascii[rng_below(r, MB_ARRAY_LEN(words_ascii))];
}

/* Wrapped text appended to raw: words at column < 72, CRLF line ends. */
typedef struct {
    size_t col;
    bool sentence_start;
} wrap;

static void wrap_word(gm *g, mb_buf *raw, wrap *w, const char *word, const char *prefix)
{
    size_t wl = strlen(word);
    if (w->col > 0 && w->col + 1 + wl > 72) {
        puts_(g, raw, "\r\n");
        w->col = 0;
    }
    if (w->col == 0 && prefix) {
        puts_(g, raw, prefix);
        w->col = strlen(prefix);
    } else if (w->col > 0 && !(prefix && w->col == strlen(prefix))) {
        puts_(g, raw, " ");
        w->col++;
    }
    if (w->sentence_start && word[0] >= 'a' && word[0] <= 'z') {
        char c = (char)(word[0] - 'a' + 'A');
        put(g, raw, &c, 1);
        puts_(g, raw, word + 1);
    } else {
        puts_(g, raw, word);
    }
    w->col += wl;
    w->sentence_start = false;
}

static void gen_paragraphs(gm *g, rng *r, mb_buf *raw, enum lang l, size_t target,
                           const char *prefix)
{
    size_t start = raw->len;
    static const char *const ends[] = {".", ".", ".", "?", "!"};
    while (raw->len - start < target && g->st == MB_OK) {
        wrap w = {0, true};
        unsigned sentences = (unsigned)rng_range(r, 2, 6);
        for (unsigned s = 0; s < sentences; s++) {
            unsigned nw = (unsigned)rng_range(r, 5, 16);
            w.sentence_start = true;
            for (unsigned k = 0; k < nw; k++) {
                char word[64];
                snprintf(word, sizeof word, "%s%s", pick_word(r, l),
                         k + 1 == nw ? ends[rng_below(r, MB_ARRAY_LEN(ends))] : "");
                wrap_word(g, raw, &w, word, prefix);
            }
        }
        puts_(g, raw, prefix ? "\r\n" : "\r\n\r\n");
        if (prefix)
            break; /* one quoted paragraph is enough */
    }
}

typedef struct {
    enum lang lang;
    const char *charset;
    const char *cte;
} text_style;

static text_style pick_style(rng *r)
{
    uint64_t x = rng_below(r, 100);
    if (x < 50)
        return (text_style){L_ASCII, "us-ascii", "7bit"};
    if (x < 60)
        return (text_style){L_LATIN, "iso-8859-1", "quoted-printable"};
    if (x < 85)
        return (text_style){x < 72 ? L_LATIN : L_UTF8, "utf-8", "quoted-printable"};
    if (x < 93)
        return (text_style){L_UTF8, "utf-8", "8bit"};
    return (text_style){L_UTF8, "utf-8", "base64"};
}

/* The plain text of message i into g->raw (UTF-8, CRLF): greeting, paragraphs, quote
 * of the parent for replies, signature. */
static void gen_text(gm *g, rng *r, uint64_t i, enum lang l, size_t target,
                     const person *from, const person *to)
{
    mb_buf *raw = &g->raw;
    mb_buf_reset(raw);
    char first[96];
    snprintf(first, sizeof first, "%s", to->name);
    char *sp = strchr(first, to->last_first ? ',' : ' ');
    if (to->last_first && sp)
        memmove(first, sp + 2, strlen(sp + 2) + 1);
    else if (sp)
        *sp = '\0';
    if (name_fits(first, l))
        putf(g, raw, "Hi %s,\r\n\r\n", first);
    else
        puts_(g, raw, "Hello,\r\n\r\n");
    gen_paragraphs(g, r, raw, l, target, NULL);
    if (g->parent[i] >= 0) {
        uint64_t p = (uint64_t)g->parent[i];
        person pf;
        sender_of(g, p, &pf);
        char date[64];
        format_date(time_of(g, p), zone_of(g, p), date, sizeof date);
        if (name_fits(pf.name, l))
            putf(g, raw, "On %s, %s wrote:\r\n", date, pf.name);
        else
            putf(g, raw, "On %s, <%s> wrote:\r\n", date, pf.addr);
        gen_paragraphs(g, r, raw, l, 1, "> ");
        puts_(g, raw, "\r\n");
    }
    if (name_fits(from->name, l))
        putf(g, raw, "-- \r\n%s\r\n", from->name);
    else
        puts_(g, raw, "-- \r\nSent from my phone\r\n");
}

/* Transfer-encode g->raw as the body of a text part with the given style. */
static void put_text_part(gm *g, mb_buf *b, const text_style *ts)
{
    putf(g, b, "Content-Type: text/plain; charset=%s\r\nContent-Transfer-Encoding: %s\r\n\r\n",
         ts->charset, ts->cte);
    mb_buf *raw = &g->raw;
    if (!strcmp(ts->charset, "iso-8859-1")) {
        /* Convert line by line; every word in L_LATIN has a Latin-1 form. */
        mb_buf_reset(&g->tmp);
        if (!reserve(g, &g->tmp, raw->len + 1))
            return;
        if (!to_latin1(raw->data, g->tmp.data, g->tmp.cap)) {
            g->st = mb_errf(MB_ERR_INTERNAL, "latin-1 body has a non-Latin-1 character");
            return;
        }
        g->tmp.len = strlen(g->tmp.data);
        qp_body(g, b, g->tmp.data, g->tmp.len);
    } else if (!strcmp(ts->cte, "quoted-printable")) {
        qp_body(g, b, raw->data, raw->len);
    } else if (!strcmp(ts->cte, "base64")) {
        b64_body(g, b, (const unsigned char *)raw->data, raw->len);
    } else {
        put(g, b, raw->data, raw->len);
    }
}

/* HTML rendering of g->raw, always UTF-8 quoted-printable. */
static void put_html_part(gm *g, mb_buf *b)
{
    puts_(g, b, "Content-Type: text/html; charset=utf-8\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    mb_buf *h = &g->tmp;
    mb_buf_reset(h);
    puts_(g, h, "<!DOCTYPE html>\r\n<html><head><meta charset=\"utf-8\"></head>\r\n"
                "<body style=\"font-family: sans-serif\">\r\n<p>");
    const char *p = g->raw.data, *end = p + g->raw.len;
    while (p < end) {
        const char *nl = strstr(p, "\r\n");
        if (!nl)
            nl = end;
        if (nl == p) {
            puts_(g, h, "</p>\r\n<p>");
        } else {
            for (const char *c = p; c < nl; c++) {
                if (*c == '<')
                    puts_(g, h, "&lt;");
                else if (*c == '>')
                    puts_(g, h, "&gt;");
                else if (*c == '&')
                    puts_(g, h, "&amp;");
                else
                    put(g, h, c, 1);
            }
            puts_(g, h, "<br>\r\n");
        }
        p = nl + (nl < end ? 2 : 0);
    }
    puts_(g, h, "</p>\r\n</body></html>\r\n");
    if (g->st == MB_OK)
        qp_body(g, b, h->data, h->len);
}

/* RFC 2231 value: charset''percent-encoded, split into continuations when long. */
static void put_2231(gm *g, mb_buf *b, const char *attr, const char *charset,
                     const unsigned char *v, size_t n, bool split)
{
    static const char hex[] = "0123456789ABCDEF";
    char enc[1024];
    size_t el = 0;
    for (size_t i = 0; i < n && el + 4 < sizeof enc; i++) {
        unsigned char c = v[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("!#$&+-.^_`|~", c)) {
            enc[el++] = (char)c;
        } else {
            enc[el++] = '%';
            enc[el++] = hex[c >> 4];
            enc[el++] = hex[c & 15];
        }
    }
    if (!split || el <= 40) {
        putf(g, b, ";\r\n %s*=%s''%.*s", attr, charset, (int)el, enc);
        return;
    }
    size_t pos = 0;
    for (unsigned k = 0; pos < el; k++) {
        size_t take = el - pos > 40 ? 40 : el - pos;
        /* Never cut a %XX escape in two. */
        while (pos + take < el && take > 2 &&
               (enc[pos + take - 1] == '%' || enc[pos + take - 2] == '%'))
            take--;
        putf(g, b, ";\r\n %s*%u*=%s%s", attr, k, k == 0 ? charset : "", k == 0 ? "''" : "");
        put(g, b, enc + pos, take);
        pos += take;
    }
}

static void attachment_bytes(gm *g, rng *r, const char *ctype, size_t size)
{
    if (g->att_cap < size) {
        unsigned char *p = realloc(g->att, size);
        if (!p) {
            g->st = mb_errf(MB_ERR_NOMEM, "attachment of %zu bytes", size);
            return;
        }
        g->att = p;
        g->att_cap = size;
    }
    size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t v = rng_next(r);
        memcpy(g->att + i, &v, 8);
    }
    for (; i < size; i++)
        g->att[i] = (unsigned char)rng_next(r);
    static const struct {
        const char *type;
        const char *magic;
        size_t len;
    } magics[] = {
        {"application/pdf", "%PDF-1.7\n%\xE2\xE3\xCF\xD3\n", 15},
        {"image/png", "\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16},
        {"image/jpeg", "\xFF\xD8\xFF\xE0\0\x10JFIF\0", 11},
        {"application/zip", "PK\x03\x04\x14\0\0\0\x08\0", 10},
        {"application/vnd.", "PK\x03\x04\x14\0\x06\0\x08\0", 10},
    };
    for (size_t k = 0; k < MB_ARRAY_LEN(magics); k++)
        if (!strncmp(ctype, magics[k].type, strlen(magics[k].type)) && size >= magics[k].len)
            memcpy(g->att, magics[k].magic, magics[k].len);
}

static void put_attachment(gm *g, mb_buf *b, rng *r, enum kind k)
{
    if (k == K_EICAR) {
        puts_(g, b, "Content-Type: application/octet-stream; name=\"eicar.com\"\r\n"
                    "Content-Disposition: attachment; filename=\"eicar.com\"\r\n"
                    "Content-Transfer-Encoding: base64\r\n\r\n");
        b64_body(g, b, (const unsigned char *)EICAR, sizeof EICAR - 1);
        return;
    }
    size_t size = k == K_LARGE ? (size_t)rng_range(r, 1u << 20, 3u << 20)
                               : (size_t)rng_range(r, 20u << 10, 200u << 10);
    uint64_t style = rng_below(r, 10);
    const gm_attach_name *a;
    if (style < 7) {
        a = &attach_ascii[rng_below(r, MB_ARRAY_LEN(attach_ascii))];
        putf(g, b, "Content-Type: %s; name=\"%s\"\r\n"
                   "Content-Disposition: attachment; filename=\"%s\"",
             a->ctype, a->name, a->name);
    } else {
        a = &attach_intl[rng_below(r, MB_ARRAY_LEN(attach_intl))];
        char latin[256];
        bool l1 = style == 9 && to_latin1(a->name, latin, sizeof latin);
        putf(g, b, "Content-Type: %s;\r\n name=\"", a->ctype);
        encode_words(g, b, a->name, l1 ? E_Q_LATIN1 : E_B_UTF8);
        puts_(g, b, "\"\r\nContent-Disposition: attachment");
        if (l1)
            put_2231(g, b, "filename", "iso-8859-1", (const unsigned char *)latin,
                     strlen(latin), false);
        else
            put_2231(g, b, "filename", "UTF-8", (const unsigned char *)a->name,
                     strlen(a->name), style == 8);
    }
    puts_(g, b, "\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    attachment_bytes(g, r, a->ctype, size);
    if (g->st == MB_OK)
        b64_body(g, b, g->att, size);
}

/* ---- one message -------------------------------------------------------------------- */

typedef struct {
    int64_t time;
    char flags[8];
    bool has_attachment;
    bool eicar;
} msg_info;

static void pick_flags(const gm *g, rng *r, enum folder f, char *out)
{
    if (f == F_SENT) {
        strcpy(out, "S");
    } else if (f == F_DRAFTS) {
        strcpy(out, "DS");
    } else if (rng_unit(r) < g->seen_ratio) {
        uint64_t x = rng_below(r, 100);
        strcpy(out, x < 10 ? "FS" : x < 18 ? "RS" : "S");
    } else {
        strcpy(out, rng_below(r, 100) < 3 ? "F" : "");
    }
}

static void boundary(const gm *g, uint64_t i, int level, char *out, size_t cap)
{
    snprintf(out, cap, "=_genmail_%d_%016llx", level,
             (unsigned long long)hash_for(g->seed, i, S_BODY + 50));
}

static void gen_message(gm *g, uint64_t i, msg_info *info)
{
    mb_buf *b = &g->msg;
    mb_buf_reset(b);
    rng r = rng_for(g->seed, i, S_BODY);
    enum folder f = (enum folder)g->folder[i];
    enum kind k = (enum kind)g->kind[i];
    info->time = time_of(g, i);
    info->has_attachment = k == K_MEDIUM || k == K_LARGE || k == K_EICAR;
    info->eicar = k == K_EICAR;
    pick_flags(g, &r, f, info->flags);

    person from, to, extra;
    sender_of(g, i, &from);
    if (f == F_SENT || f == F_DRAFTS)
        contact(rng_below(&r, N_CONTACTS), &to);
    else
        owner(&to);
    enum enc name_enc = (enum enc)rng_below(&r, 3);
    char date[64];
    format_date(info->time, zone_of(g, i), date, sizeof date);

    if (f == F_INBOX || f == F_ARCHIVE) {
        const char *dom = strchr(from.addr, '@') + 1;
        char rdate[64];
        format_date(info->time + (int64_t)rng_range(&r, 1, 90), 0, rdate, sizeof rdate);
        unsigned mx = (unsigned)rng_range(&r, 1, 4);
        putf(g, b, "Return-Path: <%s>\r\n"
                   "Received: from mx%u.%s (mx%u.%s [192.0.2.%u])\r\n"
                   "\tby mail.mailbus.example (Postfix) with ESMTPS id %08llX\r\n"
                   "\tfor <%s>; %s\r\n",
             from.addr, mx, dom, mx, dom,
             (unsigned)rng_range(&r, 1, 254), (unsigned long long)(rng_next(&r) >> 32),
             to.addr, rdate);
    }
    putf(g, b, "Date: %s\r\nFrom: ", date);
    put_phrase(g, b, from.name, name_enc);
    putf(g, b, " <%s>\r\nTo: ", from.addr);
    put_phrase(g, b, to.name, name_enc);
    putf(g, b, " <%s>", to.addr);
    if (rng_below(&r, 5) == 0) {
        contact(rng_below(&r, N_CONTACTS), &extra);
        puts_(g, b, ",\r\n ");
        put_phrase(g, b, extra.name, name_enc);
        putf(g, b, " <%s>", extra.addr);
    }
    puts_(g, b, "\r\n");
    if (rng_below(&r, 4) == 0) {
        contact(rng_below(&r, N_CONTACTS), &extra);
        puts_(g, b, "Cc: ");
        put_phrase(g, b, extra.name, name_enc);
        putf(g, b, " <%s>\r\n", extra.addr);
    }
    put_subject(g, b, i);
    char id[160];
    msgid_of(g, i, id, sizeof id);
    putf(g, b, "Message-ID: %s\r\n", id);
    if (g->parent[i] >= 0) {
        /* References: the thread root, then up to 9 nearest ancestors, oldest first. */
        int32_t chain[10];
        int nc = 0;
        for (int32_t a = g->parent[i]; a >= 0 && nc < 9; a = g->parent[a])
            chain[nc++] = a;
        if (chain[nc - 1] != g->root[i])
            chain[nc++] = g->root[i];
        msgid_of(g, (uint64_t)g->parent[i], id, sizeof id);
        putf(g, b, "In-Reply-To: %s\r\nReferences:", id);
        for (int c = nc - 1; c >= 0; c--) {
            msgid_of(g, (uint64_t)chain[c], id, sizeof id);
            putf(g, b, "%s%s", c == nc - 1 ? " " : "\r\n ", id);
        }
        puts_(g, b, "\r\n");
    }
    static const char *const mailers[] = {"Mozilla Thunderbird 115.3", "Apple Mail (2.3731)",
                                          "Microsoft Outlook 16.0", "Roundcube Webmail/1.6"};
    if (rng_below(&r, 3) == 0)
        putf(g, b, "X-Mailer: %s\r\n", mailers[rng_below(&r, MB_ARRAY_LEN(mailers))]);
    puts_(g, b, "MIME-Version: 1.0\r\n");

    text_style ts = pick_style(&r);
    size_t target = k == K_PLAIN ? (size_t)rng_range(&r, 200, 3500)
                                 : (size_t)rng_range(&r, 400, 5000);
    if (k == K_EICAR)
        target = 100;
    gen_text(g, &r, i, ts.lang, target, &from, &to);

    char b1[64], b2[64];
    boundary(g, i, 1, b1, sizeof b1);
    boundary(g, i, 2, b2, sizeof b2);
    if (k == K_PLAIN) {
        put_text_part(g, b, &ts);
    } else if (k == K_ALT) {
        putf(g, b, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n\r\n"
                   "This is a multi-part message in MIME format.\r\n--%s\r\n", b1, b1);
        put_text_part(g, b, &ts);
        putf(g, b, "\r\n--%s\r\n", b1);
        put_html_part(g, b);
        putf(g, b, "\r\n--%s--\r\n", b1);
    } else {
        bool nested = k != K_EICAR && rng_below(&r, 2) == 0;
        putf(g, b, "Content-Type: multipart/mixed;\r\n boundary=\"%s\"\r\n\r\n"
                   "This is a multi-part message in MIME format.\r\n--%s\r\n", b1, b1);
        if (nested) {
            putf(g, b, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n\r\n"
                       "--%s\r\n", b2, b2);
            put_text_part(g, b, &ts);
            putf(g, b, "\r\n--%s\r\n", b2);
            put_html_part(g, b);
            putf(g, b, "\r\n--%s--\r\n", b2);
        } else {
            put_text_part(g, b, &ts);
        }
        putf(g, b, "\r\n--%s\r\n", b1);
        put_attachment(g, b, &r, k);
        putf(g, b, "\r\n--%s--\r\n", b1);
    }
}

/* ---- plan --------------------------------------------------------------------------- */

/* Fisher–Yates permutation of [0, n) from a block's own PRNG stream. */
static void shuffle(uint8_t *perm, unsigned n, rng *r)
{
    for (unsigned k = 0; k < n; k++)
        perm[k] = (uint8_t)k;
    for (unsigned k = n - 1; k > 0; k--) {
        unsigned j = (unsigned)rng_below(r, k + 1);
        uint8_t t = perm[k];
        perm[k] = perm[j];
        perm[j] = t;
    }
}

static mb_status plan(gm *g)
{
    uint64_t n = g->n ? g->n : 1;
    g->kind = calloc(n, 1);
    g->folder = calloc(n, 1);
    g->parent = calloc(n, sizeof *g->parent);
    g->root = calloc(n, sizeof *g->root);
    if (!g->kind || !g->folder || !g->parent || !g->root)
        return mb_errf(MB_ERR_NOMEM, "plan for %llu messages", (unsigned long long)g->n);
    uint8_t perm[50];
    for (uint64_t blk = 0; blk * 50 < g->n; blk++) {
        rng r = rng_for(g->seed, blk, S_KIND);
        shuffle(perm, 50, &r);
        for (unsigned k = 0; k < 50 && blk * 50 + k < g->n; k++) {
            unsigned s = perm[k];
            g->kind[blk * 50 + k] = s < 1 ? K_LARGE : s < 5 ? K_MEDIUM : s < 15 ? K_ALT : K_PLAIN;
        }
    }
    for (uint64_t blk = 0; blk * 20 < g->n; blk++) {
        rng r = rng_for(g->seed, blk, S_FOLDER);
        shuffle(perm, 20, &r);
        for (unsigned k = 0; k < 20 && blk * 20 + k < g->n; k++) {
            unsigned s = perm[k];
            g->folder[blk * 20 + k] = s < 12 ? F_INBOX : s < 16 ? F_SENT : s < 19 ? F_ARCHIVE : F_DRAFTS;
        }
    }
    for (uint64_t j = 0; j < g->eicar; j++) {
        uint64_t at = (2 * j + 1) * g->n / (2 * g->eicar);
        g->kind[at] = K_EICAR;
    }
    for (uint64_t i = 0; i < g->n; i++) {
        rng r = rng_for(g->seed, i, S_PARENT);
        if (i > 0 && g->folder[i] != F_DRAFTS && rng_below(&r, 100) < 35) {
            uint64_t back = 1 + rng_below(&r, i < 40 ? i : 40);
            g->parent[i] = (int32_t)(i - back);
            g->root[i] = g->root[i - back];
        } else {
            g->parent[i] = -1;
            g->root[i] = (int32_t)i;
        }
    }
    return MB_OK;
}

/* ---- file system -------------------------------------------------------------------- */

static mb_status mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp)
        return mb_errf(MB_ERR_INVALID, "directory path '%s' is empty or too long", path);
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return mb_errf(MB_ERR_IO, "mkdir %s: %s", tmp, strerror(errno));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return mb_errf(MB_ERR_IO, "%s exists and is not a directory", path);
    return MB_OK;
}

/* Maildir++: INBOX is the root, folder X is DIR/.X; subfolders carry a maildirfolder file. */
static void folder_dir(const gm *g, const char *folder, char *out, size_t cap)
{
    if (!strcmp(folder, "INBOX"))
        snprintf(out, cap, "%s", g->maildir);
    else
        snprintf(out, cap, "%s/.%s", g->maildir, folder);
}

static mb_status make_folder(const gm *g, const char *folder)
{
    char dir[PATH_MAX], sub[PATH_MAX + 32];
    folder_dir(g, folder, dir, sizeof dir);
    static const char *const subs[] = {"cur", "new", "tmp"};
    for (size_t k = 0; k < MB_ARRAY_LEN(subs); k++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, subs[k]);
        mb_status s = mkdir_p(sub);
        if (s != MB_OK)
            return s;
    }
    if (strcmp(folder, "INBOX")) {
        snprintf(sub, sizeof sub, "%s/maildirfolder", dir);
        int fd = open(sub, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return mb_errf(MB_ERR_IO, "create %s: %s", sub, strerror(errno));
        close(fd);
    }
    return MB_OK;
}

static mb_status write_subscriptions(const gm *g)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/subscriptions", g->maildir);
    FILE *f = fopen(path, "w");
    if (!f)
        return mb_errf(MB_ERR_IO, "create %s: %s", path, strerror(errno));
    fputs("Sent\nArchive\nDrafts\n", f);
    if (g->extra_folder && strcmp(g->extra_folder, "INBOX") &&
        strcmp(g->extra_folder, "Sent") && strcmp(g->extra_folder, "Archive") &&
        strcmp(g->extra_folder, "Drafts"))
        fprintf(f, "%s\n", g->extra_folder);
    if (fclose(f) != 0)
        return mb_errf(MB_ERR_IO, "write %s: %s", path, strerror(errno));
    chmod(path, 0600);
    return MB_OK;
}

static mb_status write_file(const char *path, const void *data, size_t n, int64_t mtime)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return mb_errf(MB_ERR_IO, "create %s: %s%s", path, strerror(errno),
                       errno == EEXIST ? " (generate into an empty Maildir)" : "");
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            return mb_errf(MB_ERR_IO, "write %s: %s", path, strerror(e));
        }
        p += w;
        n -= (size_t)w;
    }
    struct timespec ts[2] = {{(time_t)mtime, 0}, {(time_t)mtime, 0}};
    if (futimens(fd, ts) != 0) {
        int e = errno;
        close(fd);
        return mb_errf(MB_ERR_IO, "set mtime of %s: %s", path, strerror(e));
    }
    if (close(fd) != 0)
        return mb_errf(MB_ERR_IO, "close %s: %s", path, strerror(errno));
    return MB_OK;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    static const char hex[] = "0123456789abcdef";
    if (!EVP_Digest(p, n, md, &len, EVP_sha256(), NULL) || len != 32) {
        strcpy(out, "-");
        return;
    }
    for (int k = 0; k < 32; k++) {
        out[2 * k] = hex[md[k] >> 4];
        out[2 * k + 1] = hex[md[k] & 15];
    }
    out[64] = '\0';
}

/* Store one message: name, file, mtime, manifest line, counters. ,W= (Dovecot's virtual
 * size, CRLF-counted) is only claimed for our own CRLF files, where it equals the size. */
static mb_status store(gm *g, const char *folder, int fidx, uint64_t q, const void *data,
                       size_t n, int64_t mtime, const char *flags, const char *has_att,
                       const char *eicar, bool vsize)
{
    char name[256], dir[PATH_MAX], path[PATH_MAX + 300];
    char w[40] = "";
    if (vsize)
        snprintf(w, sizeof w, ",W=%zu", n);
    snprintf(name, sizeof name, "%lld.M%06lluP%lluQ%llu.%s,S=%zu%s:2,%s", (long long)mtime,
             (unsigned long long)((q * 2654435761ull) % 1000000),
             (unsigned long long)(1000 + g->seed % 30000), (unsigned long long)q, GM_HOST, n,
             w, flags);
    folder_dir(g, folder, dir, sizeof dir);
    int pl = snprintf(path, sizeof path, "%s/cur/%s", dir, name);
    if (pl < 0 || (size_t)pl >= sizeof path)
        return mb_errf(MB_ERR_INVALID, "path for %s in %s is too long", name, dir);
    if (!g->dry_run) {
        mb_status s = write_file(path, data, n, mtime);
        if (s != MB_OK)
            return s;
    }
    if (g->want_manifest) {
        char sum[65];
        sha256_hex(data, n, sum);
        g->st = MB_OK;
        putf(g, &g->manifest, "%s\t%s\t%zu\t%s\t%s\t%s\t%s\n", folder, name, n, sum, flags,
             has_att, eicar);
        if (g->st != MB_OK)
            return g->st;
    }
    g->count[fidx]++;
    g->bytes += n;
    return MB_OK;
}

/* ---- extra corpus ------------------------------------------------------------------- */

static int month_of(const char *m)
{
    static const char *const mo[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};
    for (int k = 0; k < 12; k++)
        if (!strncasecmp(m, mo[k], 3))
            return k;
    return -1;
}

/* The Date header of a raw message as a Unix time, or -1 if absent or unparseable.
 * Enough of RFC 5322 for real corpora: [Day,] D Mon YYYY HH:MM[:SS] [+-HHMM|zone]. */
static int64_t header_date(const char *p, size_t n)
{
    const char *end = p + n;
    char line[256];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        size_t len = (size_t)(nl - p);
        if (len > 0 && p[len - 1] == '\r')
            len--;
        if (len == 0)
            return -1; /* end of header */
        if (len > 5 && !strncasecmp(p, "Date:", 5)) {
            size_t l = 0;
            const char *q = p + 5;
            /* Unfold continuation lines. */
            for (;;) {
                for (; q < p + len && l + 1 < sizeof line; q++)
                    line[l++] = *q;
                p = nl + 1;
                if (p >= end || (*p != ' ' && *p != '\t'))
                    break;
                nl = memchr(p, '\n', (size_t)(end - p));
                if (!nl)
                    nl = end;
                len = (size_t)(nl - p);
                if (len > 0 && p[len - 1] == '\r')
                    len--;
                q = p;
            }
            line[l] = '\0';
            char *s = line;
            char *comma = strchr(s, ',');
            if (comma)
                s = comma + 1;
            int day, year, hh, mm, ss = 0, used = 0;
            char mon[16], zone[16] = "";
            if (sscanf(s, " %d %15s %d %d:%d%n", &day, mon, &year, &hh, &mm, &used) != 5)
                return -1;
            s += used;
            if (*s == ':') {
                int u2 = 0;
                if (sscanf(s, ":%d%n", &ss, &u2) != 1)
                    return -1;
                s += u2;
            }
            sscanf(s, " %15s", zone);
            int mo = month_of(mon);
            if (mo < 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
                return -1;
            if (year < 50)
                year += 2000;
            else if (year < 1000)
                year += 1900;
            struct tm tm = {0};
            tm.tm_year = year - 1900;
            tm.tm_mon = mo;
            tm.tm_mday = day;
            tm.tm_hour = hh;
            tm.tm_min = mm;
            tm.tm_sec = ss;
            int64_t t = (int64_t)timegm(&tm);
            if ((zone[0] == '+' || zone[0] == '-') && strlen(zone) >= 5) {
                int z = atoi(zone + 1);
                int off = (z / 100) * 60 + z % 100;
                t -= (zone[0] == '-' ? -1 : 1) * (int64_t)off * 60;
            }
            return t > 0 ? t : -1;
        }
        p = nl + 1;
    }
    return -1;
}

static int cmp_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static mb_status read_all(const char *path, mb_buf *out)
{
    mb_buf_reset(out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mb_errf(MB_ERR_IO, "open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size > GM_MAX_EXTRA_FILE) {
        close(fd);
        return mb_errf(MB_ERR_TOOBIG, "%s: unreadable or larger than %u bytes", path,
                       GM_MAX_EXTRA_FILE);
    }
    mb_status s = mb_buf_reserve(out, (size_t)st.st_size + 1);
    while (s == MB_OK) {
        if (out->cap - out->len < 65536 && (s = mb_buf_reserve(out, 65536)) != MB_OK)
            break;
        ssize_t r = read(fd, out->data + out->len, out->cap - out->len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            s = mb_errf(MB_ERR_IO, "read %s: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        out->len += (size_t)r;
        if (out->len > GM_MAX_EXTRA_FILE)
            s = mb_errf(MB_ERR_TOOBIG, "%s grew beyond %u bytes", path, GM_MAX_EXTRA_FILE);
    }
    close(fd);
    if (out->data)
        out->data[out->len] = '\0';
    return s;
}

/* Copy every regular, non-hidden file of extra_dir, in name order, byte for byte. */
static mb_status copy_extra(gm *g)
{
    struct dirent **ents = NULL;
    int n = scandir(g->extra_dir, &ents, NULL, cmp_name);
    if (n < 0)
        return mb_errf(MB_ERR_IO, "--extra-dir %s: %s", g->extra_dir, strerror(errno));
    mb_status s = MB_OK;
    uint64_t q = g->n;
    for (int k = 0; k < n; k++) {
        if (s == MB_OK && ents[k]->d_name[0] != '.') {
            char path[PATH_MAX];
            int pl = snprintf(path, sizeof path, "%s/%s", g->extra_dir, ents[k]->d_name);
            struct stat st;
            if (pl < 0 || (size_t)pl >= sizeof path) {
                s = mb_errf(MB_ERR_INVALID, "path %s/%s is too long", g->extra_dir,
                            ents[k]->d_name);
            } else if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                s = read_all(path, &g->tmp);
                if (s == MB_OK) {
                    int64_t t = header_date(g->tmp.data ? g->tmp.data : "", g->tmp.len);
                    if (t < 0) /* deterministic stand-in: 2020-01-01 plus one hour per file */
                        t = 1577836800LL + (int64_t)(q - g->n) * 3600;
                    s = store(g, g->extra_folder, F_EXTRA, ++q, g->tmp.data ? g->tmp.data : "",
                              g->tmp.len, t, "", "-", "-", false);
                    g->extra_count++;
                }
            }
        }
        free(ents[k]);
    }
    free(ents);
    return s;
}

/* ---- main --------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: mailbus-genmail --maildir DIR --messages N [--seed S] [--eicar K]\n"
          "         [--extra-dir D --extra-folder F] [--seen-ratio R] [--manifest FILE]\n"
          "         [--dry-run] [--jobs J] [--help]\n"
          "Writes N realistic, deterministic messages into the Maildir++ tree DIR\n"
          "(INBOX = DIR/cur, folder X = DIR/.X/cur): INBOX 60%, Sent 20%, Archive 15%,\n"
          "Drafts 5%; 70% text, 20% text+HTML, 8% with a 20-200 KiB attachment, 2% with a\n"
          "1-3 MiB one (10,000 messages are about 750 MB). File mtime = Date header.\n"
          "  --seed S          PRNG seed (default 1); same arguments, same bytes and names\n"
          "  --eicar K         K messages carry eicar.com (the 68-byte EICAR test string)\n"
          "  --seen-ratio R    share of INBOX/Archive messages marked \\Seen (default 0.7);\n"
          "                    Sent is always \\Seen, Drafts \\Draft \\Seen\n"
          "  --extra-dir D --extra-folder F\n"
          "                    also copy every regular non-hidden file of D, unchanged,\n"
          "                    into folder F (mtime from its Date header when parseable)\n"
          "  --manifest FILE   one line per message: folder, file name, size, sha256,\n"
          "                    flags, has_attachment (1/0/-), eicar (1/0/-), tab-separated\n"
          "  --dry-run         generate and count everything, write no message files\n"
          "  --jobs J          worker threads (default: CPUs, at most 8); output is the\n"
          "                    same for any J\n"
          "Files are 0600, directories 0700, owned by the caller (chown them to Dovecot's\n"
          "mail user afterwards); nothing is fsync'd. DIR must not already hold these files.\n",
          f);
}

static bool valid_folder(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.')
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == ' '))
            return false;
    return true;
}

static mb_status parse_args(gm *g, int argc, char **argv, bool *help)
{
    static const struct option opts[] = {
        {"maildir", required_argument, NULL, 'd'},  {"messages", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},     {"eicar", required_argument, NULL, 'e'},
        {"extra-dir", required_argument, NULL, 'x'}, {"extra-folder", required_argument, NULL, 'f'},
        {"seen-ratio", required_argument, NULL, 'r'}, {"manifest", required_argument, NULL, 'm'},
        {"dry-run", no_argument, NULL, 'D'},        {"jobs", required_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool have_n = false;
    g->seed = 1;
    g->seen_ratio = 0.7;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    g->jobs = ncpu < 1 ? 1 : ncpu > 8 ? 8 : (unsigned)ncpu;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        mb_status s = MB_OK;
        switch (c) {
        case 'd': g->maildir = optarg; break;
        case 'n':
            s = mb_parse_u64(optarg, GM_MAX_MESSAGES, &g->n);
            have_n = true;
            break;
        case 's': s = mb_parse_u64(optarg, UINT64_MAX, &g->seed); break;
        case 'e': s = mb_parse_u64(optarg, GM_MAX_MESSAGES, &g->eicar); break;
        case 'x': g->extra_dir = optarg; break;
        case 'f': g->extra_folder = optarg; break;
        case 'm': g->manifest_path = optarg; break;
        case 'D': g->dry_run = true; break;
        case 'j': {
            uint64_t j;
            if (mb_parse_u64(optarg, 64, &j) != MB_OK || j == 0)
                return mb_errf(MB_ERR_INVALID, "--jobs '%s': expected 1-64", optarg);
            g->jobs = (unsigned)j;
            break;
        }
        case 'r': {
            char *end;
            errno = 0;
            g->seen_ratio = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(g->seen_ratio >= 0 && g->seen_ratio <= 1))
                return mb_errf(MB_ERR_INVALID, "--seen-ratio '%s': expected a number in [0, 1]",
                               optarg);
            break;
        }
        case 'h': *help = true; return MB_OK;
        default:
            return mb_errf(MB_ERR_INVALID, "unknown or incomplete option '%s' (see --help)",
                           argv[optind - 1]);
        }
        if (s != MB_OK)
            return mb_err_wrap(s, "--%s", opts[c == 'n' ? 1 : c == 's' ? 2 : 3].name);
    }
    if (optind < argc)
        return mb_errf(MB_ERR_INVALID, "unexpected argument '%s' (see --help)", argv[optind]);
    if (!g->maildir || !*g->maildir)
        return mb_errf(MB_ERR_INVALID, "--maildir is required (see --help)");
    if (strlen(g->maildir) > 3000)
        return mb_errf(MB_ERR_INVALID, "--maildir path is longer than 3000 bytes");
    if (g->extra_dir && strlen(g->extra_dir) > 3000)
        return mb_errf(MB_ERR_INVALID, "--extra-dir path is longer than 3000 bytes");
    if (!have_n)
        return mb_errf(MB_ERR_INVALID, "--messages is required (see --help)");
    if (g->eicar > g->n)
        return mb_errf(MB_ERR_INVALID, "--eicar %llu is more than --messages %llu",
                       (unsigned long long)g->eicar, (unsigned long long)g->n);
    if (!g->extra_dir != !g->extra_folder)
        return mb_errf(MB_ERR_INVALID, "--extra-dir and --extra-folder go together");
    if (g->extra_folder && !valid_folder(g->extra_folder))
        return mb_errf(MB_ERR_INVALID, "--extra-folder '%s': use 1-64 of [A-Za-z0-9_- ], "
                       "no leading dot (Maildir++ uses '.' as the hierarchy separator)",
                       g->extra_folder);
    return MB_OK;
}

typedef struct {
    gm w;           /* shallow copy of the generator with its own scratch buffers */
    uint64_t from, to;
    atomic_int *stop; /* set by the first worker that fails */
    pthread_t th;
    mb_status st;
    char err[512]; /* mb_err_last() is per thread: carry the text to the main thread */
} worker;

static void scratch_free(gm *g)
{
    free(g->att);
    g->att = NULL;
    mb_buf_free(&g->msg);
    mb_buf_free(&g->raw);
    mb_buf_free(&g->tmp);
    mb_buf_free(&g->manifest);
}

static void *work(void *arg)
{
    worker *k = arg;
    gm *g = &k->w;
    for (uint64_t i = k->from; i < k->to && k->st == MB_OK && !atomic_load(k->stop); i++) {
        msg_info info;
        g->st = MB_OK;
        gen_message(g, i, &info);
        if (g->st != MB_OK) {
            k->st = mb_err_wrap(g->st, "message %llu", (unsigned long long)i);
        } else {
            int f = g->folder[i];
            k->st = store(g, folder_names[f], f, i + 1, g->msg.data, g->msg.len, info.time,
                          info.flags, info.has_attachment ? "1" : "0", info.eicar ? "1" : "0",
                          true);
        }
    }
    if (k->st != MB_OK) {
        snprintf(k->err, sizeof k->err, "%s", mb_err_last());
        atomic_store(k->stop, 1);
    }
    return NULL;
}

static mb_status run(gm *g)
{
    struct stat st;
    if (g->extra_dir && (stat(g->extra_dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return mb_errf(MB_ERR_INVALID, "--extra-dir %s is not a readable directory", g->extra_dir);
    mb_status s = plan(g);
    if (s != MB_OK)
        return s;
    if (!g->dry_run) {
        for (int f = 0; f < 4 && s == MB_OK; f++)
            s = make_folder(g, folder_names[f]);
        if (s == MB_OK && g->extra_folder)
            s = make_folder(g, g->extra_folder);
        if (s == MB_OK)
            s = write_subscriptions(g);
        if (s != MB_OK)
            return s;
    }
    g->want_manifest = g->manifest_path != NULL;
    unsigned jobs = g->jobs;
    if (jobs > g->n / 64 + 1)
        jobs = (unsigned)(g->n / 64 + 1); /* not worth a thread for a handful */
    worker *ws = calloc(jobs, sizeof *ws);
    if (!ws)
        return mb_errf(MB_ERR_NOMEM, "%u workers", jobs);
    atomic_int stop = 0;
    unsigned started = 0;
    for (unsigned k = 0; k < jobs; k++) {
        ws[k].w = *g; /* options and plan shared read-only; scratch is per worker */
        ws[k].w.msg = ws[k].w.raw = ws[k].w.tmp = ws[k].w.manifest = (mb_buf)MB_BUF_INIT;
        ws[k].w.att = NULL;
        ws[k].w.att_cap = 0;
        ws[k].from = g->n * k / jobs;
        ws[k].to = g->n * (k + 1) / jobs;
        ws[k].stop = &stop;
    }
    for (unsigned k = 1; k < jobs; k++) {
        if (pthread_create(&ws[k].th, NULL, work, &ws[k]) != 0) {
            atomic_store(&stop, 1);
            s = mb_errf(MB_ERR_INTERNAL, "cannot start worker thread %u", k);
            break;
        }
        started = k;
    }
    if (s == MB_OK)
        work(&ws[0]);
    for (unsigned k = 1; k <= started; k++)
        pthread_join(ws[k].th, NULL);
    for (unsigned k = 0; k < jobs; k++) {
        if (s == MB_OK && ws[k].st != MB_OK)
            s = mb_errf(ws[k].st, "%s", ws[k].err);
        for (int f = 0; f < F_COUNT; f++)
            g->count[f] += ws[k].w.count[f];
        g->bytes += ws[k].w.bytes;
    }
    FILE *man = NULL;
    if (s == MB_OK && g->manifest_path) {
        man = fopen(g->manifest_path, "w");
        if (!man)
            s = mb_errf(MB_ERR_IO, "--manifest %s: %s", g->manifest_path, strerror(errno));
        for (unsigned k = 0; k < jobs && man; k++)
            fwrite(ws[k].w.manifest.data ? ws[k].w.manifest.data : "", 1, ws[k].w.manifest.len, man);
    }
    for (unsigned k = 0; k < jobs; k++)
        scratch_free(&ws[k].w);
    free(ws);
    if (s == MB_OK && g->extra_dir)
        s = copy_extra(g);
    if (man) {
        fwrite(g->manifest.data ? g->manifest.data : "", 1, g->manifest.len, man);
        if (fclose(man) != 0 && s == MB_OK)
            s = mb_errf(MB_ERR_IO, "write --manifest %s: %s", g->manifest_path, strerror(errno));
    }
    return s;
}

static void gm_free(gm *g)
{
    free(g->kind);
    free(g->folder);
    free(g->parent);
    free(g->root);
    scratch_free(g);
}

int main(int argc, char **argv)
{
    mb_log_init("genmail");
    gm g = {0};
    bool help = false;
    mb_status s = parse_args(&g, argc, argv, &help);
    if (help) {
        usage(stdout);
        return 0;
    }
    if (s != MB_OK) {
        fprintf(stderr, "mailbus-genmail: %s\n", mb_err_last());
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    s = run(&g);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (s != MB_OK) {
        MB_ERROR(NULL, NULL, "genmail failed: %s", mb_err_last());
        gm_free(&g);
        return 1;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("genmail: %llu messages%s, %llu bytes, INBOX=%llu Sent=%llu Archive=%llu Drafts=%llu",
           (unsigned long long)(g.n + g.extra_count), g.dry_run ? " (dry run)" : "",
           (unsigned long long)g.bytes, (unsigned long long)g.count[F_INBOX],
           (unsigned long long)g.count[F_SENT], (unsigned long long)g.count[F_ARCHIVE],
           (unsigned long long)g.count[F_DRAFTS]);
    if (g.extra_folder)
        printf(" %s+=%llu", g.extra_folder, (unsigned long long)g.extra_count);
    printf(", %.2f s\n", secs);
    gm_free(&g);
    return 0;
}
