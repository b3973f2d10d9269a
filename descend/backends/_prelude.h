/* What every descend kernel shares: the split of a param group's tensors over the threads, the work items
 * of multi-pass kernels, the non-finite test, 16-bit conversions and stochastic rounding.  Included by the
 * generated chain kernels (descend/backends/c.py) and the support kernels (_support.c).  Built by
 * descend/backends/build.py. */
#ifndef DESCEND_PRELUDE_H
#define DESCEND_PRELUDE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define INLINE static inline __attribute__((always_inline))

/* Below this many elements a step runs on one thread: forking costs more than it saves. */
#define PARALLEL_MIN 32768

static inline int threads_for(int64_t total, int threads) { return total < PARALLEL_MIN ? 1 : threads; }

/* Below this many elements a multi-pass kernel's small tensors are all updated on one thread: waking the
 * others costs more than their share (milliseconds, on a machine whose cores are busy). */
#define BLOCKS_PARALLEL_MIN (8 * PARALLEL_MIN)

static inline int64_t total_size(int nt, const int64_t *n) {
  int64_t total = 0;
  for (int i = 0; i < nt; i++) total += n[i];
  return total;
}

/* Runs the body for every (tensor i, element range [lo, hi)) of this thread's even share of
 * the concatenated tensors: 1000 small tensors cost one call and one parallel region. */
#define FOR_EACH_SLICE(nt, n, threads, ...)                                      \
  do {                                                                           \
    int64_t total_ = total_size(nt, n);                                          \
    _Pragma("omp parallel num_threads(threads_for(total_, threads))") {          \
      int64_t tid_ = omp_get_thread_num(), nth_ = omp_get_num_threads();         \
      int64_t begin_ = total_ * tid_ / nth_, end_ = total_ * (tid_ + 1) / nth_;  \
      int64_t base_ = 0;                                                         \
      for (int i = 0; i < (nt) && base_ < end_; base_ += (n)[i], i++) {          \
        int64_t lo = begin_ > base_ ? begin_ - base_ : 0;                        \
        int64_t hi = end_ - base_ < (n)[i] ? end_ - base_ : (n)[i];              \
        if (lo < hi) { __VA_ARGS__ }                                             \
      }                                                                          \
    }                                                                            \
  } while (0)

/* After a FOR_EACH_SLICE body found a non-finite gradient (`found` nonzero): remember it in `bad`. */
#define REPORT(found)                      \
  do {                                     \
    if (found) {                           \
      _Pragma("omp atomic write") bad = 1; \
    }                                      \
  } while (0)

/* 1 for NaN and ±inf: the numbers whose exponent bits are all set. */
INLINE uint32_t nonfinite_f32(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7f800000u) == 0x7f800000u;
}

INLINE uint32_t nonfinite_f64(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
}

/* bfloat16 is the top half of a float32: widening is exact; narrowing rounds to nearest, ties to even
 * (as torch does), and keeps NaN a NaN. */
INLINE float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float x;
  memcpy(&x, &bits, sizeof x);
  return x;
}

INLINE uint16_t f32_to_bf16(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

/* float16 is kept as its bits (uint16_t) and converted in blocks: AVX-512 (_mm512_cvtph_ps / _mm512_cvtps_ph,
 * 16 at a time) where the kernel is built with it, F16C (8 at a time) otherwise, and the integer conversion
 * below for the tails and where neither is available (or DESCEND_F16_PORTABLE is defined).  All of them give
 * the same bits (tests/test_float16.py checks every half and every float): widening is exact, a NaN stays a
 * quiet NaN with its payload; narrowing rounds to nearest, ties to even, overflows to ±inf and keeps a NaN's
 * sign and the top of its payload, quieted.  (These are the bits gcc's `_Float16` casts give.) */
#if !defined(DESCEND_F16_PORTABLE) && (defined(__AVX512F__) || defined(__F16C__))
#include <immintrin.h>
#endif
#if !defined(DESCEND_F16_PORTABLE) && defined(__AVX512F__)
#define F16_PATH 2
#elif !defined(DESCEND_F16_PORTABLE) && defined(__F16C__)
#define F16_PATH 1
#else
#define F16_PATH 0
#endif
#define F16_BLOCK 512 /* elements of a float16 role widened at once in a kernel's element loop */

INLINE float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1fu) { /* ±inf, NaN (quieted) */
    bits = 0x7f800000u | (mantissa << 13) | (mantissa ? 0x400000u : 0u);
  } else if (exponent == 0) { /* ±0 and subnormals: mantissa · 2^-24, a normal float, exactly */
    const float value = (float)mantissa * 0x1p-24f;
    memcpy(&bits, &value, sizeof bits);
  } else {
    bits = ((exponent + 112u) << 23) | (mantissa << 13);
  }
  bits |= sign;
  float x;
  memcpy(&x, &bits, sizeof x);
  return x;
}

