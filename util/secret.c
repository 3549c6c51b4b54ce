/* secret.c — AES-256-GCM sealing of credentials (see secret.h). */
#include "util/secret.h"

#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NONCE_LEN 12
#define TAG_LEN 16

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

mb_status mb_secret_file_private(int fd, const char *what, const char *path)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return mb_errf(MB_ERR_CONFIG, "%s '%s': not a regular file", what, path);
    if (sb.st_mode & (S_IRWXG | S_IRWXO))
        return mb_errf(MB_ERR_CONFIG,
                       "%s '%s': mode %03o lets other users read or write it; run chmod 600 on it",
                       what, path, (unsigned)(sb.st_mode & 0777));
    return MB_OK;
}

mb_status mb_secret_key_load(const char *what, const char *path,
                             unsigned char key[MB_SECRET_KEY_LEN])
{
    if (!path || !*path)
        return mb_errf(MB_ERR_CONFIG, "%s is not set: it must name a "
                                      "file holding the 32-byte credentials key", what);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ELOOP)
        fd = open(path, O_RDONLY | O_CLOEXEC); /* a symlink (e.g. a mounted secret) is fine */
    if (fd < 0)
        return mb_errf(MB_ERR_CONFIG, "%s '%s': %s", what, path, strerror(errno));
    mb_status st = mb_secret_file_private(fd, what, path);
    if (st) {
        close(fd);
        return st;
    }

    /* 66 = 64 hex + "\r\n"; read one byte more to detect an oversized file. */
    unsigned char raw[67];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t r = read(fd, raw + got, sizeof raw - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            OPENSSL_cleanse(raw, sizeof raw);
            return mb_errf(MB_ERR_CONFIG, "%s '%s': read: %s", what, path,
                           strerror(e));
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);

    size_t hexlen = got;
    while (hexlen > 0 && (raw[hexlen - 1] == '\n' || raw[hexlen - 1] == '\r'))
        hexlen--;
    bool all_hex = hexlen == 64;
    for (size_t i = 0; all_hex && i < 64; i++)
        all_hex = hexval(raw[i]) >= 0;
    if (all_hex && got - hexlen <= 2) {
        for (int i = 0; i < MB_SECRET_KEY_LEN; i++)
            key[i] = (unsigned char)(hexval(raw[2 * i]) << 4 | hexval(raw[2 * i + 1]));
    } else if (got == MB_SECRET_KEY_LEN) {
        memcpy(key, raw, MB_SECRET_KEY_LEN);
    } else {
        st = mb_errf(MB_ERR_CONFIG,
                     "%s '%s': %s%zu bytes; expected exactly 32 raw bytes "
                     "or 64 hex characters (openssl rand -hex 32)",
                     what, path, got == sizeof raw ? "more than " : "", got == sizeof raw ? got - 1 : got);
    }
    OPENSSL_cleanse(raw, sizeof raw);
    return st;
}

/* Authenticated data: the version byte, then the caller's aad. */
static int add_aad(EVP_CIPHER_CTX *c, bool enc, const char *aad)
{
    int outl;
    unsigned char v = MB_SECRET_VERSION;
    size_t an = aad ? strlen(aad) : 0;
    if (an > INT_MAX)
        return 0;
    int (*upd)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int) =
        enc ? EVP_EncryptUpdate : EVP_DecryptUpdate;
    if (!upd(c, NULL, &outl, &v, 1))
        return 0;
    return an == 0 || upd(c, NULL, &outl, (const unsigned char *)aad, (int)an);
}

mb_status mb_secret_seal(const unsigned char key[MB_SECRET_KEY_LEN], const void *plain, size_t n,
                         const char *aad, mb_buf *out)
{
    mb_buf_reset(out);
    if (n > MB_SECRET_MAX_PLAIN)
        return mb_errf(MB_ERR_TOOBIG, "credential of %zu bytes exceeds %d", n,
                       MB_SECRET_MAX_PLAIN);
    mb_status st = mb_buf_reserve(out, MB_SECRET_OVERHEAD + n);
    if (st != MB_OK)
        return st;
    unsigned char *o = (unsigned char *)out->data;
    o[0] = MB_SECRET_VERSION;
    if (RAND_bytes(o + 1, NONCE_LEN) != 1)
        return mb_errf(MB_ERR_INTERNAL, "credential seal: no random nonce available");
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl = 0, finl = 0;
    if (!c || !EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) ||
        !EVP_EncryptInit_ex(c, NULL, NULL, key, o + 1) || !add_aad(c, true, aad) ||
        !EVP_EncryptUpdate(c, o + 1 + NONCE_LEN, &outl, plain, (int)n) ||
        !EVP_EncryptFinal_ex(c, o + 1 + NONCE_LEN + outl, &finl) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, o + 1 + NONCE_LEN + n)) {
        EVP_CIPHER_CTX_free(c);
        return mb_errf(MB_ERR_INTERNAL, "credential seal: AES-256-GCM failed");
    }
    EVP_CIPHER_CTX_free(c);
    out->len = MB_SECRET_OVERHEAD + n;
    out->data[out->len] = '\0';
    return MB_OK;
}

mb_status mb_secret_open(const unsigned char key[MB_SECRET_KEY_LEN], const void *sealed, size_t n,
                         const char *aad, mb_buf *plain_out)
{
    mb_buf_reset(plain_out);
    const unsigned char *s = sealed;
    if (n < MB_SECRET_OVERHEAD)
        return mb_errf(MB_ERR_TRUNCATED,
                       "sealed credential of %zu bytes is shorter than the %d-byte minimum", n,
                       MB_SECRET_OVERHEAD);
    if (s[0] != MB_SECRET_VERSION)
        return mb_errf(MB_ERR_INVALID, "sealed credential has unknown version byte 0x%02x",
                       s[0]);
    size_t cn = n - MB_SECRET_OVERHEAD;
    if (cn > MB_SECRET_MAX_PLAIN)
        return mb_errf(MB_ERR_TOOBIG, "sealed credential of %zu bytes is too big", n);
    /* Reserve up front so no realloc leaves plaintext copies behind. */
    mb_status st = mb_buf_reserve(plain_out, cn);
    if (st != MB_OK)
        return st;
    unsigned char *p = (unsigned char *)plain_out->data;
    unsigned char tag[TAG_LEN];
    memcpy(tag, s + n - TAG_LEN, TAG_LEN);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl = 0, finl = 0;
    if (!c || !EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) ||
        !EVP_DecryptInit_ex(c, NULL, NULL, key, s + 1) || !add_aad(c, false, aad) ||
        !EVP_DecryptUpdate(c, p, &outl, s + 1 + NONCE_LEN, (int)cn) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag)) {
        EVP_CIPHER_CTX_free(c);
        OPENSSL_cleanse(p, cn);
        return mb_errf(MB_ERR_INTERNAL, "credential open: AES-256-GCM failed");
    }
    int ok = EVP_DecryptFinal_ex(c, p + outl, &finl);
    EVP_CIPHER_CTX_free(c);
    if (ok <= 0) {
        OPENSSL_cleanse(p, cn);
        return mb_errf(MB_ERR_AUTH,
                       "credential cannot be decrypted: wrong key or tampered data");
    }
    plain_out->len = cn;
    plain_out->data[cn] = '\0';
    return MB_OK;
}

void mb_secret_buf_wipe(mb_buf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->cap);
    mb_buf_free(b);
}
