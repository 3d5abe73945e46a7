// SPDX-License-Identifier: Apache-2.0
// Connect-latency probe for bench/kernel-policy.ts: `count` blocking connect()s
// to ip:port from the calling pod, each timed alone and closed with a reset (no
// TIME_WAIT pile-up). Prints one JSON line: outcome counts, latency percentiles
// and the CPU (user + system) this process spent per connect.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: connect <ip> <port> <count>\n");
    return 2;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) return 2;
  long count = atol(argv[3]);
  uint64_t *lat = calloc((size_t)count, sizeof *lat);
  long ok = 0, eperm = 0, other = 0;
  int last_err = 0;
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  uint64_t start = now_ns();
  for (long i = 0; i < count; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 1;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    uint64_t t0 = now_ns();
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    lat[i] = now_ns() - t0;
    if (rc == 0) ok++;
    else if (errno == EPERM) eperm++;
    else {
      other++;
      last_err = errno;
    }
    close(fd);
  }
  uint64_t wall = now_ns() - start;
  getrusage(RUSAGE_SELF, &r1);
  double cpu_us = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e6 + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
                  (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e6 + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
  qsort(lat, (size_t)count, sizeof *lat, cmp);
  uint64_t sum = 0;
  for (long i = 0; i < count; i++) sum += lat[i];
  printf("{\"ok\":%ld,\"eperm\":%ld,\"other\":%ld,\"lastError\":%d,\"p50Us\":%.2f,\"p99Us\":%.2f,\"meanUs\":%.2f,"
         "\"cpuUsPerConnect\":%.3f,\"wallMs\":%.1f}\n",
         ok, eperm, other, last_err, lat[count / 2] / 1e3, lat[(count * 99) / 100] / 1e3, (double)sum / count / 1e3,
         cpu_us / count, wall / 1e6);
  free(lat);
  return 0;
}
