/* Fused optimizer steps for contiguous CPU tensors: one pass over memory per step.
 *
 * Each kernel updates a whole param group in one call: arrays of tensor pointers
 * and sizes, the concatenation of all tensors split evenly over the threads, so
 * 1000 small tensors cost one call and one parallel region.  The math is the one
 * in descend/transforms.py (the reference these kernels are tested against);
 * each kernel cites the chain it fuses.  Built by descend/native.py.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

/* Below this many elements a step runs on one thread: forking costs more than it saves. */
#define PARALLEL_MIN 32768

static int threads_for(int64_t total, int threads) { return total < PARALLEL_MIN ? 1 : threads; }

/* Runs BODY for every (tensor i, element range [lo_, hi_)) slice of this thread's share. */
#define FOR_EACH_SLICE(nt, n, threads, ...)                                               \
  do {                                                                                    \
    int64_t total_ = 0;                                                                   \
    for (int i_ = 0; i_ < (nt); i_++) total_ += (n)[i_];                                  \
    _Pragma("omp parallel num_threads(threads_for(total_, threads))") {                   \
      int64_t tid_ = omp_get_thread_num(), nth_ = omp_get_num_threads();                  \
      int64_t begin_ = total_ * tid_ / nth_, end_ = total_ * (tid_ + 1) / nth_, base_ = 0; \
      for (int i = 0; i < (nt) && base_ < end_; base_ += (n)[i], i++) {                   \
        int64_t lo_ = begin_ > base_ ? begin_ - base_ : 0;                                \
        int64_t hi_ = end_ - base_ < (n)[i] ? end_ - base_ : (n)[i];                      \
        if (lo_ < hi_) { __VA_ARGS__ }                                                    \
      }                                                                                   \
    }                                                                                     \
  } while (0)

