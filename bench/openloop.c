/*
 * Open-loop HTTP/1.1 load at a fixed arrival rate, for `npm run bench` (bench/openloop.ts builds
 * and runs it). What wrk2 does, cut down to what the bench needs: wrk itself is closed-loop only,
 * and the Node generator of bench/load.ts costs the server 35-45 µs of CPU per request on the
 * 2 cores they share, plus its own event-loop stalls, all of which land in the p99 it reports.
 *
 * Model: request i is due at start + i/rate. At each due time it goes out on an idle keep-alive
 * connection, or waits in FIFO order for one; its latency counts from when it was DUE, not from
 * when it was sent, so a stalled server (or a late generator) shows in full in the tail
 * (no coordinated omission). The connections are opened, and each has carried one GET /healthz,
 * before the first request is due (see warm_up). One request in flight per connection, no
 * pipelining. If more than rate/2 requests are waiting, the server cannot keep up: the run stops
 * and says "saturated".
 *
 * Usage: openloop <host> <port> <path> <rate/s> <duration ms> <connections>
 * The request's bearer token and JSON body come from the environment (CUSTOS_BENCH_TOKEN,
 * CUSTOS_BENCH_BODY), never the command line. A rate of 0 is a closed loop instead: every
 * connection starts its next operation as soon as its last one is answered, for the duration
 * (latency then counts from when each was sent).
 *
 * Sessions (built with -DOPENLOOP_SESSIONS, linked with libcrypto): with CUSTOS_BENCH_SESSIONS
 * naming a file of software AKs (see load_sessions), an operation is what an enclave does for a
 * session: POST /v1/challenges, then a quote over SHA-256(nonce ‖ RFC 7638 thumbprint of a fresh
 * ephemeral P-256 key) signed with its host's AK, then POST /v1/sessions; its latency runs from
 * when it was due to the session's answer. Connection i speaks for host i mod hosts, one
 * operation at a time, so each host's quote clock only goes up. <path> is then unused.
 *
 * Prints one line:
 *   OPENLOOP_JSON {"due":…,"ok":…,"errors":…,"status":…,"durationUs":…,"p50Us":…,"p99Us":…,"maxUs":…,"saturated":0|1,
 *                  "p999Us":…,"over10Ms":… (operations over 10 ms), "ownP50Us":… (below)}
 * and for sessions also the p50/p99 of the time to the challenge's answer (from when the
 * operation was due) and from there to the session's answer: challengeP50Us, … sessionP99Us.
 *
 * The generator shares the machine with the server, so part of each latency is its own: it may
 * write a request after its tick because it had no core, read an answer well after the kernel
 * received it, and (sessions) sign a quote between the two requests. Each answer's arrival is
 * read from the kernel (SO_TIMESTAMPNS), and each operation's own time is the sum of
 *   - the write's lateness: from the later of its tick and the arrival of the answer that freed
 *     its connection, to the write;
 *   - each answer's wait: from its arrival to the generator's read;
 *   - sessions: from the challenge's arrival to the session request's write (the quote's signing).
 * ownP50Us/ownP99Us/ownMaxUs are their percentiles, and wireP50Us/wireP99Us the percentiles of
 * each operation's latency less its own time: what a client on another machine, with cores to
 * spare, would have seen of the same server at the same moments (the loopback's own time aside).
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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384

struct conn {
  int fd;
  uint32_t events;   /* what epoll watches for now */
  int busy;          /* an operation is in flight */
  int step;          /* sessions: 0 while the challenge is in flight, 1 for the session */
  uint64_t due_ns;   /* when the operation in flight was due */
  uint64_t step_ns;  /* sessions: when the challenge was answered */
  uint64_t free_ns;  /* when the kernel received the answer that last freed this connection */
  uint64_t own_ns;   /* the generator's own time in the operation in flight (see above) */
  const char *req;   /* the request being written */
  size_t req_len;
  size_t sent;       /* bytes of it written so far */
  char buf[BUF];
  size_t have;       /* bytes of the answer read so far */
  char out[BUF];     /* sessions: this connection's own requests */
};

