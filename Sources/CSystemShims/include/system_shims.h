// Linux calls that Glibc's Swift module hides behind _GNU_SOURCE.
#ifndef TICKWIRE_SYSTEM_SHIMS_H
#define TICKWIRE_SYSTEM_SHIMS_H

#include <pthread.h>
#include <sys/socket.h>

/// Names the calling thread (at most 15 bytes are kept), for top, perf and gdb.
int tw_set_thread_name(const char *name);

/// Pins `thread` to one CPU.
int tw_pin_thread(pthread_t thread, int cpu);

/// accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC: one call instead of accept + 2 fcntl.
int tw_accept_nonblocking(int fd, struct sockaddr *addr, socklen_t *len);

/// malloc_trim(0): returns free heap pages to the system after a large release.
int tw_malloc_trim(void);

#endif
