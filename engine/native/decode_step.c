/* One decode step of a Llama model with int8, int4 or bfloat16 weights, on CPU, as one C function.

   Why: a small model's decode step costs per operation, not per weight byte (benchmarks/RESULTS.md,
   "CPU decode steps"). PyTorch runs a step of the 15 M default model as about two hundred kernels, each
   with its own dispatch; here the whole step is one call, one OpenMP team, a barrier between stages.

   It computes what engine/cpu_step.py computes, in the same order and the same roundings to bfloat16
   between stages (the residual stream, the norms' outputs, every projection's output), with float32
   inside each stage. Only the order of the additions inside a dot product differs, so logits agree to
   about bfloat16's precision, not bit for bit (engine/native_step.py says where that is allowed).

   Layout (batch 1): weights int8 [out, in] row-major with one bfloat16 scale per output row; bfloat16
   [out, in] row-major; or int4 in PyTorch's CPU kernel layout (engine/kernels/quant_cpu.py, CpuInt4:
   per block of 64 output rows, per input column, 32 bytes, byte j holding row j in its low nibble and
   row j + 32 in its high one; w = (nibble - 8) * scale + zero, bfloat16 (scale, zero) pairs [groups,
   rows, 2]); norms, embeddings in bfloat16; the KV cache float32 or bfloat16 [n_kv_heads, capacity, head_dim] per layer;
   rotary tables float32 [positions, head_dim / 2] (Hugging Face's "rotate half" row order). */

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef uint16_t bf16;

static inline float bf2f(bf16 x) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)x << 16;
    return v.f;
}

/* Round to nearest even, as PyTorch's float -> bfloat16 conversion does. */
static inline float round_bf(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return f; /* NaN stays NaN */
    v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) & 0xffff0000u;
    return v.f;
}

enum { W_INT8 = 0, W_BF16 = 1, W_INT4 = 2 };

typedef struct {
    const void *w;     /* int8 [rows, cols], bfloat16 [rows, cols] or int4 blocks (see above) */
    const bf16 *scale; /* int8: [rows]; int4: (scale, zero) pairs, group g at scale + g * group_stride */
    int kind, group;   /* W_*; int4: the group size (cols is a whole number of groups) */
    long group_stride; /* int4: elements between groups' pairs */
} QLinear;

typedef struct {
    QLinear wq, wk, wv, wo, w1, w3, w2;
    const bf16 *attn_norm, *ffn_norm; /* [dim] */
    void *k, *v;                      /* [n_kv, capacity, head_dim] float32 or bfloat16 */
} Layer;

typedef struct {
    int dim, n_layers, n_heads, n_kv_heads, head_dim, hidden, vocab, capacity, kv_bf16, n_threads;
    float eps;
    const bf16 *embeddings; /* [vocab, dim] */
    const bf16 *final_norm;
    QLinear output;                   /* [vocab, dim] */
    const float *rope_cos, *rope_sin; /* [positions, head_dim / 2] */
    Layer *layers;
    float *scratch; /* native_scratch_floats(...) floats */
} Model;

#define CHUNK 256 /* keys per attention work item, so every thread has work at any context length */

int native_abi_version(void) { return 3; }

/* Whether this build has the AVX-512 code (else only the plain C loops, slower than PyTorch's kernels). */
int native_vectorized(void) {
#if defined(__AVX512F__)
    return 1;
#else
    return 0;
#endif
}

/* Floats of scratch a step needs. */
long native_scratch_floats(int dim, int n_heads, int n_kv_heads, int head_dim, int hidden, int capacity) {
    long items = (long)n_heads * (capacity / CHUNK + 1);
    return 4L * dim + (long)(n_heads + 2 * n_kv_heads) * head_dim + 2L * hidden + (long)n_heads * capacity
           + items * (head_dim + 2);
}

#if defined(__AVX512F__)
static inline __m512 bf16x16(const bf16 *p) { /* 16 bfloat16 as float32: the bits shifted up */
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}

static inline __m512 i8x16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
#endif

