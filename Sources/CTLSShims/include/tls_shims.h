// Native TLS for the reactors: OpenSSL driven non-blockingly on the connection's socket,
// with results shaped like recv(2)/send(2) so the reactor's read and write paths stay one.
#ifndef TICKWIRE_TLS_SHIMS_H
#define TICKWIRE_TLS_SHIMS_H
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct ssl_ctx_st tw_tls_context;
typedef struct tw_tls_session tw_tls_session;

/// A read or write result beyond recv/send's: the TLS layer failed (bad record, refused
/// handshake, alert). errno is EPROTO. Distinct from -1 so that failures are counted.
#define TW_TLS_FAILED (-2)
/// The handshake must write before it can read on, and the socket is full.
#define TW_TLS_WANTS_WRITE (-3)

/// A server context: TLS 1.2 and 1.3 only, ALPN http/1.1, no renegotiation, buffers
/// released while idle. NULL on failure, with the reason written to `error`.
tw_tls_context *tw_tls_server_context(const char *certificate_file, const char *key_file, char *error, size_t error_size);
/// A client context for tests and upstream feeds; verify != 0 checks the peer against
/// `ca_file` (or the system store when NULL).
tw_tls_context *tw_tls_client_context(int verify, const char *ca_file, char *error, size_t error_size);
void tw_tls_context_free(tw_tls_context *context);
void tw_tls_context_retain(tw_tls_context *context);
/// The certificate's notAfter as seconds since the epoch (0 if unknown).
long long tw_tls_certificate_not_after(tw_tls_context *context);

/// A server session on a connected, non-blocking socket.
tw_tls_session *tw_tls_accept(tw_tls_context *context, int fd);
/// A client session; `host` is sent as SNI (may be NULL).
tw_tls_session *tw_tls_connect(tw_tls_context *context, int fd, const char *host);
void tw_tls_free(tw_tls_session *session);

/// Like recv: bytes of plaintext, 0 at the peer's close_notify or EOF, -1 with errno
/// EAGAIN when nothing is ready; or TW_TLS_FAILED / TW_TLS_WANTS_WRITE. Drives the
/// handshake until it is done.
ssize_t tw_tls_read(tw_tls_session *session, void *buffer, size_t size);
/// Like writev: the iovecs are gathered into records of up to 16 KiB (a thread-local
/// buffer) and written; returns the plaintext bytes taken, -1 with errno EAGAIN when none,
/// or TW_TLS_FAILED. A call after EAGAIN must start with the same bytes (it does: the
/// caller consumes only what was taken).
ssize_t tw_tls_writev(tw_tls_session *session, const struct iovec *iov, int count);
/// A record was encrypted but the socket did not take it all: it is held (its plaintext
/// copied, at most 16 KiB, only while blocked) and goes out first on the next write.
/// The caller's bytes count as taken once encrypted, so the caller may drop or conflate
/// anything not yet reported taken.
int tw_tls_backlog(tw_tls_session *session);
/// Decrypted bytes waiting inside the session (read them before waiting on the socket).
int tw_tls_pending(tw_tls_session *session);
/// The handshake is complete.
int tw_tls_established(tw_tls_session *session);
/// 13 for TLS 1.3, 12 for TLS 1.2, 0 otherwise.
int tw_tls_version(tw_tls_session *session);
/// Sends close_notify once, best effort (never blocks).
void tw_tls_close_notify(tw_tls_session *session);
/// Clients (tests, upstream feeds): one SSL_read, as it comes (blocking sockets too).
ssize_t tw_tls_read_once(tw_tls_session *session, void *buffer, size_t size);
/// Drives the handshake: 1 done, -1 with errno EAGAIN to wait, or TW_TLS_FAILED / TW_TLS_WANTS_WRITE.
int tw_tls_handshake(tw_tls_session *session);
/// Narrows a context's versions (0x0301 TLS 1.0 ... 0x0304 TLS 1.3), for tests that try old ones.
int tw_tls_set_versions(tw_tls_context *context, int min_version, int max_version);
/// Sets a client's ALPN offer (wire format: length-prefixed names).
int tw_tls_set_alpn(tw_tls_context *context, const unsigned char *protocols, unsigned int length);
/// The negotiated ALPN protocol into `out` (NUL-terminated, empty if none).
void tw_tls_alpn(tw_tls_session *session, char *out, size_t size);
/// Sends a TLS 1.3 KeyUpdate (request_peer != 0 asks the peer to update too).
int tw_tls_key_update(tw_tls_session *session, int request_peer);
// Client sessions that check who they talk to (the Swift client's wss://).
/// A client session that verifies the peer's name: a DNS name is sent as SNI and matched
/// against the certificate's names; an IP literal (IPv4, or IPv6 without brackets) is matched
/// against its IP addresses and sends no SNI (RFC 6066 §3 forbids literals there).
tw_tls_session *tw_tls_connect_verified(tw_tls_context *context, int fd, const char *host);
/// After a failed handshake: the certificate check's verdict (X509_V_OK, 0, when the
/// certificate was not the reason), its reason in words written to `out`.
long tw_tls_verify_result(tw_tls_session *session, char *out, size_t size);
/// The last failure's reason, for logs (thread-local, valid until the next call).
const char *tw_tls_last_error(void);
#endif
