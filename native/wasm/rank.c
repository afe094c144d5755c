/*
 * gm rank kernel (WebAssembly): the Geneformer rank-value order of one cell's genes — values
 * descending, ties by ascending token id. Built into
 * packages/data/wasm/rank.wasm by scripts/build-wasm.sh (clang --target=wasm32, no libc).
 *
 * Keys: for a positive double v, ~bits(v) & 0x7fff... orders ascending exactly as v orders
 * descending. One bucket pass on the top 12 bits of (key - min key) spreads a cell nearly uniformly
 * (values span a few octaves); each bucket is then sorted exactly on (key, token) — insertion sort
 * for small buckets, shell sort for crowded ones (many equal values) — so the result is exact.
 */
#include <stdint.h>

#define MAXN 131072

static double values[MAXN];
static int32_t tokens[MAXN];
static int32_t out[MAXN];
static uint64_t kA[MAXN], kB[MAXN];
static int32_t tB[MAXN];

__attribute__((export_name("values_ptr"))) double *values_ptr(void) { return values; }
__attribute__((export_name("tokens_ptr"))) int32_t *tokens_ptr(void) { return tokens; }
__attribute__((export_name("out_ptr"))) int32_t *out_ptr(void) { return out; }
__attribute__((export_name("max_n"))) int32_t max_n(void) { return MAXN; }

static inline int less(uint64_t ka, int32_t ta, uint64_t kb, int32_t tb) {
  return ka < kb || (ka == kb && ta < tb);
}

/* Shell sort on (key, token) for crowded buckets (many equal or nearly equal values). */
static void shell_sort(uint64_t *k, int32_t *t, int a, int e) {
  static const int gaps[] = {1750, 701, 301, 132, 57, 23, 10, 4, 1};
  for (int g = 0; g < 9; g++) {
    int gap = gaps[g];
    for (int i = a + gap; i < e; i++) {
      uint64_t kv = k[i];
      int32_t tv = t[i];
      int j = i;
      while (j - gap >= a && less(kv, tv, k[j - gap], t[j - gap])) {
        k[j] = k[j - gap];
        t[j] = t[j - gap];
        j -= gap;
      }
      k[j] = kv;
      t[j] = tv;
    }
  }
}

#define BUCKET_BITS 12
#define NBUCKETS (1 << BUCKET_BITS)
static uint32_t start[NBUCKETS + 1];
static uint32_t bucket_of[MAXN];

/* Sorts values[0..n) / tokens[0..n); writes min(n, limit) tokens to out; returns that count. */
__attribute__((export_name("rank"))) int32_t rank(int32_t n, int32_t limit) {
  if (n <= 0) return 0;
  if (n > MAXN) return -1;
  uint64_t lo = ~(uint64_t)0, hi = 0;
  for (int i = 0; i < n; i++) {
    union { double d; uint64_t u; } x;
    x.d = values[i];
    uint64_t k = ~x.u & 0x7fffffffffffffffULL; /* ascending k <=> descending value */
    kA[i] = k;
    if (k < lo) lo = k;
    if (k > hi) hi = k;
  }
  /* buckets on the top BUCKET_BITS bits of (k - lo) */
  uint64_t range = hi - lo;
  int shift = 0;
  while ((range >> shift) >= NBUCKETS) shift++;
  int nb = (int)(range >> shift) + 1;
  for (int b = 0; b <= nb; b++) start[b] = 0;
  for (int i = 0; i < n; i++) {
    uint32_t b = (uint32_t)((kA[i] - lo) >> shift);
    bucket_of[i] = b;
    start[b + 1]++;
  }
  for (int b = 0; b < nb; b++) start[b + 1] += start[b];
  for (int i = 0; i < n; i++) {
    uint32_t p = start[bucket_of[i]]++;
    kB[p] = kA[i];
    tB[p] = tokens[i];
  }
  int m = n < limit ? n : limit;
  int a = 0;
  for (int b = 0; b < nb && a < m; b++) {
    int e = (int)start[b];
    if (e - a > 1) {
      if (e - a > 32) shell_sort(kB, tB, a, e);
      else {
        for (int i = a + 1; i < e; i++) {
          uint64_t kv = kB[i];
          int32_t tv = tB[i];
          int j = i - 1;
          while (j >= a && less(kv, tv, kB[j], tB[j])) {
            kB[j + 1] = kB[j];
            tB[j + 1] = tB[j];
            j--;
          }
          kB[j + 1] = kv;
          tB[j + 1] = tv;
        }
      }
    }
    a = e;
  }
  for (int i = 0; i < m; i++) out[i] = tB[i];
  return m;
}
