/* export_out.c — the files `mailbus export` writes (export_out.h): Maildir++
 * files named after their location and flags (export_maildir.h), mboxrd files
 * (export_mbox.h), plain .eml files, and the index. One message is in memory
 * at a time, EXP_CHUNK bytes of it: each blob is read in chunks, hashed and
 * written as it is read, and its SHA-256 and size are compared with its name
 * and row at the end. */
#include "cli/export_out.h"
#include "cli/export_maildir.h"
#include "cli/export_mbox.h"

#include "util/env.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXP_CHUNK (256 * 1024) /* blob bytes read at a time */

static const char index_header[] =
    "path\tsha256\tsize\tfolder\tuidvalidity\tuid\tflags\tmbox_offset\tmbox_end\n";

/* A line of the previous index (mbox resume); strings point into old_buf. */
typedef struct {
    const char *path, *sha;
    uint64_t uidvalidity, uid, off, end;
} old_line;

struct exp_out {
    exp_format fmt;
    char *dir;
    mb_blob_store *blobs; /* borrowed */
    unsigned char *chunk; /* EXP_CHUNK */
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    uint64_t bytes, kw_dropped;
    /* the index being written, and the previous one (read by the mbox resume) */
    FILE *idx;
    char *idx_tmp, *idx_path;
    FILE *old;
    char *old_buf;
    size_t old_cap;
    old_line cur;
    bool have_cur, idx_path_existed;
    /* Where runs since the previous index cut an mbox (the cut journal,
     * <dir>/mailbus-export.tsv.cuts): what lies past a cut is not what the
     * previous index describes, even once the file has grown again. */
    struct exp_cut { char *path; uint64_t off; } *cuts;
    size_t ncuts;
    char *cuts_path;
    int cuts_fd;
    /* the folder being written */
    char *folder, *rel;
    mb_buf rel_tsv, path, tmp, line;
    exp_keywords *kws; /* maildir: the folder's keyword letters */
    /* mbox */
    exp_mbox *mbox;
    uint64_t msize;     /* its size when opened */
    uint64_t cut_limit; /* the previous index is trusted up to here */
    bool matching;  /* the previous index still agrees with what is exported */
};

/* ---- small helpers ------------------------------------------------------ */

mb_status exp_tsv_escape(mb_buf *b, const char *s)
{
    mb_status st = MB_OK;
    for (const unsigned char *p = (const unsigned char *)s; *p && !st; p++)
        st = *p < 0x20 || *p == 0x7f ? mb_buf_printf(b, "\\x%02X", *p) : mb_buf_putc(b, (char)*p);
    return st;
}

/* b = dir[/a][/c][/d], empty parts left out. */
static mb_status join(mb_buf *b, const char *dir, const char *a, const char *c, const char *d)
{
    mb_buf_reset(b);
    mb_status st = mb_buf_puts(b, dir);
    const char *parts[] = {a, c, d};
    for (size_t i = 0; i < 3 && !st; i++)
        if (parts[i] && *parts[i]) {
            st = mb_buf_putc(b, '/');
            if (!st) st = mb_buf_puts(b, parts[i]);
        }
    return st ? mb_errf(MB_ERR_NOMEM, "export: out of memory") : MB_OK;
}

static mb_status write_all(int fd, const void *p, size_t n, const char *what)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return mb_errf(MB_ERR_IO, "export: writing %s: %s", what, strerror(errno));
        c += w;
        n -= (size_t)w;
    }
    return MB_OK;
}

/* mkdir -p dir/rel, new directories mode 700. */
static mb_status mkdirs(exp_out *o, const char *rel)
{
    mb_status st = join(&o->tmp, o->dir, rel, NULL, NULL);
    if (st)
        return st;
    char *p = o->tmp.data;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s)
            continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0700) && errno != EEXIST) {
            st = mb_errf(MB_ERR_IO, "export: cannot create directory %s: %s", p, strerror(errno));
            *s = c;
            return st;
        }
        *s = c;
        if (!c)
            return MB_OK;
    }
}

/* ---- the index ---------------------------------------------------------- */

/* One line: path, sha256, size, folder, uidvalidity, uid, flags (space
 * separated), then for an mbox the message's offset and end ("-" else). */