static const char *host;
static int port;
static char *request;
static size_t request_len;
static struct conn *conns;
static int nconns;
static int ep;
static uint32_t *lat_us;
static size_t nlat, lat_cap, ok, errors, bad_status, started;
static const char *token;
static int closed_loop;      /* rate 0: each connection goes again as soon as it is answered */
static uint64_t end_ns;      /* closed loop: no operation starts after this */
static int sessions;         /* CUSTOS_BENCH_SESSIONS is set */

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Kernel receive timestamps are CLOCK_REALTIME: this offset (taken at start) maps them to now_ns. */
static int64_t realtime_offset_ns;

static void take_realtime_offset(void) {
  struct timespec r;
  uint64_t m0 = now_ns();
  clock_gettime(CLOCK_REALTIME, &r);
  uint64_t m1 = now_ns();
  realtime_offset_ns = (int64_t)((uint64_t)r.tv_sec * 1000000000u + (uint64_t)r.tv_nsec) - (int64_t)(m0 / 2 + m1 / 2);
}

/* The first request's tick (bench start and tick length; see main). */
static uint64_t start_ns, tick_ns = 1000000;

static uint64_t tick_of(uint64_t due) {
  return due <= start_ns ? start_ns : start_ns + ((due - start_ns + tick_ns - 1) / tick_ns) * tick_ns;
}

static void die(const char *what) {
  perror(what);
  exit(2);
}

static long complete_answer(struct conn *c, int *status, const char **body);

/* A connection opened before the clock starts carries one GET /healthz, answered, first (`warm`):
 * the server has then accepted it, handed it to one of its processes and served on it once,
 * as any connection of a steady load has been. Opened all at once at the start of a row, 256
 * connections otherwise met a server still accepting them (and growing its file tables), and the
 * first requests of the row waited for that. */
static void warm_up(int fd) {
  static struct conn scratch;
  char req[256];
  int n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: %s:%d\r\n\r\n", host, port);
  for (int sent = 0; sent < n;) {
    ssize_t w = write(fd, req + sent, (size_t)(n - sent));
    if (w <= 0) die("warm-up write");
    sent += (int)w;
  }
  scratch.have = 0;
  for (;;) {
    ssize_t r = read(fd, scratch.buf + scratch.have, BUF - 1 - scratch.have);
    if (r <= 0) die("warm-up read");
    scratch.have += (size_t)r;
    int status = 0;
    const char *body = NULL;
    long total = complete_answer(&scratch, &status, &body);
    if (total < 0) {
      fprintf(stderr, "openloop: unreadable answer to the warm-up request\n");
      exit(2);
    }
    if (total > 0) return;
  }
}

