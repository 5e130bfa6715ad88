#define _GNU_SOURCE
#include "tls_shims.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>

struct tw_tls_session {
    SSL *ssl;
    /// The plaintext of a record OpenSSL holds half-written, to retry it with (SSL_write
    /// needs the same bytes again); NULL when nothing is held.
    unsigned char *retry;
    size_t retry_length;
};

static __thread char last_error[256];
/// One record's plaintext: the gather buffer for tw_tls_writev (one per reactor thread).
static __thread unsigned char gather[16384];

static void remember_error(void) {
    unsigned long e = ERR_peek_last_error();
    if (e) {
        ERR_error_string_n(e, last_error, sizeof last_error);
    } else {
        snprintf(last_error, sizeof last_error, "%s", "TLS failure");
    }
    ERR_clear_error();
}

const char *tw_tls_last_error(void) { return last_error; }

static void copy_error(char *error, size_t size, const char *what, const char *file) {
    unsigned long e = ERR_get_error();
    char reason[200] = "";
    if (e) ERR_error_string_n(e, reason, sizeof reason);
    snprintf(error, size, "%s %s%s%s", what, file ? file : "", reason[0] ? ": " : "", reason);
    ERR_clear_error();
}

// ALPN: the only protocol spoken here is HTTP/1.1. A client that offers ALPN without it
// (h2 only) gets a fatal no_application_protocol alert rather than a silent mismatch.
static int select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    static const unsigned char http11[] = "http/1.1";
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == 8 && memcmp(in + i + 1, http11, 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static void common_settings(SSL_CTX *ctx) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    // Renegotiation is an old DoS lever and needs reads inside writes: refused.
    // A peer that just closes (most browsers send no close_notify) is an ordinary EOF.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE);
    // Idle connections give their 16 KiB+ record buffers back; a partial write returns
    // what was taken, and a retry may come from a different (regathered) buffer.
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

tw_tls_context *tw_tls_server_context(const char *certificate_file, const char *key_file, char *error, size_t error_size) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) { copy_error(error, error_size, "cannot create a TLS context", NULL); return NULL; }
    common_settings(ctx);
    // One full handshake's worth of tickets keeps reconnect storms cheap (resumption),
    // without the server holding a session cache per connection.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, certificate_file) != 1) {
        copy_error(error, error_size, "cannot read the certificate chain in", certificate_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        copy_error(error, error_size, "cannot read the private key in", key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        copy_error(error, error_size, "the private key does not match the certificate in", certificate_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    return ctx;
}

tw_tls_context *tw_tls_client_context(int verify, const char *ca_file, char *error, size_t error_size) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { copy_error(error, error_size, "cannot create a TLS context", NULL); return NULL; }
    common_settings(ctx);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            copy_error(error, error_size, "cannot load the trusted certificates in", ca_file ? ca_file : "the system store");
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

void tw_tls_context_free(tw_tls_context *context) { SSL_CTX_free(context); }
void tw_tls_context_retain(tw_tls_context *context) { SSL_CTX_up_ref(context); }

long long tw_tls_certificate_not_after(tw_tls_context *context) {
    X509 *certificate = SSL_CTX_get0_certificate(context);
    if (!certificate) return 0;
    const ASN1_TIME *not_after = X509_get0_notAfter(certificate);
    struct tm tm;
    if (!not_after || ASN1_TIME_to_tm(not_after, &tm) != 1) return 0;
    return (long long)timegm(&tm);
}

static tw_tls_session *wrap(SSL *ssl) {
    tw_tls_session *session = calloc(1, sizeof *session);
    if (!session) { SSL_free(ssl); return NULL; }
    session->ssl = ssl;
    return session;
}

tw_tls_session *tw_tls_accept(tw_tls_context *context, int fd) {
    SSL *ssl = SSL_new(context);
    if (!ssl) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); return NULL; }
    SSL_set_accept_state(ssl);
    return wrap(ssl);
}

