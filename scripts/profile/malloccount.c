/* LD_PRELOAD allocation counter for rabbitmq-bench (scripts/profile.sh).
 *
 * Counts calls to malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign and
 * free in every thread of the process, and writes the totals to standard error at exit
 * (or to the file named by MALLOCCOUNT_OUT). Run the benchmark twice with different
 * message counts and the same warm-up: the difference divided by the difference in
 * messages is the number of allocations per message in steady state.
 *
 * It forwards to glibc's __libc_* entry points, so it needs no dlsym (which itself
 * allocates) and works from the first allocation on.
 *
 * Build: cc -O2 -shared -fPIC -o malloccount.so malloccount.c */

#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_ulong allocations, reallocations, frees, bytes;

void *malloc(size_t size) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&bytes, size, memory_order_relaxed);
  return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&bytes, count * size, memory_order_relaxed);
  return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
  atomic_fetch_add_explicit(pointer == NULL ? &allocations : &reallocations, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&bytes, size, memory_order_relaxed);
  return __libc_realloc(pointer, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&bytes, size, memory_order_relaxed);
  void *pointer = __libc_memalign(alignment, size);
  if (pointer == NULL) return 12; /* ENOMEM */
  *out = pointer;
  return 0;
}

void *aligned_alloc(size_t alignment, size_t size) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&bytes, size, memory_order_relaxed);
  return __libc_memalign(alignment, size);
}

void *memalign(size_t alignment, size_t size) {
  atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&bytes, size, memory_order_relaxed);
  return __libc_memalign(alignment, size);
}

void free(void *pointer) {
  if (pointer != NULL) atomic_fetch_add_explicit(&frees, 1, memory_order_relaxed);
  __libc_free(pointer);
}

__attribute__((destructor)) static void report(void) {
  const char *path = getenv("MALLOCCOUNT_OUT");
  FILE *out = path != NULL ? fopen(path, "w") : NULL;
  fprintf(out != NULL ? out : stderr, "malloccount allocations=%lu reallocations=%lu frees=%lu bytes=%lu\n",
          atomic_load(&allocations), atomic_load(&reallocations), atomic_load(&frees), atomic_load(&bytes));
  if (out != NULL) fclose(out);
}
