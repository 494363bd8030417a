/* Open-loop HTTP/1.1 load at a fixed request rate, for bench/proxy.py.
 *
 *   loadgen HOST PORT[,PORT...] CONNECTIONS RATE SECONDS RESPONSE_BYTES
 *
 * Request i is due at start + i / RATE and goes on connection i % CONNECTIONS
 * (keep-alive, one request at a time per connection, as wrk2 does). Its
 * latency is counted from the time it was DUE to the end of its response,
 * not from when it was sent: a request that waits because its connection is
 * still busy, or because this program was not scheduled, is late by that
 * much (no "coordinated omission"). Every response is RESPONSE_BYTES long
 * (the benchmark's endpoints answer one fixed response). After SECONDS no
 * request is due any more; what is outstanding is waited for, at most 10 s
 * (what is then still missing counts as errors).
 *
 * RATE 0 is a closed loop instead (as wrk): each connection sends its next
 * request as soon as the last answer came, for SECONDS. With several ports,
 * connection i goes to the i-th port modulo their number.
 *
 * Prints one JSON object: requests due, done, errors, the achieved rate, and
 * latency percentiles in microseconds (p50, p90, p99, p99.9, max).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char REQUEST[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

struct conn {
    int fd;
    int busy;              /* a request is in flight */
    size_t sent;           /* bytes of the in-flight request written */
    size_t received;       /* bytes of the in-flight response read */
    /* intended times of the requests assigned and not done: a ring */
    uint64_t *due;
    size_t head, count, cap;
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void push(struct conn *c, uint64_t due) {
    if (c->count == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        uint64_t *ring = malloc(cap * sizeof *ring);
        if (!ring)
            die("malloc");
        for (size_t i = 0; i < c->count; i++)
            ring[i] = c->due[(c->head + i) % c->cap];
        free(c->due);
        c->due = ring;
        c->head = 0;
        c->cap = cap;
    }
    c->due[(c->head + c->count) % c->cap] = due;
    c->count++;
}

/* write (the rest of) the in-flight request; 0 ok, -1 connection failed */
static int send_request(struct conn *c) {
    while (c->sent < sizeof REQUEST - 1) {
        ssize_t n = write(c->fd, REQUEST + c->sent, sizeof REQUEST - 1 - c->sent);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0; /* the rest when writable (requests are tiny: rare) */
            return -1;
        }
        c->sent += (size_t)n;
    }
    return 0;
}

static int start_next(struct conn *c) {
    if (c->busy || c->count == 0)
        return 0;
    c->busy = 1;
    c->sent = c->received = 0;
    return send_request(c);
}