tw_tls_session *tw_tls_connect(tw_tls_context *context, int fd, const char *host) {
    SSL *ssl = SSL_new(context);
    if (!ssl) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); return NULL; }
    if (host) {
        SSL_set_tlsext_host_name(ssl, host);
        SSL_set1_host(ssl, host);
    }
    SSL_set_connect_state(ssl);
    return wrap(ssl);
}

void tw_tls_free(tw_tls_session *session) {
    if (!session) return;
    SSL_free(session->ssl);
    free(session->retry);
    free(session);
}

/// Maps an OpenSSL result to the recv/send conventions.
static ssize_t failure(SSL *ssl, int result) {
    switch (SSL_get_error(ssl, result)) {
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        errno = EAGAIN;
        return TW_TLS_WANTS_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        // errno says why (ECONNRESET, EPIPE); an EOF without close_notify is an EOF.
        if (ERR_peek_error() == 0) {
            if (errno == 0 || errno == EAGAIN) return 0;
            return -1;
        }
        // fall through
    default:
        remember_error();
        errno = EPROTO;
        return TW_TLS_FAILED;
    }
}

ssize_t tw_tls_read(tw_tls_session *session, void *buffer, size_t size) {
    SSL *ssl = session->ssl;
    size_t total = 0;
    ERR_clear_error();
    // Records come at most 16 KiB at a time: fill the buffer from as many as are ready.
    while (total < size) {
        errno = 0;
        int n = SSL_read(ssl, (char *)buffer + total, (int)(size - total > 1 << 30 ? 1 << 30 : size - total));
        if (n > 0) { total += (size_t)n; continue; }
        if (total > 0) {
            // What was read is handed over; the condition (EAGAIN, EOF, failure) recurs on the next call.
            ERR_clear_error();
            return (ssize_t)total;
        }
        ssize_t r = failure(ssl, n);
        if (r == TW_TLS_WANTS_WRITE) return TW_TLS_WANTS_WRITE;
        return r;
    }
    return (ssize_t)total;
}

/// Writes the held record: 1 when it is out, 0 while the socket is full, or a failure.
static ssize_t write_retry(tw_tls_session *session) {
    if (!session->retry) return 1;
    errno = 0;
    int n = SSL_write(session->ssl, session->retry, (int)session->retry_length);
    if (n <= 0) {
        ssize_t r = failure(session->ssl, n);
        if (r == -1 || r == TW_TLS_WANTS_WRITE || r == 0) return 0;
        return r;
    }
    if ((size_t)n < session->retry_length) {
        memmove(session->retry, session->retry + n, session->retry_length - (size_t)n);
        session->retry_length -= (size_t)n;
        return 0;
    }
    free(session->retry);
    session->retry = NULL;
    session->retry_length = 0;
    return 1;
}

int tw_tls_backlog(tw_tls_session *session) { return session->retry != NULL; }

ssize_t tw_tls_writev(tw_tls_session *session, const struct iovec *iov, int count) {
    SSL *ssl = session->ssl;
    size_t total = 0;
    int i = 0;
    size_t offset = 0;   // into iov[i]
    ERR_clear_error();
    ssize_t held = write_retry(session);
    if (held == 0) { errno = EAGAIN; return -1; }
    if (held < 0) return held;
    while (i < count) {
        // Gather up to one record.
        size_t filled = 0;
        const void *direct = NULL;
        if (offset == 0 && iov[i].iov_len >= sizeof gather) {
            // A piece of a whole record or more is encrypted from where it lies.
            direct = iov[i].iov_base;
            filled = sizeof gather;
        } else {
            int j = i;
            size_t o = offset;
            while (j < count && filled < sizeof gather) {
                size_t n = iov[j].iov_len - o;
                if (n > sizeof gather - filled) n = sizeof gather - filled;
                memcpy(gather + filled, (const char *)iov[j].iov_base + o, n);
                filled += n;
                o += n;
                if (o == iov[j].iov_len) { j++; o = 0; }
            }
        }
        if (filled == 0) { i++; offset = 0; continue; }
        errno = 0;
        int n = SSL_write(ssl, direct ? direct : gather, (int)filled);
        if (n <= 0) {
            ssize_t r = failure(ssl, n);
            if (r == TW_TLS_WANTS_WRITE || r == -1) {
                // The record is encrypted and held by OpenSSL: keep its plaintext for the
                // retry and count it as taken, so the caller's queue may change behind it.
                session->retry = malloc(filled);
                if (!session->retry) { errno = ENOMEM; return -1; }
                memcpy(session->retry, direct ? direct : gather, filled);
                session->retry_length = filled;
                n = (int)filled;
            } else {
                if (total > 0) { ERR_clear_error(); return (ssize_t)total; }
                if (r == 0) { errno = EPIPE; return -1; }
                return r;
            }
        }
        total += (size_t)n;
        // Advance past what was taken.
        size_t left = (size_t)n;
        while (left > 0 && i < count) {
            size_t rest = iov[i].iov_len - offset;
            if (left < rest) { offset += left; left = 0; }
            else { left -= rest; i++; offset = 0; }
        }
        if (session->retry) break;   // the socket is full
    }
    return (ssize_t)total;
}

