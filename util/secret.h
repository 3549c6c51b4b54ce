/* secret.h — credentials at rest (IMAP passwords, OAuth refresh tokens).
 *
 * One 256-bit key, read from the file named by MAILBUS_SECRET_KEY_FILE, seals
 * each credential with AES-256-GCM. Sealed format (all binary):
 *
 *     version (1 byte, 0x01) | nonce (12 random bytes) | ciphertext | tag (16 bytes)
 *
 * The aad ("additional authenticated data", e.g. the account name) is not
 * stored but authenticated, so a sealed credential copied to another account's
 * row fails to open. The version byte is authenticated too.
 *
 * Key file: exactly 32 raw bytes, or 64 hex characters optionally followed by
 * a newline (`openssl rand -hex 32 > key`). A key file that other users or
 * its group can read or write is refused (chmod 600 it). */
#ifndef MB_SECRET_H
#define MB_SECRET_H

#include "util/buf.h"
#include "util/mb.h"

#define MB_SECRET_KEY_LEN 32
#define MB_SECRET_VERSION 0x01
#define MB_SECRET_OVERHEAD (1 + 12 + 16)
/* Credentials are small; anything bigger is a mistake, not a password. */
#define MB_SECRET_MAX_PLAIN (1024 * 1024)

/* MB_ERR_CONFIG naming what (the setting, e.g. "MAILBUS_SECRET_KEY_FILE")
 * and path for a missing, unreadable, group- or world-accessible or
 * malformed key file. */
mb_status mb_secret_key_load(const char *what, const char *path,
                             unsigned char key[MB_SECRET_KEY_LEN]);
/* MB_ERR_CONFIG unless fd is a regular file only its owner may read or
 * write: a file holding a secret (what names it in the message). */
mb_status mb_secret_file_private(int fd, const char *what, const char *path);

/* out is reset and receives the sealed bytes. aad may be NULL (= ""). */
mb_status mb_secret_seal(const unsigned char key[MB_SECRET_KEY_LEN], const void *plain, size_t n,
                         const char *aad, mb_buf *out);

/* plain_out is reset and receives the plaintext (NUL-terminated, as every
 * mb_buf). Wipe it with mb_secret_buf_wipe() when done. Errors:
 * MB_ERR_TRUNCATED (too short), MB_ERR_INVALID (unknown version),
 * MB_ERR_AUTH (wrong key, wrong aad or tampered data). */
mb_status mb_secret_open(const unsigned char key[MB_SECRET_KEY_LEN], const void *sealed, size_t n,
                         const char *aad, mb_buf *plain_out);

/* Zero the buffer's memory (including spare capacity) and free it. */
void mb_secret_buf_wipe(mb_buf *b);

#endif