static uint64_t percentile(const uint64_t *sorted, size_t n, double q) {
    if (n == 0)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return sorted[i < n ? i : n - 1];
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT[,PORT...] CONNECTIONS RATE SECONDS RESPONSE_BYTES\n",
                argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int ports[64], nports = 0;
    for (char *p = argv[2]; *p && nports < 64;) {
        ports[nports++] = (int)strtol(p, &p, 10);
        if (*p == ',')
            p++;
        else
            break;
    }
    int nconn = atoi(argv[3]);
    double rate = atof(argv[4]);
    double seconds = atof(argv[5]);
    size_t response = (size_t)atol(argv[6]);
    if (nconn < 1 || rate < 0 || seconds <= 0 || response == 0 || nports < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    prctl(PR_SET_TIMERSLACK, 1UL); /* wake up on time for the next due request */

    struct sockaddr_in addr = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        return 2;
    }
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    struct conn *conns = calloc((size_t)nconn, sizeof *conns);
    if (!conns)
        die("calloc");
    for (int i = 0; i < nconn; i++) {
        /* connected (blocking) before the clock starts */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        addr.sin_port = htons((uint16_t)ports[i % nports]);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            die("connect");
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl");
    }

    int closed = rate == 0;
    uint64_t total = closed ? 0 : (uint64_t)(rate * seconds);
    size_t cap = closed ? 1 << 20 : total + 1;
    uint64_t *latency = malloc(cap * sizeof *latency);
    if (!latency)
        die("malloc");
    size_t done = 0, errors = 0;
    double interval = closed ? 0 : 1e9 / rate;
    uint64_t start = now_ns() + 1000000; /* 1 ms from now */
    uint64_t next = 0;                   /* the next request to fall due */
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    uint64_t drain_until = end + 10000000000ull;
    if (closed) {
        while (now_ns() < start)
            ;
        for (int i = 0; i < nconn; i++) {
            push(&conns[i], start);
            if (start_next(&conns[i]) < 0)
                die("write");
        }
    }
    char buf[65536];
    struct epoll_event events[256];

    for (;;) {
        uint64_t now = now_ns();
        while (next < total && start + (uint64_t)((double)next * interval) <= now) {
            struct conn *c = &conns[next % (uint64_t)nconn];
            push(c, start + (uint64_t)((double)next * interval));
            next++;
            if (c->fd >= 0 && start_next(c) < 0) {
                close(c->fd);
                c->fd = -1;
            }
        }
        size_t outstanding = 0;
        for (int i = 0; i < nconn; i++)
            outstanding += conns[i].fd >= 0 ? conns[i].count : 0;
        if (next >= total && outstanding == 0 && (!closed || now >= end))
            break;
        if (now > drain_until)
            break;
        struct timespec timeout = {0, 0};
        if (next < total) {
            uint64_t due = start + (uint64_t)((double)next * interval);
            uint64_t wait = due > now ? due - now : 0;
            timeout.tv_sec = (time_t)(wait / 1000000000ull);
            timeout.tv_nsec = (long)(wait % 1000000000ull);
        } else {
            timeout.tv_nsec = 50000000; /* draining */
        }
        int n = epoll_pwait2(ep, events, 256, &timeout, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_pwait2");
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[events[k].data.u32];
            if (c->fd < 0)
                continue;
            for (;;) {
                ssize_t got = read(c->fd, buf, sizeof buf);
                if (got < 0 && (errno == EAGAIN || errno == EINTR))
                    break;
                if (got <= 0) { /* closed or failed: its requests are errors */
                    close(c->fd);
                    c->fd = -1;
                    break;
                }
                c->received += (size_t)got;
                uint64_t at = now_ns();
                while (c->busy && c->received >= response) {
                    c->received -= response;
                    if (done == cap) {
                        cap *= 2;
                        latency = realloc(latency, cap * sizeof *latency);
                        if (!latency)
                            die("realloc");
                    }
                    latency[done++] = at - c->due[c->head];
                    c->head = (c->head + 1) % c->cap;
                    c->count--;
                    c->busy = 0;
                    if (closed && at < end)
                        push(c, at); /* the next one, now */
                    size_t left = c->received;
                    if (start_next(c) < 0) {
                        close(c->fd);
                        c->fd = -1;
                        break;
                    }
                    c->received = left;
                }
                if (c->fd < 0)
                    break;
            }
        }
    }
    uint64_t ended = now_ns();
    for (int i = 0; i < nconn; i++) {
        errors += conns[i].count;
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    }
    qsort(latency, done, sizeof *latency, cmp_u64);
    double elapsed = (double)((closed ? end : ended) - start) / 1e9;
    if (closed)
        total = done + errors;
    printf("{\"due\": %llu, \"done\": %zu, \"errors\": %zu, \"rate\": %.1f, \"seconds\": %.3f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
           "\"max_us\": %.1f}\n",
           (unsigned long long)total, done, errors, (double)done / elapsed, elapsed,
           (double)percentile(latency, done, 0.50) / 1e3,
           (double)percentile(latency, done, 0.90) / 1e3,
           (double)percentile(latency, done, 0.99) / 1e3,
           (double)percentile(latency, done, 0.999) / 1e3,
           done ? (double)latency[done - 1] / 1e3 : 0.0);
    return 0;
}