int tw_tls_pending(tw_tls_session *session) { return SSL_pending(session->ssl); }
int tw_tls_established(tw_tls_session *session) { return SSL_is_init_finished(session->ssl); }

int tw_tls_version(tw_tls_session *session) {
    switch (SSL_version(session->ssl)) {
    case TLS1_3_VERSION: return 13;
    case TLS1_2_VERSION: return 12;
    default: return 0;
    }
}

void tw_tls_close_notify(tw_tls_session *session) {
    SSL *ssl = session->ssl;
    if (!SSL_is_init_finished(ssl)) return;
    ERR_clear_error();
    if (session->retry) (void)write_retry(session);
    (void)SSL_shutdown(ssl);
    ERR_clear_error();
}

ssize_t tw_tls_read_once(tw_tls_session *session, void *buffer, size_t size) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(session->ssl, buffer, (int)(size > 1 << 30 ? 1 << 30 : size));
    if (n > 0) return n;
    return failure(session->ssl, n);
}

int tw_tls_handshake(tw_tls_session *session) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_do_handshake(session->ssl);
    if (n == 1) return 1;
    ssize_t r = failure(session->ssl, n);
    return r == 0 ? TW_TLS_FAILED : (int)r;
}

int tw_tls_set_versions(tw_tls_context *context, int min_version, int max_version) {
    return SSL_CTX_set_min_proto_version(context, min_version) == 1
        && SSL_CTX_set_max_proto_version(context, max_version) == 1;
}

int tw_tls_set_alpn(tw_tls_context *context, const unsigned char *protocols, unsigned int length) {
    return SSL_CTX_set_alpn_protos(context, protocols, length) == 0;
}

void tw_tls_alpn(tw_tls_session *session, char *out, size_t size) {
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(session->ssl, &p, &n);
    if (n >= size) n = (unsigned int)size - 1;
    if (n) memcpy(out, p, n);
    out[n] = 0;
}

int tw_tls_key_update(tw_tls_session *session, int request_peer) {
    return SSL_key_update(session->ssl, request_peer ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED);
}

tw_tls_session *tw_tls_connect_verified(tw_tls_context *context, int fd, const char *host) {
    SSL *ssl = SSL_new(context);
    if (!ssl) return NULL;
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); return NULL; }
    unsigned char address[16];
    int literal = inet_pton(AF_INET, host, address) == 1 || inet_pton(AF_INET6, host, address) == 1;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (literal) {
        if (X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1) { SSL_free(ssl); return NULL; }
    } else {
        // "*.example.com" matches one whole label, never "w*.example.com" partials.
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1) { SSL_free(ssl); return NULL; }
    }
    SSL_set_connect_state(ssl);
    return wrap(ssl);
}

long tw_tls_verify_result(tw_tls_session *session, char *out, size_t size) {
    long result = SSL_get_verify_result(session->ssl);
    snprintf(out, size, "%s", result == X509_V_OK ? "" : X509_verify_cert_error_string(result));
    return result;
}
