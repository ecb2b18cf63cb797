/*
 * Open-loop HTTP/1.1 load at a fixed arrival rate, for `npm run bench` (bench/openloop.ts builds
 * and runs it). What wrk2 does, cut down to what the bench needs: wrk itself is closed-loop only,
 * and the Node generator of bench/load.ts costs the server 35-45 µs of CPU per request on the
 * 2 cores they share, plus its own event-loop stalls, all of which land in the p99 it reports.
 *
 * Model: request i is due at start + i/rate. At each due time it goes out on an idle keep-alive
 * connection, or waits in FIFO order for one; its latency counts from when it was DUE, not from
 * when it was sent, so a stalled server (or a late generator) shows in full in the tail
 * (no coordinated omission). One request in flight per connection, no pipelining. If more than
 * rate/2 requests are waiting, the server cannot keep up: the run stops and says "saturated".
 *
 * Usage: openloop <host> <port> <path> <rate/s> <duration ms> <connections>
 * The request's bearer token and JSON body come from the environment (CUSTOS_BENCH_TOKEN,
 * CUSTOS_BENCH_BODY), never the command line. Prints one line:
 *   OPENLOOP_JSON {"due":…,"ok":…,"errors":…,"status":…,"durationUs":…,"p50Us":…,"p99Us":…,"maxUs":…,"saturated":0|1}
 * Linux only (epoll, timerfd).
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
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384

struct conn {
  int fd;
  uint32_t events;   /* what epoll watches for now */
  int busy;          /* a request is in flight */
  uint64_t due_ns;   /* when the request in flight was due */
  size_t sent;       /* bytes of the request written so far */
  char buf[BUF];
  size_t have;       /* bytes of the answer read so far */
};

static const char *host;
static int port;
static char *request;
static size_t request_len;
static struct conn *conns;
static int nconns;
static int ep;
static uint32_t *lat_us;
static size_t nlat, ok, errors, bad_status;

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void die(const char *what) {
  perror(what);
  exit(2);
}

static int open_conn(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    fprintf(stderr, "openloop: not an IPv4 address: %s\n", host);
    exit(2);
  }
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static void watch(struct conn *c, uint32_t events, int op) {
  if (op == EPOLL_CTL_MOD && c->events == events) return;
  struct epoll_event e = {.events = events, .data.ptr = c};
  if (epoll_ctl(ep, op, c->fd, &e) < 0) die("epoll_ctl");
  c->events = events;
}

/* FIFO of due times waiting for an idle connection (a ring; grows when full). */
static uint64_t *wq;
static size_t wq_cap, wq_head, wq_len;

static void wq_push(uint64_t due) {
  if (wq_len == wq_cap) {
    size_t cap = wq_cap ? wq_cap * 2 : 1024;
    uint64_t *n = malloc(cap * sizeof *n);
    if (!n) die("malloc");
    for (size_t i = 0; i < wq_len; i++) n[i] = wq[(wq_head + i) % wq_cap];
    free(wq);
    wq = n;
    wq_cap = cap;
    wq_head = 0;
  }
  wq[(wq_head + wq_len++) % wq_cap] = due;
}

static uint64_t wq_pop(void) {
  uint64_t d = wq[wq_head];
  wq_head = (wq_head + 1) % wq_cap;
  wq_len--;
  return d;
}

/* Idle connections, as a stack of indexes. */
static int *idle;
static int nidle;

