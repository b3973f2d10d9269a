/* The hand-written CPU kernels: the finiteness check, the step counter, and Adafactor, whose factored
 * second moment and update clipping reduce over whole matrices (the elementwise chains get kernels
 * generated from their formulas: descend/codegen.py).  Adafactor's kernel computes exactly the chain
 * `Adafactor.kernel_chain` declares, and runs only where `chain(group)` equals it.
 *
 * A step kernel returns 1 when all gradients it read were finite, 0 when one held NaN or ±inf: the
 * non-finite check rides along with the update's own read of the gradient, so it moves no extra bytes.
 *
 * This file includes itself once per element type (float, double).  Built by descend/native.py.
 */
#ifndef T

#include "_prelude.h"

/* How many chunks Adafactor's sums over `units` rows (of `width` elements) are split into: a function of the
 * shape alone, so that the sums, added chunk by chunk in order, do not depend on the number of threads. */
static int64_t adafactor_chunks(int64_t units, int64_t width) {
  int64_t chunks = units * width / 4096;
  chunks = chunks < 1 ? 1 : chunks > 64 ? 64 : chunks;
  return chunks < units ? chunks : units;
}


/* t ← t + 1 for every float32 step counter; out[i] = the new t. */
void count_steps(int nt, float **steps, double *out) {
  for (int i = 0; i < nt; i++) out[i] = ++*steps[i];
}

#define T float
#define S(name) name##_f32
#define SQRT sqrtf
#define BITS uint32_t
#define EXPONENT 0x7f800000u
#include "_kernels.c"
#undef T
#undef S
#undef SQRT
#undef BITS
#undef EXPONENT

#define T double
#define S(name) name##_f64
#define SQRT sqrt
#define BITS uint64_t
#define EXPONENT 0x7ff0000000000000ull
#include "_kernels.c"

#else /* the kernels, for element type T */

/* 1 if every element is finite. */
int S(all_finite)(int nt, T **x, const int64_t *n, int threads) {
  int bad = 0;
  FOR_EACH_SLICE(nt, n, threads, {
    const T *X = x[i];
    BITS found = 0;
    for (int64_t j = lo; j < hi; j++) found |= S(nonfinite)(X[j]);
    REPORT(found);
  });
  return !bad;
}

/* Adafactor = [FactoredSecondMoment, ClipByRms, AdafactorStepSize, Momentum(EMA)?, DecoupledWeightDecay?]
 * for one tensor of `batch` matrices rows×cols (a vector or scalar: batch = rows = 1, unfactored, `row` NULL),
 * on `nth` threads.  Two passes over G: the moments (with what RMS(U) needs), then the update. */
