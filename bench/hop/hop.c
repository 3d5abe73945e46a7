// SPDX-License-Identifier: Apache-2.0
/*
 * The same-node hop without a language runtime in the way: the Node workers of
 * bench/sockops-hop.ts spend most of each round trip in two event-loop turns,
 * which hides what the kernel path itself costs. Same protocol as the Node
 * workers: the first byte a client sends picks the mode, 'P' echoes 100 B
 * messages, 'S' sinks bytes and answers the count (8 bytes, little endian).
 *
 *   hop server <ip:port>
 *   hop pingpong <ip:port> <iterations>      prints {"p50":µs,"p99":µs,"samples":n}
 *   hop throughput <ip:port> <bytes>         prints {"bytes":n,"seconds":s,"gbps":g}
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 100
#define CHUNK (64 * 1024)

/* Blocking reads that returned EAGAIN: the kernel's sockmap receive path
 * (tcp_bpf_recvmsg) returns it when a blocking reader is woken by anything
 * but data, e.g. send-buffer space. Retried here, counted and reported. */
static long spurious_eagain;

static struct sockaddr_in parse(const char *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	char host[64];
	const char *colon = strrchr(s, ':');

	if (!colon || (size_t)(colon - s) >= sizeof(host)) {
		fprintf(stderr, "bad address %s\n", s);
		exit(2);
	}
	memcpy(host, s, colon - s);
	host[colon - s] = 0;
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", s);
		exit(2);
	}
	a.sin_port = htons((uint16_t)atoi(colon + 1));
	return a;
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int full_write(int fd, const char *b, size_t n)
{
	while (n) {
		ssize_t w = write(fd, b, n);
		if (w <= 0) {
			perror("write");
			return -1;
		}
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int full_read(int fd, char *b, size_t n)
{
	while (n) {
		ssize_t r = read(fd, b, n);
		if (r < 0 && errno == EAGAIN) {
			spurious_eagain++;
			continue;
		}
		if (r <= 0) {
			if (r == 0)
				fprintf(stderr, "read: unexpected end of stream\n");
			else
				perror("read");
			return -1;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void serve(int c)
{
	static char buf[CHUNK];
	uint64_t total = 0;
	char mode;
	ssize_t r;

	nodelay(c);
	if (read(c, &mode, 1) != 1)
		return;
	while ((r = read(c, buf, sizeof(buf))) > 0) {
		if (mode == 'P') {
			if (full_write(c, buf, (size_t)r))
				return;
		} else {
			total += (uint64_t)r;
		}
	}
	if (mode == 'S')
		full_write(c, (const char *)&total, sizeof(total));
}

static int server(const char *where)
{
	struct sockaddr_in a = parse(where);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 16)) {
		perror("listen");
		return 1;
	}
	printf("{\"listening\":true}\n");
	fflush(stdout);
	for (;;) {
		int c = accept(fd, NULL, NULL);
		if (c < 0)
			continue;
		serve(c);
		close(c);
	}
}

static int dial(const char *where)
{
	struct sockaddr_in a = parse(where);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		perror("connect");
		exit(1);
	}
	nodelay(fd);
	return fd;
}

static int cmp(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

static int pingpong(const char *where, long iterations)
{
	int fd = dial(where), warmup = 1000;
	char msg[MSG];
	double *rtt = calloc((size_t)iterations, sizeof(double));

	memset(msg, 'a', sizeof(msg));
	if (!rtt || full_write(fd, "P", 1))
		return 1;
	for (long i = 0; i < iterations + warmup; i++) {
		double t0 = now_us();
		if (full_write(fd, msg, MSG) || full_read(fd, msg, MSG))
			return 1;
		if (i >= warmup)
			rtt[i - warmup] = now_us() - t0;
	}
	close(fd);
	qsort(rtt, (size_t)iterations, sizeof(double), cmp);
	printf("{\"p50\":%.2f,\"p99\":%.2f,\"samples\":%ld,\"eagain\":%ld}\n", rtt[iterations / 2],
	       rtt[iterations * 99 / 100], iterations, spurious_eagain);
	return 0;
}

static int throughput(const char *where, uint64_t total)
{
	static char chunk[CHUNK];
	int fd = dial(where);
	uint64_t sent = 0, got = 0;
	double t0 = now_us(), seconds;

	memset(chunk, 'b', sizeof(chunk));
	if (full_write(fd, "S", 1))
		return 1;
	while (sent < total) {
		size_t n = total - sent < CHUNK ? (size_t)(total - sent) : CHUNK;
		if (full_write(fd, chunk, n))
			return 1;
		sent += n;
	}
	shutdown(fd, SHUT_WR);
	if (full_read(fd, (char *)&got, sizeof(got)))
		return 1;
	seconds = (now_us() - t0) / 1e6;
	printf("{\"bytes\":%llu,\"seconds\":%.4f,\"gbps\":%.3f,\"eagain\":%ld}\n", (unsigned long long)got,
	       seconds, got * 8 / seconds / 1e9, spurious_eagain);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "server"))
		return server(argv[2]);
	if (argc >= 4 && !strcmp(argv[1], "pingpong"))
		return pingpong(argv[2], atol(argv[3]));
	if (argc >= 4 && !strcmp(argv[1], "throughput"))
		return throughput(argv[2], strtoull(argv[3], NULL, 10));
	fprintf(stderr, "usage: hop server|pingpong|throughput <ip:port> [n]\n");
	return 2;
}
