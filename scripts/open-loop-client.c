/*
 * make bench-latency's load: full TLS handshakes started at a fixed rate,
 * whatever the server answers (an open loop: a slow server does not slow the
 * load down, so its queueing shows). Each request is a new connection (no
 * resumption): connect, handshake, "GET /" with Connection: close, read to
 * the end. Its latency runs from when it was due, not from when it could be
 * started, so a client that falls behind does not hide the wait.
 *
 * None of the tools at hand does this: h2load's --rate opens connections at
 * a fixed rate but times a request from after its handshake; hey paces each
 * worker only after its last response (a closed loop per worker); vegeta and
 * wrk2 are not in Debian 12.
 *
 *   open-loop-client HOST PORT RATE SECONDS OUTPUT [MAX_IN_FLIGHT]
 * writes one latency in microseconds per line (successes only) to OUTPUT,
 * progress to stderr each second, and at the end one line to stdout:
 *   offered R/s, done N, failed F, dropped D
 * (dropped: due while MAX_IN_FLIGHT connections were open; counted, not timed).
 *
 *   cc -O2 -o open-loop-client open-loop-client.c -lssl -lcrypto
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

typedef struct request {
    int fd;
    SSL *ssl;
    double due;           /* when it was to start, seconds */
    int written;          /* the GET went out */
    size_t received;
} request;

static const char get[] = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static request *start(SSL_CTX *ctx, const struct sockaddr_in *address, int epoll, double due)
{
    request *r = calloc(1, sizeof(*r));
    struct epoll_event event = { .events = EPOLLOUT };   /* until connected */
    int one = 1;

    if (r == NULL)
        return NULL;
    r->due = due;
    r->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (r->fd < 0 || (connect(r->fd, (const struct sockaddr *)address, sizeof(*address)) < 0
                      && errno != EINPROGRESS)
        || (r->ssl = SSL_new(ctx)) == NULL || !SSL_set_fd(r->ssl, r->fd)) {
        if (r->fd >= 0)
            close(r->fd);
        SSL_free(r->ssl);
        free(r);
        return NULL;
    }
    SSL_set_connect_state(r->ssl);
    event.data.ptr = r;
    epoll_ctl(epoll, EPOLL_CTL_ADD, r->fd, &event);
    return r;
}

static void finish(request *r)
{
    SSL_free(r->ssl);
    close(r->fd);
    free(r);
}

/* 1: done (the server closed after a response); -1: failed; 0: not yet. */
static int step(request *r)
{
    char buffer[4096];
    int n;

    if (!r->written) {
        n = SSL_write(r->ssl, get, sizeof(get) - 1);
        if (n <= 0) {
            int error = SSL_get_error(r->ssl, n);
            return error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE ? 0 : -1;
        }
        r->written = 1;
    }
    for (;;) {
        n = SSL_read(r->ssl, buffer, sizeof(buffer));
        if (n > 0) {
            r->received += (size_t)n;
            continue;
        }
        switch (SSL_get_error(r->ssl, n)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
            return 0;
        case SSL_ERROR_ZERO_RETURN:
            return r->received > 0 ? 1 : -1;
        default:   /* a close without close_notify after a response counts as done */
            ERR_clear_error();
            return r->received > 0 ? 1 : -1;
        }
    }
}

int main(int argc, char **argv)
{
    struct sockaddr_in address = { .sin_family = AF_INET };
    struct epoll_event events[256];
    long done = 0, failed = 0, dropped = 0, open_now = 0, due_count = 0;
    double rate, seconds, began, next_report;
    long max_in_flight;
    FILE *output;
    SSL_CTX *ctx;
    int epoll;

    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT RATE SECONDS OUTPUT [MAX_IN_FLIGHT]\n", argv[0]);
        return 2;
    }
    inet_pton(AF_INET, argv[1], &address.sin_addr);
    address.sin_port = htons((unsigned short)atoi(argv[2]));
    rate = atof(argv[3]);
    seconds = atof(argv[4]);
    max_in_flight = argc > 6 ? atol(argv[6]) : 2000;
    if ((output = fopen(argv[5], "w")) == NULL || rate <= 0)
        return 2;
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    epoll = epoll_create1(0);
    began = now();
    next_report = began + 1;
    for (;;) {
        double t = now(), wait_until;
        int ready, i;

        /* Every request due by now starts now: the schedule is the rate's, not ours. */
        while (due_count < (long)(seconds * rate) && began + due_count / rate <= t) {
            double due = began + due_count / rate;
            request *r;

            due_count++;
            if (open_now >= max_in_flight) {
                dropped++;
                continue;
            }
            if ((r = start(ctx, &address, epoll, due)) == NULL) {
                failed++;
                continue;
            }
            open_now++;
        }
        if (due_count >= (long)(seconds * rate) && open_now == 0)
            break;
        if (t > began + seconds + 30)    /* the stragglers' limit */
            break;
        if (t >= next_report) {
            fprintf(stderr, "  %3.0f s: offered %ld, done %ld, failed %ld, open %ld\n",
                    t - began, due_count, done, failed, open_now);
            next_report += 1;
        }
        wait_until = due_count < (long)(seconds * rate) ? began + due_count / rate : t + 0.05;
        ready = epoll_wait(epoll, events, 256, wait_until > t ? (int)((wait_until - t) * 1000) : 0);
        for (i = 0; i < ready; i++) {
            request *r = events[i].data.ptr;
            int result = step(r);

            if (result == 0) {
                /* Level-triggered: wait for what OpenSSL wants, or a writable socket spins us. */
                struct epoll_event want = { .events = SSL_want_write(r->ssl) ? EPOLLOUT : EPOLLIN,
                                            .data.ptr = r };
                epoll_ctl(epoll, EPOLL_CTL_MOD, r->fd, &want);
                continue;
            }
            if (result > 0) {
                fprintf(output, "%.0f\n", (now() - r->due) * 1e6);
                done++;
            } else {
                failed++;
            }
            epoll_ctl(epoll, EPOLL_CTL_DEL, r->fd, NULL);
            finish(r);
            open_now--;
        }
    }
    fclose(output);
    printf("offered %.0f/s, done %ld, failed %ld, dropped %ld\n", rate, done, failed, dropped + open_now);
    return 0;
}