#define DEFINE_KERNELS(T, S, SQRT)                                                                               \
                                                                                                                 \
  /* 0 if every element of every tensor is finite: x*0 is NaN exactly for NaN and ±inf. */                      \
  int all_finite_##S(int nt, T **x, const int64_t *n, int threads) {                                            \
    int bad = 0;                                                                                                 \
    FOR_EACH_SLICE(nt, n, threads, {                                                                             \
      const T *X = x[i];                                                                                         \
      T acc = 0;                                                                                                 \
      for (int64_t j = lo_; j < hi_; j++) acc += X[j] * (T)0;                                                    \
      if (acc != acc) {                                                                                          \
        _Pragma("omp atomic write") bad = 1;                                                                     \
      }                                                                                                          \
    });                                                                                                          \
    return !bad;                                                                                                 \
  }                                                                                                              \
                                                                                                                 \
  /* SGD = [AddWeightDecay, Momentum(mu, damp, nesterov), ScaleByLearningRate]; buf NULL: no momentum. */        \
  void sgd_##S(int nt, T **p, T **g, T **buf, const int64_t *n, double lr_, double wd_, double mu_,               \
               double damp_, int nesterov, int maximize, int threads) {                                          \
    const T lr = lr_, wd = wd_, mu = mu_, keep = 1 - damp_, sign = maximize ? -1 : 1;                            \
    FOR_EACH_SLICE(nt, n, threads, {                                                                             \
      T *restrict P = p[i];                                                                                      \
      const T *restrict G = g[i];                                                                                \
      T *restrict B = buf ? buf[i] : NULL;                                                                       \
      for (int64_t j = lo_; j < hi_; j++) {                                                                      \
        T d = sign * G[j] + wd * P[j];                                                                           \
        if (B) {                                                                                                 \
          T b = mu * B[j] + keep * d;                                                                            \
          B[j] = b;                                                                                              \
          d = nesterov ? mu * b + keep * d : b;                                                                  \
        }                                                                                                        \
        P[j] -= lr * d;                                                                                          \
      }                                                                                                          \
    });                                                                                                          \
  }                                                                                                              \
                                                                                                                 \
  /* Adam(W) = [AddWeightDecay | -, EmaOfSquares, RunningMax?, Momentum(EMA), BiasCorrection,                    \
   *            ScaleByInverseRms(debias), ScaleByLearningRate, - | DecoupledWeightDecay].                        \
   * step_size[i] = lr/(1-b1^t), bc2_sqrt[i] = sqrt(1-b2^t) (both 1 without bias correction). */                 \
  void adam_##S(int nt, T **p, T **g, T **m, T **v, T **vmax, const int64_t *n, const double *step_size,          \
                const double *bc2_sqrt, double lr, double b1_, double b2_, double eps_, double wd_,               \
                int decoupled, int maximize, int threads) {                                                      \
    const T b1 = b1_, b2 = b2_, eps = eps_, sign = maximize ? -1 : 1;                                            \
    const T l2 = decoupled ? 0 : wd_, shrink = decoupled ? 1 - lr * wd_ : 1;                                     \
    FOR_EACH_SLICE(nt, n, threads, {                                                                             \
      T *restrict P = p[i], *restrict M = m[i], *restrict V = v[i];                                              \
      T *restrict VM = vmax ? vmax[i] : NULL;                                                                    \
      const T *restrict G = g[i];                                                                                \
      const T step = step_size[i], inv_bc2 = 1 / bc2_sqrt[i];                                                    \
      for (int64_t j = lo_; j < hi_; j++) {                                                                      \
        T gj = sign * G[j] + l2 * P[j];                                                                          \
        T mj = b1 * M[j] + (1 - b1) * gj;                                                                        \
        T vj = b2 * V[j] + (1 - b2) * gj * gj;                                                                   \
        M[j] = mj;                                                                                               \
        V[j] = vj;                                                                                               \
        if (VM) {                                                                                                \
          vj = VM[j] > vj ? VM[j] : vj;                                                                          \
          VM[j] = vj;                                                                                            \
        }                                                                                                        \
        P[j] = shrink * P[j] - step * mj / (SQRT(vj) * inv_bc2 + eps);                                           \
      }                                                                                                          \
    });                                                                                                          \
  }                                                                                                              \
                                                                                                                 \
  /* Adagrad = [AddWeightDecay, SumOfSquares, ScaleByInverseRms, LrDecay, ScaleByLearningRate];                  \
   * clr[i] = lr / (1 + (t-1)·lr_decay). */                                                                      \
  void adagrad_##S(int nt, T **p, T **g, T **sum, const int64_t *n, const double *clr, double eps_, double wd_,   \
                   int maximize, int threads) {                                                                  \
    const T eps = eps_, wd = wd_, sign = maximize ? -1 : 1;                                                      \
    FOR_EACH_SLICE(nt, n, threads, {                                                                             \
      T *restrict P = p[i], *restrict A = sum[i];                                                                \
      const T *restrict G = g[i];                                                                                \
      const T lr = clr[i];                                                                                       \
      for (int64_t j = lo_; j < hi_; j++) {                                                                      \
        T gj = sign * G[j] + wd * P[j];                                                                          \
        T s = A[j] + gj * gj;                                                                                    \
        A[j] = s;                                                                                                \
        P[j] -= lr * (gj / (SQRT(s) + eps));                                                                     \
      }                                                                                                          \
    });                                                                                                          \
  }                                                                                                              \
                                                                                                                 \
  /* RMSprop = [AddWeightDecay, EmaOfSquares, TrackEma?, ScaleByInverseRms(centered?), Momentum?,                \
   *            ScaleByLearningRate]; gavg / buf NULL when not centered / no momentum. */                        \
  void rmsprop_##S(int nt, T **p, T **g, T **sq, T **gavg, T **buf, const int64_t *n, double lr_, double alpha_,  \
                   double eps_, double wd_, double mu_, int maximize, int threads) {                              \
    const T lr = lr_, alpha = alpha_, eps = eps_, wd = wd_, mu = mu_, sign = maximize ? -1 : 1;                  \
    FOR_EACH_SLICE(nt, n, threads, {                                                                             \
      T *restrict P = p[i], *restrict Q = sq[i];                                                                 \
      T *restrict A = gavg ? gavg[i] : NULL, *restrict B = buf ? buf[i] : NULL;                                  \
      const T *restrict G = g[i];                                                                                \
      for (int64_t j = lo_; j < hi_; j++) {                                                                      \
        T gj = sign * G[j] + wd * P[j];                                                                          \
        T s = alpha * Q[j] + (1 - alpha) * gj * gj;                                                              \
        Q[j] = s;                                                                                                \
        if (A) {                                                                                                 \
          T a = alpha * A[j] + (1 - alpha) * gj;                                                                 \
          A[j] = a;                                                                                              \
          s -= a * a;                                                                                            \
        }                                                                                                        \
        T d = gj / (SQRT(s) + eps);                                                                              \
        if (B) {                                                                                                 \
          d += mu * B[j];                                                                                        \
          B[j] = d;                                                                                              \
        }                                                                                                        \
        P[j] -= lr * d;                                                                                          \
      }                                                                                                          \
    });                                                                                                          \
  }                                                                                                              \
                                                                                                                 \
  /* Adadelta = [AddWeightDecay, EmaOfSquares, ScaleByInverseRms(eps inside), AdadeltaUnitCorrection,            \
   *             ScaleByLearningRate]. */                                                                        \
  void adadelta_##S(int nt, T **p, T **g, T **sq, T **acc, const int64_t *n, double lr_, double rho_,            \
                    double eps_, double wd_, int maximize, int threads) {                                        \
    const T lr = lr_, rho = rho_, eps = eps_, wd = wd_, sign = maximize ? -1 : 1;                                \
    FOR_EACH_SLICE(nt, n, threads, {                                                                             \
      T *restrict P = p[i], *restrict Q = sq[i], *restrict D = acc[i];                                          \
      const T *restrict G = g[i];                                                                                \
      for (int64_t j = lo_; j < hi_; j++) {                                                                      \
        T gj = sign * G[j] + wd * P[j];                                                                          \
        T s = rho * Q[j] + (1 - rho) * gj * gj;                                                                  \
        Q[j] = s;                                                                                                \
        T delta = gj / SQRT(s + eps) * SQRT(D[j] + eps);                                                         \
        D[j] = rho * D[j] + (1 - rho) * delta * delta;                                                           \
        P[j] -= lr * delta;                                                                                      \
      }                                                                                                          \
    });                                                                                                          \
  }                                                                                                              \
                                                                                                                 \
  /* Adafactor, pass 1 for one tensor of `batch` matrices rows×cols (rows = 1 for a vector or scalar):          \
   * row[b·rows+r] ← β·row + (1-β)·mean_c(G²+ε₁), col[b·cols+c] likewise over rows (R and C of                    \
   * FactoredSecondMoment), or v ← β·v + (1-β)(G²+ε₁) when row is NULL.  Returns Σθ² (for RMS(θ)). */            \
  double adafactor_moments_##S(const T *p, const T *g, T *row, T *col, T *v, int64_t batch, int64_t rows,        \
                               int64_t cols, double beta2, double eps1, int threads) {                          \
    const int64_t total = batch * rows * cols;                                                                   \
    double param_squares = 0;                                                                                    \
    if (!row) {                                                                                                  \
      _Pragma("omp parallel for num_threads(threads_for(total, threads)) reduction(+ : param_squares)")         \
      for (int64_t j = 0; j < total; j++) {                                                                      \
        v[j] = (T)(beta2 * v[j] + (1 - beta2) * ((double)g[j] * g[j] + eps1));                                   \
        param_squares += (double)p[j] * p[j];                                                                    \
      }                                                                                                          \
      return param_squares;                                                                                      \
    }                                                                                                            \
    double *col_sums = calloc(batch * cols, sizeof(double));                                                     \
    _Pragma("omp parallel num_threads(threads_for(total, threads)) reduction(+ : param_squares)") {              \
      double *mine = calloc(batch * cols, sizeof(double));                                                       \
      _Pragma("omp for schedule(static)")                                                                        \
      for (int64_t br = 0; br < batch * rows; br++) {                                                            \
        const T *G = g + br * cols, *Pr = p + br * cols;                                                         \
        double *C = mine + (br / rows) * cols, row_sum = 0;                                                      \
        for (int64_t c = 0; c < cols; c++) {                                                                     \
          double s = (double)G[c] * G[c] + eps1;                                                                 \
          row_sum += s;                                                                                          \
          C[c] += s;                                                                                             \
          param_squares += (double)Pr[c] * Pr[c];                                                                \
        }                                                                                                        \
        row[br] = (T)(beta2 * row[br] + (1 - beta2) * (row_sum / cols));                                         \
      }                                                                                                          \
      _Pragma("omp critical") for (int64_t k = 0; k < batch * cols; k++) col_sums[k] += mine[k];                 \
      free(mine);                                                                                                \
    }                                                                                                            \
    for (int64_t k = 0; k < batch * cols; k++) col[k] = (T)(beta2 * col[k] + (1 - beta2) * (col_sums[k] / rows)); \
    free(col_sums);                                                                                              \
    return param_squares;                                                                                        \
  }                                                                                                              \
                                                                                                                 \
  /* Adafactor: the per-row and per-column factors of 1/√V̂ = 1/√(R Cᵀ / mean(R)) into row_f / col_f.          */ \
  static void adafactor_factors_##S(const T *row, const T *col, double *row_f, double *col_f, int64_t batch,      \
                                    int64_t rows, int64_t cols) {                                                \
    for (int64_t b = 0; b < batch; b++) {                                                                        \
      double mean = 0;                                                                                           \
      for (int64_t r = 0; r < rows; r++) mean += row[b * rows + r];                                              \
      mean /= rows;                                                                                              \
      for (int64_t r = 0; r < rows; r++) row_f[b * rows + r] = 1 / sqrt(row[b * rows + r] / mean);               \
      for (int64_t c = 0; c < cols; c++) col_f[b * cols + c] = 1 / sqrt((double)col[b * cols + c]);              \
    }                                                                                                            \
  }                                                                                                              \
                                                                                                                 \
  /* Adafactor, passes 2 and 3: U = G/√V̂, Û = U/max(1, RMS(U)/d), m ← β₁m + (1-β₁)αÛ (m NULL: no first moment), \
   * θ ← θ − (αÛ or m) − αλθ, where α comes from alpha_of(RMS(θ)) computed by the caller: alpha =               \
   * step_size·max(ε₂, RMS(θ)) or step_size.  Returns nothing; row/col/v as left by pass 1. */                   \
  void adafactor_apply_##S(T *p, const T *g, const T *row, const T *col, const T *v, T *m, int64_t batch,        \
                           int64_t rows, int64_t cols, double clip, double alpha, double beta1, double wd,        \
                           int maximize, int threads) {                                                          \
    const int64_t total = batch * rows * cols;                                                                   \
    const int nth = threads_for(total, threads);                                                                 \
    double *row_f = NULL, *col_f = NULL;                                                                         \
    if (row) {                                                                                                   \
      row_f = malloc(batch * rows * sizeof(double));                                                             \
      col_f = malloc(batch * cols * sizeof(double));                                                             \
      adafactor_factors_##S(row, col, row_f, col_f, batch, rows, cols);                                          \
    }                                                                                                            \
    double update_squares = 0;                                                                                   \
    _Pragma("omp parallel for num_threads(nth) reduction(+ : update_squares)")                                   \
    for (int64_t br = 0; br < batch * rows; br++) {                                                              \
      for (int64_t c = 0; c < cols; c++) {                                                                       \
        const int64_t j = br * cols + c;                                                                         \
        double u = row ? g[j] * row_f[br] * col_f[(br / rows) * cols + c] : g[j] / sqrt((double)v[j]);           \
        update_squares += u * u;                                                                                 \
      }                                                                                                          \
    }                                                                                                            \
    const double rms = total ? sqrt(update_squares / total) : 0;                                                 \
    const double scale = (maximize ? 1 : -1) * alpha / (rms / clip > 1 ? rms / clip : 1);                        \
    const T decay = (T)(1 - alpha * wd), b1 = (T)beta1;                                                          \
    _Pragma("omp parallel for num_threads(nth)")                                                                 \
    for (int64_t br = 0; br < batch * rows; br++) {                                                              \
      for (int64_t c = 0; c < cols; c++) {                                                                       \
        const int64_t j = br * cols + c;                                                                         \
        double u = row ? g[j] * row_f[br] * col_f[(br / rows) * cols + c] : g[j] / sqrt((double)v[j]);           \
        T step = (T)(scale * u);                                                                                 \
        if (m) {                                                                                                 \
          step = b1 * m[j] + (1 - b1) * step;                                                                    \
          m[j] = step;                                                                                           \
        }                                                                                                        \
        p[j] = decay * p[j] + step;                                                                              \
      }                                                                                                          \
    }                                                                                                            \
    free(row_f);                                                                                                 \
    free(col_f);                                                                                                 \
  }

DEFINE_KERNELS(float, f32, sqrtf)
DEFINE_KERNELS(double, f64, sqrt)
