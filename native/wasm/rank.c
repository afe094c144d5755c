/*
 * gm rank kernel (WebAssembly): the Geneformer rank-value order of one cell's genes — values
 * descending, ties by ascending token id. Built into
 * packages/data/wasm/rank.wasm by scripts/build-wasm.sh (clang --target=wasm32, no libc).
 *
 * Keys: for a positive double v, ~bits(v) & 0x7fff... orders ascending exactly as v orders
 * descending. One bucket pass on the top bits of (key - min key) (~one key per bucket) spreads a cell nearly uniformly
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

/* Sorts values[0..n) / tokens[0..n); writes min(n, limit) tokens to dst; returns that count. */
static int32_t rank_core(int32_t n, int32_t limit, int32_t *dst) {
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
  /* about one key per bucket: 2^ceil(log2 n) buckets (at most NBUCKETS) on the top bits of (k - lo) */
  uint32_t want = 16;
  while (want < (uint32_t)n && want < NBUCKETS) want <<= 1;
  uint64_t range = hi - lo;
  int shift = 0;
  while ((range >> shift) >= want) shift++;
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
  for (int i = 0; i < m; i++) dst[i] = tB[i];
  return m;
}

__attribute__((export_name("rank"))) int32_t rank(int32_t n, int32_t limit) { return rank_core(n, limit, out); }

/* ---- whole row blocks: cleaning + values + ranking in one call ------------------------------ */

/*
 * A dynamically sized arena after the static data, for the block's input and output arrays.
 * JS asks for `bytes`, gets the base address, and lays its arrays out there (8-byte aligned).
 */
extern unsigned char __heap_base;
__attribute__((export_name("arena"))) uint32_t arena(uint32_t bytes) {
  uint32_t base = ((uint32_t)&__heap_base + 15u) & ~15u;
  uint32_t need = base + bytes;
  uint32_t have = (uint32_t)__builtin_wasm_memory_size(0) * 65536u;
  if (need > have) {
    uint32_t pages = (need - have + 65535u) / 65536u;
    if (__builtin_wasm_memory_grow(0, pages) == (uint32_t)-1) return 0;
  }
  return base;
}

/* Where the first bad value of a block was found (see tokenize_block's return value). */
static int32_t err_row, err_col;
static double err_value;
__attribute__((export_name("err_row"))) int32_t get_err_row(void) { return err_row; }
__attribute__((export_name("err_col"))) int32_t get_err_col(void) { return err_col; }
__attribute__((export_name("err_value"))) double get_err_value(void) { return err_value; }

static double counts_tmp[MAXN];

/*
 * Tokenizes rows [0, n_rows) of a CSR block exactly as gm's JS path does (clean.ts + tokenize
 * UnitTokenizer): a row is skipped when primary[r] == 0 (status 1); every stored value of the other
 * rows must be finite and >= 0 (else return 1) and, unless allow_non_integer, an integer (else
 * return 2); n_counts = sum of positive values over all columns; rows with n_counts == 0 (status 2)
 * or fewer than min_genes positive values (status 3) are dropped; kept columns (col_token >= 0)
 * give v = counts / n_counts * target_sum / col_median, counts rounded to float32 as the JS path
 * stores them; the row's tokens are [cls] + top `room` by (v desc, token asc) + [eos]; a row with
 * no kept gene gets status 4. Kept rows get status 0 and their tokens at out_tok[out_off[r]...].
 * out_off has n_rows + 1 entries (dropped rows take no space). truncated[r] = 1 when cut to room.
 * When row_total is given it replaces the computed n_counts (cells of a gm preprocess shard, whose
 * totals cover genes that are not in the shard).
 */