static int open_conn(int warm) {
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
  if (warm) warm_up(fd);
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) die("SO_TIMESTAMPNS");
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
  while (c->sent < c->req_len) {
    ssize_t n = write(c->fd, c->req + c->sent, c->req_len - c->sent);
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

static void begin_session(struct conn *c);

/* Writes the connection's next request (c->req, c->req_len set by the caller). */
static void send_request(struct conn *c) {
  c->sent = 0;
  c->have = 0;
  try_write(c);
}

static void send_on(struct conn *c, uint64_t due) {
  started++;
  c->busy = 1;
  c->due_ns = due;
  c->step = 0;
  /* The write's lateness: from when it could have gone out (its tick, and its connection free). */
  uint64_t ready = closed_loop ? due : tick_of(due), now = now_ns();
  if (c->free_ns > ready) ready = c->free_ns;
  c->own_ns = now > ready ? now - ready : 0;
  if (sessions) {
    begin_session(c);
  } else {
    c->req = request;
    c->req_len = request_len;
  }
  send_request(c);
}

static void release(struct conn *c) {
  c->busy = 0;
  if (closed_loop) {
    uint64_t now = now_ns();
    if (now < end_ns) send_on(c, now);
    else idle[nidle++] = (int)(c - conns);
  } else if (wq_len > 0) {
    send_on(c, wq_pop());
  } else {
    idle[nidle++] = (int)(c - conns);
  }
}

/* Sessions: each operation's time to the challenge's answer and from there to the session's. */
static uint32_t *challenge_us, *session_us;
/* Each operation's own time (the generator's) and its latency less that. */
static uint32_t *own_us, *wire_us;

static uint32_t us_since(uint64_t t_ns, uint64_t now) {
  uint64_t us = (now - t_ns) / 1000;
  return us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void record(struct conn *c) {
  uint64_t now = now_ns();
  if (nlat == lat_cap) {
    lat_cap = lat_cap ? lat_cap * 2 : 4096;
    lat_us = realloc(lat_us, lat_cap * sizeof *lat_us);
    own_us = realloc(own_us, lat_cap * sizeof *own_us);
    wire_us = realloc(wire_us, lat_cap * sizeof *wire_us);
    if (!lat_us || !own_us || !wire_us) die("realloc");
    if (sessions) {
      challenge_us = realloc(challenge_us, lat_cap * sizeof *challenge_us);
      session_us = realloc(session_us, lat_cap * sizeof *session_us);
      if (!challenge_us || !session_us) die("realloc");
    }
  }
  if (sessions) {
    challenge_us[nlat] = us_since(c->due_ns, c->step_ns);
    session_us[nlat] = us_since(c->step_ns, now);
  }
  uint64_t total = now - c->due_ns, own = c->own_ns < total ? c->own_ns : total;
  own_us[nlat] = (uint32_t)(own / 1000 > UINT32_MAX ? UINT32_MAX : own / 1000);
  wire_us[nlat] = (uint32_t)((total - own) / 1000 > UINT32_MAX ? UINT32_MAX : (total - own) / 1000);
  lat_us[nlat++] = us_since(c->due_ns, now);
  ok++;
}

/* The connection failed or was closed: a new one replaces it. The request in flight, if any, is
 * an error; an idle connection (one the server closed while it had nothing to answer) stays idle
 * and is already on the idle stack. */
static void reconnect(struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = open_conn(0);
  c->free_ns = 0;
  c->events = 0;
  watch(c, EPOLLIN, EPOLL_CTL_ADD);
  if (!c->busy) return;
  errors++;
  release(c);
}

/* Length of a complete answer in c->buf, 0 if not complete yet, -1 if it cannot be parsed;
 * *body is where its body starts. */
static long complete_answer(struct conn *c, int *status, const char **body) {
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
  *body = end + 4;
  long total = (long)(end + 4 - c->buf) + length;
  if (total >= BUF) return -1;
  return (long)c->have >= total ? total : 0;
}

#ifdef OPENLOOP_SESSIONS
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

/* A software AK and the parts of its quotes that do not change (bench/openloop.ts writes them). */
struct host {
  char *id;
  EVP_PKEY *ak;
  int ecc;
  unsigned char *prefix; /* TPMS_ATTEST up to and including extraData's size (32) */
  size_t prefix_len;
  unsigned char *rest;   /* after the clock: resetCount, restartCount, safe, firmwareVersion, PCR selection, digest */
  size_t rest_len;
  uint64_t clock;        /* the last clock value this AK quoted; each quote adds 10 */
};
static struct host *hosts;
static int nhosts;
static char *pcrs_json;
static char *audience;

/* An enclave's ephemeral public key: base64url coordinates and its RFC 7638 thumbprint. */
struct eph {
  char x[48], y[48];
  unsigned char jkt[32];
};
static struct eph *ephs;
static size_t neph, next_eph;

static void fail(const char *what) {
  fprintf(stderr, "openloop: %s\n", what);
  exit(2);
}

static size_t b64(char *out, const unsigned char *in, size_t n, int url) {
  const char *a = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                      : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    out[o++] = a[v >> 18 & 63];
    out[o++] = a[v >> 12 & 63];
    if (i + 1 < n) out[o++] = a[v >> 6 & 63];
    else if (!url) out[o++] = '=';
    if (i + 2 < n) out[o++] = a[v & 63];
    else if (!url) out[o++] = '=';
  }
  out[o] = '\0';
  return o;
}

/* base64 or base64url, padding optional; -1 on a bad character or when it does not fit. */
static long unb64(unsigned char *out, size_t cap, const char *in, size_t n) {
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n && in[i] != '='; i++) {
    char ch = in[i];
    int v = ch >= 'A' && ch <= 'Z' ? ch - 'A' : ch >= 'a' && ch <= 'z' ? ch - 'a' + 26 : ch >= '0' && ch <= '9' ? ch - '0' + 52
          : ch == '+' || ch == '-' ? 62 : ch == '/' || ch == '_' ? 63 : -1;
    if (v < 0) return -1;
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o == cap) return -1;
      out[o++] = (unsigned char)(acc >> bits);
    }
  }
  return (long)o;
}