static void try_write(struct conn *c) {
  while (c->sent < request_len) {
    ssize_t n = write(c->fd, request + c->sent, request_len - c->sent);
    if (n > 0) {
      c->sent += (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
      return;
    } else {
      return; /* the read side sees the error */
    }
  }
  watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

static void send_on(struct conn *c, uint64_t due) {
  c->busy = 1;
  c->due_ns = due;
  c->sent = 0;
  c->have = 0;
  try_write(c);
}

static void release(struct conn *c) {
  c->busy = 0;
  if (wq_len > 0) send_on(c, wq_pop());
  else idle[nidle++] = (int)(c - conns);
}

/* The connection failed: the request in flight is an error, and a new connection replaces it. */
static void reconnect(struct conn *c) {
  errors++;
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = open_conn();
  watch(c, EPOLLIN, EPOLL_CTL_ADD);
  release(c);
}

/* Length of a complete answer in c->buf, 0 if not complete yet, -1 if it cannot be parsed. */
static long complete_answer(struct conn *c, int *status) {
  c->buf[c->have] = '\0';
  char *end = strstr(c->buf, "\r\n\r\n");
  if (!end) return c->have >= BUF - 1 ? -1 : 0;
  if (strncmp(c->buf, "HTTP/1.1 ", 9) != 0) return -1;
  *status = atoi(c->buf + 9);
  long length = -1;
  for (char *line = strstr(c->buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
    if (strncasecmp(line, "content-length:", 15) == 0) length = strtol(line + 15, NULL, 10);
    if (strncasecmp(line, "transfer-encoding:", 18) == 0) return -1; /* custos answers with a length */
  }
  if (length < 0) return -1;
  long total = (long)(end + 4 - c->buf) + length;
  if (total >= BUF) return -1;
  return (long)c->have >= total ? total : 0;
}

static void on_readable(struct conn *c) {
  for (;;) {
    ssize_t n = read(c->fd, c->buf + c->have, BUF - 1 - c->have);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0 || !c->busy) {
      reconnect(c);
      return;
    }
    c->have += (size_t)n;
    int status = 0;
    long total = complete_answer(c, &status);
    if (total < 0) {
      reconnect(c);
      return;
    }
    if (total == 0) continue;
    if ((size_t)total != c->have) { /* more than one answer: never, with one request in flight */
      reconnect(c);
      return;
    }
    /* Latencies of successful answers only, as bench/load.ts counts them. */
    if (status >= 200 && status < 300) {
      uint64_t us = (now_ns() - c->due_ns) / 1000;
      lat_us[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
      ok++;
    } else {
      bad_status++;
    }
    release(c);
    return;
  }
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: openloop <host> <port> <path> <rate/s> <duration ms> <connections>\n");
    return 2;
  }
  host = argv[1];
  port = atoi(argv[2]);
  const char *path = argv[3];
  double rate = atof(argv[4]);
  double duration_ms = atof(argv[5]);
  nconns = atoi(argv[6]);
  const char *token = getenv("CUSTOS_BENCH_TOKEN");
  const char *body = getenv("CUSTOS_BENCH_BODY");
  if (rate <= 0 || duration_ms <= 0 || nconns <= 0 || !token || !body) {
    fprintf(stderr, "openloop: rate, duration and connections must be positive; CUSTOS_BENCH_TOKEN and CUSTOS_BENCH_BODY must be set\n");
    return 2;
  }
  size_t cap = strlen(path) + strlen(host) + strlen(token) + strlen(body) + 256;
  request = malloc(cap);
  if (!request) die("malloc");
  request_len = (size_t)snprintf(request, cap,
                                 "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                                 "Authorization: Bearer %s\r\nContent-Length: %zu\r\n\r\n%s",
                                 path, host, port, token, strlen(body), body);

  size_t total = (size_t)(rate * duration_ms / 1000.0);
  lat_us = malloc((total + 1) * sizeof *lat_us);
  conns = calloc((size_t)nconns, sizeof *conns);
  idle = malloc((size_t)nconns * sizeof *idle);
  if (!lat_us || !conns || !idle) die("malloc");
  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < nconns; i++) {
    conns[i].fd = open_conn();
    watch(&conns[i], EPOLLIN, EPOLL_CTL_ADD);
    idle[nidle++] = nconns - 1 - i;
  }
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  if (tfd < 0) die("timerfd_create");
  struct epoll_event te = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &te) < 0) die("epoll_ctl");

  double interval_ns = 1e9 / rate;
  /* Arrivals are sent in ticks of 1 ms, as bench/load.ts's timers do: waking for each one would cost
   * a wake-up per request on the cores the server needs. Each still counts from when it was due. */
  const uint64_t tick_ns = 1000000;
  uint64_t start = now_ns();
  size_t due_count = 0;
  int saturated = 0;
  struct epoll_event evs[256];
  while (due_count < total || nidle < nconns) {
    uint64_t now = now_ns();
    while (due_count < total && start + (uint64_t)(due_count * interval_ns) <= now) {
      uint64_t due = start + (uint64_t)(due_count * interval_ns);
      if (nidle > 0) send_on(&conns[idle[--nidle]], due);
      else wq_push(due);
      due_count++;
    }
    if (wq_len > rate / 2) {
      saturated = 1;
      break;
    }
    if (due_count < total) {
      uint64_t next = start + (uint64_t)(due_count * interval_ns);
      next = start + ((next - start + tick_ns - 1) / tick_ns) * tick_ns;
      struct itimerspec its = {0};
      its.it_value.tv_sec = (time_t)(next / 1000000000u);
      its.it_value.tv_nsec = (long)(next % 1000000000u);
      timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    }
    int n = epoll_wait(ep, evs, 256, 10000);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c == NULL) {
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd read");
        continue;
      }
      if (evs[i].events & EPOLLOUT) try_write(c);
      if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    }
    if (n == 0 && due_count >= total) break; /* 10 s without an answer: give up on the rest */
  }
  uint64_t elapsed_us = (now_ns() - start) / 1000;
  size_t unanswered = (size_t)(nconns - nidle) + wq_len;
  qsort(lat_us, nlat, sizeof *lat_us, cmp_u32);
  /* The same percentile as bench/load.ts: the element at floor(n × p). */
#define PCT(p) (nlat ? lat_us[(size_t)((double)nlat * (p)) < nlat ? (size_t)((double)nlat * (p)) : nlat - 1] : 0)
  printf("OPENLOOP_JSON {\"due\":%zu,\"ok\":%zu,\"errors\":%zu,\"status\":%zu,\"unanswered\":%zu,\"durationUs\":%llu,"
         "\"p50Us\":%u,\"p99Us\":%u,\"maxUs\":%u,\"saturated\":%d}\n",
         due_count, ok, errors, bad_status, saturated ? 0 : unanswered, (unsigned long long)elapsed_us, PCT(0.5), PCT(0.99),
         nlat ? lat_us[nlat - 1] : 0, saturated);
  return 0;
}
