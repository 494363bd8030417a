/*
 * gitkube's native relay: the byte-copying half of the service proxy.
 *
 * The Python proxy accepts a client connection, picks an endpoint, connects
 * to it, and hands both sockets here (relay_add). From then on, worker
 * threads of this library move the bytes: each thread has its own epoll set
 * (level-triggered) and owns the connections given to it, so no lock is
 * taken on the data path and the Python interpreter (and its GIL) is not
 * involved at all.
 *
 * Semantics are those of gitkube/services/relay.py (the asyncio relay):
 *   - bytes go both ways; what one side cannot take yet is kept, and the
 *     other side is not read until it has been written (back-pressure);
 *   - an EOF from one side becomes shutdown(SHUT_WR) of the other once what
 *     was read before it is written (half-close); the pair is closed when
 *     both directions are done;
 *   - an error (reset) on one side aborts the other (SO_LINGER 0 + close,
 *     which sends a reset);
 *   - a side that is gone entirely (hang-up) ends the pair after what it
 *     sent is written to the other side.
 *
 * The library never calls into Python. Python learns that a pair ended by
 * reading an eventfd (relay_events_fd) and then taking the ids of the ended
 * pairs (relay_take_closed). relay_abort(id) ends one pair from Python.
 * Commands reach a thread through a mutex-protected queue plus an eventfd in
 * its epoll set, so every connection is only touched by its own thread.
 *
 * Build: cc -O2 -shared -fPIC -pthread relay.c -o relay.so (done by
 * gitkube/services/native/__init__.py, which caches the result).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#define RELAY_ABI 1
#define READ_SIZE 65536
#define MAX_EVENTS 256

struct conn;

struct side {
    struct conn *conn;
    int fd;
    int idx;          /* 0 = client, 1 = endpoint */
    int registered;   /* in the thread's epoll set */
    unsigned interest;
    int rd_eof;       /* nothing more will be read from this side */
    int wr_shut;      /* nothing more will be written to this side */
    char *pend;       /* bytes waiting to be written to this side */
    size_t plen, poff, pcap;
};

struct conn {
    uint64_t id;
    struct side s[2];
    int dead;
    struct conn *prev, *next;   /* the owning thread's list */
    struct conn *grave;         /* freed after the current batch */
};

enum { CMD_ADD = 1, CMD_ABORT = 2, CMD_STOP = 3 };

struct cmd {
    int kind;
    uint64_t id;
    int fds[2];
    struct cmd *next;
};