static mb_status index_line(exp_out *o, const char *relfile, const exp_msg *m, bool mbox,
                            uint64_t off, uint64_t end)
{
    mb_buf *b = &o->line;
    mb_buf_reset(b);
    mb_status st = exp_tsv_escape(b, relfile);
    if (!st) st = mb_buf_printf(b, "\t%s\t%" PRIu64 "\t", m->sha, m->size);
    if (!st) st = exp_tsv_escape(b, o->folder);
    if (!st) st = mb_buf_printf(b, "\t%" PRIu64 "\t%" PRIu64 "\t", m->uidvalidity, m->uid);
    for (const unsigned char *f = (const unsigned char *)m->flags; *f && !st; f++) {
        if (*f == '\n')
            st = mb_buf_putc(b, ' ');
        else if (*f < 0x20 || *f == 0x7f)
            st = mb_buf_printf(b, "\\x%02X", *f);
        else
            st = mb_buf_putc(b, (char)*f);
    }
    if (!st) st = mbox ? mb_buf_printf(b, "\t%" PRIu64 "\t%" PRIu64 "\n", off, end) : mb_buf_puts(b, "\t-\t-\n");
    if (st)
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    if (fwrite(b->data, 1, b->len, o->idx) != b->len)
        return mb_errf(MB_ERR_IO, "export: writing %s: %s", o->idx_tmp, strerror(errno));
    return MB_OK;
}

/* The next mbox line of the previous index into o->cur; other lines (the
 * header, Maildir or eml lines, a last line cut short) are passed over. */
static mb_status old_next(exp_out *o)
{
    o->have_cur = false;
    while (o->old) {
        errno = 0;
        ssize_t n = getline(&o->old_buf, &o->old_cap, o->old);
        if (n < 0) {
            mb_status st = ferror(o->old) ? mb_errf(MB_ERR_IO, "export: reading %s: %s", o->idx_path,
                                                    strerror(errno ? errno : EIO))
                                          : MB_OK;
            fclose(o->old);
            o->old = NULL;
            return st;
        }
        if (o->old_buf[n - 1] != '\n')
            continue;
        o->old_buf[n - 1] = 0;
        char *f[9];
        size_t k = 0;
        for (char *s = o->old_buf; k < 9; k++) {
            f[k] = s;
            if (!(s = strchr(s, '\t')))
                break;
            *s++ = 0;
        }
        if (k != 8 || strchr(f[8], '\t'))
            continue;
        old_line *c = &o->cur;
        if (mb_parse_u64(f[4], UINT64_MAX, &c->uidvalidity) || mb_parse_u64(f[5], UINT64_MAX, &c->uid) ||
            mb_parse_u64(f[7], UINT64_MAX, &c->off) || mb_parse_u64(f[8], UINT64_MAX, &c->end))
            continue;
        c->path = f[0];
        c->sha = f[1];
        o->have_cur = true;
        return MB_OK;
    }
    return MB_OK;
}

/* The cut journal, read when a previous index exists: the lowest cut of
 * each mbox. A line cut short (a run killed while writing it) is passed over. */
static mb_status cuts_load(exp_out *o)
{
    FILE *f = fopen(o->cuts_path, "re");
    if (!f)
        return errno == ENOENT ? MB_OK
                               : mb_errf(MB_ERR_IO, "export: cannot read %s: %s", o->cuts_path, strerror(errno));
    mb_status st = MB_OK;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (!st && (n = getline(&line, &cap, f)) > 0) {
        char *tab = strrchr(line, '\t');
        uint64_t off;
        if (line[n - 1] != '\n' || !tab)
            continue;
        line[n - 1] = *tab = 0;
        if (mb_parse_u64(tab + 1, UINT64_MAX, &off))
            continue;
        size_t i = 0;
        while (i < o->ncuts && strcmp(o->cuts[i].path, line))
            i++;
        if (i < o->ncuts) {
            if (off < o->cuts[i].off)
                o->cuts[i].off = off;
            continue;
        }
        struct exp_cut *v = mb_grow(o->cuts, o->ncuts, sizeof *v);
        if (!v || !(v[o->ncuts].path = mb_strdup(line))) {
            if (v)
                o->cuts = v;
            st = mb_errf(MB_ERR_NOMEM, "export: out of memory");
            break;
        }
        o->cuts = v;
        v[o->ncuts++].off = off;
    }
    free(line);
    fclose(f);
    return st;
}

