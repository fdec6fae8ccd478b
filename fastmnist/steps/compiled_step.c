/* One SGD step of the 784-H-10 network in one call: fastmnist.steps.compiled loads this
   library with ctypes, which releases the GIL around the call.

   The five matrix products go to the gemm of the BLAS that NumPy itself calls (its address is
   handed in). Up to FOLD_ROWS rows a batch's weight updates are folded into their products:
   with alpha = -1 and beta = 1, BLAS's c = alpha a b + beta c is W -= a b in one pass. Larger
   batches take each update into gW1 / gW2a first and subtract it once: BLAS adds a product
   into c one block of its inner dimension (the batch rows) at a time, and each addition into
   the weights rounds at the weights' scale, far coarser than the update's. Between the
   products run three fused loops: bias and sigmoid; softmax, cross-entropy and the output
   gradient; the sigmoid's derivative and b1's update. Nothing is allocated.

   Arrays, all C-ordered: W1 (D, H); b1a (H + 1), whose last entry is +inf so that the sigmoid
   writes the constant 1 in za's last column; W2a (H + 1, C), b2 as its last row; a1 (B, H);
   za (B, H + 1); y (B, C); dz (B, H); gb1a (H + 1); gW1 (D, H) and gW2a (H + 1, C) for
   the updates of large batches; x (B, D) the batch; flat (B) each row's
   target as its index in the flattened (C, B) logits, class * B + row (as CpuBatch has it);
   loss (B) receives log(sum(exp(s))) - s[target] per row. scale is lr / B.

   fastmnist_grads_* (at the end) serves large batches: each thread takes its block of the
   batch's rows through the same passes, tile by tile, and returns gradients to be summed.

   Built by the package's build (setup.py, optional: without a C compiler fastmnist takes the
   NumPy step). */
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
enum { FOLD_ROWS = 256 }; /* OpenBLAS's inner blocks hold 256 rows or more: one addition into W */

typedef void (*sgemm_fn)(int, int, int, int64_t, int64_t, int64_t, float, const float *, int64_t,
                         const float *, int64_t, float, float *, int64_t);
typedef void (*dgemm_fn)(int, int, int, int64_t, int64_t, int64_t, double, const double *,
                         int64_t, const double *, int64_t, double, double *, int64_t);

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT
#endif

/* Never imported as a Python module (ctypes loads the file); Windows' linker wants the symbol. */
EXPORT void *PyInit__compiled_step(void) { return 0; }

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* exp(x) for the sigmoid in float32: 2^n exp(r), |r| <= ln2 / 2, exp(r) by Cephes' expf
   polynomial (within 1 ulp of expf), written without calls so the compiler vectorises it. */
static inline float exp_f32(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    int32_t n = (int32_t)(x * 1.44269504088896341f + 127.5f) - 127;
    float fn = (float)n;
    float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* One row of logits yr (C) in place: softmax, cross-entropy against class t (returned), and
   (softmax - onehot) * scale, the output gradient with lr / B folded in. */
#define SOFTMAX(real, EXP, LOG)                                                                 \
    static inline real softmax_##real(real *yr, int64_t c, intptr_t t, real scale) {           \
        real m = yr[0], s = 0;                                                                  \
        for (int64_t j = 1; j < c; j++) m = yr[j] > m ? yr[j] : m;                              \
        real target = yr[t] - m;                                                                \
        for (int64_t j = 0; j < c; j++) { yr[j] = EXP(yr[j] - m); s += yr[j]; }                 \
        real q = scale / s;                                                                     \
        for (int64_t j = 0; j < c; j++) yr[j] *= q;                                             \
        yr[t] -= scale;                                                                         \
        return LOG(s) - target;                                                                 \
    }
SOFTMAX(float, expf, logf)
SOFTMAX(double, exp, log)

/* W (m, n) -= a.T b, a (b, m) and b (b, n) summed over the batch's rows: folded into the
   product up to FOLD_ROWS rows, else through G (m, n) and one subtraction. */
#define UPDATE(m, n, a, lda, bm, ldb, W, G)                                                     \
    if (b <= FOLD_ROWS) {                                                                       \
        gemm(ROW_MAJOR, TRANS, NO_TRANS, m, n, b, minus, a, lda, bm, ldb, one, W, n);           \
    } else {                                                                                    \
        gemm(ROW_MAJOR, TRANS, NO_TRANS, m, n, b, one, a, lda, bm, ldb, zero, G, n);            \
        for (k = 0; k < (m) * (n); k++) W[k] -= G[k];                                           \
    }

