/* test_blob.c — blob/blob.c: content addressing, dedup, damaged-blob repair,
 * name validation, mapping, batched sync, stale temp cleanup, and fault
 * injection at every write/fsync/rename/mkdir (nothing partial, nothing
 * leaked, a retry succeeds). */
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

static void touch_tmp(const char *root, char *path, size_t cap, long pid, const char *host)
{
    snprintf(path, cap, "%s/tmp/w.%ld.7.%ld.0.%s", root, pid, (long)time(NULL), host);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("partial", fp);
    fclose(fp);
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
        cmocka_unit_test(test_bad_root),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
