// What OpenSSL keeps per idle server TLS connection, by allocation site: N loopback
// handshakes with the server settings of Sources/CTLSShims/tls_shims.c (kept in step by
// hand), each followed by one small record written and the read side drained, as the
// reactor leaves an idle /ws connection. Counts OpenSSL's own allocations
// (CRYPTO_set_mem_functions), so the result does not depend on load or on malloc's caching.
// The client side runs in a child process and is not counted.
//
//   cc -O1 -o /tmp/tls_idle_breakdown scripts/tls_idle_breakdown.c -lssl -lcrypto
//   /tmp/tls_idle_breakdown 500 certificate.pem key.pem
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

struct header { size_t size; const char *file; int line; struct header *prev, *next; long pad; };
static struct header live = {0, 0, 0, &live, &live};
static long live_bytes;

static void link_in(struct header *h) { h->next = live.next; h->prev = &live; live.next->prev = h; live.next = h; live_bytes += (long)h->size; }
static void unlink_out(struct header *h) { h->prev->next = h->next; h->next->prev = h->prev; live_bytes -= (long)h->size; }
static void *tracked_malloc(size_t n, const char *file, int line) {
    struct header *h = malloc(sizeof *h + n);
    if (!h) return NULL;
    h->size = n; h->file = file; h->line = line; link_in(h);
    return h + 1;
}
static void *tracked_realloc(void *p, size_t n, const char *file, int line) {
    if (!p) return tracked_malloc(n, file, line);
    struct header *h = (struct header *)p - 1;
    unlink_out(h);
    struct header *g = realloc(h, sizeof *g + n);
    if (!g) { link_in(h); return NULL; }
    g->size = n; g->file = file; g->line = line;
    g->prev->next = g; g->next->prev = g;   // realloc may have moved it: repair the neighbours
    live_bytes += (long)n;
    return g + 1;
}
static void tracked_free(void *p, const char *file, int line) {
    (void)file; (void)line;
    if (!p) return;
    struct header *h = (struct header *)p - 1;
    unlink_out(h);
    free(h);
}

struct site { const char *file; int line; size_t size; long count; };

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: %s connections certificate.pem key.pem\n", argv[0]); return 2; }
    int n = atoi(argv[1]);
    if (n < 1 || n > 5000) { fprintf(stderr, "connections: 1 to 5000\n"); return 2; }
    CRYPTO_set_mem_functions(tracked_malloc, tracked_realloc, tracked_free);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (bind(listener, (void *)&address, sizeof address) || listen(listener, 128) || getsockname(listener, (void *)&address, &length)) { perror("listen"); return 1; }
    pid_t child = fork();
    if (child == 0) {
        SSL_CTX *client = SSL_CTX_new(TLS_client_method());
        for (int i = 0; i < n; i++) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(s, (void *)&address, sizeof address)) _exit(1);
            SSL *ssl = SSL_new(client);
            SSL_set_fd(ssl, s);
            char b[64];
            if (SSL_connect(ssl) != 1 || SSL_read(ssl, b, sizeof b) <= 0) _exit(1);
        }
        pause();
        _exit(0);
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    // As tw_tls_server_context.
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 || SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr); kill(child, SIGKILL); return 1;
    }
    long before = live_bytes;
    struct header *mark = live.next;
    for (int i = 0; i < n; i++) {
        int s = accept(listener, NULL, NULL);
        fcntl(s, F_SETFL, O_NONBLOCK);
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, s);
        SSL_set_accept_state(ssl);
        int greeted = 0;
        for (int k = 0; k < 1000; k++) {   // bounded: a handshake takes a few passes
            char b[256];
            int r = SSL_read(ssl, b, sizeof b);
            int e = SSL_get_error(ssl, r);
            if (SSL_is_init_finished(ssl) && !greeted) { SSL_write(ssl, "Connected", 9); greeted = 1; }
            if (e == SSL_ERROR_WANT_READ && greeted) break;   // idle: the read side is drained
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                struct pollfd p = {s, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0};
                poll(&p, 1, 1000);
                continue;
            }
            if (r <= 0) { ERR_print_errors_fp(stderr); kill(child, SIGKILL); return 1; }
        }
    }
    usleep(100000);
    printf("%d idle TLS connections: OpenSSL holds %.0f B per connection\n", n, (double)(live_bytes - before) / n);
    // By allocation site (a linked list is enough for a few thousand sites).
    struct site *sites = calloc(4096, sizeof *sites);
    int used = 0;
    for (struct header *h = live.next; h != mark; h = h->next) {
        int j = 0;
        while (j < used && !(sites[j].file == h->file && sites[j].line == h->line)) j++;
        if (j == used) { if (used == 4096) continue; sites[used++] = (struct site){h->file, h->line, 0, 0}; }
        sites[j].size += h->size;
        sites[j].count++;
    }
    for (int a = 0; a < used; a++)
        for (int b = a + 1; b < used; b++)
            if (sites[b].size > sites[a].size) { struct site t = sites[a]; sites[a] = sites[b]; sites[b] = t; }
    for (int a = 0; a < used && a < 15; a++)
        printf("  %6.0f B  %4.1f allocations  %s:%d\n", (double)sites[a].size / n, (double)sites[a].count / n, sites[a].file, sites[a].line);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;
}
