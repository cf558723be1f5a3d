/*
 * berth-probe: one client attempt after another against addr:port, one JSON line per attempt:
 *   {"ok":true,"peer":"10.96.0.5:80","reply":"web-1\nping","from":"10.96.0.5:80","errno":null,"ms":0.412}
 * peer  = getpeername() after connect (berth must show the VIP, not the backend);
 * from  = the source address of the reply as recvfrom() reports it (for UDP: the VIP again);
 * reply = what came back (the echo servers put their tag first, so tests see which backend answered);
 * errno = the failure (e.g. ECONNREFUSED at once when a service has no backend), null on success.
 * Every attempt is bounded by --timeout-ms and the number of attempts by --count.
 * TCP with --send '' only connects (ok once connected, reply ""): a readiness check for any server.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

static const char *USAGE =
	"usage: berth-probe tcp|udp|udp-unconnected <addr> <port> [--send MSG] [--timeout-ms N] [--idle-ms N] [--count N]\n"
	"  prints one JSON line per attempt: {ok, peer, reply, from, errno, ms}; exit 0 when all attempts succeeded\n"
	"  tcp with --send '' only connects (no read)";

enum mode { M_TCP, M_UDP, M_UDP_UNCONNECTED };

struct result {
	int ok;
	char peer[80];
	char from[80];
	char reply[4096];
	size_t reply_len;
	int err;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void json_str(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\r')
			fputs("\\r", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c); /* bytes, not UTF-8: keeps the line valid JSON whatever came back */
		else
			putchar(c);
	}
	putchar('"');
}

static void print_result(const struct result *r, double ms)
{
	printf("{\"ok\":%s,\"peer\":", r->ok ? "true" : "false");
	if (r->peer[0]) json_str(r->peer, strlen(r->peer)); else fputs("null", stdout);
	fputs(",\"reply\":", stdout);
	if (r->reply_len || r->ok) json_str(r->reply, r->reply_len); else fputs("null", stdout);
	fputs(",\"from\":", stdout);
	if (r->from[0]) json_str(r->from, strlen(r->from)); else fputs("null", stdout);
	fputs(",\"errno\":", stdout);
	if (r->err) {
		const char *name = strerrorname_np(r->err);
		char tmp[32];
		if (!name) { snprintf(tmp, sizeof(tmp), "E%d", r->err); name = tmp; }
		json_str(name, strlen(name));
	} else
		fputs("null", stdout);
	printf(",\"ms\":%.3f}\n", ms);
	fflush(stdout);
}

/* Wait for fd to become ready for `events` until `deadline`; returns 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, double deadline)
{
	for (;;) {
		double left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = { .fd = fd, .events = events };
		int n = poll(&p, 1, (int)(left + 0.999));
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return 0;
	}
}

/* Connect with a deadline: non-blocking connect, then poll and SO_ERROR. Returns 0 or an errno. */
static int connect_deadline(int fd, const struct sockaddr *sa, socklen_t len, double deadline)
{
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return errno;
	if (!wait_fd(fd, POLLOUT, deadline))
		return ETIMEDOUT;
	int err = 0;
	socklen_t el = sizeof(err);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
	return err;
}

static void set_peer(int fd, struct result *r)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
		fmt_sockaddr(&ss, r->peer, sizeof(r->peer));
}

/*
 * TCP: read until the echo of MSG has come back (the echo servers send "TAG\n" first), the peer
 * closes, idle_ms pass without more data (servers that do not echo; --idle-ms, default 300), or
 * the deadline. An HTTP request with "Connection: close" wants --idle-ms as long as the timeout:
 * a slow proxy may send the body well after the headers, and the close ends the read.
 */
static void tcp_attempt(const struct sockaddr *sa, socklen_t len, const char *msg, double deadline, int idle_ms, struct result *r)
{
	int fd = socket(sa->sa_family, SOCK_STREAM, 0);
	if (fd < 0) { r->err = errno; return; }
	r->err = connect_deadline(fd, sa, len, deadline);
	if (r->err) { close(fd); return; }
	set_peer(fd, r);
	{
		struct sockaddr_storage ss;
		socklen_t l = sizeof(ss);
		if (getpeername(fd, (struct sockaddr *)&ss, &l) == 0)
			fmt_sockaddr(&ss, r->from, sizeof(r->from));
	}
	size_t mlen = strlen(msg);
	/* --send '': a connect-only check (servers like httpd say nothing until they get a request). */
	if (!mlen) { r->ok = 1; close(fd); return; }
	if (send(fd, msg, mlen, MSG_NOSIGNAL) < 0) { r->err = errno; close(fd); return; }
	int closed = 0;
	for (;;) {
		double d = deadline;
		if (r->reply_len && now_ms() + idle_ms < d)
			d = now_ms() + idle_ms;
		if (!wait_fd(fd, POLLIN, d))
			break;
		ssize_t n = recv(fd, r->reply + r->reply_len, sizeof(r->reply) - 1 - r->reply_len, MSG_DONTWAIT);
		if (n == 0) { closed = 1; break; }
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) continue;
			r->err = errno;
			break;
		}
		r->reply_len += (size_t)n;
		if (r->reply_len >= sizeof(r->reply) - 1)
			break;
		/* The whole echo is back: "…\nMSG" (or just MSG). */
		if (mlen && r->reply_len >= mlen && !memcmp(r->reply + r->reply_len - mlen, msg, mlen))
			break;
	}
	if (!r->err && !r->reply_len && !closed)
		r->err = ETIMEDOUT;
	r->ok = !r->err;
	close(fd);
}

