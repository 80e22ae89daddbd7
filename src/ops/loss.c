// Softmax cross-entropy over logits: (N,K), mean over the batch.
//
// Per row, with m = max_j z_j (subtracted so exp never overflows):
//   p_j = exp(z_j - m) / sum_i exp(z_i - m),   loss_row = log(sum_i exp(z_i - m)) - (z_label - m)
// The sums run in double; probs are kept for backward: dz = (p - onehot(label)) / N.
// probs may alias logits, dlogits may alias probs.
#include "core/common.h"
#include "ops/ops.h"

#include <math.h>

static bnl_status check_args(const char *who, const int64_t *labels, int N, int K) {
    if (N <= 0 || K <= 0) return bnl_fail(BNL_ERR_ARG, "%s: sizes must be positive (N=%d K=%d)", who, N, K);
    size_t n;
    if (!bnl_mul_ok((size_t)N, (size_t)K, &n) || !bnl_mul_ok(n, sizeof(float), &n))
        return bnl_fail(BNL_ERR_ARG, "%s: tensor size overflows (N=%d K=%d)", who, N, K);
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= K)
            return bnl_fail(BNL_ERR_ARG, "%s: label of row %d is %lld, outside [0, %d)", who, i, (long long)labels[i], K);
    return BNL_OK;
}

bnl_status bnl_softmax_xent_forward(float *loss, float *probs, const float *logits,
                                    const int64_t *labels, int N, int K) {
    if (!loss || !probs || !logits || !labels)
        return bnl_fail(BNL_ERR_ARG, "softmax_xent_forward: NULL pointer (loss=%p probs=%p logits=%p labels=%p)",
                        (void *)loss, (void *)probs, (const void *)logits, (const void *)labels);
    bnl_status st = check_args("softmax_xent_forward", labels, N, K);
    if (st != BNL_OK) return st;
    size_t Ks = (size_t)K;
    double total = 0.0;
    for (size_t n = 0; n < (size_t)N; n++) {
        const float *z = logits + n * Ks;
        float *p = probs + n * Ks;
        float m = z[0];
        for (size_t j = 1; j < Ks; j++) m = z[j] > m ? z[j] : m;
        double sum = 0.0;
        for (size_t j = 0; j < Ks; j++) sum += exp((double)z[j] - (double)m);
        total += log(sum) - ((double)z[labels[n]] - (double)m);   // before p is written: p may alias z
        double inv = 1.0 / sum;
        for (size_t j = 0; j < Ks; j++) p[j] = (float)(exp((double)z[j] - (double)m) * inv);
    }
    *loss = (float)(total / (double)N);
    return BNL_OK;
}

bnl_status bnl_softmax_xent_backward(float *dlogits, const float *probs, const int64_t *labels, int N, int K) {
    if (!dlogits || !probs || !labels)
        return bnl_fail(BNL_ERR_ARG, "softmax_xent_backward: NULL pointer (dlogits=%p probs=%p labels=%p)",
                        (void *)dlogits, (const void *)probs, (const void *)labels);
    bnl_status st = check_args("softmax_xent_backward", labels, N, K);
    if (st != BNL_OK) return st;
    size_t Ks = (size_t)K;
    float invn = 1.0f / (float)N;
    for (size_t n = 0; n < (size_t)N; n++) {
        const float *p = probs + n * Ks;
        float *d = dlogits + n * Ks;
        float pl = p[labels[n]];   // read before d overwrites it (d may alias p)
        for (size_t j = 0; j < Ks; j++) d[j] = p[j] * invn;
        d[labels[n]] = (pl - 1.0f) * invn;
    }
    return BNL_OK;
}