static BITS S(adafactor_one)(T *p, const T *g, T *row, T *col, T *v, T *m, int64_t batch, int64_t rows, int64_t cols,
                             double beta2, double eps1, double eps2, double step_size, int scale_parameter,
                             double clip, double beta1, double wd, int maximize, int nth) {
  const int64_t total = batch * rows * cols;
  const int factored = row != NULL;
  if (total == 0) return 0;
  /* Pass 1: R ← β·R + (1-β)·mean over columns of (G²+ε₁), C likewise over rows, or the full
   * V ← β·V + (1-β)(G²+ε₁); Σθ² for RMS(θ); and what RMS(U) needs, so that no pass reads G for it alone.
   * Factored, U² = G²·mean(R)/(R_i·C_c), so ΣU² = mean(R)·Σ_c (1/C_c)·D_c with D_c = Σ_i G²_ic/R_i: row i's
   * share of D is added while the row is still in L1, right after R_i is known.  Unfactored, U² = G²/V.
   * Also the factors of 1/√V̂ for element (br, c): row_f[br]·col_f[(br/rows)·cols + c], with
   * 1/√V̂ = (1/√(R/mean R))(1/√C), or 1·(1/√v[j]) unfactored. */
  double param_squares = 0, update_squares = 0;
  BITS found = 0;
  T *row_f = malloc((factored ? batch * rows : 1) * sizeof(T));
  T *col_f = malloc((factored ? batch * cols : total) * sizeof(T));
  /* The sums are taken over a fixed number of contiguous chunks (set by the shape, not the thread count),
   * each summed in order by one thread, and the chunks' sums are added in order: the same bits for any
   * number of threads (threads only decide who sums which chunk). */
  const int64_t units = factored ? batch * rows : total;  /* rows, or elements */
  const int64_t chunks = adafactor_chunks(units, factored ? cols : 1);
  double *param_part = calloc(2 * chunks, sizeof(double)), *update_part = param_part + chunks;
  if (!factored) {
    row_f[0] = 1;
#pragma omp parallel for schedule(static) num_threads(nth) reduction(| : found)
    for (int64_t k = 0; k < chunks; k++) {
      double squares = 0, updates = 0;
      BITS chunk_found = 0;
#pragma omp simd reduction(+ : squares, updates) reduction(| : chunk_found)
      for (int64_t j = total * k / chunks; j < total * (k + 1) / chunks; j++) {
        chunk_found |= S(nonfinite)(g[j]);
        T vj = beta2 * v[j] + (1 - beta2) * (g[j] * g[j] + (T)eps1);
        v[j] = vj;
        col_f[j] = 1 / SQRT(vj);
        squares += (double)p[j] * p[j];
        updates += (double)(g[j] * g[j] / vj);
      }
      param_part[k] = squares, update_part[k] = updates;
      found |= chunk_found;
    }
    for (int64_t k = 0; k < chunks; k++) param_squares += param_part[k], update_squares += update_part[k];
  } else {
    double *col_sums = calloc(2 * batch * cols, sizeof(double)), *weighted_sums = col_sums + batch * cols;
    /* One matrix (batch = 1, the common case): chunk k also sums its rows' columns, Σ_i (G²_ic+ε₁) and
     * D_c = Σ_i G²_ic/R_i (row i's share added while the row is in L1, right after R_i is known), into its
     * own partials, which are added in chunk order below.  The partials are kept to a quarter of the matrix. */
    const int one_pass = batch == 1;
    int64_t row_chunks = chunks;
    while (one_pass && row_chunks > 1 && 2 * row_chunks * cols > total / 4) row_chunks /= 2;
    T *partial = one_pass ? calloc(2 * row_chunks * cols, sizeof(T)) : NULL;
    /* rows: R_i and Σθ², chunk by chunk */
#pragma omp parallel for schedule(static) num_threads(nth) reduction(| : found)
    for (int64_t k = 0; k < row_chunks; k++) {
      double squares_k = 0;
      T *restrict C = one_pass ? partial + 2 * k * cols : NULL, *restrict D = one_pass ? C + cols : NULL;
      for (int64_t br = units * k / row_chunks; br < units * (k + 1) / row_chunks; br++) {
        const T *restrict G = g + br * cols, *restrict Pr = p + br * cols;
        T row_sum = 0, squares = 0;
        BITS row_found = 0;
#pragma omp simd reduction(+ : row_sum, squares) reduction(| : row_found)
        for (int64_t c = 0; c < cols; c++) {
          row_found |= S(nonfinite)(G[c]);
          row_sum += G[c] * G[c] + (T)eps1;
          squares += Pr[c] * Pr[c];
        }
        squares_k += squares;
        found |= row_found;
        const T r = beta2 * row[br] + (1 - beta2) * (row_sum / cols), inv_r = 1 / r;
        row[br] = r;
        if (one_pass) {
#pragma omp simd
          for (int64_t c = 0; c < cols; c++) {
            const T s = G[c] * G[c];
            C[c] += s + (T)eps1;
            D[c] += s * inv_r;
          }
        }
      }
      param_part[k] = squares_k;
    }
    for (int64_t k = 0; k < row_chunks; k++) param_squares += param_part[k];
    if (one_pass) {
      for (int64_t k = 0; k < row_chunks; k++)
        for (int64_t c = 0; c < cols; c++) {
          col_sums[c] += partial[2 * k * cols + c];
          weighted_sums[c] += partial[(2 * k + 1) * cols + c];
        }
      free(partial);
    } else {
      /* a stack of matrices (conv kernels): each column block of each matrix summed down its rows in order
       * by one thread (a second read of G, which is small here) */
      const int64_t blocks = cols >= 1024 ? 16 : 1;
#pragma omp parallel for schedule(static) num_threads(nth)
      for (int64_t item = 0; item < batch * blocks; item++) {
        const int64_t b = item / blocks, q = item % blocks;
        const int64_t c0 = cols * q / blocks, c1 = cols * (q + 1) / blocks;
        double *restrict CS = col_sums + b * cols, *restrict WS = weighted_sums + b * cols;
        for (int64_t r = 0; r < rows; r++) {
          const T *restrict G = g + (b * rows + r) * cols;
          const T inv_r = 1 / row[b * rows + r];
#pragma omp simd
          for (int64_t c = c0; c < c1; c++) {
            const T s = G[c] * G[c];
            CS[c] += s + (T)eps1;
            WS[c] += s * inv_r;
          }
        }
      }
    }
    for (int64_t b = 0; b < batch; b++) {
      double mean = 0, weighted = 0;
      for (int64_t r = 0; r < rows; r++) mean += row[b * rows + r];
      mean /= rows;
      for (int64_t r = 0; r < rows; r++) row_f[b * rows + r] = 1 / sqrt(row[b * rows + r] / mean);
      for (int64_t k = b * cols; k < (b + 1) * cols; k++) {
        col[k] = beta2 * col[k] + (1 - beta2) * (col_sums[k] / rows);
        col_f[k] = 1 / sqrt((double)col[k]);
        weighted += weighted_sums[k] / col[k];
      }
      update_squares += mean * weighted;
    }
    free(col_sums);
  }
  free(param_part);
  /* α = ρ_t·max(ε₂, RMS(θ)) (or ρ_t). */
  const double param_rms = sqrt(param_squares / total);
  const double alpha = scale_parameter ? step_size * (param_rms > eps2 ? param_rms : eps2) : step_size;
  /* Pass 3: Û = U / max(1, RMS(U)/d); step = −αÛ (or m ← β₁m + (1-β₁)(−αÛ)); θ ← θ(1 − αλ) + step. */
  const double rms = sqrt(update_squares / total);
  const T scale = (maximize ? 1 : -1) * alpha / (rms / clip > 1 ? rms / clip : 1);
  const T decay = 1 - alpha * wd, b1 = beta1;
#pragma omp parallel for num_threads(nth)
  for (int64_t br = 0; br < batch * rows; br++) {
    const T *restrict G = g + br * cols, *restrict CF = col_f + (br / rows) * cols;
    T *restrict Pr = p + br * cols, *restrict Mr = m ? m + br * cols : NULL;
    const T rf = row_f[factored ? br : 0] * scale;
    if (Mr) {
      for (int64_t c = 0; c < cols; c++) {
        T step = b1 * Mr[c] + (1 - b1) * (G[c] * rf * CF[c]);
        Mr[c] = step;
        Pr[c] = decay * Pr[c] + step;
      }
    } else {
      for (int64_t c = 0; c < cols; c++) Pr[c] = decay * Pr[c] + G[c] * rf * CF[c];
    }
  }
  free(row_f);
  free(col_f);
  return found;
}

