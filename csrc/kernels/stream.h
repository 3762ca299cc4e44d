/* The roofline probe: an update's memory traffic with no math to speak of, in the optimizers' own
 * access pattern (one pass; each element of every array read, and of the in-out ones written,
 * once).  x + 0 * g keeps finite values as they are, so the probe can share an optimizer's arrays,
 * and the compiler cannot drop the loads or stores.  n_inout (1 .. 5) is a compile-time constant. */
FO_INLINE void FO_FN(stream_loop)(size_t n, const FO_P *restrict g, FO_P *restrict a, FO_P *restrict b,
                                  FO_P *restrict c, FO_P *restrict d, FO_P *restrict e, const int n_inout)
{
    for (size_t i = 0; i < n; i++) {
        T z = (T)0 * LD_G(g, i);
        ST_G(a, i, LD_G(a, i) + z);
        if (n_inout > 1) ST_G(b, i, LD_G(b, i) + z);
        if (n_inout > 2) ST_G(c, i, LD_G(c, i) + z);
        if (n_inout > 3) ST_G(d, i, LD_G(d, i) + z);
        if (n_inout > 4) ST_G(e, i, LD_G(e, i) + z);
    }
}