/* The forward pass of n rows x (n, D): a1 = x W1, za = [sigmoid(a1 + b1), 1], y = za W2a. */
#define FORWARD(real, n, x)                                                                     \
    gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n, h, d, one, x, d, W1, h, zero, a1, h);                \
    sigmoid_##real(n, h, a1, b1a, za);                                                          \
    gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, n, c, h + 1, one, za, h + 1, W2a, c, zero, y, c);

/* The float32 and float64 steps differ only in their type, exp and gemm: one body, twice. */
#define STEP_BODY(real)                                                                         \
    int64_t r, k;                                                                               \
    const real one = 1, zero = 0, minus = -1;                                                   \
    FORWARD(real, b, x)                                                                         \
    for (r = 0; r < b; r++)                                                                     \
        loss[r] = softmax_##real(y + r * c, c, (flat[r] - r) / b, scale);                      \
    gemm(ROW_MAJOR, NO_TRANS, TRANS, b, h, c, one, y, c, W2a, c, zero, dz, h); /* W2 as it was */ \
    UPDATE(h + 1, c, za, h + 1, y, c, W2a, gW2a);                                               \
    for (k = 0; k < h; k++) gb1a[k] = 0;                                                        \
    derivative_##real(b, h, dz, za, gb1a);                                                      \
    UPDATE(d, h, x, d, dz, h, W1, gW1);                                                         \
    for (k = 0; k < h; k++) b1a[k] -= gb1a[k];

/* za = [sigmoid(a1 + b1), 1] */
#define SIGMOID(real, EXP, ATTR)                                                                \
    ATTR static void sigmoid_##real(int64_t b, int64_t h, const real *a1, const real *b1a,      \
                                    real *za) {                                                 \
        for (int64_t r = 0; r < b; r++) {                                                       \
            const real *ar = a1 + r * h;                                                        \
            real *zr = za + r * (h + 1);                                                        \
            for (int64_t k = 0; k < h; k++) zr[k] = (real)1 / ((real)1 + EXP(-(ar[k] + b1a[k]))); \
            zr[h] = 1;                                                                          \
        }                                                                                       \
    }
SIGMOID(float, exp_f32, VECTOR_CLONES)
SIGMOID(double, exp, )

/* dz *= z (1 - z), and its column sums added to gb1a[:H] (b1's update) */
#define DERIVATIVE(real, ATTR)                                                                  \
    ATTR static void derivative_##real(int64_t b, int64_t h, real *dz, const real *za,          \
                                       real *gb1a) {                                            \
        for (int64_t r = 0; r < b; r++) {                                                       \
            const real *zr = za + r * (h + 1);                                                  \
            real *dr = dz + r * h;                                                              \
            for (int64_t k = 0; k < h; k++) {                                                   \
                real v = dr[k] * (zr[k] - zr[k] * zr[k]);                                       \
                dr[k] = v;                                                                      \
                gb1a[k] += v;                                                                   \
            }                                                                                   \
        }                                                                                       \
    }
DERIVATIVE(float, VECTOR_CLONES)
DERIVATIVE(double, )

/* n rows of the training set src (N, D) from row `first` on, copied into dst (n, D), scaled
   from uint8 pixels where pixel_scale is nonzero; returns dst. */
#define ROWS(real)                                                                              \
    static inline real *rows_##real(real *dst, const void *src, int64_t first, int64_t n,       \
                                    int64_t d, real pixel_scale) {                              \
        if (pixel_scale == 0) {                                                                 \
            memcpy(dst, (const real *)src + first * d, n * d * sizeof(real));                   \
        } else {                                                                                \
            const uint8_t *p = (const uint8_t *)src + first * d;                                \
            for (int64_t k = 0; k < n * d; k++) dst[k] = (real)p[k] * pixel_scale;              \
        }                                                                                       \
        return dst;                                                                             \
    }
ROWS(float)
ROWS(double)

EXPORT void fastmnist_step_f32(sgemm_fn gemm, int64_t b, int64_t d, int64_t h, int64_t c,
                               float *W1, float *b1a, float *W2a, float *a1, float *za, float *y,
                               float *dz, float *gb1a, float *gW1, float *gW2a, float scale,
                               const float *x, const intptr_t *flat, float *loss) {
    STEP_BODY(float)
}

EXPORT void fastmnist_step_f64(dgemm_fn gemm, int64_t b, int64_t d, int64_t h, int64_t c,
                               double *W1, double *b1a, double *W2a, double *a1, double *za,
                               double *y, double *dz, double *gb1a, double *gW1, double *gW2a,
                               double scale, const double *x, const intptr_t *flat, double *loss) {
    STEP_BODY(double)
}

