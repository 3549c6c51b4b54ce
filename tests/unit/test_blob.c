/* test_blob.c — blob/blob.c: content addressing, dedup, damaged-blob repair,
 * name validation, mapping, batched sync, stale temp cleanup, fault
 * injection at every write/fsync/rename/mkdir (nothing partial, nothing
 * leaked, a retry succeeds), and the cleanup's guarded removal racing with
 * a fetch (touch in the window, fresh copy while out of sight, a crash with
 * the blob out of sight). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "blob/blob.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char EMPTY_SHA[] =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

typedef struct {
    char root[64];
    mb_blob_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->root, "/tmp/mb-test-blob-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    strcat(f->root, "/store"); /* store_open must create the root itself */
    if (mb_blob_store_open(f->root, &f->s) != MB_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    mb_blob_store_free(f->s);
    char cmd[128];
    f->root[strlen(f->root) - strlen("/store")] = '\0';
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->root);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static void sha_hex(const void *p, size_t n, char out[65])
{
    unsigned char d[32];
    unsigned int dl;
    assert_true(EVP_Digest(p, n, d, &dl, EVP_sha256(), NULL));
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (unsigned char)(seed >> 16);
    }
    return p;
}

/* Write p in pieces of varying size (crossing the 64 KB buffer both ways). */
static mb_status put(mb_blob_store *s, const unsigned char *p, size_t n, char hex[65])
{
    mb_blob_writer *w;
    mb_status st = mb_blob_writer_open(s, &w);
    if (st != MB_OK)
        return st;
    static const size_t steps[] = {1, 7, 1000, 70000, 65536, 3, 200000};
    size_t off = 0;
    for (int i = 0; off < n; i++) {
        size_t k = steps[i % MB_ARRAY_LEN(steps)];
        if (k > n - off)
            k = n - off;
        st = mb_blob_write(w, p + off, k);
        if (st != MB_OK) {
            mb_blob_writer_abort(w);
            return st;
        }
        off += k;
    }
    uint64_t size = 0;
    st = mb_blob_writer_commit(w, hex, &size);
    if (st == MB_OK)
        assert_int_equal(size, n);
    return st;
}

static int count_dir(const char *root, const char *sub)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", root, sub);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void test_write_map_verify(void **state)
{
    fixture *f = *state;
    size_t n = 1000003;
    unsigned char *data = pattern(n, 1);
    char hex[65], want[65], path[512];
    sha_hex(data, n, want);
    assert_int_equal(put(f->s, data, n, hex), MB_OK);
    assert_string_equal(hex, want);

    assert_int_equal(mb_blob_path(f->s, hex, path, sizeof path), MB_OK);
    char expect[512];
    snprintf(expect, sizeof expect, "%s/%.2s/%s", f->root, want, want);
    assert_string_equal(path, expect);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, (off_t)n);

    bool ex = false;
    assert_int_equal(mb_blob_exists(f->s, hex, &ex), MB_OK);
    assert_true(ex);
    const char *m;
    size_t len;
    mb_blob_mapping *map;
    assert_int_equal(mb_blob_map(f->s, hex, &m, &len, &map), MB_OK);
    assert_int_equal(len, n);
    assert_memory_equal(m, data, n);
    mb_blob_unmap(map);
    assert_int_equal(mb_blob_verify(f->s, hex), MB_OK);
    assert_int_equal(count_dir(f->root, "tmp"), 0);
    assert_int_equal(mb_blob_pending(f->s), 1);
    assert_int_equal(mb_blob_sync(f->s), MB_OK);
    assert_int_equal(mb_blob_pending(f->s), 0);

    /* Absent blob. */
    want[0] = want[0] == '0' ? '1' : '0';
    assert_int_equal(mb_blob_exists(f->s, want, &ex), MB_OK);
    assert_false(ex);
    assert_int_equal(mb_blob_map(f->s, want, &m, &len, &map), MB_ERR_NOTFOUND);
    assert_null(map);
    assert_int_equal(mb_blob_verify(f->s, want), MB_ERR_NOTFOUND);
    free(data);
}

static void test_empty_blob(void **state)
{
    fixture *f = *state;
    char hex[65];
    assert_int_equal(put(f->s, (const unsigned char *)"", 0, hex), MB_OK);
    assert_string_equal(hex, EMPTY_SHA);
    const char *m = NULL;
    size_t len = 99;
    mb_blob_mapping *map;
    assert_int_equal(mb_blob_map(f->s, hex, &m, &len, &map), MB_OK);
    assert_non_null(m);
    assert_int_equal(len, 0);
    mb_blob_unmap(map);
    assert_int_equal(mb_blob_verify(f->s, hex), MB_OK);
}