__attribute__((export_name("tokenize_block"))) int32_t tokenize_block(
    int32_t n_rows, const int32_t *indptr, const int32_t *indices, const void *data, int32_t data_is_f64,
    const uint8_t *primary, const double *row_total, const int32_t *col_token, const double *col_median, int32_t min_genes,
    int32_t allow_non_integer, double target_sum, int32_t room, int32_t cls_id, int32_t eos_id,
    int32_t *out_tok, int32_t *out_off, uint8_t *status, uint8_t *truncated) {
  const float *d32 = (const float *)data;
  const double *d64 = (const double *)data;
  int32_t k = 0;
  out_off[0] = 0;
  for (int32_t r = 0; r < n_rows; r++) {
    truncated[r] = 0;
    if (primary && !primary[r]) {
      status[r] = 1;
      out_off[r + 1] = k;
      continue;
    }
    int32_t s = indptr[r], e = indptr[r + 1];
    double total = 0;
    int32_t expressed = 0, m = 0;
    for (int32_t j = s; j < e; j++) {
      double x = data_is_f64 ? d64[j] : (double)d32[j];
      if (!(x >= 0 && x < __builtin_inf())) {
        err_row = r; err_col = indices[j]; err_value = x;
        return 1;
      }
      if (!allow_non_integer && x != __builtin_floor(x)) {
        err_row = r; err_col = indices[j]; err_value = x;
        return 2;
      }
      if (x > 0) {
        total += x;
        expressed++;
        int32_t t = col_token[indices[j]];
        if (t >= 0) {
          if (m >= MAXN) { err_row = r; err_col = -1; err_value = m; return 3; }
          tokens[m] = t;
          counts_tmp[m] = (double)(float)x;
          values[m] = col_median[indices[j]]; /* the median, for now */
          m++;
        }
      }
    }
    if (row_total) total = row_total[r]; /* n_counts given (preprocessed cells: over all genes of the input) */
    if (total == 0) { status[r] = 2; out_off[r + 1] = k; continue; }
    if (expressed < min_genes) { status[r] = 3; out_off[r + 1] = k; continue; }
    if (m == 0) { status[r] = 4; out_off[r + 1] = k; continue; }
    for (int32_t i = 0; i < m; i++) values[i] = ((counts_tmp[i] / total) * target_sum) / values[i];
    if (cls_id >= 0) out_tok[k++] = cls_id;
    k += rank_core(m, room, out_tok + k);
    if (eos_id >= 0) out_tok[k++] = eos_id;
    truncated[r] = m > room;
    status[r] = 0;
    out_off[r + 1] = k;
  }
  return 0;
}

/* ---- crick t-digest accumulation (the hot path of gm preprocess) -----------------------------
 *
 * A port of packages/data/src/tdigest.ts's DigestSet add/flush (itself a port of crick's merging
 * t-digest), operating on the SAME memory layout, so the TypeScript class keeps owning the state
 * (queries, merges, serialisation) and only adding values runs here. Every operation is in the same
 * order as the TypeScript code; asin comes from the host (Math.asin) and sqrt is IEEE-exact in both,
 * so the two produce bit-identical digests (tests compare them).
 */
__attribute__((import_module("env"), import_name("asin"))) double host_asin(double);

static double *TD;           /* per digest: B buffer means, B buffer weights, cap means, cap weights */
static int32_t *TD_NCENT, *TD_NBUF;
static uint8_t *TD_NONUNIT;
static double *TD_TOTALW, *TD_BUFW, *TD_MINV, *TD_MAXV;
static int32_t TD_STRIDE, TD_B, TD_CAP;
static double TD_C, TD_COSPC, TD_SINPC, TD_QFIRST, TD_QALWAYS;
#define TD_SCRATCH 4096
static double sM[TD_SCRATCH], sW[TD_SCRATCH];
#define Q_MARGIN 1e-9
#define PI 3.141592653589793
#define PI_2 1.5707963267948966

__attribute__((export_name("digest_init"))) void digest_init(double *data, int32_t *ncent, int32_t *nbuf, uint8_t *nonunit, double *totalw,
    double *bufw, double *minv, double *maxv, int32_t stride, int32_t B, int32_t cap, double c, double cosPc, double sinPc,
    double qFirst, double qAlways) {
  TD = data; TD_NCENT = ncent; TD_NBUF = nbuf; TD_NONUNIT = nonunit; TD_TOTALW = totalw; TD_BUFW = bufw;
  TD_MINV = minv; TD_MAXV = maxv; TD_STRIDE = stride; TD_B = B; TD_CAP = cap; TD_C = c; TD_COSPC = cosPc;
  TD_SINPC = sinPc; TD_QFIRST = qFirst; TD_QALWAYS = qAlways;
}

static double td_scale(double c, double q) {
  q = q > 1 ? 1 : q;
  return (c * (host_asin(2 * q - 1) + PI_2)) / PI;
}