INLINE uint16_t f32_to_f16(float x) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  const uint32_t sign = (bits >> 16) & 0x8000u, a = bits & 0x7fffffffu;
  uint32_t h;
  if (a > 0x7f800000u) { /* NaN: quiet, the top 10 bits of the payload */
    h = 0x7e00u | ((a >> 13) & 0x3ffu);
  } else if (a >= 0x477ff000u) { /* at least 65520 (halfway past the largest half, 65504): ±inf */
    h = 0x7c00u;
  } else if (a >= 0x38800000u) { /* a normal half: drop 13 bits, to nearest, ties to even */
    h = (a + 0xfffu + ((a >> 13) & 1u)) >> 13;
    h -= 112u << 10;
  } else if (a >= 0x33000000u) { /* a subnormal half (or the smallest normal, rounded up): a · 2^24 */
    const uint32_t exponent = a >> 23, mantissa = (a & 0x7fffffu) | 0x800000u, shift = 126u - exponent;
    const uint32_t kept = mantissa >> shift, rest = mantissa & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    h = kept + (rest > halfway || (rest == halfway && (kept & 1u)));
  } else { /* below half the smallest subnormal, 2^-25 (which itself ties to 0): ±0 */
    h = 0;
  }
  return (uint16_t)(sign | h);
}

/* dst[0..n) = src[0..n) widened; and narrowed. */
INLINE void f16_widen(const uint16_t *restrict src, float *restrict dst, int64_t n) {
  int64_t k = 0;
#if F16_PATH == 2
  for (; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + k))));
#elif F16_PATH == 1
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + k))));
#endif
  for (; k < n; k++) dst[k] = f16_to_f32(src[k]);
}