struct thread {
    int index;
    int ep;
    int wake;   /* eventfd: commands are waiting */
    pthread_t tid;
    pthread_mutex_t lock;
    struct cmd *head, *tail;
    struct conn *conns;
    struct conn *graves;
    size_t count;
    char buf[READ_SIZE];
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct thread *g_threads;
static int g_nthreads;
static int g_events = -1;  /* eventfd: pairs have ended */
static uint64_t g_next_id = 1;
static uint64_t *g_closed;
static size_t g_nclosed, g_capclosed;

int relay_abi(void) { return RELAY_ABI; }

/* ------------------------------------------------------------- ended pairs */

static void note_closed(uint64_t id) {
    pthread_mutex_lock(&g_lock);
    if (g_nclosed == g_capclosed) {
        size_t cap = g_capclosed ? g_capclosed * 2 : 1024;
        uint64_t *grown = realloc(g_closed, cap * sizeof *grown);
        if (grown) { g_closed = grown; g_capclosed = cap; }
    }
    if (g_nclosed < g_capclosed) g_closed[g_nclosed++] = id;
    pthread_mutex_unlock(&g_lock);
    uint64_t one = 1;
    ssize_t ignored = write(g_events, &one, sizeof one);
    (void)ignored;
}

/* Copy up to cap ended ids into out; returns how many. */
int relay_take_closed(uint64_t *out, int cap) {
    pthread_mutex_lock(&g_lock);
    int n = 0;
    while (n < cap && g_nclosed) out[n++] = g_closed[--g_nclosed];
    pthread_mutex_unlock(&g_lock);
    return n;
}

int relay_events_fd(void) { return g_events; }

/* ------------------------------------------------------------- one pair */

static void set_interest(struct thread *t, struct side *x) {
    if (!x->registered) return;
    struct side *y = &x->conn->s[1 - x->idx];
    unsigned want = 0;
    if (!x->rd_eof && y->plen == 0) want |= EPOLLIN;
    if (x->plen) want |= EPOLLOUT;
    if (want != x->interest) {
        struct epoll_event ev = { .events = want, .data.ptr = x };
        epoll_ctl(t->ep, EPOLL_CTL_MOD, x->fd, &ev);
        x->interest = want;
    }
}

static void unregister(struct thread *t, struct side *x) {
    if (x->registered) {
        epoll_ctl(t->ep, EPOLL_CTL_DEL, x->fd, NULL);
        x->registered = 0;
    }
}

static void end_conn(struct thread *t, struct conn *c, int abort_) {
    if (c->dead) return;
    c->dead = 1;
    for (int i = 0; i < 2; i++) {
        struct side *x = &c->s[i];
        unregister(t, x);
        if (abort_) {
            struct linger hard = { 1, 0 };
            setsockopt(x->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
        }
        close(x->fd);
        free(x->pend);
        x->pend = NULL;
        x->plen = 0;
    }
    if (c->prev) c->prev->next = c->next; else t->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    t->count--;
    c->grave = t->graves;
    t->graves = c;
    note_closed(c->id);
}

/* Keep n bytes for x (they could not be written yet). */
static int keep(struct side *x, const char *data, size_t n) {
    if (x->poff && x->plen) memmove(x->pend, x->pend + x->poff, x->plen);
    x->poff = 0;
    if (x->plen + n > x->pcap) {
        size_t cap = x->pcap ? x->pcap : 4096;
        while (cap < x->plen + n) cap *= 2;
        char *grown = realloc(x->pend, cap);
        if (!grown) return -1;
        x->pend = grown;
        x->pcap = cap;
    }
    memcpy(x->pend + x->plen, data, n);
    x->plen += n;
    return 0;
}

/* Write data to y, keeping what it cannot take. -1 on a hard error. */
static int deliver(struct side *y, const char *data, size_t n) {
    if (y->wr_shut) return 0;  /* y is gone: the bytes have nowhere to go */
    if (!y->plen) {
        ssize_t w = send(y->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
            w = 0;
        }
        data += w;
        n -= (size_t)w;
    }
    return n ? keep(y, data, n) : 0;
}

static void maybe_shut(struct side *y) {
    struct side *x = &y->conn->s[1 - y->idx];
    if (x->rd_eof && !y->plen && !y->wr_shut) {
        shutdown(y->fd, SHUT_WR);
        y->wr_shut = 1;
    }
}

static int finished(struct side *x) { return x->rd_eof && x->wr_shut && !x->plen; }

/* Read what x has for y; all of it when x hung up. 0, or -1 on a hard error. */
static int pull(struct thread *t, struct side *x, int drain) {
    struct side *y = &x->conn->s[1 - x->idx];
    for (;;) {
        ssize_t n = recv(x->fd, t->buf, sizeof t->buf, MSG_DONTWAIT);
        if (n > 0) {
            if (deliver(y, t->buf, (size_t)n) < 0) return -1;
            if (!drain) return 0;
            continue;
        }
        if (n == 0) {
            x->rd_eof = 1;
            maybe_shut(y);
            return 0;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        if (errno == EINTR) continue;
        return -1;
    }
}

static void on_event(struct thread *t, struct side *x, unsigned ev) {
    struct conn *c = x->conn;
    if (c->dead) return;
    struct side *y = &c->s[1 - x->idx];

    if (ev & EPOLLERR) {
        /* A reset or socket error: read what is left is not possible. */
        end_conn(t, c, 1);
        return;
    }
    if ((ev & EPOLLOUT) && x->plen) {
        ssize_t w = send(x->fd, x->pend + x->poff, x->plen, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            end_conn(t, c, 1);
            return;
        }
        if (w > 0) {
            x->poff += (size_t)w;
            x->plen -= (size_t)w;
        }
        maybe_shut(x);
    }
    if (ev & EPOLLHUP) {
        /* Both directions of x are closed: take what it still holds. */
        if (!x->rd_eof && pull(t, x, 1) < 0) { end_conn(t, c, 1); return; }
        x->rd_eof = 1;
        if (!x->wr_shut) {
            /* nothing can be written to x any more */
            x->wr_shut = 1;
            x->plen = 0;
            y->rd_eof = 1;
        }
        maybe_shut(y);
        unregister(t, x);
    } else if ((ev & EPOLLIN) && !x->rd_eof && !y->plen) {
        if (pull(t, x, 0) < 0) { end_conn(t, c, 1); return; }
    }
    if (finished(x) && finished(y)) {
        end_conn(t, c, 0);
        return;
    }
    set_interest(t, x);
    set_interest(t, y);
}

/* ------------------------------------------------------------- threads */

static void add_conn(struct thread *t, struct cmd *cmd) {
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(cmd->fds[0]);
        close(cmd->fds[1]);
        note_closed(cmd->id);
        return;
    }
    c->id = cmd->id;
    for (int i = 0; i < 2; i++) {
        struct side *x = &c->s[i];
        x->conn = c;
        x->fd = cmd->fds[i];
        x->idx = i;
        x->interest = EPOLLIN;
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = x };
        x->registered = epoll_ctl(t->ep, EPOLL_CTL_ADD, x->fd, &ev) == 0;
    }
    c->next = t->conns;
    if (t->conns) t->conns->prev = c;
    t->conns = c;
    t->count++;
    if (!c->s[0].registered || !c->s[1].registered) end_conn(t, c, 1);
}

static int run_commands(struct thread *t) {
    uint64_t count;
    ssize_t ignored = read(t->wake, &count, sizeof count);
    (void)ignored;
    pthread_mutex_lock(&t->lock);
    struct cmd *cmd = t->head;
    t->head = t->tail = NULL;
    pthread_mutex_unlock(&t->lock);
    int stop = 0;
    while (cmd) {
        struct cmd *next = cmd->next;
        if (cmd->kind == CMD_ADD) {
            add_conn(t, cmd);
        } else if (cmd->kind == CMD_ABORT) {
            for (struct conn *c = t->conns; c; c = c->next) {
                if (c->id == cmd->id) { end_conn(t, c, 1); break; }
            }
        } else if (cmd->kind == CMD_STOP) {
            stop = 1;
        }
        free(cmd);
        cmd = next;
    }
    return stop;
}

static void *thread_main(void *arg) {
    struct thread *t = arg;
    struct epoll_event evs[MAX_EVENTS];
    int stop = 0;
    while (!stop) {
        int n = epoll_wait(t->ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                stop |= run_commands(t);
                continue;
            }
            on_event(t, evs[i].data.ptr, evs[i].events);
        }
        while (t->graves) {
            struct conn *c = t->graves;
            t->graves = c->grave;
            free(c);
        }
    }
    while (t->conns) end_conn(t, t->conns, 1);
    while (t->graves) {
        struct conn *c = t->graves;
        t->graves = c->grave;
        free(c);
    }
    return NULL;
}

