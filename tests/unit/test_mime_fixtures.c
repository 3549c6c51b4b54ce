/* test_mime_fixtures.c — fixture-driven MIME parser tests (curl style).
 *
 * 1. Every tests/fixtures/mime/<source>/<msg>.expect is checked against
 *    mb_mime_parse of <msg> (format in tests/fixtures/mime/README.md).
 * 2. Every message in the shared corpus (MB_MIME_CORPUS, default
 *    /work/shared/corpus; skipped if absent) and every fixture parses
 *    without crash or leak, within a time bound, yields valid UTF-8, and each
 *    attachment re-decoded through mb_mime_part_decode matches its recorded
 *    size and SHA-256. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mime/mime.h"

typedef struct {
    char *data;
    size_t len;
} mapped;

static int map_file(const char *path, mapped *m)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    m->len = (size_t)st.st_size;
    m->data = m->len ? mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    return m->len && m->data == MAP_FAILED ? -1 : 0;
}

static void unmap(mapped *m)
{
    if (m->len)
        munmap(m->data, m->len);
}

static const char *fixture_root(char *buf, size_t n)
{
    const char *src = getenv("MB_SOURCE_DIR");
    snprintf(buf, n, "%s/tests/fixtures/mime", src ? src : ".");
    return buf;
}

/* ---- decode cross-check ---- */

typedef struct {
    EVP_MD_CTX *md;
    uint64_t n;
    size_t max_chunk;
} dsink;

static mb_status dsink_put(void *ctx, const void *p, size_t n)
{
    dsink *d = ctx;
    d->n += n;
    if (n > d->max_chunk)
        d->max_chunk = n;
    EVP_DigestUpdate(d->md, p, n);
    return MB_OK;
}

static void check_decode(const mapped *m, const mb_attachment *a, const char *file)
{
    dsink d = {EVP_MD_CTX_new(), 0, 0};
    EVP_DigestInit_ex(d.md, EVP_sha256(), NULL);
    mb_status s = mb_mime_part_decode(m->data ? m->data : "", m->len, a->part, dsink_put, &d);
    if (s != MB_OK)
        fail_msg("%s: part_decode %s: %s", file, a->part, mb_err_last());
    unsigned char md[32];
    unsigned int ml;
    EVP_DigestFinal_ex(d.md, md, &ml);
    EVP_MD_CTX_free(d.md);
    char hex[65];
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    if (d.n != a->size || strcmp(hex, a->sha256))
        fail_msg("%s: part %s decoded to %llu bytes %s, record says %llu %s", file, a->part,
                 (unsigned long long)d.n, hex, (unsigned long long)a->size, a->sha256);
    assert_true(d.max_chunk <= MB_MIME_CHUNK);
}

static bool utf8_ok(const char *s) { return !s || mb_mime_utf8_valid(s, strlen(s)); }

static void check_record_utf8(const mb_rec_parsed *r, const char *file)
{
    bool ok = utf8_ok(r->subject) && utf8_ok(r->snippet) && utf8_ok(r->message_id);
    const mb_addressv *lists[] = {&r->from, &r->to, &r->cc, &r->bcc, &r->reply_to};
    for (size_t l = 0; l < 5; l++)
        for (size_t i = 0; i < lists[l]->n; i++)
            ok = ok && utf8_ok(lists[l]->v[i].name) && utf8_ok(lists[l]->v[i].addr);
    for (size_t i = 0; i < r->attachments.n; i++)
        ok = ok && utf8_ok(r->attachments.v[i].filename);
    for (size_t i = 0; i < r->defects.n; i++)
        ok = ok && utf8_ok(r->defects.v[i]);
    if (!ok)
        fail_msg("%s: record holds invalid UTF-8", file);
    assert_non_null(r->thread_id);
    assert_int_equal(strlen(r->thread_id), 16);
    assert_non_null(r->snippet);
}

