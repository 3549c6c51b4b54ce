/* guard.h — what an IMAP server may send, checked on the byte stream.
 *
 * libetpan believes the server: it allocates a literal's announced size
 * before the bytes come (a "{2147483648}" is a 2 GB allocation), reads a
 * line until its CRLF however long it grows, keeps every untagged response
 * of a command until the tagged one, and waits on a server that sends one
 * byte every few seconds for ever (its timeout is per read). The guard sits
 * in the stream layer under libetpan (imap.c), sees every byte the server
 * sends before libetpan parses it, and cuts the connection, saying why,
 * when a server breaks one of these limits:
 *
 *   - a line (outside its literals) longer than max_line bytes;
 *   - a literal announced larger than max_literal bytes;
 *   - more than max_literal + max_line * 4 bytes between a command and its
 *     tagged answer (a response that never ends), except while watching a
 *     folder (IDLE), which answers when it is ended;
 *   - a line, or the answer to a command (except IDLE), that after grace_ms
 *     has averaged less than min_rate bytes per second (a slowloris).
 *
 * It is framing only, a few counters per byte, no allocation: a line ends
 * at LF; a line whose last bytes before CR LF are "{N}" or "{N+}" is
 * followed by N bytes of literal, then the line goes on; a line that starts
 * with neither '*' nor '+' is a tagged answer and ends the command. */
#ifndef MB_SOURCES_IMAP_GUARD_H
#define MB_SOURCES_IMAP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t max_line;      /* bytes of one line outside its literals */
    uint64_t max_literal; /* bytes one literal may announce */
    int64_t grace_ms;     /* before the rate applies to a line or an answer */
    uint64_t min_rate;    /* bytes per second a slow line or answer must average */
} mb_imap_limits;

/* Defaults: lines 16 MiB, literals 256 MiB, grace = the connection's
 * timeout, rate 1 KiB/s. */
#define MB_IMAP_MAX_LINE (16u * 1024 * 1024)
#define MB_IMAP_MAX_LITERAL (256ull * 1024 * 1024)
#define MB_IMAP_MIN_RATE 1024u

typedef struct {
    mb_imap_limits lim;
    uint64_t literal_left; /* literal bytes still to come on this line */
    size_t line_len;       /* bytes of the current line outside literals */
    uint64_t line_bytes;   /* every byte of the current line, literals included */
    int64_t line_start_ms; /* when its first byte came (valid while line_bytes) */
    char tail[20];         /* the line's last bytes, to find "{N}" at its end */
    size_t ntail;
    bool tagged;           /* the current line is a tagged answer */
    bool busy;             /* a command waits for its tagged answer */
    bool idle;             /* it is IDLE: no rate, no size for the answer */
    int64_t cmd_start_ms;
    uint64_t cmd_bytes;    /* bytes of the answer so far */
    char error[200];       /* why the stream was cut; "" while it was not */
} mb_imap_guard;

void mb_imap_guard_init(mb_imap_guard *g, const mb_imap_limits *lim);
/* The client wrote to the server at now_ms: a command (or DONE, or a
 * literal of one) is waiting for its answer. */
void mb_imap_guard_sent(mb_imap_guard *g, int64_t now_ms);
/* IDLE is on (the server may take as long as it likes) or off. */
void mb_imap_guard_idle(mb_imap_guard *g, bool on);
/* n bytes from the server at now_ms. false: a limit is broken and g->error
 * says which (it stays broken: every later call is false too). */
bool mb_imap_guard_recv(mb_imap_guard *g, const char *buf, size_t n, int64_t now_ms);

/* The byte count of the literal that ends line l (len bytes, CR LF or LF
 * included or not): "{123}" or "{123+}" at its very end; -1 if none, or if
 * the count has more than 12 digits. */
long long mb_imap_line_literal(const char *l, size_t len);

#endif
