/* Winograd tile transforms for stylecore.fast_layers (CPU, fp32, NHWC): F(4x4, 3x3) for WinogradConv2d and
 * UpsampleConv2d, F(4x4, 5x5) for SpaceToDepthConv2d.
 *
 * The GEMM form in Python transforms tiles with (36x36) and (16x36) matrix products: 36 and 16 multiply-adds
 * per value, plus a gather copy and a scatter copy. Here each transform is applied separably (rows, then
 * columns) with the matrices' few non-zero coefficients, 16 channels at a time so that the compiler vectorises
 * across channels, reading the NHWC input in place and writing the NHWC output (with the bias) in place.
 * The batched GEMM between the two transforms stays in torch.
 *
 * Layouts (all float32, contiguous):
 *   x   (H, W, C) one image; rs / cs are its row and column strides in floats (cs == C here). Tiles read it
 *       through border_index, reflected or replicated at the borders, so padding costs no copy.
 *   V   (A*A, T, C) transformed input tiles (A = 6 or 8) of a pass of tile rows (T = rows * tw, tile t = row * tw
 *       + col).
 *   M   (A*A, T, K) transformed outputs, as the batched GEMM leaves them.
 *   out the output image; only the pixels of the pass's tile rows that lie inside the output are written.
 *
 * C and K must be multiples of VL. Tiles are split between nthreads OpenMP threads. Built with -fopenmp and
 * loaded into a process that has imported torch, libgomp.so.1 resolves to the copy torch already loaded, so
 * these loops run on torch's own thread pool (a second pool would spin against it on a small machine).
 */
#include <stddef.h>

#define VL 16

/* B^T = [[4,0,-5,0,1,0],[0,-4,-4,1,1,0],[0,4,-4,-1,1,0],[0,-2,-1,2,1,0],[0,2,-1,-2,1,0],[0,4,0,-5,0,1]] */
#define BT_APPLY(o, d, l)                                                        \
    do {                                                                         \
        float d0 = d(0, l), d1 = d(1, l), d2 = d(2, l), d3 = d(3, l), d4 = d(4, l), d5 = d(5, l); \
        o(0, l) = 4.0f * d0 - 5.0f * d2 + d4;                                    \
        o(1, l) = -4.0f * (d1 + d2) + d3 + d4;                                   \
        o(2, l) = 4.0f * (d1 - d2) - d3 + d4;                                    \
        o(3, l) = 2.0f * (d3 - d1) - d2 + d4;                                    \
        o(4, l) = 2.0f * (d1 - d3) - d2 + d4;                                    \
        o(5, l) = 4.0f * d1 - 5.0f * d3 + d5;                                    \
    } while (0)

/* Row or column r of an image of n outside [0, n): mode 0 reflects at the borders (r = -1 reads 1, r = n reads n-2:
 * ReflectionPad2d(1)), mode 1 replicates the edge (F.pad "replicate"). Then clamped: rows past the border only
 * feed outputs beyond the image, which are not written. */
static inline long border_index(long r, long n, int mode) {
    if (mode == 0) {
        if (r < 0) r = -r;
        if (r >= n) r = 2 * n - 2 - r;
    }
    return r < 0 ? 0 : (r >= n ? n - 1 : r);
}

/* F(4x4, 5x5) (8x8 input tiles at a stride of 4; the same eight points 0, +-1, +-2, +-1/2, inf as F(6x6, 3x3)) is
 * for the space-to-depth form of Johnson's last 9x9 conv (SpaceToDepthConv2d: 5x5 taps over 4 * 32 channels).
 * B^T (8x8) = [[1,0,-21/4,0,21/4,0,-1,0],[0,1,1,-17/4,-17/4,1,1,0],[0,-1,1,17/4,-17/4,-1,1,0],
 *              [0,1/2,1/4,-5/2,-5/4,2,1,0],[0,-1/2,1/4,5/2,-5/4,-2,1,0],[0,2,4,-5/2,-5,1/2,1,0],
 *              [0,-2,4,5/2,-5,-1/2,1,0],[0,-1,0,21/4,0,-21/4,0,1]] */
#define BT8_APPLY(o, d, l)                                                                                \
    do {                                                                                                  \
        float d0 = d(0, l), d1 = d(1, l), d2 = d(2, l), d3 = d(3, l), d4 = d(4, l), d5 = d(5, l),         \
              d6 = d(6, l), d7 = d(7, l);                                                                 \
        float a1 = d1 + d5 - 4.25f * d3, b1 = d2 + d6 - 4.25f * d4;                                       \
        float a3 = 0.5f * d1 - 2.5f * d3 + 2.0f * d5, b3 = 0.25f * d2 - 1.25f * d4 + d6;                  \
        float a5 = 2.0f * d1 - 2.5f * d3 + 0.5f * d5, b5 = 4.0f * d2 - 5.0f * d4 + d6;                    \
        o(0, l) = d0 - d6 + 5.25f * (d4 - d2);                                                            \
        o(1, l) = a1 + b1;                                                                                \
        o(2, l) = b1 - a1;                                                                                \
        o(3, l) = a3 + b3;                                                                                \
        o(4, l) = b3 - a3;                                                                                \
        o(5, l) = a5 + b5;                                                                                \
        o(6, l) = b5 - a5;                                                                                \
        o(7, l) = d7 - d1 + 5.25f * (d3 - d5);                                                            \
    } while (0)