/* dot(w, x) over n for a row of bfloat16 (bf) or int8 weights. */
static float dot_row(const void *w, int bf, const float *x, int n) {
    const bf16 *wb = (const bf16 *)w;
    const int8_t *wi = (const int8_t *)w;
    int i = 0;
    float s = 0.0f;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = bf ? bf16x16(wb + i) : i8x16(wi + i), w1 = bf ? bf16x16(wb + i + 16) : i8x16(wi + i + 16);
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
    }
    s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#endif
    for (; i < n; i++) s += (bf ? bf2f(wb[i]) : (float)wi[i]) * x[i];
    return s;
}

/* int4 rows [64 * block, 64 * block + 64) of out (those below `rows`), as project() takes them. */
static void int4_block(const QLinear *q, const float *x, int cols, float *out, int rows, int block) {
    const uint8_t *bytes = (const uint8_t *)q->w + (long)block * cols * 32;
    float res[64], part[64];
    for (int j = 0; j < 64; j++) res[j] = 0.0f;
    for (int g = 0; g < cols / q->group; g++) {
        float xs = 0.0f;
        int k0 = g * q->group;
#if defined(__AVX512F__)
        const __m256i low4 = _mm256_set1_epi8(0x0f);
        __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int k = k0; k < k0 + q->group; k++) {
            __m256i b = _mm256_loadu_si256((const __m256i *)(bytes + (long)k * 32));
            __m256i lo = _mm256_and_si256(b, low4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low4);
            __m512 xk = _mm512_set1_ps(x[k]);
            xs += x[k];
            acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(lo))), xk, acc[0]);
            acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(lo, 1))), xk, acc[1]);
            acc[2] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(hi))), xk, acc[2]);
            acc[3] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(hi, 1))), xk, acc[3]);
        }
        for (int i = 0; i < 4; i++) _mm512_storeu_ps(part + 16 * i, acc[i]);
#else
        for (int j = 0; j < 64; j++) part[j] = 0.0f;
        for (int k = k0; k < k0 + q->group; k++) {
            const uint8_t *b = bytes + (long)k * 32;
            xs += x[k];
            for (int j = 0; j < 32; j++) {
                part[j] += (float)(b[j] & 0x0f) * x[k];
                part[j + 32] += (float)(b[j] >> 4) * x[k];
            }
        }
#endif
        /* sum_k x[k] ((q - 8) scale + zero) = scale * sum_k x[k] q + (zero - 8 scale) * sum_k x[k] */
        const bf16 *pairs = q->scale + g * q->group_stride + (long)block * 64 * 2;
        for (int j = 0; j < 64; j++) {
            float scale = bf2f(pairs[2 * j]), zero = bf2f(pairs[2 * j + 1]);
            res[j] += scale * part[j] + (zero - 8.0f * scale) * xs;
        }
    }
    for (int j = 0; j < 64 && 64 * block + j < rows; j++) out[64 * block + j] = round_bf(res[j]);
}

/* out[r] = bf16(dot(w[r], x) * scale[r]) (int8), bf16(dot(w[r], x)) (bfloat16) or the int4 rows, for the
   rows this thread takes (no barrier after). */
static void project(const QLinear *q, const float *x, int cols, float *out, int rows) {
    if (q->kind == W_INT4) {
#pragma omp for schedule(static) nowait
        for (int b = 0; b < (rows + 63) / 64; b++) int4_block(q, x, cols, out, rows, b);
    } else if (q->kind == W_BF16) {
        const bf16 *w = (const bf16 *)q->w;
#pragma omp for schedule(static) nowait
        for (int r = 0; r < rows; r++) out[r] = round_bf(dot_row(w + (long)r * cols, 1, x, cols));
    } else {
        const int8_t *w = (const int8_t *)q->w;
#pragma omp for schedule(static) nowait
        for (int r = 0; r < rows; r++) out[r] = round_bf(dot_row(w + (long)r * cols, 0, x, cols) * bf2f(q->scale[r]));
    }
}

/* bf16(bf16(x * rsqrt(mean(x^2) + eps)) * weight), by one thread. */
static void rms_norm(const float *x, const bf16 *weight, int n, float eps, float *out) {
    float ss = 0.0f;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = round_bf(round_bf(x[i] * r) * bf2f(weight[i]));
}