/* Large batches, one call per thread: the gradients of batch rows [lo, hi), walked in tiles of
   T rows so that each tile's rows, gathered from the training set, stay in the core's cache
   for both products that read them (x W1, and x.T dz). Nothing is updated: gW1 (D, H),
   gW2a (H + 1, C) and gb1a (H + 1) receive this block's sums, scaled by lr / B, for the caller
   to add up over the threads and subtract.

   src (N, D) is the training set, floats or (with pixel_scale nonzero) uint8 pixels scaled by
   it as they are gathered; idx (B) the batch's rows in it, labels (N) their classes; loss (B)
   receives the per-row losses of rows lo..hi. Scratch for one tile: xt (T, D), a1 (T, H),
   za (T, H + 1), y (T, C), dz (T, H). The caller holds BLAS to one thread meanwhile, so that
   each thread's products run on its own core. */

#define GRADS_BODY(real)                                                                        \
    const real one = 1, zero = 0;                                                               \
    for (int64_t k = 0; k <= h; k++) gb1a[k] = 0;                                               \
    for (int64_t r0 = lo; r0 < hi; r0 += T) {                                                   \
        const int64_t n = hi - r0 < T ? hi - r0 : T;                                            \
        const real beta = r0 == lo ? zero : one; /* the first tile writes, the others add */    \
        for (int64_t r = 0; r < n; r++)                                                         \
            rows_##real(xt + r * d, src, idx[r0 + r], 1, d, pixel_scale);                       \
        FORWARD(real, n, xt)                                                                    \
        for (int64_t r = 0; r < n; r++)                                                         \
            loss[r0 + r] = softmax_##real(y + r * c, c, labels[idx[r0 + r]], scale);            \
        gemm(ROW_MAJOR, NO_TRANS, TRANS, n, h, c, one, y, c, W2a, c, zero, dz, h);              \
        gemm(ROW_MAJOR, TRANS, NO_TRANS, h + 1, c, n, one, za, h + 1, y, c, beta, gW2a, c);     \
        derivative_##real(n, h, dz, za, gb1a);                                                  \
        gemm(ROW_MAJOR, TRANS, NO_TRANS, d, h, n, one, xt, d, dz, h, beta, gW1, h);             \
    }

#define GRADS(suffix, real, gemm_type)                                                          \
    EXPORT void fastmnist_grads_##suffix(                                                       \
        gemm_type gemm, int64_t lo, int64_t hi, int64_t T, int64_t d, int64_t h, int64_t c,     \
        const real *W1, const real *b1a, const real *W2a, const void *src, real pixel_scale,    \
        const intptr_t *labels, real scale, real *xt, real *a1, real *za, real *y, real *dz,    \
        real *gb1a, real *gW1, real *gW2a, const intptr_t *idx, real *loss) {                   \
        GRADS_BODY(real)                                                                        \
    }
GRADS(f32, float, sgemm_fn)
GRADS(f64, double, dgemm_fn)

/* How many of rows [lo, hi) of x (N, D) the network classifies as labels (N) says, walked in
   tiles of T rows (floats, or uint8 pixels scaled by pixel_scale into the scratch xt (T, D)):
   the step's forward pass, then the first largest logit of each row. Scratch a1 (T, H),
   za (T, H + 1), y (T, C). As fastmnist_grads_*, one call per thread, BLAS held to one thread. */
#define COUNT_BODY(real)                                                                        \
    const real one = 1, zero = 0;                                                               \
    int64_t correct = 0;                                                                        \
    for (int64_t r0 = lo; r0 < hi; r0 += T) {                                                   \
        const int64_t n = hi - r0 < T ? hi - r0 : T;                                            \
        const real *x = pixel_scale != 0 ? rows_##real(xt, src, r0, n, d, pixel_scale)            \
                                         : (const real *)src + r0 * d; /* floats: read in place */ \
        FORWARD(real, n, x)                                                                     \
        for (int64_t r = 0; r < n; r++) {                                                       \
            const real *yr = y + r * c;                                                         \
            int64_t best = 0;                                                                   \
            for (int64_t j = 1; j < c; j++) best = yr[j] > yr[best] ? j : best;                 \
            correct += best == labels[r0 + r];                                                  \
        }                                                                                       \
    }                                                                                           \
    return correct;

#define COUNT(suffix, real, gemm_type)                                                          \
    EXPORT int64_t fastmnist_count_##suffix(                                                    \
        gemm_type gemm, int64_t lo, int64_t hi, int64_t T, int64_t d, int64_t h, int64_t c,     \
        const real *W1, const real *b1a, const real *W2a, const void *src, real pixel_scale,    \
        const intptr_t *labels, real *xt, real *a1, real *za, real *y) {                        \
        COUNT_BODY(real)                                                                        \
    }
COUNT(f32, float, sgemm_fn)
COUNT(f64, double, dgemm_fn)
