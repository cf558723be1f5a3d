/*
 * berth-bench: the load generator and the backend server of `npm run bench`.
 *
 *   berth-bench serve [--tcp PORT] [--udp PORT] [--http PORT] [--tag TAG]
 *       One single-threaded epoll loop serving all three:
 *       - tcp: reads fixed MSG-byte requests and answers each with MSG bytes (the request's
 *         first byte, then TAG). A request whose first byte is 'C' is the last one: the server
 *         closes right after answering, so TIME_WAIT lands on the server side and the client's
 *         ephemeral ports are free again at once (a TCP_CRR loop would exhaust them otherwise).
 *       - udp: answers every datagram with MSG bytes (first byte, then TAG).
 *       - http: HTTP/1.1 keep-alive; every request (headers up to the blank line, no body) gets
 *         "200 OK" with TAG as the body. "Connection: close" is honoured.
 *
 *   berth-bench client MODE ADDR PORT [--seconds S] [--max-count N] [--size BYTES] [--cpu N]
 *       MODE: crr  one connection per transaction (connect, request, response, close)
 *             rr   request/response on one kept connection
 *             udp  request/response over a connected UDP socket
 *             udpu request/response with sendto/recvfrom on an unconnected UDP socket
 *       One transaction at a time, bounded by time AND count; prints one JSON line:
 *       {"mode","count","errors","seconds","rate","p50_us","p90_us","p99_us","mean_us",
 *        "cpu_s","cpu_us_per_op","sys_cpu_s","sys_cpu_us_per_op","first_error"}
 *       cpu_* is this process (getrusage), sys_cpu_* the whole machine (/proc/stat busy time).
 *
 * Static, no dependencies beyond libc: it is copied into a busybox container as is.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <sched.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MSG_MAX 1024
#define MAX_SAMPLES (4u * 1024u * 1024u)

static int msg_size = 64;
static const char *tag = "berth-bench";

static void die(const char *what) {
  fprintf(stderr, "berth-bench: %s: %s\n", what, strerror(errno));
  exit(2);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- server */

enum kind { K_TCP_LISTEN = 1, K_HTTP_LISTEN, K_UDP, K_TCP_CONN, K_HTTP_CONN };

struct conn {
  enum kind kind;
  int fd;
  size_t have;
  char buf[4096];
};

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

static int listen_on(int type, int port) {
  /* IPv6 dual-stack socket: one listener for both families. */
  int fd = socket(AF_INET6, type, 0);
  if (fd < 0) die("socket");
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port), .sin6_addr = in6addr_any};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (type == SOCK_STREAM && listen(fd, 4096) < 0) die("listen");
  set_nonblock(fd);
  return fd;
}

static void fill_reply(char *out, char first) {
  memset(out, 0, (size_t)msg_size);
  out[0] = first;
  size_t n = strlen(tag);
  if (n > (size_t)msg_size - 1) n = (size_t)msg_size - 1;
  memcpy(out + 1, tag, n);
}

static void conn_close(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

/* Blocking-ish write of a short reply on a non-blocking socket (replies are tiny). */
static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) { usleep(50); continue; }
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Returns 1 when the connection was closed. */
static int on_tcp(int ep, struct conn *c) {
  for (;;) {
    ssize_t r = read(c->fd, c->buf + c->have, (size_t)msg_size - c->have);
    if (r == 0) { conn_close(ep, c); return 1; }
    if (r < 0) {
      if (errno == EAGAIN) return 0;
      if (errno == EINTR) continue;
      conn_close(ep, c);
      return 1;
    }
    c->have += (size_t)r;
    if (c->have < (size_t)msg_size) continue;
    char out[MSG_MAX];
    char first = c->buf[0];
    fill_reply(out, first);
    c->have = 0;
    if (write_all(c->fd, out, (size_t)msg_size) < 0 || first == 'C') { conn_close(ep, c); return 1; }
  }
}