/* x * (cos, cos) + roll(x, D/2) * (-sin, sin), rounded to bfloat16, for one head. */
static void rotate(float *x, const float *cos, const float *sin, int d) {
    int h = d / 2;
    for (int i = 0; i < h; i++) {
        float a = x[i], b = x[i + h];
        x[i] = round_bf(a * cos[i] - b * sin[i]);
        x[i + h] = round_bf(b * cos[i] + a * sin[i]);
    }
}

static inline float kv_at(const void *base, int bf, long i) {
    return bf ? bf2f(((const bf16 *)base)[i]) : ((const float *)base)[i];
}

static void kv_store(void *base, int bf, long i, float x) {
    if (bf) {
        union { uint32_t u; float f; } v;
        v.f = x; /* already bfloat16-exact */
        ((bf16 *)base)[i] = (bf16)(v.u >> 16);
    } else {
        ((float *)base)[i] = x;
    }
}

#if defined(__AVX512F__)
/* 16 floats of the cache from element i, stored as float32 or bfloat16. */
static inline __m512 kv16(const void *base, int bf, long i) {
    return bf ? bf16x16((const bf16 *)base + i) : _mm512_loadu_ps((const float *)base + i);
}
#endif

/* exp(x[j] - mx) in place; returns their sum (vectorised through libmvec under fast-math). */
__attribute__((optimize("fast-math"))) static float exp_shifted(float *x, int n, float mx) {
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    return sum;
}

/* One work item of the attention: query head `head` over keys [start, end). Writes the item's max
   score, its sum of exp(score - max) and its unnormalised output (head_dim floats) to `item`. */
static void attend_chunk(const Model *m, const Layer *L, int head, const float *q, int start, int end,
                         float *scores, float *item) {
    int d = m->head_dim, kvh = head / (m->n_heads / m->n_kv_heads), bf = m->kv_bf16, n = end - start, vec = 0;
    long base = ((long)kvh * m->capacity + start) * d;
    float scale = 1.0f / sqrtf((float)d), mx = -INFINITY, *out = item + 2;
#if defined(__AVX512F__)
    vec = d % 16 == 0 && d <= 256;
    if (vec) {
        __m512 qv[16];
        for (int b = 0; b < d / 16; b++) qv[b] = _mm512_loadu_ps(q + 16 * b);
        for (int j = 0; j < n; j++) {
            long at = base + (long)j * d;
            __m512 acc = _mm512_mul_ps(qv[0], kv16(L->k, bf, at));
            for (int b = 1; b < d / 16; b++) acc = _mm512_fmadd_ps(qv[b], kv16(L->k, bf, at + 16 * b), acc);
            scores[j] = _mm512_reduce_add_ps(acc) * scale;
        }
    }
#endif
    if (!vec)
        for (int j = 0; j < n; j++) {
            float s = 0.0f;
            for (int i = 0; i < d; i++) s += q[i] * kv_at(L->k, bf, base + (long)j * d + i);
            scores[j] = s * scale;
        }
    for (int j = 0; j < n; j++) mx = scores[j] > mx ? scores[j] : mx;
    item[0] = mx;
    item[1] = exp_shifted(scores, n, mx);
#if defined(__AVX512F__)
    if (vec) {
        __m512 o[16];
        for (int b = 0; b < d / 16; b++) o[b] = _mm512_setzero_ps();
        for (int j = 0; j < n; j++) {
            __m512 p = _mm512_set1_ps(scores[j]);
            long at = base + (long)j * d;
            for (int b = 0; b < d / 16; b++) o[b] = _mm512_fmadd_ps(p, kv16(L->v, bf, at + 16 * b), o[b]);
        }
        for (int b = 0; b < d / 16; b++) _mm512_storeu_ps(out + 16 * b, o[b]);
        return;
    }
#endif
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < d; i++) out[i] += scores[j] * kv_at(L->v, bf, base + (long)j * d + i);
}

