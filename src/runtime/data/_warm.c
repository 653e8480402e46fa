/* numpy allocation handler (NEP 49) for runtime.data's batch functions: arrays of at least
 * `big` bytes come from anonymous mappings that are kept when freed (up to `retain` bytes)
 * and handed out again for the next array of about the same size, so their pages are
 * touched once per process instead of once per batch. Smaller arrays go to the C library.
 * Built by _warm.py with the system's C compiler; see there. Every function is thread-safe
 * and none touches Python (numpy may free an array while an exception is pending). */
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define GRAIN ((size_t)2 << 20)
#define MAX_FREE 256

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t big = (size_t)256 << 10;
static size_t retain = (size_t)1 << 30;

/* Free mappings kept for reuse. */
static void *free_addr[MAX_FREE];
static size_t free_len[MAX_FREE];
static int n_free;
static size_t free_bytes;

/* Live mappings handed out: an open-addressing table of address -> length. */
static uintptr_t *live_key;
static size_t *live_len;
static size_t live_cap, live_n, live_used; /* used: live and deleted slots */

static uint64_t n_reused, n_mapped, n_unmapped;

static size_t slot_of(uintptr_t key, size_t cap) {
    return (size_t)((key >> 12) * 0x9E3779B97F4A7C15ull) & (cap - 1);
}

/* Rehash (dropping deleted slots), twice as big when over a quarter is live. */
static int live_grow(void) {
    size_t cap = live_cap ? (live_n * 4 > live_cap ? live_cap * 2 : live_cap) : 64;
    uintptr_t *keys = calloc(cap, sizeof *keys);
    size_t *lens = calloc(cap, sizeof *lens);
    if (!keys || !lens) {
        free(keys);
        free(lens);
        return -1;
    }
    for (size_t i = 0; i < live_cap; i++) {
        if (live_key[i] > 1) {
            size_t j = slot_of(live_key[i], cap);
            while (keys[j]) j = (j + 1) & (cap - 1);
            keys[j] = live_key[i];
            lens[j] = live_len[i];
        }
    }
    free(live_key);
    free(live_len);
    live_key = keys;
    live_len = lens;
    live_cap = cap;
    live_used = live_n;
    return 0;
}

/* 0 marks an empty slot, 1 a deleted one. */
static int live_put(void *addr, size_t len) {
    if ((live_used + 1) * 2 > live_cap && live_grow() < 0) return -1;
    size_t j = slot_of((uintptr_t)addr, live_cap);
    while (live_key[j] > 1) j = (j + 1) & (live_cap - 1);
    if (!live_key[j]) live_used++;
    live_key[j] = (uintptr_t)addr;
    live_len[j] = len;
    live_n++;
    return 0;
}

static size_t live_take(void *addr) {
    if (!live_cap) return 0;
    size_t j = slot_of((uintptr_t)addr, live_cap);
    while (live_key[j]) {
        if (live_key[j] == (uintptr_t)addr) {
            live_key[j] = 1;
            live_n--;
            return live_len[j];
        }
        j = (j + 1) & (live_cap - 1);
    }
    return 0;
}

static size_t live_find(void *addr) {
    if (!live_cap) return 0;
    size_t j = slot_of((uintptr_t)addr, live_cap);
    while (live_key[j]) {
        if (live_key[j] == (uintptr_t)addr) return live_len[j];
        j = (j + 1) & (live_cap - 1);
    }
    return 0;
}

