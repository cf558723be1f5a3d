/*
 * Shared bits of berth's static test tools (berth-udp-echo, berth-tcp-echo, berth-probe).
 * Header-only so that each tool stays one `gcc -static -O2 tool.c` away from a binary.
 */
#ifndef BERTH_TEST_COMMON_H
#define BERTH_TEST_COMMON_H

#include <arpa/inet.h>
#include <unistd.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>

/* Parse a port or die with the usage line: a typo in a test must fail loudly, not bind port 0. */
__attribute__((unused)) static int parse_port(const char *s, const char *usage)
{
	char *end = NULL;
	long v = strtol(s, &end, 10);
	if (!s[0] || *end || v < 1 || v > 65535) {
		fprintf(stderr, "bad port '%s'\n%s\n", s, usage);
		exit(2);
	}
	return (int)v;
}

/* "1.2.3.4:80" or "[fd00::1]:80": the same form as test/helpers/probe.ts hostPort(). */
__attribute__((unused)) static void fmt_sockaddr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, ntohs(a->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		snprintf(out, len, "family-%d", ss->ss_family);
	}
}

/*
 * Bind a listening/receiving socket on the wildcard address. Dual-stack [::] first so one server
 * answers both families; 0.0.0.0 when the container has IPv6 disabled (Docker's default bridge
 * sets disable_ipv6, where an AF_INET6 socket may not bind). v6only forces an IPv6-only socket.
 */
__attribute__((unused)) static int bind_wildcard(int type, int port, int v6only)
{
	int one = 1;
	int fd = socket(AF_INET6, type, 0);
	if (fd >= 0) {
		struct sockaddr_in6 a6;
		int only = v6only ? 1 : 0;
		memset(&a6, 0, sizeof(a6));
		a6.sin6_family = AF_INET6;
		a6.sin6_addr = in6addr_any;
		a6.sin6_port = htons((unsigned short)port);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only));
		if (bind(fd, (struct sockaddr *)&a6, sizeof(a6)) == 0)
			return fd;
		close(fd);
	}
	if (v6only)
		return -1;
	fd = socket(AF_INET, type, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a4;
	memset(&a4, 0, sizeof(a4));
	a4.sin_family = AF_INET;
	a4.sin_addr.s_addr = htonl(INADDR_ANY);
	a4.sin_port = htons((unsigned short)port);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a4, sizeof(a4)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

/*
 * As PID 1 of a container, a signal whose disposition is SIG_DFL is dropped by the kernel: without
 * a handler `docker stop` would wait out its whole timeout and SIGKILL. Exit on TERM/INT at once.
 */
__attribute__((unused)) static void exit_on_term(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

#endif
