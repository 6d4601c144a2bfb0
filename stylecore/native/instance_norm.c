/* Instance normalisation of one NHWC image, with the ReLU and the reflection padding that follow it in
 * fast_neural_style's TransformerNet, in two passes over the data (statistics; normalise, activate and write the
 * padded output) instead of five in torch (batch_norm's two or three, ReLU, pad). For
 * stylecore.fast_layers.InstanceNorm2d (CPU, fp32).
 *
 *   x   (H, W, C) float32, contiguous.
 *   out (H + 2 pad, W + 2 pad, C) float32, contiguous; must not overlap x.
 *   y = (x - mean) / sqrt(var + eps) * weight + bias with the per-channel mean and population variance over H x W
 *   (weight / bias may be NULL: 1 and 0), then max(y, 0) when relu, then the border of width pad reflected
 *   (as ReflectionPad2d(pad); pad < H and pad < W).
 *
 * Sums are taken relative to the first pixel (shifted data) in float per row and accumulated in double, so a
 * large mean does not cancel the variance. Rows are split between nthreads OpenMP threads (torch's pool when
 * loaded into a torch process, as in winograd.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int stylecore_instance_norm(const float *restrict x, long H, long W, int C, const float *weight, const float *bias,
                            float eps, int relu, int pad, float *restrict out, int nthreads) {
    if (pad < 0 || pad >= H || pad >= W) return -1;
    if (nthreads < 1) nthreads = 1;
    double *acc = calloc((size_t)nthreads * 2 * C, sizeof(double));
    float *coef = malloc((size_t)2 * C * sizeof(float));
    if (!acc || !coef) {
        free(acc);
        free(coef);
        return -2;
    }
    const float *shift = x; /* the first pixel */
#pragma omp parallel num_threads(nthreads)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        double *s = acc + (size_t)tid * 2 * C, *q = s + C;
        float *rs = malloc((size_t)2 * C * sizeof(float)), *rq = rs ? rs + C : NULL;
        if (rs) {
            for (long y = H * tid / nt; y < H * (tid + 1) / nt; ++y) {
                memset(rs, 0, (size_t)2 * C * sizeof(float));
                const float *row = x + y * W * C;
                for (long i = 0; i < W; ++i) {
                    const float *p = row + i * C;
                    for (int c = 0; c < C; ++c) {
                        float d = p[c] - shift[c];
                        rs[c] += d;
                        rq[c] += d * d;
                    }
                }
                for (int c = 0; c < C; ++c) {
                    s[c] += rs[c];
                    q[c] += rq[c];
                }
            }
            free(rs);
        }
    }
    const double n = (double)H * W;
    for (int c = 0; c < C; ++c) {
        double s = 0, q = 0;
        for (int t = 0; t < nthreads; ++t) {
            s += acc[(size_t)t * 2 * C + c];
            q += acc[(size_t)t * 2 * C + C + c];
        }
        double m = s / n, var = q / n - m * m;
        if (var < 0) var = 0;
        double scale = (weight ? weight[c] : 1.0) / sqrt(var + eps);
        coef[c] = (float)scale;
        coef[C + c] = (float)((bias ? bias[c] : 0.0) - (shift[c] + m) * scale);
    }
    free(acc);
    const long ow = W + 2L * pad;
    const float *a = coef, *b = coef + C;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long y = 0; y < H; ++y) {
        const float *row = x + y * W * C;
        float *o = out + ((y + pad) * ow + pad) * C;
        if (relu) {
            for (long i = 0; i < W; ++i)
                for (int c = 0; c < C; ++c) {
                    float v = row[i * C + c] * a[c] + b[c];
                    o[i * C + c] = v > 0.0f ? v : 0.0f;
                }
        } else {
            for (long i = 0; i < W; ++i)
                for (int c = 0; c < C; ++c) o[i * C + c] = row[i * C + c] * a[c] + b[c];
        }
        for (int j = 1; j <= pad; ++j) { /* columns -j and W-1+j reflect columns j and W-1-j */
            memcpy(o - (long)j * C, o + (long)j * C, (size_t)C * sizeof(float));
            memcpy(o + (W - 1 + j) * C, o + (W - 1 - j) * C, (size_t)C * sizeof(float));
        }
    }
    free(coef);
    const size_t row_bytes = (size_t)ow * C * sizeof(float);
    for (int j = 1; j <= pad; ++j) { /* rows -j and H-1+j reflect rows j and H-1-j (whole padded rows) */
        memcpy(out + (pad - j) * ow * C, out + (pad + j) * ow * C, row_bytes);
        memcpy(out + (pad + H - 1 + j) * ow * C, out + (pad + H - 1 - j) * ow * C, row_bytes);
    }
    return 0;
}