static void test_dedup_and_repair(void **state)
{
    fixture *f = *state;
    size_t n = 50000;
    unsigned char *data = pattern(n, 2);
    char hex[65], hex2[65], path[512];
    assert_int_equal(put(f->s, data, n, hex), MB_OK);
    assert_int_equal(mb_blob_path(f->s, hex, path, sizeof path), MB_OK);
    struct stat a, b;
    assert_int_equal(stat(path, &a), 0);
    /* Same content again: the existing file (same inode) is kept. */
    assert_int_equal(put(f->s, data, n, hex2), MB_OK);
    assert_string_equal(hex, hex2);
    assert_int_equal(stat(path, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    assert_int_equal(count_dir(f->root, "tmp"), 0);

    /* A crash before sync can leave a truncated file: verify says so, and
     * the next commit of that content repairs it. */
    assert_int_equal(truncate(path, 100), 0);
    assert_int_equal(mb_blob_verify(f->s, hex), MB_ERR_INVALID);
    assert_non_null(strstr(mb_err_last(), hex));
    assert_int_equal(put(f->s, data, n, hex2), MB_OK);
    assert_int_equal(mb_blob_verify(f->s, hex), MB_OK);
    /* Same size, different bytes: also repaired. */
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "XXXX", 4, 1000), 4);
    close(fd);
    assert_int_equal(mb_blob_verify(f->s, hex), MB_ERR_INVALID);
    assert_int_equal(put(f->s, data, n, hex2), MB_OK);
    assert_int_equal(mb_blob_verify(f->s, hex), MB_OK);
    assert_int_equal(count_dir(f->root, "tmp"), 0);
    assert_int_equal(mb_blob_sync(f->s), MB_OK);
    free(data);
}

static void test_name_validation(void **state)
{
    fixture *f = *state;
    char path[512];
    bool ex;
    const char *bad[] = {
        "",
        "abc",
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
        "../../../../etc/passwd/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b9",
    };
    for (size_t i = 0; i < MB_ARRAY_LEN(bad); i++) {
        assert_int_equal(mb_blob_path(f->s, bad[i], path, sizeof path), MB_ERR_INVALID);
        char quoted[128];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        assert_non_null(strstr(mb_err_last(), quoted));
        assert_int_equal(mb_blob_exists(f->s, bad[i], &ex), MB_ERR_INVALID);
        assert_int_equal(mb_blob_verify(f->s, bad[i]), MB_ERR_INVALID);
    }
    assert_int_equal(mb_blob_path(f->s, NULL, path, sizeof path), MB_ERR_INVALID);
    assert_int_equal(mb_blob_path(f->s, EMPTY_SHA, path, 20), MB_ERR_TOOBIG);
    assert_int_equal(mb_blob_path(f->s, EMPTY_SHA, path, sizeof path), MB_OK);
}

static void test_abort_leaves_nothing(void **state)
{
    fixture *f = *state;
    mb_blob_writer *w;
    assert_int_equal(mb_blob_writer_open(f->s, &w), MB_OK);
    assert_int_equal(mb_blob_write(w, "hello", 5), MB_OK);
    assert_int_equal(count_dir(f->root, "tmp"), 1);
    mb_blob_writer_abort(w);
    assert_int_equal(count_dir(f->root, "tmp"), 0);
    assert_int_equal(mb_blob_pending(f->s), 0);
    mb_blob_writer_abort(NULL);
}

/* Fail the k-th I/O operation of a commit for every k until a commit runs
 * out of operations to fail; each failure must leave neither a blob at the
 * final path nor a temp file, and a retry must succeed. */
