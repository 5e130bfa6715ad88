// Swift cannot call C macros, so each libev macro Tickwire needs is wrapped here
// in a `static inline` function. Nothing else belongs in this header.
#ifndef TICKWIRE_CLIBEV_SHIM_H
#define TICKWIRE_CLIBEV_SHIM_H

#include <ev.h>

typedef void (*tw_io_cb)(struct ev_loop *loop, ev_io *w, int revents);
typedef void (*tw_timer_cb)(struct ev_loop *loop, ev_timer *w, int revents);
typedef void (*tw_async_cb)(struct ev_loop *loop, ev_async *w, int revents);
typedef void (*tw_prepare_cb)(struct ev_loop *loop, ev_prepare *w, int revents);
typedef void (*tw_check_cb)(struct ev_loop *loop, ev_check *w, int revents);
typedef void (*tw_signal_cb)(struct ev_loop *loop, ev_signal *w, int revents);

static const int TW_EV_READ = EV_READ;
static const int TW_EV_WRITE = EV_WRITE;
static const int TW_EV_ERROR = (int)EV_ERROR;
static const int TW_EVBREAK_ALL = EVBREAK_ALL;
static const int TW_EVBREAK_ONE = EVBREAK_ONE;
static const unsigned int TW_EVBACKEND_EPOLL = EVBACKEND_EPOLL;
static const unsigned int TW_EVFLAG_NOENV = EVFLAG_NOENV;

static inline void tw_ev_io_init(ev_io *w, tw_io_cb cb, int fd, int events) {
    ev_io_init(w, cb, fd, events);
}

/// Changes the events of a stopped io watcher (libev requires it to be stopped).
static inline void tw_ev_io_set_events(ev_io *w, int events) {
    ev_io_modify(w, events);
}

static inline int tw_ev_io_events(const ev_io *w) {
    return w->events & (EV_READ | EV_WRITE);
}

static inline void tw_ev_timer_init(ev_timer *w, tw_timer_cb cb, ev_tstamp after, ev_tstamp repeat) {
    ev_timer_init(w, cb, after, repeat);
}

static inline void tw_ev_timer_set(ev_timer *w, ev_tstamp after, ev_tstamp repeat) {
    ev_timer_set(w, after, repeat);
}

static inline void tw_ev_async_init(ev_async *w, tw_async_cb cb) {
    ev_async_init(w, cb);
}

static inline void tw_ev_prepare_init(ev_prepare *w, tw_prepare_cb cb) {
    ev_prepare_init(w, cb);
}

static inline void tw_ev_check_init(ev_check *w, tw_check_cb cb) {
    ev_check_init(w, cb);
}

static inline void tw_ev_signal_init(ev_signal *w, tw_signal_cb cb, int signum) {
    ev_signal_init(w, cb, signum);
}

static inline int tw_ev_is_active(const void *w) {
    return ev_is_active((const ev_watcher *)w);
}

#endif