/* V (A*A, rows*tw, C) <- B^T d B for the AxA input tiles of tile rows [0, rows) (A = 6: F(4x4, 3x3), A = 8:
 * F(4x4, 5x5)): tile (ty, tx) reads image rows row0 + 4*ty .. + A-1 and columns col0 + 4*tx .. + A-1 of x (H, W, C),
 * through border_index(mode) outside the image (row0 = col0 = -1 gives the 3x3 convolution of ReflectionPad2d(1)(x),
 * or of the replicate-padded x). The rows of each tile are transformed first (u[i][col] = sum_k BT[i][k] x[k][col]),
 * then its columns (V[i*A+j] = sum_k BT[j][k] u[i][k]). */
#define IN_(k, l) rowp[k][off + (l)]
#define U_(i, l) u[i][col][l]
#define UR_(k, l) u[i][k][l]
#define W_(j, l) w[j][l]
#define DEFINE_WINOGRAD_INPUT(NAME, A, APPLY)                                                                  \
    int NAME(const float *x, long H, long W, long rs, long cs, int C, long row0, long col0, int rows, int tw,  \
             int mode, float *V, int nthreads) {                                                               \
        if (C % VL) return -1;                                                                                 \
        const long T = (long)rows * tw, plane = T * C;                                                         \
        _Pragma("omp parallel for num_threads(nthreads) schedule(static)")                                    \
        for (long t = 0; t < T; ++t) {                                                                         \
            float u[A][A][VL];                                                                                 \
            const float *rowp[A];                                                                              \
            long colo[A];                                                                                      \
            const long ty = t / tw, tx = t % tw;                                                               \
            for (int k = 0; k < A; ++k) {                                                                      \
                rowp[k] = x + border_index(row0 + 4 * ty + k, H, mode) * rs;                                   \
                colo[k] = border_index(col0 + 4 * tx + k, W, mode) * cs;                                       \
            }                                                                                                  \
            float *vt = V + t * C;                                                                             \
            for (int c = 0; c < C; c += VL) {                                                                  \
                for (int col = 0; col < A; ++col) {                                                            \
                    const long off = colo[col] + c;                                                            \
                    for (int l = 0; l < VL; ++l) APPLY(U_, IN_, l);                                            \
                }                                                                                              \
                for (int i = 0; i < A; ++i) {                                                                  \
                    float w[A][VL];                                                                            \
                    for (int l = 0; l < VL; ++l) APPLY(W_, UR_, l);                                            \
                    for (int j = 0; j < A; ++j) {                                                              \
                        float *v = vt + (long)(A * i + j) * plane + c;                                         \
                        for (int l = 0; l < VL; ++l) v[l] = w[j][l];                                           \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        return 0;                                                                                              \
    }

DEFINE_WINOGRAD_INPUT(stylecore_winograd_input, 6, BT_APPLY)
DEFINE_WINOGRAD_INPUT(stylecore_winograd45_input, 8, BT8_APPLY)

/* A^T = [[1,1,1,1,1,0],[0,1,-1,2,-2,0],[0,1,1,4,4,0],[0,1,-1,8,-8,1]] */
#define AT_APPLY(o, m, l)                                                        \
    do {                                                                         \
        float m0 = m(0, l), m1 = m(1, l), m2 = m(2, l), m3 = m(3, l), m4 = m(4, l), m5 = m(5, l); \
        float a = m1 + m2, b = m1 - m2, cc = m3 + m4, dd = m3 - m4;            \
        o(0, l) = m0 + a + cc;                                                   \
        o(1, l) = b + 2.0f * dd;                                                 \
        o(2, l) = a + 4.0f * cc;                                                 \
        o(3, l) = b + 8.0f * dd + m5;                                            \
    } while (0)

/* A^T (4x8) = [[1,1,1,1,1,1,1,0],[0,1,-1,2,-2,1/2,-1/2,0],[0,1,1,4,4,1/4,1/4,0],[0,1,-1,8,-8,1/8,-1/8,1]] */
#define AT8_APPLY(o, m, l)                                                                                \
    do {                                                                                                  \
        float m0 = m(0, l), s12 = m(1, l) + m(2, l), d12 = m(1, l) - m(2, l), s34 = m(3, l) + m(4, l),    \
              d34 = m(3, l) - m(4, l), s56 = m(5, l) + m(6, l), d56 = m(5, l) - m(6, l);                  \
        o(0, l) = m0 + s12 + s34 + s56;                                                                   \
        o(1, l) = d12 + 2.0f * d34 + 0.5f * d56;                                                          \
        o(2, l) = s12 + 4.0f * s34 + 0.25f * s56;                                                         \
        o(3, l) = d12 + 8.0f * d34 + 0.125f * d56 + m(7, l);                                              \
    } while (0)

/* y[p][q] = (A^T m A)[p][q] for one tile and VL channels: m points at the tile's channel block in plane 0 of M,
 * planes are `plane` floats apart (A = 6: F(4x4, 3x3), A = 8: F(4x4, 5x5)). Rows first (s[p][j] = sum_i AT[p][i]
 * M[i*A+j]), then columns (y[p][q] = sum_j AT[q][j] s[p][j]). */
#define MI_(i, l) m[(long)(A_ * (i)) * plane + (l)]
#define SO_(p, l) s[p][j][l]
#define SI_(k, l) s[p][k][l]
#define YO_(q, l) y[p][q][l]
#define DEFINE_TILE_OUTPUT(NAME, A, APPLY)                                                                     \
    static inline void NAME(const float *mt, long plane, float y[4][4][VL]) {                                  \
        enum { A_ = A };                                                                                       \
        float s[4][A][VL];                                                                                     \
        for (int j = 0; j < A; ++j) {                                                                          \
            const float *m = mt + (long)j * plane;                                                             \
            for (int l = 0; l < VL; ++l) APPLY(SO_, MI_, l);                                                   \
        }                                                                                                      \
        for (int p = 0; p < 4; ++p)                                                                            \
            for (int l = 0; l < VL; ++l) APPLY(YO_, SI_, l);                                                   \
    }

DEFINE_TILE_OUTPUT(tile_output6, 6, AT_APPLY)
DEFINE_TILE_OUTPUT(tile_output8, 8, AT8_APPLY)

/* out (HO, WO, K) <- A^T m A (+ bias) for the tiles of tile rows [ty0, ty0+rows).
 * phase_ch > 0: the K = 4 * phase_ch channels are the four output phases (py, px) of a 2x upsampling conv,
 * channel p * phase_ch + ch for phase p = 2 * py + px; pixel (y, x) of phase p goes to (2y + py, 2x + px, ch) of
 * out (2 HO, 2 WO, phase_ch), so the interleaved image is written directly. */
int stylecore_winograd_output(const float *M, int K, int rows, int tw, int ty0, const float *bias, float *out, int ho,
                              int wo, int phase_ch, int nthreads) {
    if (K % VL || (phase_ch && (phase_ch % VL || K != 4 * phase_ch))) return -1;
    const long T = (long)rows * tw, plane = T * K;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long t = 0; t < T; ++t) {
        float y[4][4][VL];
        const int ty = (int)(t / tw), tx = (int)(t % tw);
        const int oy = 4 * (ty0 + ty), ox = 4 * tx;
        const int ny = ho - oy < 4 ? ho - oy : 4, nx = wo - ox < 4 ? wo - ox : 4;
        const float *mt = M + t * K;
        for (int c = 0; c < K; c += VL) {
            tile_output6(mt + c, plane, y);
            const int ph = phase_ch ? c / phase_ch : 0, py = ph >> 1, px = ph & 1, ch = phase_ch ? c % phase_ch : c;
            for (int p = 0; p < ny; ++p)
                for (int q = 0; q < nx; ++q) {
                    float *o = phase_ch
                        ? out + ((long)(2 * (oy + p) + py) * 2 * wo + 2 * (ox + q) + px) * phase_ch + ch
                        : out + ((long)(oy + p) * wo + (ox + q)) * K + c;
                    if (bias)
                        for (int l = 0; l < VL; ++l) o[l] = y[p][q][l] + bias[c + l];
                    else
                        for (int l = 0; l < VL; ++l) o[l] = y[p][q][l];
                }
        }
    }
    return 0;
}

/* The space-to-depth conv's output, pixel-shuffled in place: M (64, rows*tw, VL) holds 4x4 output tiles of a map of
 * ho x wo pixels whose channel j < out_c * r * r is (o, py, px) = (j / r^2, (j / r) % r, j % r); its value (+ bias[j])
 * goes to pixel (r * Y + py, r * X + px), channel o, of out (out_h, out_w, out_c), where that lies inside it. */
int stylecore_winograd45_output_shuffle(const float *M, int rows, int tw, int ty0, const float *bias, int ho, int wo,
                                        int r, float *out, int out_h, int out_w, int out_c, int nthreads) {
    if (out_c * r * r > VL) return -1;
    const long T = (long)rows * tw, plane = T * VL;
    const int nch = out_c * r * r;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (long t = 0; t < T; ++t) {
        float y[4][4][VL];
        const int ty = (int)(t / tw), tx = (int)(t % tw);
        const int oy = 4 * (ty0 + ty), ox = 4 * tx;
        tile_output8(M + t * VL, plane, y);
        for (int p = 0; p < 4 && oy + p < ho; ++p)
            for (int q = 0; q < 4 && ox + q < wo; ++q)
                for (int j = 0; j < nch; ++j) {
                    const int o = j / (r * r), py = (j / r) % r, px = j % r;
                    const long Y = (long)r * (oy + p) + py, X = (long)r * (ox + q) + px;
                    if (Y < out_h && X < out_w)
                        out[(Y * out_w + X) * out_c + o] = y[p][q][j] + (bias ? bias[j] : 0.0f);
                }
    }
    return 0;
}