static void fault_sweep(fixture *f, int err, size_t n, unsigned seed)
{
    unsigned char *data = pattern(n, seed);
    char want[65], hex[65], path[512];
    sha_hex(data, n, want);
    assert_int_equal(mb_blob_path(f->s, want, path, sizeof path), MB_OK);
    int failures = 0;
    for (int k = 1; k < 100; k++) {
        mb_blob_fault_after(f->s, k, err);
        mb_status st = put(f->s, data, n, hex);
        mb_blob_fault_after(f->s, 0, 0);
        assert_int_equal(count_dir(f->root, "tmp"), 0);
        if (st == MB_OK) {
            assert_string_equal(hex, want);
            assert_int_equal(mb_blob_verify(f->s, want), MB_OK);
            break;
        }
        failures++;
        assert_int_equal(st, MB_ERR_IO);
        assert_non_null(strstr(mb_err_last(), strerror(err)));
        assert_int_equal(access(path, F_OK), -1); /* nothing at the final path */
        /* Retry without a fault succeeds, then remove it for the next round. */
        assert_int_equal(put(f->s, data, n, hex), MB_OK);
        assert_string_equal(hex, want);
        assert_int_equal(mb_blob_verify(f->s, want), MB_OK);
        assert_int_equal(unlink(path), 0);
        /* A fresh store directory each round, so mkdir is exercised again. */
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%.2s", f->root, want);
        rmdir(dir);
    }
    /* writes (>= 2 for n > 64 KB), mkdir ab, rename */
    assert_true(failures >= (n > 65536 ? 4 : 3));
    free(data);
}

static void test_fault_every_op(void **state)
{
    fixture *f = *state;
    fault_sweep(f, EIO, 300000, 3);
    fault_sweep(f, ENOSPC, 10, 4);
    fault_sweep(f, EDQUOT, 65536 * 2, 5);
    assert_int_equal(mb_blob_sync(f->s), MB_OK);
}

static void sync_fault(fixture *f, mb_blob_sync_mode mode)
{
    mb_blob_set_sync_mode(f->s, mode);
    char hex[65];
    for (unsigned i = 0; i < 20; i++) {
        unsigned char *d = pattern(5000 + i, 100 + i + 1000 * (unsigned)mode);
        assert_int_equal(put(f->s, d, 5000 + i, hex), MB_OK);
        free(d);
    }
    assert_int_equal(mb_blob_pending(f->s), 20);
    /* Fail the 1st, then a later fsync: the batch stays pending. */
    int ks[] = {1, 7};
    for (size_t j = 0; j < (mode == MB_BLOB_SYNC_FS ? 1u : 2u); j++) {
        mb_blob_fault_after(f->s, ks[j], EIO);
        assert_int_equal(mb_blob_sync(f->s), MB_ERR_IO);
        assert_non_null(strstr(mb_err_last(), strerror(EIO)));
        assert_int_equal(mb_blob_pending(f->s), 20);
    }
    mb_blob_fault_after(f->s, 0, 0);
    assert_int_equal(mb_blob_sync(f->s), MB_OK);
    assert_int_equal(mb_blob_pending(f->s), 0);
    assert_int_equal(mb_blob_sync(f->s), MB_OK); /* nothing pending: no-op */
}

static void test_sync_fault_fs(void **state)
{
    sync_fault(*state, MB_BLOB_SYNC_FS);
}

static void test_sync_fault_files(void **state)
{
    sync_fault(*state, MB_BLOB_SYNC_FILES);
}

static void test_stale_tmp_cleanup(void **state)
{
    fixture *f = *state;
    char old[512], fresh[512];
    snprintf(old, sizeof old, "%s/tmp/w.1.1.1.0", f->root);
    snprintf(fresh, sizeof fresh, "%s/tmp/w.2.2.2.0", f->root);
    FILE *fp = fopen(old, "w");
    fputs("partial", fp);
    fclose(fp);
    fp = fopen(fresh, "w");
    fputs("in progress", fp);
    fclose(fp);
    struct timespec ts[2] = {{.tv_sec = time(NULL) - 2 * 3600}, {.tv_sec = time(NULL) - 2 * 3600}};
    assert_int_equal(utimensat(AT_FDCWD, old, ts, 0), 0);
    /* Reopening the store (a restart) removes only the crash leftover. */
    mb_blob_store_free(f->s);
    assert_int_equal(mb_blob_store_open(f->root, &f->s), MB_OK);
    assert_int_equal(access(old, F_OK), -1);
    assert_int_equal(access(fresh, F_OK), 0);
    unsigned removed = 0;
    assert_int_equal(mb_blob_cleanup_tmp(f->s, 0, &removed), MB_OK);
    assert_int_equal(removed, 1);
    assert_int_equal(count_dir(f->root, "tmp"), 0);
}

static void touch_tmp_at(const char *root, char *path, size_t cap, long pid, long when,
                        const char *host)
{
    snprintf(path, cap, "%s/tmp/w.%ld.7.%ld.0.%s", root, pid, when, host);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("partial", fp);
    fclose(fp);
}

static void touch_tmp(const char *root, char *path, size_t cap, long pid, const char *host)
{
    touch_tmp_at(root, path, cap, pid, (long)time(NULL), host);
}

