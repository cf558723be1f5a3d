/*
 * berth-tcp-echo: a TCP server for berth's tests. Each connection first receives "TAG\n" (which
 * backend answered), then everything it sends is echoed back. One forked child per connection,
 * each bounded by an idle timeout, so a forgotten client never pins a process forever.
 */
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>
#include "common.h"

static const char *USAGE = "usage: berth-tcp-echo <port> [--tag TAG]\n"
			   "  writes TAG\\n to each connection, then echoes; closes a connection idle for 30 s";

#define IDLE_SECONDS 30

static void serve(int c, const char *tag)
{
	struct timeval tv = { .tv_sec = IDLE_SECONDS, .tv_usec = 0 };
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	char line[512];
	int m = snprintf(line, sizeof(line), "%s\n", tag);
	if (write(c, line, (size_t)m) != m)
		return;
	char buf[16384];
	for (;;) {
		ssize_t n = read(c, buf, sizeof(buf));
		if (n <= 0)
			return;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(c, buf + off, (size_t)(n - off));
			if (w <= 0)
				return;
			off += w;
		}
	}
}

int main(int argc, char **argv)
{
	const char *tag = "tcp-echo";
	int port = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--tag") && i + 1 < argc)
			tag = argv[++i];
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
	/* Children are reaped by the kernel (SIGCHLD ignored); a vanished client must not kill us. */
	signal(SIGCHLD, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	exit_on_term();
	int fd = bind_wildcard(SOCK_STREAM, port, 0);
	if (fd < 0 || listen(fd, 128) != 0) {
		perror("bind/listen");
		return 1;
	}
	fprintf(stderr, "berth-tcp-echo %s listening on tcp port %d\n", tag, port);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			return 1;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(fd);
			serve(c, tag);
			_exit(0);
		}
		/* fork failure: serve inline rather than drop the client. */
		if (pid < 0)
			serve(c, tag);
		close(c);
	}
}
