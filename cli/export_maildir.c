/* export_maildir.c — Maildir info letters and dovecot-keywords
 * (export_maildir.h). */
#include "cli/export_maildir.h"

#include "sources/imap/imap.h"
#include "util/buf.h"
#include "util/env.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define KW_MAX 26 /* letters a..z */

struct exp_keywords {
    char *folder;
    char *path, *tmp;  /* <dir>/dovecot-keywords and its temp file */
    char *kw[KW_MAX];  /* letter index -> the keyword's raw bytes */
    char **warned;     /* keywords (stored forms) already warned about */
    size_t nwarned;
    uint64_t left_out;
};

void exp_keywords_free(exp_keywords *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < KW_MAX; i++)
        free(k->kw[i]);
    for (size_t i = 0; i < k->nwarned; i++)
        free(k->warned[i]);
    free(k->warned);
    free(k->folder);
    free(k->path);
    free(k->tmp);
    free(k);
}

uint64_t exp_keywords_left_out(const exp_keywords *k) { return k->left_out; }

/* "N keyword" lines; anything else (Dovecot writes nothing else) is passed over. */
static mb_status load(exp_keywords *k)
{
    FILE *f = fopen(k->path, "re");
    if (!f)
        return errno == ENOENT ? MB_OK : mb_errf(MB_ERR_IO, "export: cannot read %s: %s", k->path, strerror(errno));
    mb_status st = MB_OK;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while (!st && (n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n')
            line[--n] = 0;
        char *sp = strchr(line, ' ');
        uint64_t i;
        if (!sp || !sp[1])
            continue;
        *sp = 0;
        if (mb_parse_u64(line, KW_MAX - 1, &i) || k->kw[i])
            continue;
        if (!(k->kw[i] = mb_strdup(sp + 1)))
            st = mb_errf(MB_ERR_NOMEM, "export: out of memory");
    }
    free(line);
    fclose(f);
    return st;
}

mb_status exp_keywords_open(const char *dir, const char *folder, exp_keywords **out)
{
    *out = NULL;
    exp_keywords *k = calloc(1, sizeof *k);
    mb_buf p = MB_BUF_INIT;
    if (!k || !(k->folder = mb_strdup(folder)) || mb_buf_printf(&p, "%s/dovecot-keywords", dir) ||
        !(k->path = mb_buf_steal(&p)) || mb_buf_printf(&p, "%s/dovecot-keywords.mailbus-tmp", dir) ||
        !(k->tmp = mb_buf_steal(&p))) {
        mb_buf_free(&p);
        exp_keywords_free(k);
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    }
    mb_status st = load(k);
    if (st) {
        exp_keywords_free(k);
        return st;
    }
    *out = k;
    return MB_OK;
}

static mb_status save(exp_keywords *k)
{
    mb_buf b = MB_BUF_INIT;
    mb_status st = MB_OK;
    for (int i = 0; i < KW_MAX && !st; i++)
        if (k->kw[i])
            st = mb_buf_printf(&b, "%d %s\n", i, k->kw[i]);
    if (st) {
        mb_buf_free(&b);
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    }
    int fd = open(k->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        st = mb_errf(MB_ERR_IO, "export: cannot create %s: %s", k->tmp, strerror(errno));
    for (size_t done = 0; !st && done < b.len;) {
        ssize_t w = write(fd, b.data + done, b.len - done);
        if (w < 0 && errno != EINTR)
            st = mb_errf(MB_ERR_IO, "export: writing %s: %s", k->tmp, strerror(errno));
        else if (w > 0)
            done += (size_t)w;
    }
    if (fd >= 0 && close(fd) && !st)
        st = mb_errf(MB_ERR_IO, "export: writing %s: %s", k->tmp, strerror(errno));
    if (!st && rename(k->tmp, k->path))
        st = mb_errf(MB_ERR_IO, "export: renaming %s: %s", k->tmp, strerror(errno));
    mb_buf_free(&b);
    return st;
}

/* Keyword kw (stored form) is left out of this message's name: warn once. */
static mb_status leave_out(exp_keywords *k, const char *kw, const char *why)
{
    k->left_out++;
    for (size_t i = 0; i < k->nwarned; i++)
        if (!strcmp(k->warned[i], kw))
            return MB_OK;
    char **v = mb_grow(k->warned, k->nwarned, sizeof *v);
    if (!v)
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    k->warned = v;
    if (!(v[k->nwarned] = mb_strdup(kw)))
        return mb_errf(MB_ERR_NOMEM, "export: out of memory");
    k->nwarned++;
    fprintf(stderr, "mailbus export: folder '%s': keyword '%s' left out of the Maildir file names: %s\n",
            k->folder, kw, why);
    return MB_OK;
}

/* The letter of keyword kw (stored form), added to dovecot-keywords if new;
 * 0 if it cannot have one. */
static mb_status letter_of(exp_keywords *k, const char *kw, char *letter)
{
    *letter = 0;
    char *raw;
    size_t len;
    if (mb_imap_unescape(kw, &raw, &len))
        return leave_out(k, kw, "malformed escaped form");
    bool ok = len > 0 && strlen(raw) == len;
    for (const unsigned char *p = (const unsigned char *)raw; *p && ok; p++)
        ok = *p > 0x20 && *p != 0x7f;
    int free_i = -1;
    for (int i = 0; i < KW_MAX && ok && !*letter; i++) {
        if (k->kw[i] && !strcmp(k->kw[i], raw))
            *letter = (char)('a' + i);
        else if (!k->kw[i] && free_i < 0)
            free_i = i;
    }
    mb_status st = MB_OK;
    if (!ok) {
        st = leave_out(k, kw, "dovecot-keywords cannot hold a space or a control character");
    } else if (!*letter && free_i < 0) {
        st = leave_out(k, kw, "the folder has 26 keywords already (letters a-z)");
    } else if (!*letter) {
        k->kw[free_i] = raw;
        raw = NULL;
        *letter = (char)('a' + free_i);
        st = save(k); /* before any file name uses the letter */
    }
    free(raw);
    return st;
}

mb_status exp_maildir_info(exp_keywords *k, const char *flags, char out[64])
{
    static const struct {
        const char *flag;
        char c;
    } sys[] = {
        {"\\Draft", 'D'}, {"\\Flagged", 'F'}, {"\\Answered", 'R'}, {"\\Seen", 'S'}, {"\\Deleted", 'T'},
    };
    bool upper[26] = {0}, lower[26] = {0};
    mb_status st = MB_OK;
    char flag[1024];
    for (const char *f = flags; *f && !st;) {
        size_t n = strcspn(f, "\n");
        if (n >= sizeof flag) {
            st = leave_out(k, "(a keyword longer than 1023 bytes)", "too long");
        } else if (n) {
            memcpy(flag, f, n);
            flag[n] = 0;
            if (flag[0] == '\\') { /* \Recent and unknown system flags have no letter */
                for (size_t i = 0; i < MB_ARRAY_LEN(sys); i++)
                    if (!strcasecmp(flag, sys[i].flag))
                        upper[sys[i].c - 'A'] = true;
            } else {
                char c;
                st = letter_of(k, flag, &c);
                if (c)
                    lower[c - 'a'] = true;
            }
        }
        f += n + (f[n] == '\n');
    }
    size_t n = 0;
    for (int i = 0; i < 26; i++)
        if (upper[i])
            out[n++] = (char)('A' + i);
    for (int i = 0; i < 26; i++)
        if (lower[i])
            out[n++] = (char)('a' + i);
    out[n] = 0;
    return st;
}