/* A head's output from its work items: the softmax over all its keys, rounded to bfloat16. */
static void combine(const float *items, int n_items, int d, float *out) {
    float mx = -INFINITY, sum = 0.0f;
    for (int c = 0; c < n_items; c++) mx = items[(long)c * (d + 2)] > mx ? items[(long)c * (d + 2)] : mx;
    for (int i = 0; i < d; i++) out[i] = 0.0f;
    for (int c = 0; c < n_items; c++) {
        const float *item = items + (long)c * (d + 2);
        float w = expf(item[0] - mx);
        sum += item[1] * w;
        for (int i = 0; i < d; i++) out[i] += item[2 + i] * w;
    }
    for (int i = 0; i < d; i++) out[i] = round_bf(out[i] / sum);
}

/* Feed `token` at position `pos` (keys and values of [0, pos) already in the cache); write float32
   logits [vocab]. Returns 0, or -1 when the arguments cannot be served (the caller falls back). */
int native_decode_step(const Model *m, int token, int pos, float *logits) {
    if (token < 0 || token >= m->vocab || pos < 0 || pos >= m->capacity) return -1;
    int dim = m->dim, d = m->head_dim, nq = m->n_heads * d, nkv = m->n_kv_heads * d, hidden = m->hidden;
    int n = pos + 1, chunks = (n + CHUNK - 1) / CHUNK;
    float *h = m->scratch, *x = h + dim, *attn = x + dim, *heads = attn + dim;
    float *q = heads + nq, *k = q + nq, *v = k + nkv, *gate = v + nkv, *up = gate + hidden;
    float *scores = up + hidden, *items = scores + (long)m->n_heads * m->capacity;
    const float *cos = m->rope_cos + (long)pos * (d / 2), *sin = m->rope_sin + (long)pos * (d / 2);
    for (int i = 0; i < dim; i++) h[i] = bf2f(m->embeddings[(long)token * dim + i]);

#pragma omp parallel num_threads(m->n_threads)
    {
        for (int l = 0; l < m->n_layers; l++) {
            const Layer *L = &m->layers[l];
#pragma omp single
            rms_norm(h, L->attn_norm, dim, m->eps, x);
            project(&L->wq, x, dim, q, nq);
            project(&L->wk, x, dim, k, nkv);
            project(&L->wv, x, dim, v, nkv);
#pragma omp barrier
#pragma omp single
            {
                for (int hh = 0; hh < m->n_heads; hh++) rotate(q + hh * d, cos, sin, d);
                for (int hh = 0; hh < m->n_kv_heads; hh++) {
                    rotate(k + hh * d, cos, sin, d);
                    long at = ((long)hh * m->capacity + pos) * d;
                    for (int i = 0; i < d; i++) {
                        kv_store(L->k, m->kv_bf16, at + i, k[hh * d + i]);
                        kv_store(L->v, m->kv_bf16, at + i, v[hh * d + i]);
                    }
                }
            }
#pragma omp for schedule(static)
            for (int it = 0; it < m->n_heads * chunks; it++) {
                int hh = it / chunks, start = (it % chunks) * CHUNK, end = start + CHUNK < n ? start + CHUNK : n;
                attend_chunk(m, L, hh, q + hh * d, start, end, scores + (long)hh * m->capacity + start,
                             items + (long)it * (d + 2));
            }
#pragma omp for schedule(static)
            for (int hh = 0; hh < m->n_heads; hh++) combine(items + (long)hh * chunks * (d + 2), chunks, d, heads + hh * d);
            project(&L->wo, heads, nq, attn, dim);
#pragma omp barrier
#pragma omp single
            {
                for (int i = 0; i < dim; i++) h[i] = round_bf(h[i] + attn[i]);
                rms_norm(h, L->ffn_norm, dim, m->eps, x);
            }
            project(&L->w1, x, dim, gate, hidden);
            project(&L->w3, x, dim, up, hidden);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int i = 0; i < hidden; i++) {
                float g = gate[i];
                gate[i] = round_bf(round_bf(g / (1.0f + expf(-g))) * up[i]);
            }
            project(&L->w2, gate, hidden, attn, dim);
#pragma omp barrier
#pragma omp single
            for (int i = 0; i < dim; i++) h[i] = round_bf(h[i] + attn[i]);
        }
#pragma omp single
        rms_norm(h, m->final_norm, dim, m->eps, x);
        project(&m->output, x, dim, logits, m->vocab);
    }
    return 0;
}