/* A killed writer's pid taken by a process started since (pids go round):
 * not its writer, so the file is a leftover; a zombie writes nothing either. */
static void test_recycled_pid_tmp(void **state)
{
    fixture *f = *state;
    char host[65] = {0}, recycled[512], zombie[512], live[512];
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    pid_t sleeper = fork();
    assert_true(sleeper >= 0);
    if (sleeper == 0) {
        pause();
        _exit(0);
    }
    pid_t dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0); /* not reaped until the end: a zombie */
    long now = (long)time(NULL);
    touch_tmp_at(f->root, recycled, sizeof recycled, (long)sleeper, now - 600, host);
    touch_tmp_at(f->root, zombie, sizeof zombie, (long)dead, now, host);
    touch_tmp_at(f->root, live, sizeof live, (long)sleeper, now, host);
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL); /* the second child has exited */
    mb_blob_store_free(f->s);
    assert_int_equal(mb_blob_store_open(f->root, &f->s), MB_OK);
    assert_int_equal(access(recycled, F_OK), -1); /* named 10 min before its pid's process started */
    assert_int_equal(access(zombie, F_OK), -1);
    assert_int_equal(access(live, F_OK), 0);      /* a live writer's, as far as anyone can tell */
    kill(sleeper, SIGKILL);
    waitpid(sleeper, NULL, 0);
    waitpid(dead, NULL, 0);
    unlink(live);
}

/* A writer killed mid-write (kill -9 of fetch) leaves its temp file; the next
 * store open on the same host removes it at once, as its pid is gone. */
static void test_dead_writer_tmp(void **state)
{
    fixture *f = *state;
    char host[65] = {0}, dead[512], live[512], other[512];
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child); /* reaped: the pid is gone */
    touch_tmp(f->root, dead, sizeof dead, (long)child, host);
    touch_tmp(f->root, live, sizeof live, (long)getppid(), host);
    touch_tmp(f->root, other, sizeof other, (long)child, "another-host.example");
    mb_blob_store_free(f->s);
    assert_int_equal(mb_blob_store_open(f->root, &f->s), MB_OK);
    assert_int_equal(access(dead, F_OK), -1);
    assert_int_equal(access(live, F_OK), 0);  /* its writer may still be writing */
    assert_int_equal(access(other, F_OK), 0); /* pids of another host mean nothing here */
    /* A writer of this process keeps its file while the store is opened again. */
    mb_blob_writer *w = NULL;
    assert_int_equal(mb_blob_writer_open(f->s, &w), MB_OK);
    assert_int_equal(mb_blob_write(w, "x", 1), MB_OK);
    mb_blob_store *again = NULL;
    assert_int_equal(mb_blob_store_open(f->root, &again), MB_OK);
    mb_blob_store_free(again);
    assert_int_equal(count_dir(f->root, "tmp"), 3);
    mb_blob_writer_abort(w);
    assert_int_equal(count_dir(f->root, "tmp"), 2);
}

static void test_bad_root(void **state)
{
    (void)state;
    mb_blob_store *s = NULL;
    assert_int_equal(mb_blob_store_open("", &s), MB_ERR_CONFIG);
    assert_int_equal(mb_blob_store_open("/proc/version/x", &s), MB_ERR_IO);
    assert_non_null(strstr(mb_err_last(), "/proc/version"));
    assert_null(s);
}

/* ---- garbage collection (mb_blob_gc_remove) ------------------------------ */

