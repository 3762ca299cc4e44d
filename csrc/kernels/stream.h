/* The roofline probe: the memory traffic of an update with no math to speak of.  Every element of
 * each read array is read once and every element of each in-out array is read and written once,
 * in blocks small enough to stay in L1, so the bytes moved equal an optimizer's of the same mix.
 * x + 0 * acc leaves finite values as they were, so the probe can share an optimizer's arrays. */
#define FO_STREAM_BLOCK 256

FO_INLINE void FO_FN(stream_loop)(size_t n, size_t n_in, const T *const *in, size_t n_inout, T *const *inout)
{
    for (size_t b = 0; b < n; b += FO_STREAM_BLOCK) {
        size_t len = n - b < FO_STREAM_BLOCK ? n - b : FO_STREAM_BLOCK;
        T acc[FO_STREAM_BLOCK] = {0};
        for (size_t j = 0; j < n_in; j++)
            for (size_t i = 0; i < len; i++) acc[i] = acc[i] + in[j][b + i];
        for (size_t j = 0; j < n_inout; j++)
            for (size_t i = 0; i < len; i++) inout[j][b + i] = inout[j][b + i] + (T)0 * acc[i];
    }
}