INLINE void f16_narrow(const float *restrict src, uint16_t *restrict dst, int64_t n) {
  int64_t k = 0;
#if F16_PATH == 2
  for (; k + 16 <= n; k += 16)
    _mm256_storeu_si256((__m256i *)(dst + k),
                        _mm512_cvtps_ph(_mm512_loadu_ps(src + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif F16_PATH == 1
  for (; k + 8 <= n; k += 8)
    _mm_storeu_si128((__m128i *)(dst + k),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + k), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; k < n; k++) dst[k] = f32_to_f16(src[k]);
}

/* Stochastic rounding into bfloat16 state (state_dtype=torch.bfloat16): adding 16 random bits below the
 * kept ones before truncating rounds up with probability equal to the dropped fraction, so the stored
 * value is unbiased and a slow EMA (β = 0.999) still moves; round-to-nearest would freeze it.  The bits are
 * one hash per element and update, of the element's offset and the parameter's step count (the murmur3
 * finaliser: two multiplies), shared by all the element's state entries: lanes 0 and 1 take its low and
 * high halves, lanes 2p and 2p+1 (p >= 1) those of sr_more(h, p), one multiply more.  descend.plan.state
 * computes the same on the reference path. */
INLINE uint32_t sr_seed(double t) { return (uint32_t)(int64_t)t * 0x165667B1u + 0x27D4EB2Fu; }

INLINE uint32_t sr_bits(int64_t j, uint32_t seed) {
  uint32_t x = (uint32_t)j + seed;
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

INLINE uint32_t sr_more(uint32_t h, uint32_t pair) {
  uint32_t x = h ^ (pair * 0x9E3779B9u);
  x ^= x >> 15;
  x *= 0x2C1B3C6Du;
  x ^= x >> 12;
  return x;
}

INLINE uint16_t f32_to_bf16_stochastic(float x, uint32_t random) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
  bits += random & 0xffffu;
  return (uint16_t)(bits >> 16);
}

/* The work items of a multi-pass kernel: a tensor is a stack of B matrices N×M (a flat tensor: rows of
 * ITEM_WIDTH elements, the last one short).  An item is a run of whole rows of one tensor; its partial sums
 * are added in item order, and items depend on the shapes alone, so the sums are the same bits for any
 * number of threads.  A matrix of at least ITEM_WIDTH elements is split into up to MAX_SPLIT blocks of
 * rows, each with its own column partial sums (part >= 0, at offset `part` of the partial buffers); smaller
 * matrices go whole, several to an item (part = -1: column sums are written directly). */
#define ITEM_WIDTH 16384
#define PREFETCH 1024 /* elements ahead a pass's first walk over a row asks the cache for (prefetch never faults) */
#define BACKWARD_MIN (1 << 22) /* elements past which a pass walks its items last to first (c.py: item_pass) */
#define LANES 8 /* the partial sums of a row or an item: element j adds into lane (j - row start) % LANES */
#define MAX_SPLIT 64
_Static_assert(F16_BLOCK % LANES == 0, "a float16 block must keep every element in its reduction lane");

typedef struct {
  int32_t i;   /* the tensor */
  int64_t r0;  /* its rows [r0, r1) */
  int64_t r1;
  int64_t part; /* offset of this item's column partials, or -1 */
} item_t;

static inline int64_t rows_of(const int64_t *shape, int i, int factored) {
  const int64_t n = shape[3 * i] * shape[3 * i + 1] * shape[3 * i + 2];
  return factored ? shape[3 * i] * shape[3 * i + 1] : (n + ITEM_WIDTH - 1) / ITEM_WIDTH;
}

static inline int64_t width_of(const int64_t *shape, int i, int factored) {
  return factored ? shape[3 * i + 2] : ITEM_WIDTH;
}

/* The items of all tensors, in order; *count items, *parts doubles of column partials per column sum. */
static item_t *make_items(int nt, const int64_t *shape, int factored, int64_t *count, int64_t *parts) {
  int64_t capacity = 16, used = 0, part = 0;
  item_t *items = malloc(capacity * sizeof(item_t));
  for (int i = 0; i < nt; i++) {
    const int64_t B = shape[3 * i], N = shape[3 * i + 1], M = shape[3 * i + 2];
    if (B * N * M == 0) continue;
    int64_t pieces, step;
    if (!factored) { /* rows of ITEM_WIDTH: up to MAX_SPLIT items */
      const int64_t rows = rows_of(shape, i, 0);
      pieces = rows < MAX_SPLIT ? rows : MAX_SPLIT;
      for (int64_t k = 0; k < pieces; k++) {
        if (used == capacity) items = realloc(items, (capacity *= 2) * sizeof(item_t));
        items[used++] = (item_t){i, rows * k / pieces, rows * (k + 1) / pieces, -1};
      }
      continue;
    }
    if (N * M >= ITEM_WIDTH) { /* big matrices: blocks of rows, each with column partials */
      pieces = N * M / ITEM_WIDTH;
      pieces = pieces > MAX_SPLIT ? MAX_SPLIT : pieces > N ? N : pieces;
      for (int64_t b = 0; b < B; b++)
        for (int64_t k = 0; k < pieces; k++) {
          if (used == capacity) items = realloc(items, (capacity *= 2) * sizeof(item_t));
          items[used++] = (item_t){i, b * N + N * k / pieces, b * N + N * (k + 1) / pieces, pieces > 1 ? part : -1};
          if (pieces > 1) part += M;
        }
      continue;
    }
    step = ITEM_WIDTH / (N * M); /* small matrices: several whole ones to an item */
    for (int64_t b = 0; b < B; b += step) {
      if (used == capacity) items = realloc(items, (capacity *= 2) * sizeof(item_t));
      items[used++] = (item_t){i, b * N, (b + step < B ? b + step : B) * N, -1};
    }
  }
  *count = used;
  *parts = part;
  return items;
}

/* Memory a kernel keeps from one call to the next, per thread: slot k is at least n doubles.  A multi-pass
 * kernel's temporaries, partial sums and column partials (O(rows + columns) per tensor) are reused, not
 * allocated, their pages faulted in and zeroed, on every step.  Each kernel library has its own slots. */
#define SCRATCH_SLOTS 64
static __thread double *scratch_at[SCRATCH_SLOTS];
static __thread int64_t scratch_size[SCRATCH_SLOTS];

static inline double *scratch(int slot, int64_t n) {
  if (n < 1) n = 1;
  if (scratch_size[slot] < n) {
    free(scratch_at[slot]);
    scratch_at[slot] = malloc(sizeof(double) * n);
    scratch_size[slot] = scratch_at[slot] ? n : 0;
  }
  return scratch_at[slot];
}

/* NaN-propagating maximum, as torch.amax. */
INLINE double max_nan(double a, double b) { return (a > b || a != a) ? a : b; }


/* 8-bit block-quantised state (state_dtype="8bit"; descend/plan/blockwise.py defines it in torch ops): a block
 * of Q8_BLOCK values is Q8_BLOCK codes and one scale, value = map[code] * scale.  Storing takes the block's
 * absolute maximum (NaN if any value is NaN; at least 1e-12) as its scale, and for each quotient x / scale
 * the nearest code.  With AVX-512 (F16_PATH 2) the search runs 16 quotients at a time, its 256-entry tables
 * read by register permutes (no gathers: they are far slower on the CPUs here): a candidate from the
 * quotient's decade, then one comparison with a boundary (blockwise.vector_codes).  Elsewhere (or with
 * DESCEND_F16=portable) each quotient's code comes from a cell of its float32 bits (blockwise.cells).  Both
 * give the codes of blockwise.quantise.  A kernel with 8-bit state defines the Q8_* constants before this
 * file and its tables (q8_map_t) after it. */
#ifdef Q8_CELL_BITS
#define Q8_BLOCK 256

typedef struct {
  const float *map, *boundary, *a, *c, *decade; /* map[256]; [-inf, B_0..B_254]; per decade (16); thresholds (6) */
  const int32_t *count, *base, *negative;      /* per decade (16) */
  const uint8_t *code;                          /* the portable search's cells */
  const uint16_t *threshold;
  int is_signed;
} q8_map_t;

#if F16_PATH == 2
/* table[index] for a 256-entry float table, 16 lanes. */
INLINE __m512 q8_lookup(const float *restrict table, __m512i index) {
  __m512 r[8];
  for (int q = 0; q < 8; q++)
    r[q] = _mm512_permutex2var_ps(_mm512_loadu_ps(table + 32 * q), index, _mm512_loadu_ps(table + 32 * q + 16));
  const __mmask16 m5 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(32));
  const __mmask16 m6 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(64));
  const __mmask16 m7 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(128));
  const __m512 s0 = _mm512_mask_blend_ps(m5, r[0], r[1]), s1 = _mm512_mask_blend_ps(m5, r[2], r[3]);
  const __m512 s2 = _mm512_mask_blend_ps(m5, r[4], r[5]), s3 = _mm512_mask_blend_ps(m5, r[6], r[7]);
  return _mm512_mask_blend_ps(m7, _mm512_mask_blend_ps(m6, s0, s1), _mm512_mask_blend_ps(m6, s2, s3));
}
#endif