/* Parse one file fully and cross-check; returns the seconds it took. */
static double sweep_one(const char *path)
{
    mapped m = {0};
    if (map_file(path, &m))
        fail_msg("cannot read %s", path);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    mb_rec_parsed r;
    memset(&r, 0, sizeof r);
    mb_status s = mb_mime_parse(m.data, m.len, 1000, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (s != MB_OK)
        fail_msg("%s: parse failed: %s", path, mb_err_last());
    check_record_utf8(&r, path);
    for (size_t i = 0; i < r.attachments.n; i++)
        check_decode(&m, &r.attachments.v[i], path);
    assert_int_equal(mb_mime_part_decode(m.data ? m.data : "", m.len, "99.99", dsink_put, NULL),
                     MB_ERR_NOTFOUND);
    mb_mime_parsed_clear(&r);
    unmap(&m);
    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

static bool is_message_name(const char *n)
{
    size_t l = strlen(n);
    return (l > 4 && (!strcmp(n + l - 4, ".eml") || !strcmp(n + l - 4, ".msg"))) ||
           (!strncmp(n, "msg_", 4) && l > 4 && !strcmp(n + l - 4, ".txt"));
}

static int sweep_dir(const char *dir, double *worst)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st))
            continue;
        if (S_ISDIR(st.st_mode)) {
            count += sweep_dir(p, worst);
        } else if (is_message_name(e->d_name)) {
            double t = sweep_one(p);
            if (t > *worst)
                *worst = t;
            if (t > 2.0)
                fail_msg("%s took %.2f s to parse", p, t);
            count++;
        }
    }
    closedir(d);
    return count;
}

static void test_corpus_sweep(void **state)
{
    (void)state;
    const char *corpus = getenv("MB_MIME_CORPUS");
    if (!corpus)
        corpus = "/work/shared/corpus";
    double worst = 0;
    char root[4096];
    int nf = sweep_dir(fixture_root(root, sizeof root), &worst);
    assert_true(nf >= 10);
    int nc = sweep_dir(corpus, &worst);
    print_message("swept %d fixtures + %d corpus messages, slowest %.3f s\n", nf, nc, worst);
    if (nc == 0)
        print_message("corpus %s not present: only fixtures swept\n", corpus);
}

/* ---- .expect checks ---- */

static void fmt_addr(const mb_address *a, char *out, size_t n)
{
    if (a->name)
        snprintf(out, n, "%s <%s>", a->name, a->addr);
    else
        snprintf(out, n, "<%s>", a->addr);
}

static void expect_field(const char *file, int line, const char *want, const char *got)
{
    if (strcmp(want, "*") && strcmp(want, got ? got : "-"))
        fail_msg("%s:%d: expected '%s', got '%s'", file, line, want, got ? got : "-");
}

