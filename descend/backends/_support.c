/* What every optimizer needs beside its chain's kernels: the finiteness check of the gradients and the
 * per-parameter step counters.  (A chain's own math is never written here: its kernels are generated,
 * descend/backends/c.py.)  Built by descend/backends/build.py. */
#include "_prelude.h"

/* 1 if no element of the nt contiguous tensors x[i] (n[i] elements each) is NaN or ±inf. */
int all_finite_f32(int nt, const float **x, const int64_t *n, int threads) {
  int bad = 0;
  FOR_EACH_SLICE(nt, n, threads, {
    const float *X = x[i];
    uint32_t found = 0;
    for (int64_t j = lo; j < hi; j++) found |= nonfinite_f32(X[j]);
    REPORT(found);
  });
  return !bad;
}

int all_finite_f64(int nt, const double **x, const int64_t *n, int threads) {
  int bad = 0;
  FOR_EACH_SLICE(nt, n, threads, {
    const double *X = x[i];
    uint32_t found = 0;
    for (int64_t j = lo; j < hi; j++) found |= nonfinite_f64(X[j]);
    REPORT(found);
  });
  return !bad;
}

/* 16-bit tensors: NaN and ±inf have every exponent bit set (bfloat16: 0x7f80, float16: 0x7c00).  The
 * caller passes a bfloat16 tensor's size as n[i] > 0 and a float16 tensor's as n[i] < 0 (−n elements). */
int all_finite_u16(int nt, const uint16_t **x, const int64_t *n, int threads) {
  int bad = 0;
  int64_t *sizes = malloc(sizeof(int64_t) * (nt > 0 ? nt : 1));
  for (int i = 0; i < nt; i++) sizes[i] = n[i] < 0 ? -n[i] : n[i];
  FOR_EACH_SLICE(nt, sizes, threads, {
    const uint16_t *X = x[i];
    const uint16_t mask = n[i] < 0 ? 0x7c00u : 0x7f80u;
    uint32_t found = 0;
    for (int64_t j = lo; j < hi; j++) found |= (X[j] & mask) == mask;
    REPORT(found);
  });
  free(sizes);
  return !bad;
}

/* t ← t + 1 for every float32 step counter; out[i] = the new t. */
void count_steps(int nt, float **steps, double *out) {
  for (int i = 0; i < nt; i++) out[i] = ++*steps[i];
}

/* Which float16 block conversion the kernels were built with: 2 AVX-512, 1 F16C, 0 the integer one. */
int f16_path(void) { return F16_PATH; }

