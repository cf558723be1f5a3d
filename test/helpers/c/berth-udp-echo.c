/*
 * berth-udp-echo: a UDP echo server for berth's tests. Each datagram is answered with
 * "TAG:<payload>" from the receiving socket, so the client learns which backend answered (by tag)
 * and, through recvfrom(), which source address the reply appeared to come from (the VIP, when
 * berth's recvmsg hooks do their job).
 */
#include <signal.h>
#include <unistd.h>
#include "common.h"

static const char *USAGE = "usage: berth-udp-echo <port> [--tag TAG] [--v6]\n"
			   "  replies TAG:<payload> to every datagram; binds [::] dual-stack (IPv6 only with --v6),\n"
			   "  or 0.0.0.0 when IPv6 is unavailable";

int main(int argc, char **argv)
{
	const char *tag = "udp-echo";
	int v6only = 0, port = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--tag") && i + 1 < argc)
			tag = argv[++i];
		else if (!strcmp(argv[i], "--v6"))
			v6only = 1;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			puts(USAGE);
			return 0;
		} else if (!port && argv[i][0] != '-')
			port = parse_port(argv[i], USAGE);
		else {
			fprintf(stderr, "%s\n", USAGE);
			return 2;
		}
	}
	if (!port) {
		fprintf(stderr, "%s\n", USAGE);
		return 2;
	}
	exit_on_term();
	int fd = bind_wildcard(SOCK_DGRAM, port, v6only);
	if (fd < 0) {
		perror("bind");
		return 1;
	}
	fprintf(stderr, "berth-udp-echo %s listening on udp port %d\n", tag, port);
	char in[65536], out[65536 + 256];
	for (;;) {
		struct sockaddr_storage from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, in, sizeof(in) - 1, 0, (struct sockaddr *)&from, &flen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("recvfrom");
			return 1;
		}
		int m = snprintf(out, sizeof(out), "%s:%.*s", tag, (int)n, in);
		if (m > (int)sizeof(out))
			m = sizeof(out);
		sendto(fd, out, (size_t)m, 0, (struct sockaddr *)&from, flen);
	}
}
