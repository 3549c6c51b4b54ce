/* imap.h — the IMAP backend of sources/source.h (libetpan).
 *
 * Reads only: folders are opened with EXAMINE and bodies fetched with
 * BODY.PEEK[], so an import never changes \Seen or anything else.
 * changes (source.h) uses QRESYNC when the server offers it (ENABLE QRESYNC
 * right after login, then EXAMINE with the QRESYNC parameter, not SELECT),
 * else CONDSTORE (CHANGEDSINCE), else lists the folder's flags.
 * watch (source.h) keeps the folder under IDLE (RFC 2177), writing IDLE and
 * DONE and reading the server's lines itself (imap.c says why); the server
 * must advertise IDLE (else MB_ERR_CONFIG).
 * mb_imap_append / mb_imap_create_folder exist for seeding tests and demos.
 *
 * TLS: Debian's libetpan is built with GnuTLS and verifies no certificate at
 * all, so after every handshake (imaps and STARTTLS), before a credential is
 * sent, the server's chain is checked here with OpenSSL against cfg->ca_file
 * (or the system store) and cfg->tls_name/host. Plain text is refused for a
 * host that is not loopback unless cfg->allow_plain_remote.
 *
 * What the server sends passes a guard (guard.h) before libetpan parses it:
 * a server that sends an endless line, announces a huge literal, never ends
 * an answer or sends it too slowly is cut off, with MB_ERR_NET saying why.
 *
 * The process must not die of SIGPIPE when a server drops the connection
 * mid-write: connect sets SIGPIPE to SIG_IGN if it is still SIG_DFL. */
#ifndef MB_SOURCES_IMAP_H
#define MB_SOURCES_IMAP_H

#include "sources/source.h"

#include <stdbool.h>

/* A new, unconnected IMAP source; cfg's strings are copied. Free with
 * mb_source_free. MB_ERR_CONFIG names the bad setting. */
mb_status mb_source_imap_new(const mb_source_cfg *cfg, mb_source **out);

/* APPEND data to folder (raw server name) with the given flags
 * ("\\Seen", "$Label") and internal date (unix seconds; 0: server's now).
 * s must be an IMAP source, connected. */
mb_status mb_imap_append(mb_source *s, const char *folder, const char *data, size_t len,
                         const char *const *flags, size_t nflags, int64_t internal_date);
/* CREATE folder (raw server name); an existing folder is not an error. */
mb_status mb_imap_create_folder(mb_source *s, const char *folder);

/* Decode an IMAP modified UTF-7 name (RFC 3501 5.1.3) to UTF-8; *out is
 * malloc'd. MB_ERR_INVALID if the name is not canonical modified UTF-7: a
 * byte outside printable ASCII, a bad or unterminated &...- run, surplus
 * padding, printable ASCII or a control character encoded inside a run, a
 * leading U+FFFD, two adjacent runs. Canonical forms decode one-to-one, so distinct
 * names never share a decoded form. */
mb_status mb_imap_utf7_decode(const char *in, char **out);

/* Names and keywords a server sends need not be valid UTF-8 (8-bit bytes,
 * Latin-1, "R&D"), but Postgres text and bus records must be. The escaped
 * form of such text is U+FFFD followed by the text with every byte that does
 * not begin a well-formed, non-control UTF-8 character, and every backslash,
 * written as \xNN (upper-case hex): always valid UTF-8, deterministic, and
 * reversible. Clean text (valid UTF-8 without control characters, not
 * starting with U+FFFD) is its own form, so no two texts share a form.
 * (Dovecot turns an 8-bit folder name on disk into valid modified UTF-7 of
 * U+FFFD, "Caf&,,0-", but sends an 8-bit keyword as it is.) */

/* n bytes of in, escaped if they are not clean (or always, with force);
 * *out malloc'd; *escaped (may be NULL) says whether it was. */
mb_status mb_imap_escape(const char *in, size_t n, bool force, char **out, bool *escaped);
/* The bytes an mb_imap_escape form stands for (itself if it does not start
 * with U+FFFD); *out malloc'd and NUL-terminated, *len (may be NULL) its
 * length. MB_ERR_INVALID for a malformed \x escape. */
mb_status mb_imap_unescape(const char *in, char **out, size_t *len);
/* A folder's names from its raw LIST name: *name, what scan and fetch pass
 * back to open_folder (the raw name, escaped if not clean); *display, the
 * modified UTF-7 decoding, or the forced escaped form of the raw name if it
 * does not decode (so it never equals a decoded name). *escaped: either one
 * had to be escaped. Both malloc'd. */
mb_status mb_imap_folder_names(const char *raw, char **name, char **display, bool *escaped);

#endif
