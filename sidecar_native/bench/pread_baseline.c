/* The benchmark's reference point: the simplest way to copy a file into shared memory.
 * One thread; create a fresh file in a tmpfs directory, ftruncate, mmap it, pread the source
 * into the mapping in 16 MiB chunks. Prints one JSON line: {"bytes": N, "seconds": S}.
 * Usage: loom-pread-baseline SOURCE DEST_FILE   (DEST_FILE is removed afterwards) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s SOURCE DEST_FILE\n", argv[0]);
    return 64;
  }
  int in = open(argv[1], O_RDONLY);
  struct stat st;
  if (in < 0 || fstat(in, &st) != 0) {
    perror(argv[1]);
    return 3;
  }
  const size_t n = (size_t)st.st_size;
  const size_t chunk = (size_t)16 << 20;
  double t0 = now();
  int out = open(argv[2], O_RDWR | O_CREAT | O_EXCL, 0644);
  if (out < 0 || ftruncate(out, (off_t)n) != 0) {
    perror(argv[2]);
    return 4;
  }
  char* dst = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, out, 0);
  if (dst == MAP_FAILED) {
    perror("mmap");
    return 5;
  }
  for (size_t off = 0; off < n;) {
    size_t len = n - off < chunk ? n - off : chunk;
    ssize_t r = pread(in, dst + off, len, (off_t)off);
    if (r <= 0) {
      perror("pread");
      return 5;
    }
    off += (size_t)r;
  }
  double t1 = now();
  printf("{\"bytes\": %zu, \"seconds\": %.6f}\n", n, t1 - t0);
  munmap(dst, n);
  close(out);
  close(in);
  unlink(argv[2]);
  return 0;
}
