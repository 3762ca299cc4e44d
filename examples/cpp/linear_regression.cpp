// Linear regression in C++17 with fastopt: mini-batch gradient descent with an L2 penalty
// (fastopt::elastic_net_grad + fastopt::sgd), then Adam, on generated data.  Prints the loss
// falling.  Build against an installed fastopt (find_package) -- see CMakeLists.txt beside this.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <fastopt.hpp>

namespace {

struct Data {
    int n, d;
    std::vector<float> x, y;  // x is n x d, row-major
};

Data make_data(int n, int d)
{
    std::mt19937 rng(0);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Data data{n, d, std::vector<float>(size_t(n) * d), std::vector<float>(n)};
    std::vector<float> w_true(d);
    for (auto &w : w_true) w = normal(rng);
    for (int i = 0; i < n; i++) {
        float dot = 0;
        for (int j = 0; j < d; j++) {
            data.x[size_t(i) * d + j] = normal(rng) / std::sqrt(float(d));
            dot += data.x[size_t(i) * d + j] * w_true[j];
        }
        data.y[i] = dot + 0.1f * normal(rng);
    }
    return data;
}

// Mean squared error / 2 over rows [begin, end); writes its gradient (w.r.t. w) into grad.
double loss_and_grad(const Data &data, const std::vector<float> &w, int begin, int end, std::vector<float> &grad)
{
    std::fill(grad.begin(), grad.end(), 0.0f);
    double loss = 0;
    for (int i = begin; i < end; i++) {
        const float *row = &data.x[size_t(i) * data.d];
        float r = -data.y[i];
        for (int j = 0; j < data.d; j++) r += row[j] * w[j];
        loss += 0.5 * r * r;
        for (int j = 0; j < data.d; j++) grad[j] += r * row[j] / float(end - begin);
    }
    return loss / (end - begin);
}

}  // namespace

int main()
{
    const int n = 4000, d = 64, batch = 100;
    const double l2 = 1e-3;
    Data data = make_data(n, d);
    std::vector<float> w(d, 0.0f), grad(d), m(d, 0.0f), v(d, 0.0f);
    std::printf("fastopt %s (%s): linear regression, %d samples x %d features\n", fastopt_version(), fastopt_isa(), n, d);

    fastopt_sgd_options sgd = fastopt::sgd_defaults(0.5);
    std::printf("mini-batch gradient descent, L2 %.0e\n", l2);
    for (int epoch = 1; epoch <= 5; epoch++) {
        for (int b = 0; b + batch <= n; b += batch) {
            loss_and_grad(data, w, b, b + batch, grad);
            fastopt::elastic_net_grad(grad.data(), w.data(), d, 0.0, l2);  // + l2 * w
            fastopt::sgd(w.data(), grad.data(), static_cast<float *>(nullptr), d, sgd);
        }
        std::printf("  epoch %d  loss %.6f\n", epoch, loss_and_grad(data, w, 0, n, grad));
    }

    fastopt_adam_options adam = fastopt::adam_defaults();
    adam.common.lr = 1e-2;
    std::printf("then Adam\n");
    for (int epoch = 1; epoch <= 5; epoch++) {
        for (int b = 0; b + batch <= n; b += batch) {
            loss_and_grad(data, w, b, b + batch, grad);
            fastopt::adam(w.data(), grad.data(), m.data(), v.data(), d, adam);
            adam.step++;
        }
        std::printf("  epoch %d  loss %.6f\n", epoch, loss_and_grad(data, w, 0, n, grad));
    }

    try {  // a bad argument is an exception carrying fastopt's message, and changes nothing
        adam.beta1 = 1.5;
        fastopt::adam(w.data(), grad.data(), m.data(), v.data(), d, adam);
    } catch (const fastopt::error &e) {
        std::printf("error handling, as expected: beta1 = 1.5 was refused (%s), and nothing was written\n", e.what());
    }
    return 0;
}