static unsigned char *unhex(const char *hex, size_t *len) {
  size_t n = strlen(hex);
  if (n % 2) fail("odd hex in the sessions file");
  unsigned char *out = malloc(n / 2 + 1);
  if (!out) die("malloc");
  for (size_t i = 0; i < n / 2; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) fail("bad hex in the sessions file");
    out[i] = (unsigned char)v;
  }
  *len = n / 2;
  return out;
}

static void put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)(v >> 8);
  p[1] = (unsigned char)v;
}

static void make_ephemeral(struct eph *e) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  unsigned char pt[65];
  size_t len = 0;
  if (!k || !EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt, &len) || len != 65 || pt[0] != 4)
    fail("P-256 key generation failed");
  EVP_PKEY_free(k);
  b64(e->x, pt + 1, 32, 1);
  b64(e->y, pt + 33, 32, 1);
  char jwk[192];
  int n = snprintf(jwk, sizeof jwk, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", e->x, e->y);
  if (EVP_Digest(jwk, (size_t)n, e->jkt, NULL, EVP_sha256(), NULL) != 1) fail("SHA-256 failed");
}

/*
 * The sessions file, one item per line:
 *   audience <audience>
 *   pcrs <the request's "pcrs" member, JSON without spaces>
 *   host <id> <ecc|rsa> <AK private key, PKCS#8 DER, hex> <quote prefix, hex> <last clock> <quote rest, hex>
 */
static void load_sessions(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) die(path);
  char *line = NULL;
  size_t cap = 0;
  int hcap = 0;
  while (getline(&line, &cap, f) > 0) {
    line[strcspn(line, "\r\n")] = '\0';
    char *save = NULL;
    char *kind = strtok_r(line, " ", &save);
    if (!kind) continue;
    if (strcmp(kind, "audience") == 0 || strcmp(kind, "pcrs") == 0) {
      char *v = strtok_r(NULL, " ", &save);
      if (!v) fail("empty line in the sessions file");
      *(strcmp(kind, "audience") == 0 ? &audience : &pcrs_json) = strdup(v);
    } else if (strcmp(kind, "host") == 0) {
      char *field[6];
      for (int i = 0; i < 6; i++)
        if (!(field[i] = strtok_r(NULL, " ", &save))) fail("short host line in the sessions file");
      if (nhosts == hcap) {
        hcap = hcap ? hcap * 2 : 64;
        hosts = realloc(hosts, (size_t)hcap * sizeof *hosts);
        if (!hosts) die("realloc");
      }
      struct host *h = &hosts[nhosts++];
      h->id = strdup(field[0]);
      h->ecc = strcmp(field[1], "ecc") == 0;
      size_t dl;
      unsigned char *der = unhex(field[2], &dl);
      const unsigned char *p = der;
      h->ak = d2i_AutoPrivateKey(NULL, &p, (long)dl);
      if (!h->ak) fail("unreadable AK in the sessions file");
      free(der);
      h->prefix = unhex(field[3], &h->prefix_len);
      h->clock = strtoull(field[4], NULL, 10);
      h->rest = unhex(field[5], &h->rest_len);
      if (h->prefix_len + 40 + h->rest_len > 1024) fail("quote too long");
    }
  }
  free(line);
  fclose(f);
  if (nhosts == 0 || !pcrs_json || !audience) fail("the sessions file needs hosts, pcrs and audience");
}