/* Store data as a blob last modified two hours ago (long before any cutoff). */
static void put_old(fixture *f, const unsigned char *data, size_t n, char hex[65], char *path,
                    size_t cap)
{
    assert_int_equal(put(f->s, data, n, hex), MB_OK);
    assert_int_equal(mb_blob_path(f->s, hex, path, cap), MB_OK);
    struct timespec ts[2] = {{.tv_sec = time(NULL) - 2 * 3600}, {.tv_sec = time(NULL) - 2 * 3600}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

/* What the check callback answers, and what it does first (a concurrent
 * fetch committing the same bytes while the blob is out of sight). */
typedef struct {
    fixture *f;
    bool referenced;
    const unsigned char *recommit; /* non-NULL: commit these bytes first */
    size_t n;
    int calls;
} gc_ctx;

static mb_status gc_check(void *ctx, const char *hex, bool *referenced)
{
    gc_ctx *c = ctx;
    c->calls++;
    if (c->recommit) {
        bool there = true;
        assert_int_equal(mb_blob_exists(c->f->s, hex, &there), MB_OK);
        assert_false(there); /* out of sight while the database is asked */
        char again[65];
        assert_int_equal(put(c->f->s, c->recommit, c->n, again), MB_OK);
        assert_string_equal(again, hex);
    }
    *referenced = c->referenced;
    return MB_OK;
}

static void test_gc_remove(void **state)
{
    fixture *f = *state;
    unsigned char *a = pattern(3000, 11), *b = pattern(3000, 12), *c = pattern(3000, 13);
    char ha[65], hb[65], hc[65], pa[512], pb[512], pc[512];
    put_old(f, a, 3000, ha, pa, sizeof pa);
    put_old(f, b, 3000, hb, pb, sizeof pb);
    put_old(f, c, 3000, hc, pc, sizeof pc);
    struct timespec cutoff;
    assert_int_equal(mb_blob_gc_clock(f->s, &cutoff), MB_OK);
    assert_true(cutoff.tv_sec >= time(NULL) - 5);

    /* Unreferenced and old: removed, no tombstone left. */
    gc_ctx no = {.f = f};
    mb_blob_gc_result r;
    assert_int_equal(mb_blob_gc_probe(f->s, ha, &cutoff, &r), MB_OK);
    assert_int_equal(r, MB_BLOB_GC_REMOVED); /* a dry run touches nothing */
    assert_int_equal(access(pa, F_OK), 0);
    assert_int_equal(mb_blob_gc_remove(f->s, ha, &cutoff, gc_check, &no, &r), MB_OK);
    assert_int_equal(r, MB_BLOB_GC_REMOVED);
    assert_int_equal(no.calls, 1);
    assert_int_equal(access(pa, F_OK), -1);
    assert_int_equal(mb_blob_gc_remove(f->s, ha, &cutoff, gc_check, &no, &r), MB_OK);
    assert_int_equal(r, MB_BLOB_GC_ABSENT);

    /* Referenced when asked with it out of sight: put back intact. */
    gc_ctx yes = {.f = f, .referenced = true};
    assert_int_equal(mb_blob_gc_remove(f->s, hb, &cutoff, gc_check, &yes, &r), MB_OK);
    assert_int_equal(r, MB_BLOB_GC_REFERENCED);
    assert_int_equal(mb_blob_verify(f->s, hb), MB_OK);

    /* A fetch found it again after the pass started (dedup: mtime now):
     * kept without asking the database. */
    char again[65];
    assert_int_equal(put(f->s, c, 3000, again), MB_OK); /* same clock: mtime >= cutoff */
    no.calls = 0;
    assert_int_equal(mb_blob_gc_remove(f->s, hc, &cutoff, gc_check, &no, &r), MB_OK);
    assert_int_equal(r, MB_BLOB_GC_RECENT);
    assert_int_equal(no.calls, 0);
    assert_int_equal(mb_blob_verify(f->s, hc), MB_OK);
    assert_int_equal(count_dir(f->root, "tmp"), 0);
    assert_int_equal(mb_blob_sync(f->s), MB_OK);
    free(a);
    free(b);
    free(c);
}

/* The hook runs where a fetch's touch could land: between the mtime check
 * and the rename. The tombstone's mtime is read again, so it is kept. */
static void touch_in_window(void *arg, const char *hex)
{
    fixture *f = arg;
    char path[512];
    assert_int_equal(mb_blob_path(f->s, hex, path, sizeof path), MB_OK);
    assert_int_equal(utimensat(AT_FDCWD, path, NULL, 0), 0); /* what a dedup commit does */
}

static void test_gc_race_touch(void **state)
{
    fixture *f = *state;
    unsigned char *d = pattern(5000, 21);
    char hd[65], pd[512];
    put_old(f, d, 5000, hd, pd, sizeof pd);
    struct timespec cutoff;
    assert_int_equal(mb_blob_gc_clock(f->s, &cutoff), MB_OK);
    cutoff.tv_sec -= 60; /* the touch in the window is clearly after it */
    mb_blob_gc_test_hook(f->s, touch_in_window, f);
    gc_ctx no = {.f = f};
    mb_blob_gc_result r;
    assert_int_equal(mb_blob_gc_remove(f->s, hd, &cutoff, gc_check, &no, &r), MB_OK);
    mb_blob_gc_test_hook(f->s, NULL, NULL);
    assert_int_equal(r, MB_BLOB_GC_RECENT);
    assert_int_equal(no.calls, 0);
    assert_int_equal(mb_blob_verify(f->s, hd), MB_OK);
    assert_int_equal(count_dir(f->root, "tmp"), 0);
    free(d);
}

/* A fetch committing while the blob is out of sight writes a fresh copy;
 * whether the cleanup then drops or puts back its tombstone, the blob is
 * there, intact, and no tombstone is left. */
static void test_gc_race_fresh_copy(void **state)
{
    fixture *f = *state;
    unsigned char *e = pattern(70000, 31);
    char he[65], pe[512];
    for (int referenced = 0; referenced < 2; referenced++) {
        put_old(f, e, 70000, he, pe, sizeof pe);
        struct timespec cutoff;
        assert_int_equal(mb_blob_gc_clock(f->s, &cutoff), MB_OK);
        cutoff.tv_sec -= 60;
        gc_ctx c = {.f = f, .referenced = referenced, .recommit = e, .n = 70000};
        mb_blob_gc_result r;
        assert_int_equal(mb_blob_gc_remove(f->s, he, &cutoff, gc_check, &c, &r), MB_OK);
        assert_int_equal(c.calls, 1);
        assert_int_equal(r, referenced ? MB_BLOB_GC_REFERENCED : MB_BLOB_GC_REMOVED);
        assert_int_equal(mb_blob_verify(f->s, he), MB_OK);
        assert_int_equal(count_dir(f->root, "tmp"), 0);
    }
    assert_int_equal(mb_blob_sync(f->s), MB_OK);
    free(e);
}

/* A cleanup killed with its blob out of sight: the next store open on the
 * host puts the tombstone back (or drops it if a fresh copy is there); a
 * live cleanup's tombstone is left alone. */
static void test_gc_crash_tombstone(void **state)
{
    fixture *f = *state;
    char host[65] = {0};
    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    unsigned char *x = pattern(4000, 41), *y = pattern(4000, 42), *z = pattern(4000, 43);
    char hx[65], hy[65], hz[65], px[512], py[512], pz[512], tx[600], ty[600], tz[600];
    put_old(f, x, 4000, hx, px, sizeof px);
    put_old(f, y, 4000, hy, py, sizeof py);
    put_old(f, z, 4000, hz, pz, sizeof pz);
    long now = (long)time(NULL);
    snprintf(tx, sizeof tx, "%s/tmp/g.%ld.1.%ld.%s.%s", f->root, (long)child, now, hx, host);
    snprintf(ty, sizeof ty, "%s/tmp/g.%ld.2.%ld.%s.%s", f->root, (long)child, now, hy, host);
    snprintf(tz, sizeof tz, "%s/tmp/g.%ld.3.%ld.%s.%s", f->root, (long)getppid(), now, hz, host);
    assert_int_equal(rename(px, tx), 0);
    assert_int_equal(link(py, ty), 0); /* a fresh copy of y is already back */
    assert_int_equal(rename(pz, tz), 0);
    mb_blob_store_free(f->s);
    assert_int_equal(mb_blob_store_open(f->root, &f->s), MB_OK);
    assert_int_equal(mb_blob_verify(f->s, hx), MB_OK);
    assert_int_equal(access(tx, F_OK), -1);
    assert_int_equal(mb_blob_verify(f->s, hy), MB_OK);
    assert_int_equal(access(ty, F_OK), -1);
    assert_int_equal(access(tz, F_OK), 0); /* its cleanup may still decide */
    assert_int_equal(access(pz, F_OK), -1);
    /* Stale (an hour and more in its name): restored whoever made it. */
    char tz2[600];
    snprintf(tz2, sizeof tz2, "%s/tmp/g.%ld.3.%ld.%s.%s", f->root, (long)getppid(),
             now - 2 * 3600, hz, host);
    assert_int_equal(rename(tz, tz2), 0);
    mb_blob_store_free(f->s);
    assert_int_equal(mb_blob_store_open(f->root, &f->s), MB_OK);
    assert_int_equal(mb_blob_verify(f->s, hz), MB_OK);
    assert_int_equal(count_dir(f->root, "tmp"), 0);
    free(x);
    free(y);
    free(z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_map_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_blob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_and_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_name_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_every_op, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_fault_fs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_fault_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_tmp_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_writer_tmp, setup, teardown),
cmocka_unit_test_setup_teardown(test_recycled_pid_tmp, setup, teardown),
        cmocka_unit_test(test_bad_root),
        cmocka_unit_test_setup_teardown(test_gc_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_race_touch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_race_fresh_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gc_crash_tombstone, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