/* Journal that this run cuts the current mbox at off, durably, before it
 * does: should it die, the next run must not trust the previous index past
 * off. Without a previous index there is nothing to distrust. */
static mb_status cut_record(exp_out *o, uint64_t off)
{
    if (!o->idx_path_existed)
        return MB_OK;
    if (o->cuts_fd < 0 &&
        (o->cuts_fd = open(o->cuts_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) < 0)
        return mb_errf(MB_ERR_IO, "export: cannot create %s: %s", o->cuts_path, strerror(errno));
    mb_buf *b = &o->line;
    mb_buf_reset(b);
    if (mb_buf_printf(b, "%s\t%" PRIu64 "\n", mb_buf_cstr(&o->rel_tsv), off))
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    mb_status st = write_all(o->cuts_fd, b->data, b->len, o->cuts_path);
    if (!st && fdatasync(o->cuts_fd))
        st = mb_errf(MB_ERR_IO, "export: syncing %s: %s", o->cuts_path, strerror(errno));
    return st;
}

/* ---- open, finish, free ------------------------------------------------- */

mb_status exp_out_open(const char *dir, exp_format fmt, mb_blob_store *blobs, exp_out **out)
{
    *out = NULL;
    exp_out *o = calloc(1, sizeof *o);
    if (!o)
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    o->fmt = fmt;
    o->blobs = blobs;
    o->cuts_fd = -1;
    mb_status st = MB_OK;
    mb_buf p = MB_BUF_INIT;
    if (!(o->dir = mb_strdup(dir)) || !(o->chunk = malloc(EXP_CHUNK)) ||
        mb_buf_printf(&p, "%s/%s", dir, EXP_INDEX) || !(o->idx_path = mb_buf_steal(&p)) ||
        mb_buf_printf(&p, "%s/%s.tmp", dir, EXP_INDEX) || !(o->idx_tmp = mb_buf_steal(&p)) ||
        mb_buf_printf(&p, "%s/%s.cuts", dir, EXP_INDEX) || !(o->cuts_path = mb_buf_steal(&p)))
        st = mb_errf(MB_ERR_NOMEM, "export: out of memory");
    mb_buf_free(&p);
    if (!st && (!(o->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) || !(o->md = EVP_MD_CTX_new())))
        st = mb_errf(MB_ERR_INTERNAL, "export: no SHA-256 in OpenSSL");
    if (!st)
        st = mkdirs(o, "");
    if (!st) {
        int fd = open(o->idx_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || !(o->idx = fdopen(fd, "w"))) {
            st = mb_errf(MB_ERR_IO, "export: cannot create %s: %s", o->idx_tmp, strerror(errno));
            if (fd >= 0)
                close(fd);
        } else if (fputs(index_header, o->idx) == EOF) {
            st = mb_errf(MB_ERR_IO, "export: writing %s: %s", o->idx_tmp, strerror(errno));
        }
    }
    if (!st && fmt == EXP_MBOX && !(o->old = fopen(o->idx_path, "re")) && errno != ENOENT)
        st = mb_errf(MB_ERR_IO, "export: cannot read %s: %s", o->idx_path, strerror(errno));
    if (!st && o->old) {
        o->idx_path_existed = true;
        st = cuts_load(o);
    }
    if (!st)
        st = old_next(o);
    if (st) {
        exp_out_free(o);
        return st;
    }
    *out = o;
    return MB_OK;
}

mb_status exp_out_finish(exp_out *o)
{
    if (fflush(o->idx) || ferror(o->idx) || fsync(fileno(o->idx)))
        return mb_errf(MB_ERR_IO, "export: writing %s: %s", o->idx_tmp, strerror(errno));
    int dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || syncfs(dfd)) {
        mb_status st = mb_errf(MB_ERR_IO, "export: syncing %s: %s", o->dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return st;
    }
    int rc = fclose(o->idx);
    o->idx = NULL;
    mb_status st = MB_OK;
    if (rc)
        st = mb_errf(MB_ERR_IO, "export: writing %s: %s", o->idx_tmp, strerror(errno));
    else if (rename(o->idx_tmp, o->idx_path))
        st = mb_errf(MB_ERR_IO, "export: renaming %s: %s", o->idx_tmp, strerror(errno));
    else if (unlink(o->cuts_path) && errno != ENOENT) /* the new index is exact */
        st = mb_errf(MB_ERR_IO, "export: removing %s: %s", o->cuts_path, strerror(errno));
    else if (fsync(dfd))
        st = mb_errf(MB_ERR_IO, "export: syncing %s: %s", o->dir, strerror(errno));
    close(dfd);
    return st;
}

static void folder_clear(exp_out *o)
{
    if (o->kws)
        o->kw_dropped += exp_keywords_left_out(o->kws);
    exp_keywords_free(o->kws);
    o->kws = NULL;
    exp_mbox_close(o->mbox); /* after an error: that error is the one to report */
    o->mbox = NULL;
    free(o->folder);
    free(o->rel);
    o->folder = o->rel = NULL;
}

void exp_out_free(exp_out *o)
{
    if (!o)
        return;
    folder_clear(o);
    if (o->idx) {
        fclose(o->idx);
        unlink(o->idx_tmp);
    }
    if (o->old)
        fclose(o->old);
    free(o->old_buf);
    if (o->cuts_fd >= 0)
        close(o->cuts_fd);
    for (size_t i = 0; i < o->ncuts; i++)
        free(o->cuts[i].path);
    free(o->cuts);
    free(o->cuts_path);
    EVP_MD_CTX_free(o->md);
    EVP_MD_free(o->sha256);
    mb_buf_free(&o->rel_tsv);
    mb_buf_free(&o->path);
    mb_buf_free(&o->tmp);
    mb_buf_free(&o->line);
    free(o->chunk);
    free(o->idx_path);
    free(o->idx_tmp);
    free(o->dir);
    free(o);
}

uint64_t exp_keywords_dropped(const exp_out *o) { return o->kw_dropped; }
uint64_t exp_bytes_written(const exp_out *o) { return o->bytes; }

/* ---- copying a blob ----------------------------------------------------- */

/* Stream blob m->sha into fd (Maildir, eml) or, with fd < 0, through the
 * mbox (export_mbox.h); then check its size and SHA-256. On failure
 * *wrote says whether it was the output (what ends the export) rather than
 * the blob (what fails this message). */
static mb_status copy_blob(exp_out *o, const exp_msg *m, int fd, const char *target, bool *wrote)
{
    *wrote = false;
    char path[4096];
    mb_status st = mb_blob_path(o->blobs, m->sha, path, sizeof path);
    if (st)
        return mb_err_wrap(st, "blob %s", m->sha);
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return errno == ENOENT ? mb_errf(MB_ERR_NOTFOUND, "blob %s is missing (%s)", m->sha, path)
                               : mb_errf(MB_ERR_IO, "blob %s: %s: %s", m->sha, path, strerror(errno));
    (void)posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
    if (!EVP_DigestInit_ex(o->md, o->sha256, NULL)) {
        close(in);
        *wrote = true; /* not the blob's fault: stop */
        return mb_errf(MB_ERR_INTERNAL, "export: SHA-256 init failed");
    }
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(in, o->chunk, EXP_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = mb_errf(MB_ERR_IO, "blob %s: reading %s: %s", m->sha, path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        total += (uint64_t)n;
        EVP_DigestUpdate(o->md, o->chunk, (size_t)n);
        st = fd >= 0 ? write_all(fd, o->chunk, (size_t)n, target) : exp_mbox_write(o->mbox, o->chunk, (size_t)n);
        if (st) {
            *wrote = true;
            break;
        }
    }
    close(in);
    if (st)
        return st;
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    char hex[65];
    EVP_DigestFinal_ex(o->md, d, &dl);
    for (unsigned i = 0; i < 32 && dl == 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (dl != 32 || strcmp(hex, m->sha) || total != m->size)
        return mb_errf(MB_ERR_INVALID, "blob %s is damaged: its %" PRIu64 " bytes hash to %.64s (stored: %" PRIu64
                       " bytes) (%s)", m->sha, total, dl == 32 ? hex : "?", m->size, path);
    return MB_OK;
}

/* A file of its own (Maildir, eml): written as tmp, renamed to final; kept
 * when final already has the message's size. */
static mb_status file_message(exp_out *o, const exp_msg *m, const char *tmp, const char *final,
                              const char *relfile, exp_result *res)
{
    struct stat sb;
    if (!stat(final, &sb) && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == m->size) {
        *res = EXP_SKIPPED;
        return index_line(o, relfile, m, false, 0, 0);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return mb_errf(MB_ERR_IO, "export: cannot create %s: %s", tmp, strerror(errno));
    bool wrote;
    mb_status st = copy_blob(o, m, fd, tmp, &wrote);
    if (!st && m->internal_date > 0) {
        struct timespec ts[2] = {{.tv_sec = m->internal_date}, {.tv_sec = m->internal_date}};
        if (futimens(fd, ts)) {
            st = mb_errf(MB_ERR_IO, "export: setting the time of %s: %s", tmp, strerror(errno));
            wrote = true;
        }
    }
    if (close(fd) && !st) {
        st = mb_errf(MB_ERR_IO, "export: writing %s: %s", tmp, strerror(errno));
        wrote = true;
    }
    if (!st && rename(tmp, final)) {
        st = mb_errf(MB_ERR_IO, "export: renaming %s: %s", tmp, strerror(errno));
        wrote = true;
    }
    if (st) {
        unlink(tmp);
        if (wrote)
            return st;
        *res = EXP_FAILED; /* the blob's fault: the message's error, in mb_err_last() */
        return MB_OK;
    }
    o->bytes += m->size;
    *res = EXP_WRITTEN;
    return index_line(o, relfile, m, false, 0, 0);
}

/* ---- Maildir ------------------------------------------------------------ */

static mb_status maildir_message(exp_out *o, const exp_msg *m, exp_result *res)
{
    char fl[64], name[256], relfile[4096];
    mb_status st = exp_maildir_info(o->kws, m->flags, fl);
    if (st)
        return st;
    snprintf(name, sizeof name, "%" PRId64 ".M%" PRIu64 "V%" PRIu64 ".mailbus,S=%" PRIu64 ":2,%s",
             m->internal_date, m->uid, m->uidvalidity, m->size, fl);
    snprintf(relfile, sizeof relfile, "%s%scur/%s", o->rel, *o->rel ? "/" : "", name);
    st = join(&o->path, o->dir, o->rel, "cur", name);
    if (!st) st = join(&o->tmp, o->dir, o->rel, "tmp", name);
    return st ? st : file_message(o, m, o->tmp.data, o->path.data, relfile, res);
}

/* ---- eml ---------------------------------------------------------------- */

static mb_status eml_message(exp_out *o, const exp_msg *m, exp_result *res)
{
    char name[64], tname[64], relfile[4096];
    snprintf(name, sizeof name, "%" PRIu64 ".eml", m->uid);
    snprintf(tname, sizeof tname, "%" PRIu64 ".eml.tmp", m->uid);
    snprintf(relfile, sizeof relfile, "%s/%s", o->rel, name);
    mb_status st = join(&o->path, o->dir, o->rel, name, NULL);
    if (!st) st = join(&o->tmp, o->dir, o->rel, tname, NULL);
    return st ? st : file_message(o, m, o->tmp.data, o->path.data, relfile, res);
}

/* ---- mbox (mboxrd) ------------------------------------------------------ */

/* Stop trusting the previous index: cut the mbox after the last message it
 * vouched for. */
static mb_status mbox_diverge(exp_out *o)
{
    o->matching = false;
    uint64_t pos = exp_mbox_pos(o->mbox);
    mb_status st = cut_record(o, pos);
    return st ? st : exp_mbox_truncate(o->mbox, pos);
}

/* A message the previous index lists at this very place, with these bytes
 * and within the file, is there already. */
static mb_status mbox_message(exp_out *o, const exp_msg *m, exp_result *res)
{
    mb_status st = MB_OK;
    const char *rel = mb_buf_cstr(&o->rel_tsv);
    if (o->matching) {
        while (!st && o->have_cur && strcmp(o->cur.path, rel) < 0)
            st = old_next(o);
        const old_line *c = &o->cur;
        if (!st && o->have_cur && !strcmp(c->path, rel) && c->uidvalidity == m->uidvalidity &&
            c->uid == m->uid && !strcmp(c->sha, m->sha) && c->off == exp_mbox_pos(o->mbox) &&
            c->end > c->off && c->end <= o->msize && c->end <= o->cut_limit) {
            uint64_t off = c->off, end = c->end;
            if (!(st = exp_mbox_seek(o->mbox, end)) && !(st = old_next(o)))
                st = index_line(o, o->rel, m, true, off, end);
            *res = EXP_SKIPPED;
            return st;
        }
        if (!st) st = mbox_diverge(o);
        if (st)
            return st;
    }
    bool wrote = true;
    uint64_t start, end;
    st = exp_mbox_begin(o->mbox, m->internal_date);
    if (!st) st = copy_blob(o, m, -1, o->path.data, &wrote);
    if (!st) {
        wrote = true;
        st = exp_mbox_end(o->mbox, &start, &end);
    }
    if (st) {
        /* cut the file back to where this message began, keeping the error */
        char *why = strdup(mb_err_last());
        mb_status cut = exp_mbox_abandon(o->mbox);
        if (!cut)
            mb_errf(st, "%s", why ? why : mb_status_str(st));
        free(why);
        if (cut || wrote) /* the output failed: the export ends */
            return cut ? cut : st;
        *res = EXP_FAILED; /* the blob's fault: this message's error */
        return MB_OK;
    }
    o->bytes += m->size;
    *res = EXP_WRITTEN;
    return index_line(o, o->rel, m, true, start, end);
}

/* ---- folders ------------------------------------------------------------ */

mb_status exp_folder_begin(exp_out *o, const char *folder, const char *rel)
{
    folder_clear(o);
    mb_buf_reset(&o->rel_tsv);
    if (!(o->folder = mb_strdup(folder)) || !(o->rel = mb_strdup(rel)) || exp_tsv_escape(&o->rel_tsv, rel))
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    mb_status st = MB_OK;
    switch (o->fmt) {
    case EXP_MAILDIR:
        for (size_t i = 0; i < 3 && !st; i++) {
            static const char *const sub[] = {"cur", "new", "tmp"};
            st = join(&o->path, "", rel, sub[i], NULL);
            if (!st) st = mkdirs(o, o->path.data + 1);
        }
        if (!st && *rel) { /* Maildir++ marks a folder (Dovecot writes it too) */
            st = join(&o->path, o->dir, rel, "maildirfolder", NULL);
            int fd = st ? -1 : open(o->path.data, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
            if (!st && fd < 0)
                st = mb_errf(MB_ERR_IO, "export: cannot create %s: %s", o->path.data, strerror(errno));
            if (fd >= 0)
                close(fd);
        }
        if (!st) st = join(&o->path, o->dir, rel, NULL, NULL);
        return st ? st : exp_keywords_open(o->path.data, folder, &o->kws);
    case EXP_EML:
        return mkdirs(o, rel);
    case EXP_MBOX: {
        const char *slash = strrchr(rel, '/');
        if (slash) {
            char *parent = mb_strndup(rel, (size_t)(slash - rel));
            if (!parent)
                return mb_errf(MB_ERR_NOMEM, "export: out of memory");
            st = mkdirs(o, parent);
            free(parent);
        }
        if (!st) st = join(&o->path, o->dir, rel, NULL, NULL);
        if (!st) st = exp_mbox_open(o->path.data, &o->mbox, &o->msize);
        o->matching = true;
        o->cut_limit = UINT64_MAX;
        for (size_t i = 0; i < o->ncuts; i++)
            if (!strcmp(o->cuts[i].path, mb_buf_cstr(&o->rel_tsv)))
                o->cut_limit = o->cuts[i].off;
        return st;
    }
    }
    return mb_errf(MB_ERR_INTERNAL, "export: unknown format");
}

mb_status exp_message(exp_out *o, const exp_msg *m, exp_result *res)
{
    *res = EXP_FAILED;
    switch (o->fmt) {
    case EXP_MAILDIR: return maildir_message(o, m, res);
    case EXP_EML: return eml_message(o, m, res);
    case EXP_MBOX: return mbox_message(o, m, res);
    }
    return mb_errf(MB_ERR_INTERNAL, "export: unknown format");
}

mb_status exp_folder_end(exp_out *o)
{
    mb_status st = MB_OK;
    if (o->mbox) {
        /* what is left past the last message (from a run that was killed,
         * of messages gone since) goes */
        if (o->matching && o->msize > exp_mbox_pos(o->mbox))
            st = mbox_diverge(o);
        mb_status c = exp_mbox_close(o->mbox);
        o->mbox = NULL;
        if (!st)
            st = c;
    }
    folder_clear(o);
    return st;
}