static void check_line(const char *file, int ln, char *l, const mb_rec_parsed *r)
{
    char *eq = strchr(l, '=');
    if (!eq)
        fail_msg("%s:%d: no '=' in line", file, ln);
    char key[64];
    size_t kl = (size_t)(eq - l);
    bool ge = kl && l[kl - 1] == '>', prefix = kl && l[kl - 1] == '^', sub = kl && l[kl - 1] == '~';
    if (ge || prefix || sub)
        kl--;
    if (kl >= sizeof key)
        fail_msg("%s:%d: key too long", file, ln);
    memcpy(key, l, kl);
    key[kl] = '\0';
    const char *val = eq + 1;
    int idx = -1;
    char *br = strchr(key, '[');
    if (br) {
        idx = atoi(br + 1);
        *br = '\0';
    }
    char tmp[1024];
    if (!strcmp(key, "subject")) {
        expect_field(file, ln, val, r->subject);
    } else if (!strcmp(key, "snippet")) {
        if (prefix) {
            if (strncmp(r->snippet, val, strlen(val)))
                fail_msg("%s:%d: snippet '%s' does not start with '%s'", file, ln, r->snippet, val);
        } else {
            expect_field(file, ln, val, r->snippet);
        }
    } else if (!strcmp(key, "date")) {
        if (r->date != atoll(val))
            fail_msg("%s:%d: date %lld, expected %s", file, ln, (long long)r->date, val);
    } else if (!strcmp(key, "message_id")) {
        expect_field(file, ln, val, r->message_id);
    } else if (!strcmp(key, "from") || !strcmp(key, "to") || !strcmp(key, "cc") ||
               !strcmp(key, "reply_to")) {
        const mb_addressv *v = !strcmp(key, "from") ? &r->from : !strcmp(key, "to") ? &r->to
                               : !strcmp(key, "cc") ? &r->cc : &r->reply_to;
        if (idx < 0 || (size_t)idx >= v->n)
            fail_msg("%s:%d: %s has %zu entries, no [%d]", file, ln, key, v->n, idx);
        fmt_addr(&v->v[idx], tmp, sizeof tmp);
        expect_field(file, ln, val, tmp);
    } else if (!strcmp(key, "attachments")) {
        if (r->attachments.n != (size_t)atoi(val))
            fail_msg("%s:%d: %zu attachments, expected %s", file, ln, r->attachments.n, val);
    } else if (!strcmp(key, "attachment") || !strcmp(key, "cid")) {
        if (idx < 0 || (size_t)idx >= r->attachments.n)
            fail_msg("%s:%d: no attachment [%d] (have %zu)", file, ln, idx, r->attachments.n);
        const mb_attachment *a = &r->attachments.v[idx];
        if (!strcmp(key, "cid")) {
            expect_field(file, ln, val, a->content_id);
            return;
        }
        char size[32];
        snprintf(size, sizeof size, "%llu", (unsigned long long)a->size);
        const char *got[] = {a->part, a->filename, a->content_type, a->disposition, size,
                             a->sha256};
        snprintf(tmp, sizeof tmp, "%s", val);
        char *save = NULL, *f = tmp;
        for (int i = 0; i < 6; i++) {
            char *bar = strchr(f, '|');
            if (!bar && i < 5)
                fail_msg("%s:%d: attachment line needs 6 fields", file, ln);
            if (bar)
                *bar = '\0';
            expect_field(file, ln, f, got[i]);
            f = bar ? bar + 1 : f;
        }
        (void)save;
    } else if (!strcmp(key, "defects")) {
        size_t want = (size_t)atoi(val);
        if (ge ? r->defects.n < want : r->defects.n != want) {
            for (size_t i = 0; i < r->defects.n; i++)
                print_message("  defect: %s\n", r->defects.v[i]);
            fail_msg("%s:%d: %zu defects, expected %s%zu", file, ln, r->defects.n, ge ? ">=" : "",
                     want);
        }
    } else if (!strcmp(key, "defect") && sub) {
        for (size_t i = 0; i < r->defects.n; i++)
            if (strstr(r->defects.v[i], val))
                return;
        fail_msg("%s:%d: no defect containing '%s'", file, ln, val);
    } else {
        fail_msg("%s:%d: unknown key '%s'", file, ln, key);
    }
}

static void run_expect(const char *expect_path)
{
    char msg[4096];
    snprintf(msg, sizeof msg, "%.*s", (int)(strlen(expect_path) - 7), expect_path);
    mapped m = {0};
    if (map_file(msg, &m))
        fail_msg("%s: message %s missing", expect_path, msg);
    mb_rec_parsed r;
    memset(&r, 0, sizeof r);
    assert_int_equal(mb_mime_parse(m.data, m.len, 1000, &r), MB_OK);
    FILE *f = fopen(expect_path, "r");
    assert_non_null(f);
    char line[2048];
    int ln = 0, checks = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        check_line(expect_path, ln, line, &r);
        checks++;
    }
    fclose(f);
    assert_true(checks > 0);
    mb_mime_parsed_clear(&r);
    unmap(&m);
}

static int expect_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st))
            continue;
        size_t l = strlen(e->d_name);
        if (S_ISDIR(st.st_mode))
            n += expect_dir(p);
        else if (l > 7 && !strcmp(e->d_name + l - 7, ".expect")) {
            run_expect(p);
            n++;
        }
    }
    closedir(d);
    return n;
}

static void test_expect_files(void **state)
{
    (void)state;
    char root[4096];
    int n = expect_dir(fixture_root(root, sizeof root));
    print_message("checked %d .expect files\n", n);
    assert_true(n >= 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expect_files),
        cmocka_unit_test(test_corpus_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
