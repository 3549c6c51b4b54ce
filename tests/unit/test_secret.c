/* test_secret.c — util/secret.c: AES-256-GCM sealing and key files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "util/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char KEY[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                      17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
                                      31, 32};
static const char PW[] = "correct horse battery staple";

static void seal_pw(mb_buf *sealed, const char *aad)
{
    assert_int_equal(mb_secret_seal(KEY, PW, strlen(PW), aad, sealed), MB_OK);
    assert_int_equal(sealed->len, strlen(PW) + MB_SECRET_OVERHEAD);
}

static void test_round_trip(void **state)
{
    (void)state;
    mb_buf sealed = MB_BUF_INIT, plain = MB_BUF_INIT, sealed2 = MB_BUF_INIT;
    seal_pw(&sealed, "alice@example.com");
    assert_int_equal((unsigned char)sealed.data[0], MB_SECRET_VERSION);
    assert_null(memmem(sealed.data, sealed.len, PW, strlen(PW))); /* not in the clear */
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, "alice@example.com", &plain),
                     MB_OK);
    assert_int_equal(plain.len, strlen(PW));
    assert_string_equal(plain.data, PW);
    /* Fresh nonce every time: sealing twice never gives the same bytes. */
    seal_pw(&sealed2, "alice@example.com");
    assert_memory_not_equal(sealed.data + 1, sealed2.data + 1, 12);
    /* Empty plaintext and NULL aad work too. */
    assert_int_equal(mb_secret_seal(KEY, "", 0, NULL, &sealed), MB_OK);
    assert_int_equal(sealed.len, MB_SECRET_OVERHEAD);
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, NULL, &plain), MB_OK);
    assert_int_equal(plain.len, 0);
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, "x", &plain), MB_ERR_AUTH);
    mb_buf_free(&sealed);
    mb_buf_free(&sealed2);
    mb_secret_buf_wipe(&plain);
}

static void test_tamper_every_byte(void **state)
{
    (void)state;
    mb_buf sealed = MB_BUF_INIT, plain = MB_BUF_INIT;
    seal_pw(&sealed, "acct");
    for (size_t i = 0; i < sealed.len; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            sealed.data[i] ^= (char)(1 << bit);
            mb_status st = mb_secret_open(KEY, sealed.data, sealed.len, "acct", &plain);
            if (i == 0) {
                assert_int_equal(st, MB_ERR_INVALID); /* version byte */
            } else {
                assert_int_equal(st, MB_ERR_AUTH);
                assert_string_equal(mb_err_last(),
                                    "credential cannot be decrypted: wrong key or tampered data");
            }
            assert_int_equal(plain.len, 0);
            sealed.data[i] ^= (char)(1 << bit);
        }
    }
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, "acct", &plain), MB_OK);
    mb_buf_free(&sealed);
    mb_secret_buf_wipe(&plain);
}

static void test_wrong_key_and_aad(void **state)
{
    (void)state;
    mb_buf sealed = MB_BUF_INIT, plain = MB_BUF_INIT;
    seal_pw(&sealed, "alice");
    unsigned char other[32];
    memcpy(other, KEY, 32);
    other[31] ^= 0x80;
    assert_int_equal(mb_secret_open(other, sealed.data, sealed.len, "alice", &plain), MB_ERR_AUTH);
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, "bob", &plain), MB_ERR_AUTH);
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, "alicE", &plain), MB_ERR_AUTH);
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, "", &plain), MB_ERR_AUTH);
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, NULL, &plain), MB_ERR_AUTH);
    mb_buf_free(&sealed);
    mb_secret_buf_wipe(&plain);
}

static void test_truncated_every_length(void **state)
{
    (void)state;
    mb_buf sealed = MB_BUF_INIT, plain = MB_BUF_INIT;
    seal_pw(&sealed, "a");
    for (size_t n = 0; n < sealed.len; n++) {
        /* Exact-size heap copy so ASan catches any read past n. */
        char *copy = malloc(n ? n : 1);
        memcpy(copy, sealed.data, n);
        mb_status st = mb_secret_open(KEY, copy, n, "a", &plain);
        if (n < MB_SECRET_OVERHEAD)
            assert_int_equal(st, MB_ERR_TRUNCATED);
        else
            assert_int_equal(st, MB_ERR_AUTH);
        free(copy);
    }
    /* Extra trailing bytes are tampering too. */
    assert_int_equal(mb_buf_append(&sealed, "x", 1), MB_OK);
    assert_int_equal(mb_secret_open(KEY, sealed.data, sealed.len, "a", &plain), MB_ERR_AUTH);
    mb_buf_free(&sealed);
    mb_secret_buf_wipe(&plain);
}

static char tmpdir[64];

static const char *write_key(const char *name, const void *data, size_t n, mode_t mode)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void test_key_file(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/mb-test-secret-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    unsigned char key[32];

    const char *p = write_key("raw", KEY, 32, 0600);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", p, key), MB_OK);
    assert_memory_equal(key, KEY, 32);

    char hex[66];
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02X", KEY[i]);
    hex[64] = '\n';
    memset(key, 0, 32);
    p = write_key("hex", hex, 65, 0600);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", p, key), MB_OK);
    assert_memory_equal(key, KEY, 32);

    p = write_key("short", KEY, 31, 0600);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", p, key), MB_ERR_CONFIG);
    assert_non_null(strstr(mb_err_last(), "MAILBUS_SECRET_KEY_FILE"));
    assert_non_null(strstr(mb_err_last(), "31 bytes"));
    hex[65] = 'x'; /* 64 hex + "\n" + one byte of junk */
    p = write_key("long", hex, 66, 0600);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", p, key), MB_ERR_CONFIG);
    char big[200];
    memset(big, 'a', sizeof big);
    p = write_key("big", big, sizeof big, 0600);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", p, key), MB_ERR_CONFIG);
    assert_non_null(strstr(mb_err_last(), "more than"));
    hex[10] = 'g'; /* 64 chars but not hex, and not 32 bytes */
    p = write_key("nothex", hex, 64, 0600);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", p, key), MB_ERR_CONFIG);

    p = write_key("world", KEY, 32, 0644);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", p, key), MB_ERR_CONFIG);
    assert_non_null(strstr(mb_err_last(), "chmod 600"));
    assert_non_null(strstr(mb_err_last(), p));
    p = write_key("group", KEY, 32, 0640); /* the group may not read it either */
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_OLD_KEY_FILE", p, key), MB_ERR_CONFIG);
    assert_non_null(strstr(mb_err_last(), "MAILBUS_SECRET_OLD_KEY_FILE"));
    assert_non_null(strstr(mb_err_last(), "mode 640"));

    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing", tmpdir);
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", missing, key), MB_ERR_CONFIG);
    assert_non_null(strstr(mb_err_last(), "MAILBUS_SECRET_KEY_FILE"));
    assert_non_null(strstr(mb_err_last(), missing));
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", NULL, key), MB_ERR_CONFIG);
    assert_non_null(strstr(mb_err_last(), "MAILBUS_SECRET_KEY_FILE"));
    assert_int_equal(mb_secret_key_load("MAILBUS_SECRET_KEY_FILE", tmpdir, key), MB_ERR_CONFIG); /* a directory */

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_tamper_every_byte),
        cmocka_unit_test(test_wrong_key_and_aad),
        cmocka_unit_test(test_truncated_every_length),
        cmocka_unit_test(test_key_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