static int on_http(int ep, struct conn *c) {
  for (;;) {
    if (c->have == sizeof c->buf) { conn_close(ep, c); return 1; }
    ssize_t r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
    if (r == 0) { conn_close(ep, c); return 1; }
    if (r < 0) {
      if (errno == EAGAIN) return 0;
      if (errno == EINTR) continue;
      conn_close(ep, c);
      return 1;
    }
    c->have += (size_t)r;
    /* Answer every complete request in the buffer (pipelining-safe). */
    for (;;) {
      char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
      if (!end) break;
      size_t reqlen = (size_t)(end - c->buf) + 4;
      int close_after = memmem(c->buf, reqlen, "onnection: close", 16) != NULL;
      char out[512];
      int n = snprintf(out, sizeof out,
                       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                       strlen(tag), close_after ? "Connection: close\r\n" : "", tag);
      if (write_all(c->fd, out, (size_t)n) < 0 || close_after) { conn_close(ep, c); return 1; }
      memmove(c->buf, c->buf + reqlen, c->have - reqlen);
      c->have -= reqlen;
    }
  }
}

static int serve(int argc, char **argv) {
  int tcp = 0, udp = 0, http = 0;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--tcp") && i + 1 < argc) tcp = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--udp") && i + 1 < argc) udp = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--http") && i + 1 < argc) http = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--tag") && i + 1 < argc) tag = argv[++i];
    else if (!strcmp(argv[i], "--size") && i + 1 < argc) msg_size = atoi(argv[++i]);
    else { fprintf(stderr, "serve: unknown argument %s\n", argv[i]); return 2; }
  }
  if (msg_size < 2 || msg_size > MSG_MAX) { fprintf(stderr, "bad --size\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  struct { int port; int type; enum kind kind; } ls[] = {
      {tcp, SOCK_STREAM, K_TCP_LISTEN}, {http, SOCK_STREAM, K_HTTP_LISTEN}, {udp, SOCK_DGRAM, K_UDP}};
  for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) {
    if (!ls[i].port) continue;
    struct conn *c = calloc(1, sizeof *c);
    c->kind = ls[i].kind;
    c->fd = listen_on(ls[i].type, ls[i].port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
  }
  fprintf(stderr, "berth-bench: serving tcp=%d udp=%d http=%d tag=%s\n", tcp, udp, http, tag);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->kind == K_TCP_LISTEN || c->kind == K_HTTP_LISTEN) {
        for (;;) {
          int fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          int one = 1;
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct conn *nc = calloc(1, sizeof *nc);
          nc->kind = c->kind == K_TCP_LISTEN ? K_TCP_CONN : K_HTTP_CONN;
          nc->fd = fd;
          struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { close(fd); free(nc); continue; }
          /* The request is usually there already: serve it without another epoll round. */
          if (nc->kind == K_TCP_CONN) on_tcp(ep, nc); else on_http(ep, nc);
        }
      } else if (c->kind == K_UDP) {
        for (;;) {
          char in[MSG_MAX], out[MSG_MAX];
          struct sockaddr_storage from;
          socklen_t fl = sizeof from;
          ssize_t r = recvfrom(c->fd, in, sizeof in, 0, (struct sockaddr *)&from, &fl);
          if (r <= 0) break;
          fill_reply(out, in[0]);
          sendto(c->fd, out, (size_t)msg_size, 0, (struct sockaddr *)&from, fl);
        }
      } else if (c->kind == K_TCP_CONN) {
        on_tcp(ep, c);
      } else {
        on_http(ep, c);
      }
    }
  }
}

/* ---------------------------------------------------------------- client */

struct target {
  struct sockaddr_storage sa;
  socklen_t len;
  int family;
};

static int parse_target(const char *addr, int port, struct target *t) {
  memset(t, 0, sizeof *t);
  struct sockaddr_in *a4 = (struct sockaddr_in *)&t->sa;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&t->sa;
  if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    t->len = sizeof *a4;
    t->family = AF_INET;
    return 0;
  }
  if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    t->len = sizeof *a6;
    t->family = AF_INET6;
    return 0;
  }
  return -1;
}

