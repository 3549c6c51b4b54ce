/* tls_verify.c — verify a libetpan TLS peer's certificate chain with OpenSSL
 * (see tls_verify.h for why this is needed at all). */
#include "sources/imap/tls_verify.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <string.h>

static int is_ip_literal(const char *s) {
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

mb_status mb_imap_tls_verify(mailstream *stream, const char *ca_file, const char *name) {
    mb_status st = MB_OK;
    X509 *leaf = NULL;
    STACK_OF(X509) *untrusted = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *ctx = NULL;

    carray *chain = mailstream_get_certificate_chain(stream);
    if (!chain || carray_count(chain) == 0) {
        st = mb_errf(MB_ERR_NET, "TLS peer sent no certificate");
        goto out;
    }
    untrusted = sk_X509_new_null();
    if (!untrusted) {
        st = mb_errf(MB_ERR_NOMEM, "TLS verify: out of memory");
        goto out;
    }
    for (unsigned i = 0; i < carray_count(chain); i++) {
        MMAPString *der = carray_get(chain, i);
        const unsigned char *p = (const unsigned char *)der->str;
        X509 *x = d2i_X509(NULL, &p, (long)der->len);
        if (!x) {
            st = mb_errf(MB_ERR_NET, "TLS peer certificate %u is not valid DER", i);
            goto out;
        }
        if (i == 0) {
            leaf = x;
        } else if (!sk_X509_push(untrusted, x)) {
            X509_free(x);
            st = mb_errf(MB_ERR_NOMEM, "TLS verify: out of memory");
            goto out;
        }
    }

    store = X509_STORE_new();
    if (!store) {
        st = mb_errf(MB_ERR_NOMEM, "TLS verify: out of memory");
        goto out;
    }
    if (ca_file && *ca_file) {
        if (X509_STORE_load_locations(store, ca_file, NULL) != 1) {
            st = mb_errf(MB_ERR_CONFIG, "TLS CA file '%s' cannot be loaded", ca_file);
            goto out;
        }
        /* The operator named these anchors: trust them even when one is a
         * leaf or an intermediate (pinning a self-signed server cert). */
        X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    } else if (X509_STORE_set_default_paths(store) != 1) {
        st = mb_errf(MB_ERR_CONFIG, "TLS: system certificate store cannot be loaded");
        goto out;
    }

    ctx = X509_STORE_CTX_new();
    if (!ctx || X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1) {
        st = mb_errf(MB_ERR_NOMEM, "TLS verify: out of memory");
        goto out;
    }
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    int ok = is_ip_literal(name) ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                                 : X509_VERIFY_PARAM_set1_host(param, name, strlen(name));
    if (ok != 1) {
        st = mb_errf(MB_ERR_CONFIG, "TLS: cannot verify against name '%s'", name);
        goto out;
    }
    if (X509_verify_cert(ctx) != 1) {
        int err = X509_STORE_CTX_get_error(ctx);
        st = mb_errf(MB_ERR_NET, "TLS certificate of '%s' not trusted: %s (%s)", name,
                     X509_verify_cert_error_string(err),
                     ca_file && *ca_file ? ca_file : "system store");
        goto out;
    }

out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    sk_X509_pop_free(untrusted, X509_free);
    X509_free(leaf);
    if (chain)
        mailstream_certificate_chain_free(chain);
    return st;
}
