/* What every descend kernel shares: the split of a param group's tensors over the threads, the
 * non-finite test, and 16-bit conversions.  Included by the generated chain kernels (descend/codegen.py)
 * and by the hand-written ones (_kernels.c).  Built by descend/native.py. */
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

/* Stochastic rounding into bfloat16 state (state_dtype=torch.bfloat16): adding 16 random bits below the
 * kept ones before truncating rounds up with probability equal to the dropped fraction, so the stored
 * value is unbiased and a slow EMA (β = 0.999) still moves; round-to-nearest would freeze it.  The bits are
 * a hash of the element's offset, the step and the state entry, the same as descend.transforms.store_state
 * computes on the reference path. */
INLINE uint32_t sr_seed(uint32_t salt, double t) { return salt * 0x27D4EB2Fu + (uint32_t)(int64_t)t * 0x165667B1u; }

INLINE uint32_t sr_bits(int64_t j, uint32_t seed) {
  uint32_t x = (uint32_t)j * 0x9E3779B1u + seed;
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

INLINE uint16_t f32_to_bf16_stochastic(float x, uint32_t random) {
  uint32_t bits;
  memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
  bits += random & 0xffffu;
  return (uint16_t)(bits >> 16);
}

#endif