static void post(struct thread *t, struct cmd *cmd) {
    pthread_mutex_lock(&t->lock);
    if (t->tail) t->tail->next = cmd; else t->head = cmd;
    t->tail = cmd;
    pthread_mutex_unlock(&t->lock);
    uint64_t one = 1;
    ssize_t ignored = write(t->wake, &one, sizeof one);
    (void)ignored;
}

/* Start n threads (once per process). 0 on success, else an errno. */
int relay_start(int n) {
    pthread_mutex_lock(&g_lock);
    if (g_threads) { pthread_mutex_unlock(&g_lock); return 0; }
    if (n < 1) n = 1;
    int err = 0;
    g_events = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct thread *ts = calloc((size_t)n, sizeof *ts);
    if (g_events < 0 || !ts) { err = errno ? errno : ENOMEM; goto fail; }
    for (int i = 0; i < n; i++) {
        struct thread *t = &ts[i];
        t->index = i;
        pthread_mutex_init(&t->lock, NULL);
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        t->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (t->ep < 0 || t->wake < 0) { err = errno; goto fail; }
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
        if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->wake, &ev) < 0) { err = errno; goto fail; }
    }
    for (int i = 0; i < n; i++) {
        err = pthread_create(&ts[i].tid, NULL, thread_main, &ts[i]);
        if (err) {
            /* threads already started keep running with what they own (nothing yet) */
            n = i;
            if (!n) goto fail;
            break;
        }
    }
    g_threads = ts;
    g_nthreads = n;
    pthread_mutex_unlock(&g_lock);
    return 0;
fail:
    if (ts) free(ts);
    if (g_events >= 0) { close(g_events); g_events = -1; }
    pthread_mutex_unlock(&g_lock);
    return err ? err : EINVAL;
}

int relay_threads(void) { return g_nthreads; }

/* Hand two connected sockets to a thread, which owns (and closes) them from
 * now on. Returns the pair's id (> 0), or 0 if the relay is not started. */
uint64_t relay_add(int client_fd, int endpoint_fd) {
    if (!g_threads) return 0;
    struct cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) return 0;
    for (int i = 0; i < 2; i++) {
        int fd = i ? endpoint_fd : client_fd;
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    }
    pthread_mutex_lock(&g_lock);
    uint64_t id = g_next_id++;
    pthread_mutex_unlock(&g_lock);
    /* the thread is part of the id, so an abort goes to the right one */
    struct thread *t = &g_threads[id % (uint64_t)g_nthreads];
    cmd->kind = CMD_ADD;
    cmd->id = id;
    cmd->fds[0] = client_fd;
    cmd->fds[1] = endpoint_fd;
    post(t, cmd);
    return id;
}

/* End a pair with a reset of both sides (a no-op if it already ended). */
int relay_abort(uint64_t id) {
    if (!g_threads || !id) return -1;
    struct cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) return -1;
    cmd->kind = CMD_ABORT;
    cmd->id = id;
    post(&g_threads[id % (uint64_t)g_nthreads], cmd);
    return 0;
}