/* A mapping of at least `size` bytes; *used says whether it held data before. */
static void *take(size_t size, int *used) {
    size_t n = (size + GRAIN - 1) / GRAIN * GRAIN;
    pthread_mutex_lock(&lock);
    int best = -1;
    for (int i = 0; i < n_free; i++) {
        /* the smallest kept one that fits, wasting at most a quarter */
        if (free_len[i] >= n && free_len[i] <= n + n / 4 &&
            (best < 0 || free_len[i] < free_len[best]))
            best = i;
    }
    if (best >= 0) {
        void *addr = free_addr[best];
        size_t len = free_len[best];
        free_addr[best] = free_addr[n_free - 1];
        free_len[best] = free_len[n_free - 1];
        n_free--;
        free_bytes -= len;
        if (live_put(addr, len) < 0) {
            pthread_mutex_unlock(&lock);
            munmap(addr, len);
            return NULL;
        }
        n_reused++;
        pthread_mutex_unlock(&lock);
        *used = 1;
        return addr;
    }
    pthread_mutex_unlock(&lock);
    void *addr = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (addr == MAP_FAILED) return NULL;
    pthread_mutex_lock(&lock);
    int ok = live_put(addr, n) == 0;
    if (ok) n_mapped++;
    pthread_mutex_unlock(&lock);
    if (!ok) {
        munmap(addr, n);
        return NULL;
    }
    *used = 0;
    return addr;
}

/* Give back a mapping of ours; 0 if `ptr` is not one. */
static int give(void *ptr) {
    pthread_mutex_lock(&lock);
    size_t len = live_take(ptr);
    if (!len) {
        pthread_mutex_unlock(&lock);
        return 0;
    }
    if (free_bytes + len <= retain && n_free < MAX_FREE) {
        free_addr[n_free] = ptr;
        free_len[n_free] = len;
        n_free++;
        free_bytes += len;
        pthread_mutex_unlock(&lock);
        return 1;
    }
    n_unmapped++;
    pthread_mutex_unlock(&lock);
    munmap(ptr, len);
    return 1;
}

void *warm_malloc(void *ctx, size_t size) {
    (void)ctx;
    if (size >= big) {
        int used;
        void *p = take(size, &used);
        if (p) return p;
    }
    return malloc(size);
}

void *warm_calloc(void *ctx, size_t nelem, size_t elsize) {
    (void)ctx;
    if (elsize && nelem > SIZE_MAX / elsize) return NULL;
    size_t size = nelem * elsize;
    if (size >= big) {
        int used;
        void *p = take(size, &used);
        if (p) {
            if (used) memset(p, 0, size); /* a new mapping is zeros already */
            return p;
        }
    }
    return calloc(nelem, elsize);
}

void warm_free(void *ctx, void *ptr, size_t size) {
    (void)ctx;
    (void)size;
    if (ptr && !give(ptr)) free(ptr);
}

void *warm_realloc(void *ctx, void *ptr, size_t new_size) {
    if (!ptr) return warm_malloc(ctx, new_size);
    pthread_mutex_lock(&lock);
    size_t len = live_find(ptr);
    pthread_mutex_unlock(&lock);
    if (len && new_size <= len && new_size >= big) return ptr; /* fits where it is */
    if (!len && new_size < big) return realloc(ptr, new_size);
    size_t old = len ? len : malloc_usable_size(ptr);
    void *p = warm_malloc(ctx, new_size ? new_size : 1);
    if (!p) return NULL;
    memcpy(p, ptr, old < new_size ? old : new_size);
    warm_free(ctx, ptr, 0);
    return p;
}

/* Unmap every kept mapping. */
void warm_trim(void) {
    pthread_mutex_lock(&lock);
    int n = n_free;
    void *addr[MAX_FREE];
    size_t len[MAX_FREE];
    memcpy(addr, free_addr, sizeof(void *) * (size_t)n);
    memcpy(len, free_len, sizeof(size_t) * (size_t)n);
    n_free = 0;
    free_bytes = 0;
    n_unmapped += (uint64_t)n;
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n; i++) munmap(addr[i], len[i]);
}

void warm_configure(size_t big_bytes, size_t retain_bytes) {
    pthread_mutex_lock(&lock);
    big = big_bytes;
    retain = retain_bytes;
    pthread_mutex_unlock(&lock);
}

/* reused, mapped, unmapped, kept bytes, live mappings */
void warm_stats(uint64_t *out) {
    pthread_mutex_lock(&lock);
    out[0] = n_reused;
    out[1] = n_mapped;
    out[2] = n_unmapped;
    out[3] = free_bytes;
    out[4] = live_n;
    pthread_mutex_unlock(&lock);
}
