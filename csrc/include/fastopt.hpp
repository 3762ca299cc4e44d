/*
 * fastopt.hpp: a thin, header-only C++17 wrapper over fastopt.h.  Failures throw fastopt::error
 * (status code + message); element types are deduced from the pointers; one tensor per call
 * (use the C API directly for tensor lists).  With C++20, std::span overloads are added.
 *
 *   std::vector<float> w(n), g(n), m(n), v(n);
 *   fastopt_adam_options o = fastopt::adamw_defaults();
 *   o.step = 1;
 *   fastopt::adam(w.data(), g.data(), m.data(), v.data(), n, o);
 */
#ifndef FASTOPT_HPP
#define FASTOPT_HPP

#include <cstddef>
#include <stdexcept>
#include <string>
#if __cplusplus >= 202002L
#include <span>
#endif

#include "fastopt.h"

namespace fastopt {

/* A failed call: what fastopt_status_string and fastopt_last_error say.  Nothing was written. */
class error : public std::runtime_error {
public:
    explicit error(fastopt_status s)
        : std::runtime_error(std::string(fastopt_status_string(s)) + ": " + fastopt_last_error()), status(s) {}
    fastopt_status status;
};

inline void check(fastopt_status s)
{
    if (s != FASTOPT_OK) throw error(s);
}

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr fastopt_dtype value = FASTOPT_FLOAT32; };
template <> struct dtype_of<double> { static constexpr fastopt_dtype value = FASTOPT_FLOAT64; };

/* torch.optim's defaults. */
inline fastopt_sgd_options sgd_defaults(double lr)
{
    fastopt_sgd_options o{};
    o.common.lr = lr;
    return o;
}
inline fastopt_adam_options adam_defaults()
{
    fastopt_adam_options o{};
    o.common.lr = 1e-3, o.beta1 = 0.9, o.beta2 = 0.999, o.eps = 1e-8, o.step = 1;
    return o;
}
inline fastopt_adam_options adamw_defaults()
{
    fastopt_adam_options o = adam_defaults();
    o.common.weight_decay = 1e-2, o.decoupled_weight_decay = 1;
    return o;
}

template <class T>
void sgd(T *params, const T *grads, T *momentum_buffers, std::size_t n, const fastopt_sgd_options &o)
{
    void *p[] = {params}, *b[] = {momentum_buffers};
    const void *g[] = {grads};
    check(fastopt_sgd(dtype_of<T>::value, 1, &n, p, g, momentum_buffers ? b : nullptr, &o));
}

template <class T>
void adam(T *params, const T *grads, T *exp_avgs, T *exp_avg_sqs, std::size_t n, const fastopt_adam_options &o,
          T *max_exp_avg_sqs = nullptr)
{
    void *p[] = {params}, *m[] = {exp_avgs}, *v[] = {exp_avg_sqs}, *vmax[] = {max_exp_avg_sqs};
    const void *g[] = {grads};
    check(fastopt_adam(dtype_of<T>::value, 1, &n, p, g, m, v, max_exp_avg_sqs ? vmax : nullptr, &o));
}

/* grads += l2 * params + l1 * sign(params) */
template <class T>
void elastic_net_grad(T *grads, const T *params, std::size_t n, double l1, double l2)
{
    void *g[] = {grads};
    const void *p[] = {params};
    check(fastopt_elastic_net_grad(dtype_of<T>::value, 1, &n, g, p, l1, l2));
}

template <class T>
double global_norm(const T *grads, std::size_t n, double norm_type = 2.0)
{
    const void *g[] = {grads};
    double norm = 0;
    check(fastopt_global_norm(dtype_of<T>::value, 1, &n, g, norm_type, &norm));
    return norm;
}

template <class T>
double clip_grad_norm(T *grads, std::size_t n, double max_norm, double norm_type = 2.0)
{
    void *g[] = {grads};
    double norm = 0;
    check(fastopt_clip_grad_norm(dtype_of<T>::value, 1, &n, g, max_norm, norm_type, &norm));
    return norm;
}

#if __cplusplus >= 202002L
template <class T>
void sgd(std::span<T> params, std::span<const T> grads, std::span<T> momentum_buffers, const fastopt_sgd_options &o)
{
    if (grads.size() != params.size() || (!momentum_buffers.empty() && momentum_buffers.size() != params.size()))
        throw std::invalid_argument("fastopt::sgd: spans of different sizes");
    sgd(params.data(), grads.data(), momentum_buffers.empty() ? nullptr : momentum_buffers.data(), params.size(), o);
}

template <class T>
void adam(std::span<T> params, std::span<const T> grads, std::span<T> exp_avgs, std::span<T> exp_avg_sqs,
          const fastopt_adam_options &o)
{
    std::size_t n = params.size();
    if (grads.size() != n || exp_avgs.size() != n || exp_avg_sqs.size() != n)
        throw std::invalid_argument("fastopt::adam: spans of different sizes");
    adam(params.data(), grads.data(), exp_avgs.data(), exp_avg_sqs.data(), n, o);
}
#endif

}  // namespace fastopt

#endif /* FASTOPT_HPP */