INLINE void q8_load(const uint8_t *restrict codes, float scale, const q8_map_t *q, float *restrict dst, int64_t n) {
  int64_t k = 0;
#if F16_PATH == 2
  const __m512 s = _mm512_set1_ps(scale);
  for (; k + 16 <= n; k += 16) {
    const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + k)));
    _mm512_storeu_ps(dst + k, _mm512_mul_ps(q8_lookup(q->map, c), s));
  }
#endif
  for (; k < n; k++) dst[k] = q->map[codes[k]] * scale;
}

/* The portable search: the code of a quotient's cell (sign, exponent, top Q8_CELL_BITS mantissa bits), plus
 * one where its remaining bits reach the cell's threshold. */
INLINE uint8_t q8_code(float x, const q8_map_t *q) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  int32_t e = (int32_t)((bits >> 23) & 0xffu) - Q8_TINY_EXPONENT;
  e = e < 0 ? 0 : e > Q8_EXPONENTS - 1 ? Q8_EXPONENTS - 1 : e;
  const uint32_t sign = bits >> 31, low = bits & Q8_LOW;
  const uint32_t mantissa = e ? (bits >> Q8_LOW_BITS) & ((1u << Q8_CELL_BITS) - 1u) : 0u;
  const uint32_t cell = x != x ? Q8_NAN_CELL : (((sign * Q8_EXPONENTS + (uint32_t)e) << Q8_CELL_BITS) | mantissa);
  return (uint8_t)(q->code[cell] + ((sign ? Q8_LOW - low : low) >= q->threshold[cell]));
}

