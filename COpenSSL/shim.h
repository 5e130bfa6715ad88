// OpenSSL's libcrypto, for the SHA-1 of the WebSocket handshake (RFC 6455 §4.2.2).
// Native TLS (planned) will add libssl here.
#ifndef TICKWIRE_COPENSSL_SHIM_H
#define TICKWIRE_COPENSSL_SHIM_H
#include <openssl/sha.h>
#endif