/* TPMT_SIGNATURE of the AK over the quote: ECDSA (r, s as 32-byte TPM2Bs) or RSASSA, SHA-256. */
static size_t sign_quote(struct host *h, const unsigned char *msg, size_t n, unsigned char *out) {
  unsigned char der[600];
  size_t dl = sizeof der;
  EVP_MD_CTX *m = EVP_MD_CTX_new();
  if (!m || EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, h->ak) != 1 || EVP_DigestSign(m, der, &dl, msg, n) != 1) fail("AK signature failed");
  EVP_MD_CTX_free(m);
  if (!h->ecc) {
    put16(out, 0x0014); /* TPM_ALG_RSASSA */
    put16(out + 2, 0x000B); /* TPM_ALG_SHA256 */
    put16(out + 4, (unsigned)dl);
    memcpy(out + 6, der, dl);
    return 6 + dl;
  }
  const unsigned char *p = der;
  ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)dl);
  if (!sig) fail("unreadable ECDSA signature");
  const BIGNUM *r, *s;
  ECDSA_SIG_get0(sig, &r, &s);
  put16(out, 0x0018); /* TPM_ALG_ECDSA */
  put16(out + 2, 0x000B);
  put16(out + 4, 32);
  BN_bn2binpad(r, out + 6, 32);
  put16(out + 38, 32);
  BN_bn2binpad(s, out + 40, 32);
  ECDSA_SIG_free(sig);
  return 72;
}

static size_t http_post(char *out, const char *path, const char *body, size_t body_len) {
  int n = snprintf(out, BUF, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nAuthorization: Bearer %s\r\nContent-Length: %zu\r\n\r\n%.*s",
                   path, host, port, token, body_len, (int)body_len, body);
  if (n < 0 || n >= BUF) fail("request too long");
  return (size_t)n;
}

static struct host *host_of(struct conn *c) {
  return &hosts[(c - conns) % nhosts];
}

/* The operation's first request: a challenge for the connection's host. */
static void begin_session(struct conn *c) {
  char body[256];
  int n = snprintf(body, sizeof body, "{\"hostId\":\"%s\"}", host_of(c)->id);
  c->req = c->out;
  c->req_len = http_post(c->out, "/v1/challenges", body, (size_t)n);
}

/* From the challenge's answer, the session request (0), or -1 when the answer has no nonce. */
static int session_request(struct conn *c, const char *answer) {
  struct host *h = host_of(c);
  const char *p = strstr(answer, "\"nonce\":\"");
  if (!p) return -1;
  p += 9;
  const char *q = strchr(p, '"');
  unsigned char nonce[128];
  long nn = q ? unb64(nonce, sizeof nonce, p, (size_t)(q - p)) : -1;
  if (nn <= 0) return -1;
  struct eph fresh, *e = &fresh;
  if (next_eph < neph) e = &ephs[next_eph++];
  else make_ephemeral(&fresh); /* more sessions than keys made ahead */
  /* The quote: extraData = SHA-256(nonce ‖ thumbprint), the clock one step on. */
  unsigned char m[128 + 32], quote[1024], sig[600];
  memcpy(m, nonce, (size_t)nn);
  memcpy(m + nn, e->jkt, 32);
  size_t ql = h->prefix_len;
  memcpy(quote, h->prefix, ql);
  if (EVP_Digest(m, (size_t)nn + 32, quote + ql, NULL, EVP_sha256(), NULL) != 1) fail("SHA-256 failed");
  ql += 32;
  h->clock += 10;
  for (int i = 0; i < 8; i++) quote[ql + i] = (unsigned char)(h->clock >> (56 - 8 * i));
  ql += 8;
  memcpy(quote + ql, h->rest, h->rest_len);
  ql += h->rest_len;
  size_t sl = sign_quote(h, quote, ql, sig);
  char qb[1400], sb[820], body[4096];
  b64(qb, quote, ql, 0);
  b64(sb, sig, sl, 0);
  int n = snprintf(body, sizeof body,
                   "{\"hostId\":\"%s\",\"nonce\":\"%.*s\",\"quote\":\"%s\",\"signature\":\"%s\",\"pcrs\":%s,"
                   "\"ephemeralPublicKey\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"},\"audience\":\"%s\"}",
                   h->id, (int)(q - p), p, qb, sb, pcrs_json, e->x, e->y, audience);
  if (n < 0 || (size_t)n >= sizeof body) fail("session request too long");
  c->req = c->out;
  c->req_len = http_post(c->out, "/v1/sessions", body, (size_t)n);
  return 0;
}

static void setup_sessions(const char *path, size_t keys) {
  load_sessions(path);
  ephs = malloc((keys + 1) * sizeof *ephs);
  if (!ephs) die("malloc");
  for (neph = 0; neph < keys; neph++) make_ephemeral(&ephs[neph]);
}
#else
static void begin_session(struct conn *c) { (void)c; }
static int session_request(struct conn *c, const char *answer) {
  (void)c;
  (void)answer;
  return -1;
}
#endif

