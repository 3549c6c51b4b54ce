/* export_mbox.c — mboxrd writing (export_mbox.h). */
#include "cli/export_mbox.h"

#include "util/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MBOX_OBUF (64 * 1024)

static const char from_word[] = "From ";

struct exp_mbox {
    char *path;
    int fd;
    uint64_t pos;   /* file offset of obuf[0]: where the buffered bytes go */
    uint64_t start; /* where the message being written began */
    char obuf[MBOX_OBUF];
    size_t olen;
    /* quoting: at a line start, the '>'s and the part of "From " seen so far */
    bool bol;
    uint64_t gt;
    size_t from_k;
    char last; /* the last byte of the message as written */
};

static mb_status flush(exp_mbox *m)
{
    const char *p = m->obuf;
    size_t n = m->olen;
    while (n) {
        ssize_t w = write(m->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return mb_errf(MB_ERR_IO, "export: writing %s: %s", m->path, strerror(errno));
        p += w;
        n -= (size_t)w;
        m->pos += (uint64_t)w;
    }
    m->olen = 0;
    return MB_OK;
}

static mb_status put(exp_mbox *m, const char *p, size_t n)
{
    while (n) {
        if (m->olen == MBOX_OBUF) {
            mb_status st = flush(m);
            if (st)
                return st;
        }
        size_t k = MBOX_OBUF - m->olen < n ? MBOX_OBUF - m->olen : n;
        memcpy(m->obuf + m->olen, p, k);
        m->olen += k;
        p += k;
        n -= k;
    }
    return MB_OK;
}

mb_status exp_mbox_open(const char *path, exp_mbox **out, uint64_t *size)
{
    *out = NULL;
    exp_mbox *m = calloc(1, sizeof *m);
    if (!m || !(m->path = mb_strdup(path))) {
        free(m);
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    }
    struct stat sb;
    m->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (m->fd < 0 || fstat(m->fd, &sb)) {
        mb_status st = mb_errf(MB_ERR_IO, "export: cannot open %s: %s", path, strerror(errno));
        exp_mbox_close(m);
        return st;
    }
    *size = (uint64_t)sb.st_size;
    *out = m;
    return MB_OK;
}

mb_status exp_mbox_seek(exp_mbox *m, uint64_t pos)
{
    m->olen = 0;
    m->pos = pos;
    if (lseek(m->fd, (off_t)pos, SEEK_SET) < 0)
        return mb_errf(MB_ERR_IO, "export: seeking in %s: %s", m->path, strerror(errno));
    return MB_OK;
}

mb_status exp_mbox_truncate(exp_mbox *m, uint64_t pos)
{
    m->olen = 0;
    m->pos = pos;
    if (ftruncate(m->fd, (off_t)pos) || lseek(m->fd, (off_t)pos, SEEK_SET) < 0)
        return mb_errf(MB_ERR_IO, "export: truncating %s: %s", m->path, strerror(errno));
    return MB_OK;
}

uint64_t exp_mbox_pos(const exp_mbox *m) { return m->pos + m->olen; }

mb_status exp_mbox_begin(exp_mbox *m, int64_t internal_date)
{
    char head[128];
    struct tm tm;
    time_t t = (time_t)(internal_date > 0 ? internal_date : 0);
    if (!gmtime_r(&t, &tm)) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    size_t n = strftime(head, sizeof head, "From mailbus@localhost %a %b %e %H:%M:%S %Y\n", &tm);
    m->start = exp_mbox_pos(m);
    m->bol = true;
    m->gt = 0;
    m->from_k = 0;
    m->last = '\n';
    return put(m, head, n);
}

/* The held start of a line, with one more '>' if it was a From line. */
static mb_status release(exp_mbox *m, bool quote)
{
    static const char gts[64] = ">>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>>";
    mb_status st = quote ? put(m, ">", 1) : MB_OK;
    for (uint64_t n = m->gt; n && !st;) {
        size_t k = n < sizeof gts ? (size_t)n : sizeof gts;
        st = put(m, gts, k);
        n -= k;
    }
    if (!st) st = put(m, from_word, m->from_k);
    if (m->from_k)
        m->last = from_word[m->from_k - 1];
    else if (m->gt)
        m->last = '>';
    m->bol = false;
    m->gt = 0;
    m->from_k = 0;
    return st;
}

mb_status exp_mbox_write(exp_mbox *m, const void *data, size_t n)
{
    const char *s = data, *e = s + n;
    mb_status st = MB_OK;
    while (s < e && !st) {
        if (m->bol) {
            if (*s == '>' && !m->from_k) {
                m->gt++;
                s++;
                continue;
            }
            if (*s == from_word[m->from_k]) {
                s++;
                if (++m->from_k == sizeof from_word - 1)
                    st = release(m, true);
                continue;
            }
            if ((st = release(m, false)))
                break;
        }
        const char *nl = memchr(s, '\n', (size_t)(e - s));
        const char *stop = nl ? nl + 1 : e;
        st = put(m, s, (size_t)(stop - s));
        m->last = stop[-1];
        m->bol = nl != NULL;
        s = stop;
    }
    return st;
}

mb_status exp_mbox_end(exp_mbox *m, uint64_t *start, uint64_t *end)
{
    mb_status st = m->bol && (m->gt || m->from_k) ? release(m, false) : MB_OK;
    if (!st && m->last != '\n') st = put(m, "\n", 1);
    if (!st) st = put(m, "\n", 1);
    if (!st) st = flush(m);
    *start = m->start;
    *end = m->pos;
    return st;
}

mb_status exp_mbox_abandon(exp_mbox *m) { return exp_mbox_truncate(m, m->start); }

mb_status exp_mbox_close(exp_mbox *m)
{
    if (!m)
        return MB_OK;
    mb_status st = MB_OK;
    if (m->fd >= 0 && close(m->fd))
        st = mb_errf(MB_ERR_IO, "export: writing %s: %s", m->path, strerror(errno));
    free(m->path);
    free(m);
    return st;
}
