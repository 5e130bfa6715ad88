// hiredis for Swift: the async client and its libev adapter. The adapter's functions are
// `static` in its header, so they are compiled into whichever module calls them; the one
// entry Tickwire needs is wrapped below. Nothing else belongs in this header.
#ifndef TICKWIRE_CHIREDIS_SHIM_H
#define TICKWIRE_CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

static const int TW_REDIS_OK = REDIS_OK;
static const int TW_REDIS_ERR = REDIS_ERR;
static const int TW_REDIS_REPLY_STRING = REDIS_REPLY_STRING;
static const int TW_REDIS_REPLY_ARRAY = REDIS_REPLY_ARRAY;
static const int TW_REDIS_REPLY_INTEGER = REDIS_REPLY_INTEGER;
static const int TW_REDIS_REPLY_NIL = REDIS_REPLY_NIL;
static const int TW_REDIS_REPLY_STATUS = REDIS_REPLY_STATUS;
static const int TW_REDIS_REPLY_ERROR = REDIS_REPLY_ERROR;

/// Attaches an async context to a libev loop (the adapter's watchers are allocated by
/// hiredis and freed with the context). `loop` is a `struct ev_loop *`, passed opaque so
/// Swift needs no second import of libev's types.
static inline int tw_redis_libev_attach(void *loop, redisAsyncContext *ac) {
    return redisLibevAttach((struct ev_loop *)loop, ac);
}

/// The context's file descriptor, or -1 (for socket options such as TCP_NODELAY).
static inline int tw_redis_fd(const redisAsyncContext *ac) {
    return ac->c.fd;
}

#endif