static int read_full(int fd, char *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r == 0) { errno = ECONNRESET; return -1; }
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    got += (size_t)r;
  }
  return 0;
}

static void set_timeouts(int fd, int ms) {
  struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Busy jiffies (all but idle and iowait) and the total, from the first line of /proc/stat. */
static void proc_stat(unsigned long long *busy, unsigned long long *total) {
  *busy = *total = 0;
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return;
  unsigned long long v[10] = {0};
  if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
             &v[6], &v[7], &v[8], &v[9]) >= 8) {
    /* user nice system idle iowait irq softirq steal guest guest_nice; guest is inside user. */
    for (int i = 0; i < 8; i++) *total += v[i];
    *busy = *total - v[3] - v[4];
  }
  fclose(f);
}

static double rusage_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') putchar('\\');
    putchar((unsigned char)*s < 0x20 ? ' ' : *s);
  }
  putchar('"');
}

static int client(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: client MODE ADDR PORT [--seconds S] [--max-count N] [--size B]\n"); return 2; }
  const char *mode = argv[0];
  const char *addr = argv[1];
  int port = atoi(argv[2]);
  double seconds = 2.0;
  unsigned long max_count = 1000000;
  int timeout_ms = 500;
  int pin_cpu = -1;
  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--max-count") && i + 1 < argc) max_count = strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--size") && i + 1 < argc) msg_size = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) timeout_ms = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--cpu") && i + 1 < argc) pin_cpu = atoi(argv[++i]);
    else { fprintf(stderr, "client: unknown argument %s\n", argv[i]); return 2; }
  }
  /* Hard bounds whatever the caller asks: at most 60 s and MAX_SAMPLES transactions. */
  if (seconds <= 0 || seconds > 60) seconds = 60;
  if (max_count == 0 || max_count > MAX_SAMPLES) max_count = MAX_SAMPLES;
  if (msg_size < 2 || msg_size > MSG_MAX) { fprintf(stderr, "bad --size\n"); return 2; }
  int is_crr = !strcmp(mode, "crr"), is_rr = !strcmp(mode, "rr"), is_udp = !strcmp(mode, "udp"),
      is_udpu = !strcmp(mode, "udpu");
  if (!is_crr && !is_rr && !is_udp && !is_udpu) { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
  if (pin_cpu >= 0) {
    /* Pinned next to the server: no cross-CPU wake-ups (costly IPIs in a VM) in the numbers. */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(pin_cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity");
  }
  struct target t;
  if (parse_target(addr, port, &t) < 0) { fprintf(stderr, "bad address %s\n", addr); return 2; }
  signal(SIGPIPE, SIG_IGN);

  uint32_t *lat = malloc(sizeof(uint32_t) * max_count);
  if (!lat) die("malloc");
  char req[MSG_MAX], resp[MSG_MAX];
  memset(req, 'x', sizeof req);
  req[0] = is_crr ? 'C' : 'R';

  unsigned long count = 0, errors = 0;
  char first_error[128] = "";
#define FAIL(what)                                                                  \
  do {                                                                              \
    errors++;                                                                       \
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s: %s", what, strerror(errno)); \
  } while (0)

  int fd = -1;
  if (!is_crr) {
    fd = socket(t.family, is_rr ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    set_timeouts(fd, timeout_ms);
    if (is_rr) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (!is_udpu && connect(fd, (struct sockaddr *)&t.sa, t.len) < 0) {
      FAIL("connect");
      max_count = 0;
    }
  }

  unsigned long long busy0, total0, busy1, total1;
  proc_stat(&busy0, &total0);
  double cpu0 = rusage_s();
  uint64_t start = now_ns();
  uint64_t deadline = start + (uint64_t)(seconds * 1e9);
  uint64_t t1 = start;
  /* Stop after too many consecutive errors: nothing to measure then, and no hammering. */
  unsigned long consecutive = 0;
  while (count < max_count && consecutive < 5) {
    uint64_t t0 = now_ns();
    if (t0 >= deadline) break;
    int ok = 0;
    if (is_crr) {
      int c = socket(t.family, SOCK_STREAM, 0);
      if (c < 0) { FAIL("socket"); }
      else {
        set_timeouts(c, timeout_ms);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c, (struct sockaddr *)&t.sa, t.len) < 0) FAIL("connect");
        else if (write(c, req, (size_t)msg_size) != msg_size) FAIL("write");
        else if (read_full(c, resp, (size_t)msg_size) < 0) FAIL("read");
        else {
          /* Wait for the server's FIN: it closes first, so TIME_WAIT stays on its side. */
          char b;
          ssize_t r;
          while ((r = read(c, &b, 1)) < 0 && errno == EINTR) {}
          ok = 1;
        }
        close(c);
      }
    } else if (is_rr || is_udp) {
      if (write(fd, req, (size_t)msg_size) != msg_size) FAIL("write");
      else if (is_rr ? read_full(fd, resp, (size_t)msg_size) < 0 : recv(fd, resp, sizeof resp, 0) < 0) FAIL("read");
      else ok = 1;
    } else {
      struct sockaddr_storage from;
      socklen_t fl = sizeof from;
      if (sendto(fd, req, (size_t)msg_size, 0, (struct sockaddr *)&t.sa, t.len) != msg_size) FAIL("sendto");
      else if (recvfrom(fd, resp, sizeof resp, 0, (struct sockaddr *)&from, &fl) < 0) FAIL("recvfrom");
      else ok = 1;
    }
    t1 = now_ns();
    if (ok) {
      uint64_t d = (t1 - t0) / 1000;
      lat[count++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
      consecutive = 0;
    } else {
      consecutive++;
      /* A kept connection that failed is gone: reconnect for the next transaction. */
      if (is_rr) {
        close(fd);
        fd = socket(t.family, SOCK_STREAM, 0);
        set_timeouts(fd, timeout_ms);
        if (connect(fd, (struct sockaddr *)&t.sa, t.len) < 0) FAIL("reconnect");
      }
      usleep(1000);
    }
  }
  double elapsed = (double)(t1 - start) / 1e9;
  double cpu = rusage_s() - cpu0;
  proc_stat(&busy1, &total1);
  double sys_cpu = (double)(busy1 - busy0) / (double)sysconf(_SC_CLK_TCK);
  if (fd >= 0) close(fd);

  double mean = 0;
  for (unsigned long i = 0; i < count; i++) mean += lat[i];
  if (count) mean /= (double)count;
  qsort(lat, count, sizeof lat[0], cmp_u32);
#define PCT(p) (count ? lat[(unsigned long)((double)(count - 1) * (p))] : 0)
  printf("{\"mode\":");
  json_str(mode);
  printf(",\"addr\":");
  json_str(addr);
  printf(",\"port\":%d,\"count\":%lu,\"errors\":%lu,\"seconds\":%.6f,\"rate\":%.1f,"
         "\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"mean_us\":%.1f,"
         "\"cpu_s\":%.6f,\"cpu_us_per_op\":%.3f,\"sys_cpu_s\":%.6f,\"sys_cpu_us_per_op\":%.3f,\"first_error\":",
         port, count, errors, elapsed, elapsed > 0 ? (double)count / elapsed : 0.0, PCT(0.50), PCT(0.90), PCT(0.99),
         mean, cpu, count ? cpu * 1e6 / (double)count : 0.0, sys_cpu, count ? sys_cpu * 1e6 / (double)count : 0.0);
  json_str(first_error);
  printf("}\n");
  fflush(stdout);
  free(lat);
  return count > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "serve")) return serve(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "client")) return client(argc - 2, argv + 2);
  fprintf(stderr, "usage: berth-bench serve [--tcp P] [--udp P] [--http P] [--tag T] | client MODE ADDR PORT [...]\n");
  return 2;
}