INLINE void q8_store(const float *restrict src, uint8_t *restrict codes, float *restrict scale, const q8_map_t *q,
                     int64_t n) {
  float m = 0.0f;
  int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
  for (int64_t k = 0; k < n; k++) {
    const float a = fabsf(src[k]);
    m = m > a ? m : a;
    nan |= a != a;
  }
  if (nan) m = NAN;
  else if (m < 1e-12f) m = 1e-12f;
  *scale = m;
  int64_t k = 0;
#if F16_PATH == 2
  const __m512 vm = _mm512_set1_ps(m), half = _mm512_set1_ps(0.5f), zero = _mm512_setzero_ps();
  const __m512i one = _mm512_set1_epi32(1), minus_one = _mm512_set1_epi32(-1), none = _mm512_setzero_si512();
  const __m512 a = _mm512_loadu_ps(q->a), c = _mm512_loadu_ps(q->c);
  const __m512i count = _mm512_loadu_si512(q->count), base = _mm512_loadu_si512(q->base);
  const __m512i negative = _mm512_loadu_si512(q->negative);
  for (; k + 16 <= n; k += 16) {
    const __m512 x = _mm512_div_ps(_mm512_loadu_ps(src + k), vm), ax = _mm512_abs_ps(x);
    __m512i d = none;
    for (int e = 0; e < 6; e++)
      d = _mm512_mask_add_epi32(d, _mm512_cmp_ps_mask(ax, _mm512_set1_ps(q->decade[e]), _CMP_GE_OQ), d, one);
    const __m512 t = _mm512_sub_ps(_mm512_mul_ps(ax, _mm512_permutexvar_ps(d, a)), _mm512_permutexvar_ps(d, c));
    const __m512i n_d = _mm512_permutexvar_epi32(d, count);
    __m512i f = _mm512_cvt_roundps_epi32(_mm512_sub_ps(t, half), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    f = _mm512_min_epi32(_mm512_max_epi32(f, minus_one), _mm512_sub_epi32(n_d, one));
    __m512i low = _mm512_add_epi32(_mm512_permutexvar_epi32(d, base), f);
    const __mmask16 below_zero = _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
    if (q->is_signed) {
      __m512i g = _mm512_cvt_roundps_epi32(_mm512_add_ps(t, half), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
      g = _mm512_min_epi32(_mm512_max_epi32(g, none), n_d);
      low = _mm512_mask_mov_epi32(low, below_zero, _mm512_sub_epi32(_mm512_permutexvar_epi32(d, negative), g));
    } else {
      low = _mm512_mask_mov_epi32(low, below_zero, minus_one);
    }
    const __m512 boundary = q8_lookup(q->boundary, _mm512_add_epi32(low, one));
    __m512i code = _mm512_mask_add_epi32(low, _mm512_cmp_ps_mask(x, boundary, _CMP_GE_OQ), low, one);
    code = _mm512_mask_mov_epi32(code, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), none);
    _mm_storeu_si128((__m128i *)(codes + k), _mm512_cvtepi32_epi8(code));
  }
#endif
  for (; k < n; k++) codes[k] = q8_code(src[k] / m, q);
}
#endif

/* FOR_EACH_SLICE, with every thread's share starting and ending on a multiple of `align` elements of the
 * concatenated tensors (each a whole number of `align` elements long): blocks are never split. */
#define FOR_EACH_ALIGNED_SLICE(nt, n, threads, align, ...)                                        \
  do {                                                                                            \
    int64_t total_ = total_size(nt, n);                                                           \
    _Pragma("omp parallel num_threads(threads_for(total_, threads))") {                           \
      int64_t tid_ = omp_get_thread_num(), nth_ = omp_get_num_threads();                          \
      int64_t begin_ = (total_ / (align)) * tid_ / nth_ * (align);                                \
      int64_t end_ = (total_ / (align)) * (tid_ + 1) / nth_ * (align);                            \
      int64_t base_ = 0;                                                                          \
      for (int i = 0; i < (nt) && base_ < end_; base_ += (n)[i], i++) {                           \
        int64_t lo = begin_ > base_ ? begin_ - base_ : 0;                                         \
        int64_t hi = end_ - base_ < (n)[i] ? end_ - base_ : (n)[i];                               \
        if (lo < hi) { __VA_ARGS__ }                                                              \
      }                                                                                           \
    }                                                                                             \
  } while (0)

#endif