/* Reads into the connection's buffer; *rx_ns is when the kernel received the data (now_ns's
 * clock), left alone when the kernel gave no timestamp. */
static ssize_t read_stamped(struct conn *c, uint64_t *rx_ns) {
  struct iovec iov = {.iov_base = c->buf + c->have, .iov_len = BUF - 1 - c->have};
  char control[CMSG_SPACE(sizeof(struct timespec))];
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
  ssize_t n = recvmsg(c->fd, &m, 0);
  if (n <= 0) return n;
  for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL; h = CMSG_NXTHDR(&m, h)) {
    if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_TIMESTAMPNS) {
      struct timespec t;
      memcpy(&t, CMSG_DATA(h), sizeof t);
      int64_t mono = (int64_t)((uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec) - realtime_offset_ns;
      if (mono > 0) *rx_ns = (uint64_t)mono;
    }
  }
  return n;
}

static void on_readable(struct conn *c) {
  for (;;) {
    uint64_t read_ns = now_ns(), rx_ns = read_ns;
    ssize_t n = read_stamped(c, &rx_ns);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0 || !c->busy) {
      reconnect(c);
      return;
    }
    c->have += (size_t)n;
    int status = 0;
    const char *body = NULL;
    long total = complete_answer(c, &status, &body);
    if (total < 0) {
      reconnect(c);
      return;
    }
    if (total == 0) continue;
    if ((size_t)total != c->have) { /* more than one answer: never, with one request in flight */
      reconnect(c);
      return;
    }
    /* The answer's wait in the socket (from its last segment's arrival to this read). */
    if (rx_ns > read_ns) rx_ns = read_ns;
    c->own_ns += read_ns - rx_ns;
    c->free_ns = rx_ns;
    if (status < 200 || status >= 300) {
      bad_status++;
    } else if (sessions && c->step == 0) {
      /* The challenge: the session request goes out on the same connection. */
      if (session_request(c, body) == 0) {
        c->step = 1;
        c->step_ns = now_ns();
        c->own_ns += c->step_ns - read_ns; /* the quote's signing */
        send_request(c);
        return;
      }
      bad_status++;
    } else {
      /* Latencies of successful operations only, as bench/load.ts counts them. */
      record(c);
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
    fprintf(stderr, "usage: openloop <host> <port> <path> <rate/s, 0 for a closed loop> <duration ms> <connections>\n");
    return 2;
  }
  host = argv[1];
  port = atoi(argv[2]);
  const char *path = argv[3];
  double rate = atof(argv[4]);
  double duration_ms = atof(argv[5]);
  nconns = atoi(argv[6]);
  token = getenv("CUSTOS_BENCH_TOKEN");
  const char *body = getenv("CUSTOS_BENCH_BODY");
  const char *sessions_file = getenv("CUSTOS_BENCH_SESSIONS");
  sessions = sessions_file != NULL && sessions_file[0] != '\0';
  closed_loop = rate == 0;
  if (rate < 0 || duration_ms <= 0 || nconns <= 0 || !token || (!body && !sessions)) {
    fprintf(stderr, "openloop: rate must not be negative, duration and connections must be positive; CUSTOS_BENCH_TOKEN and CUSTOS_BENCH_BODY (or CUSTOS_BENCH_SESSIONS) must be set\n");
    return 2;
  }
  /* An open loop sends exactly this many; a closed loop as many as its connections get answered. */
  size_t total = closed_loop ? 0 : (size_t)(rate * duration_ms / 1000.0);
  if (sessions) {
#ifdef OPENLOOP_SESSIONS
    /* Ephemeral keys made before the clock starts, as bench/run.ts does for the Node generator:
     * one per session, enough for 3,000 sessions/s in a closed loop. */
    setup_sessions(sessions_file, closed_loop ? (size_t)(3 * duration_ms) : total);
#else
    fprintf(stderr, "openloop: built without sessions (needs -DOPENLOOP_SESSIONS and libcrypto)\n");
    return 2;
#endif
  } else {
    size_t cap = strlen(path) + strlen(host) + strlen(token) + strlen(body) + 256;
    request = malloc(cap);
    if (!request) die("malloc");
    request_len = (size_t)snprintf(request, cap,
                                   "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                                   "Authorization: Bearer %s\r\nContent-Length: %zu\r\n\r\n%s",
                                   path, host, port, token, strlen(body), body);
  }

  conns = calloc((size_t)nconns, sizeof *conns);
  idle = malloc((size_t)nconns * sizeof *idle);
  if (!conns || !idle) die("malloc");
  ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  for (int i = 0; i < nconns; i++) {
    conns[i].fd = open_conn(1);
    watch(&conns[i], EPOLLIN, EPOLL_CTL_ADD);
    idle[nidle++] = nconns - 1 - i;
  }
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  if (tfd < 0) die("timerfd_create");
  struct epoll_event te = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &te) < 0) die("epoll_ctl");

  double interval_ns = closed_loop ? 0 : 1e9 / rate;
  /* Arrivals are sent in ticks of 1 ms (tick_ns), as bench/load.ts's timers do: waking for each one
   * would cost a wake-up per request on the cores the server needs. Each still counts from when it
   * was due. */
  take_realtime_offset();
  uint64_t start = now_ns();
  start_ns = start;
  size_t due_count = 0;
  int saturated = 0;
  struct epoll_event evs[256];
  if (closed_loop) {
    end_ns = start + (uint64_t)(duration_ms * 1e6);
    while (nidle > 0) send_on(&conns[idle[--nidle]], start);
  }
  while (due_count < total || nidle < nconns) {
    uint64_t now = now_ns();
    while (due_count < total && start + (uint64_t)(due_count * interval_ns) <= now) {
      uint64_t due = start + (uint64_t)(due_count * interval_ns);
      if (nidle > 0) send_on(&conns[idle[--nidle]], due);
      else wq_push(due);
      due_count++;
    }
    if (!closed_loop && wq_len > rate / 2) {
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
  /* The same percentile as bench/load.ts: the element at floor(n × p). */
#define PCT(a, p) (nlat ? (a)[(size_t)((double)nlat * (p)) < nlat ? (size_t)((double)nlat * (p)) : nlat - 1] : 0)
  uint32_t split[4] = {0, 0, 0, 0};
  if (sessions) {
    qsort(challenge_us, nlat, sizeof *challenge_us, cmp_u32);
    qsort(session_us, nlat, sizeof *session_us, cmp_u32);
    split[0] = PCT(challenge_us, 0.5);
    split[1] = PCT(challenge_us, 0.99);
    split[2] = PCT(session_us, 0.5);
    split[3] = PCT(session_us, 0.99);
  }
  qsort(lat_us, nlat, sizeof *lat_us, cmp_u32);
  qsort(own_us, nlat, sizeof *own_us, cmp_u32);
  qsort(wire_us, nlat, sizeof *wire_us, cmp_u32);
  printf("OPENLOOP_JSON {\"due\":%zu,\"ok\":%zu,\"errors\":%zu,\"status\":%zu,\"unanswered\":%zu,\"durationUs\":%llu,"
         "\"p50Us\":%u,\"p99Us\":%u,\"maxUs\":%u,\"saturated\":%d",
         closed_loop ? started : due_count, ok, errors, bad_status, saturated ? 0 : unanswered, (unsigned long long)elapsed_us,
         PCT(lat_us, 0.5), PCT(lat_us, 0.99), nlat ? lat_us[nlat - 1] : 0, saturated);
  size_t over10 = 0;
  for (size_t i = 0; i < nlat; i++) over10 += lat_us[i] > 10000;
  printf(",\"p999Us\":%u,\"over10Ms\":%zu", PCT(lat_us, 0.999), over10);
  printf(",\"ownP50Us\":%u,\"ownP99Us\":%u,\"ownMaxUs\":%u,\"wireP50Us\":%u,\"wireP99Us\":%u",
         PCT(own_us, 0.5), PCT(own_us, 0.99), nlat ? own_us[nlat - 1] : 0, PCT(wire_us, 0.5), PCT(wire_us, 0.99));
  if (sessions)
    printf(",\"challengeP50Us\":%u,\"challengeP99Us\":%u,\"sessionP50Us\":%u,\"sessionP99Us\":%u", split[0], split[1], split[2], split[3]);
  printf("}\n");
  return 0;
}