/* A whole Adafactor group: tensor i has shape[3·i..3·i+2] = (batch, rows, cols), step t = steps[i];
 * β̂₂ₜ = 1 − t^decay_rate, ρ_t = lr, or min(10⁻², 1/√t) (min(10⁻⁶·t, 1/√t) with warm-up init) when lr < 0.
 * Few large tensors: each is split over the threads in turn; many: a tensor per thread. Small ones are spread
 * over the threads. */
int S(adafactor)(int nt, T **p, T **g, T **row, T **col, T **v, T **m, const int64_t *shape, const double *steps,
                 double decay_rate, double eps1, double eps2, double lr, int warmup_init, int scale_parameter,
                 double clip, double beta1, double wd, int maximize, int threads) {
  int bad = 0;
#define ADAFACTOR_TENSOR(i, nth)                                                                                  \
  do {                                                                                                           \
    const double t = steps[i];                                                                                   \
    const double cap = warmup_init ? 1e-6 * t : 1e-2, inv_sqrt_t = 1 / sqrt(t);                                   \
    const double rho = lr >= 0 ? lr : (cap < inv_sqrt_t ? cap : inv_sqrt_t);                                      \
    REPORT(S(adafactor_one)(p[i], g[i], row[i], col[i], v[i], m ? m[i] : NULL, shape[3 * (i)],                   \
                            shape[3 * (i) + 1], shape[3 * (i) + 2], 1 - pow(t, decay_rate), eps1, eps2, rho,      \
                            scale_parameter, clip, beta1, wd, maximize, nth));                                   \
  } while (0)
  int large = 0;
  for (int i = 0; i < nt; i++) large += shape[3 * i] * shape[3 * i + 1] * shape[3 * i + 2] >= PARALLEL_MIN;
  if (large >= 4 * threads) {
    /* many large tensors: a tensor per thread, its three passes in one core's cache, no fork per pass */
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int i = 0; i < nt; i++) ADAFACTOR_TENSOR(i, 1);
    return !bad;
  }
  for (int i = 0; i < nt; i++)
    if (shape[3 * i] * shape[3 * i + 1] * shape[3 * i + 2] >= PARALLEL_MIN) ADAFACTOR_TENSOR(i, threads);
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int i = 0; i < nt; i++)
    if (shape[3 * i] * shape[3 * i + 1] * shape[3 * i + 2] < PARALLEL_MIN) ADAFACTOR_TENSOR(i, 1);
#undef ADAFACTOR_TENSOR
  return !bad;
}

#endif