/* UDP, connected (exercises connect4/6 + getpeername hooks) or unconnected (sendmsg hooks). */
static void udp_attempt(const struct sockaddr *sa, socklen_t len, int connected, const char *msg, double deadline, struct result *r)
{
	int fd = socket(sa->sa_family, SOCK_DGRAM, 0);
	if (fd < 0) { r->err = errno; return; }
	if (connected) {
		if (connect(fd, sa, len) != 0) { r->err = errno; close(fd); return; }
		set_peer(fd, r);
		if (send(fd, msg, strlen(msg), 0) < 0) { r->err = errno; close(fd); return; }
	} else if (sendto(fd, msg, strlen(msg), 0, sa, len) < 0) {
		r->err = errno;
		close(fd);
		return;
	}
	for (;;) {
		if (!wait_fd(fd, POLLIN, deadline)) { r->err = ETIMEDOUT; break; }
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, r->reply, sizeof(r->reply) - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) continue;
			r->err = errno; /* e.g. ECONNREFUSED from an ICMP port unreachable on a connected socket */
			break;
		}
		r->reply_len = (size_t)n;
		fmt_sockaddr(&from, r->from, sizeof(r->from));
		r->ok = 1;
		break;
	}
	close(fd);
}

static long parse_num(const char *s, long min, long max)
{
	char *end = NULL;
	long v = strtol(s, &end, 10);
	if (!s[0] || *end || v < min || v > max) {
		fprintf(stderr, "bad number '%s' (%ld..%ld)\n%s\n", s, min, max, USAGE);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 4) { fprintf(stderr, "%s\n", USAGE); return 2; }
	enum mode mode;
	if (!strcmp(argv[1], "tcp")) mode = M_TCP;
	else if (!strcmp(argv[1], "udp")) mode = M_UDP;
	else if (!strcmp(argv[1], "udp-unconnected")) mode = M_UDP_UNCONNECTED;
	else { fprintf(stderr, "%s\n", USAGE); return 2; }
	const char *addr = argv[2];
	int port = parse_port(argv[3], USAGE);
	const char *msg = "ping";
	long timeout_ms = 2000, count = 1, idle_ms = 300;
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--send") && i + 1 < argc) msg = argv[++i];
		else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc) timeout_ms = parse_num(argv[++i], 1, 600000);
		else if (!strcmp(argv[i], "--idle-ms") && i + 1 < argc) idle_ms = parse_num(argv[++i], 1, 600000);
		else if (!strcmp(argv[i], "--count") && i + 1 < argc) count = parse_num(argv[++i], 1, 100000);
		else { fprintf(stderr, "%s\n", USAGE); return 2; }
	}
	if (mode != M_TCP && !msg[0]) { fprintf(stderr, "UDP needs a non-empty --send\n"); return 2; }

	struct sockaddr_storage ss;
	socklen_t len;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((unsigned short)port);
		len = sizeof(*a4);
	} else if (inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((unsigned short)port);
		len = sizeof(*a6);
	} else {
		fprintf(stderr, "bad address '%s' (an IPv4 or IPv6 literal)\n%s\n", addr, USAGE);
		return 2;
	}

	int failures = 0;
	for (long i = 0; i < count; i++) {
		struct result r;
		memset(&r, 0, sizeof(r));
		double t0 = now_ms(), deadline = t0 + (double)timeout_ms;
		if (mode == M_TCP)
			tcp_attempt((struct sockaddr *)&ss, len, msg, deadline, (int)idle_ms, &r);
		else
			udp_attempt((struct sockaddr *)&ss, len, mode == M_UDP, msg, deadline, &r);
		if (!r.ok) failures++;
		print_result(&r, now_ms() - t0);
	}
	return failures ? 1 : 0;
}
