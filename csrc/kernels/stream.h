/* The roofline probe: an update's memory traffic with no math to speak of, in the optimizers' own
 * access pattern (one pass; each element of every array read, and of the in-out ones written,
 * once).  x + 0 * g keeps finite values as they are, so the probe can share an optimizer's arrays,
 * and the compiler cannot drop the loads or stores.  n_inout (1 .. 5) is a compile-time constant. */
FO_INLINE void FO_FN(stream_loop)(size_t n, const T *restrict g, T *restrict a, T *restrict b, T *restrict c,
                                  T *restrict d, T *restrict e, const int n_inout)
{
    for (size_t i = 0; i < n; i++) {
        T z = (T)0 * g[i];
        a[i] = a[i] + z;
        if (n_inout > 1) b[i] = b[i] + z;
        if (n_inout > 2) c[i] = c[i] + z;
        if (n_inout > 3) d[i] = d[i] + z;
        if (n_inout > 4) e[i] = e[i] + z;
    }
}
