// OpenSSL: libcrypto for the SHA-1 of the WebSocket handshake (RFC 6455 §4.2.2), libssl for
// TLS (the reactors' native wss:// and https://, and the upstream feeds' wss:// client).
#ifndef TICKWIRE_COPENSSL_SHIM_H
#define TICKWIRE_COPENSSL_SHIM_H
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/pem.h>
#endif