/* returns the number of centroids, or -1 when the capacity would be exceeded */
static int32_t td_compress(int32_t p, double *dst, int32_t dm0, int32_t dw0, double W) {
  const double c = TD_C;
  const double invW = 1 / W;
  const double qAlwaysLo = TD_QALWAYS - Q_MARGIN;
  const double qAlwaysHi = TD_QALWAYS + Q_MARGIN;
  int32_t out = 1;
  double curM = sM[0], curW = sW[0], wsf = curW, q1 = 0, k1 = 0;
  int k1Known = 1;
  double qLo = TD_QFIRST - Q_MARGIN, qHi = TD_QFIRST + Q_MARGIN;
  for (int32_t k = 1; k < p; k++) {
    const double u = sM[k], w = sW[k];
    const double q2 = (wsf + w) * invW;
    int fold;
    if (q2 <= qLo) fold = 1;
    else if (q2 >= qHi) fold = 0;
    else {
      if (!k1Known) { k1 = td_scale(c, q1); k1Known = 1; }
      fold = td_scale(c, (wsf + w) / W) - k1 <= 1;
    }
    if (fold) {
      curW += w;
      curM += ((u - curM) * w) / curW;
    } else {
      dst[dm0 + out - 1] = curM;
      dst[dw0 + out - 1] = curW;
      if (out >= TD_CAP) return -1;
      out++;
      curM = u;
      curW = w;
      q1 = wsf / W;
      k1Known = 0;
      if (q1 > qAlwaysHi) { qLo = __builtin_inf(); qHi = __builtin_inf(); }
      else if (q1 >= qAlwaysLo) { qLo = -__builtin_inf(); qHi = __builtin_inf(); }
      else {
        const double t = 0.5 + 0.5 * (2 * q1 - 1) * TD_COSPC + __builtin_sqrt(q1 * (1 - q1)) * TD_SINPC;
        qLo = t - Q_MARGIN;
        qHi = t + Q_MARGIN;
      }
    }
    wsf += w;
  }
  dst[dm0 + out - 1] = curM;
  dst[dw0 + out - 1] = curW;
  return out;
}

static int32_t td_flush(int32_t i) {
  double *d = TD;
  const int32_t base = i * TD_STRIDE;
  const int32_t nb = TD_NBUF[i];
  if (nb == 0) return 0;
  const int32_t B = TD_B;
  const int32_t b0 = base, bEnd = b0 + nb;
  if (TD_NONUNIT[i] == 0) {
    for (int32_t a = b0 + 1; a < bEnd; a++) {
      const double m = d[a];
      int32_t b = a - 1;
      while (b >= b0) {
        const double v = d[b];
        if (!(m < v)) break;
        d[b + 1] = v;
        b--;
      }
      d[b + 1] = m;
    }
  } else {
    for (int32_t a = b0 + 1; a < bEnd; a++) {
      const double m = d[a], w = d[a + B];
      int32_t b = a - 1;
      while (b >= b0) {
        const double v = d[b];
        if (!(m < v)) break;
        d[b + 1] = v;
        d[b + 1 + B] = d[b + B];
        b--;
      }
      d[b + 1] = m;
      d[b + 1 + B] = w;
    }
    TD_NONUNIT[i] = 0;
  }
  if (TD_MINV[i] > d[b0]) TD_MINV[i] = d[b0];
  if (TD_MAXV[i] < d[bEnd - 1]) TD_MAXV[i] = d[bEnd - 1];
  const double W = TD_TOTALW[i] + TD_BUFW[i];
  TD_TOTALW[i] = W;
  TD_BUFW[i] = 0;
  const int32_t cap = TD_CAP;
  const int32_t c0 = b0 + 2 * B, cEnd = c0 + TD_NCENT[i];
  int32_t p = 0, bi = b0, ci = c0;
  while (bi < bEnd && ci < cEnd) {
    const double bm = d[bi], cm = d[ci];
    if (bm < cm) { sM[p] = bm; sW[p] = d[bi + B]; bi++; }
    else { sM[p] = cm; sW[p] = d[ci + cap]; ci++; }
    p++;
  }
  for (; bi < bEnd; bi++, p++) { sM[p] = d[bi]; sW[p] = d[bi + B]; }
  for (; ci < cEnd; ci++, p++) { sM[p] = d[ci]; sW[p] = d[ci + cap]; }
  const int32_t n = td_compress(p, d, c0, c0 + cap, W);
  if (n < 0) return -1;
  TD_NCENT[i] = n;
  TD_NBUF[i] = 0;
  return 0;
}

/* Adds vals[0..n) (unit weight, in order) to digest i; non-finite values are skipped. 0 or -1. */
__attribute__((export_name("digest_add_run"))) int32_t digest_add_run(int32_t i, const double *vals, int32_t n) {
  double *d = TD;
  const int32_t base = i * TD_STRIDE;
  for (int32_t k = 0; k < n; k++) {
    const double x = vals[k];
    if (x - x != 0) continue;
    int32_t nb = TD_NBUF[i];
    if (nb == TD_B) {
      if (td_flush(i) < 0) return -1;
      nb = 0;
    }
    d[base + nb] = x;
    d[base + nb + TD_B] = 1;
    TD_NBUF[i] = nb + 1;
    TD_BUFW[i] += 1;
  }
  return 0;
}
