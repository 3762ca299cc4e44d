/* The one C++ piece of fastopt._steady: a call of torch's C function for a tensor's data pointer
 * behind an exception barrier.  torch throws a C++ exception where a tensor has no accessible
 * storage (a wrapper subclass, a fake tensor); it must not unwind through steady.c's C frames. */
#include <Python.h>
#include <cstdint>

extern "C" int fastopt_tensor_address(void *(*address_of)(PyObject *), PyObject *t, uintptr_t *a) noexcept
{
    try {
        *a = reinterpret_cast<uintptr_t>(address_of(t));
        return 1;
    } catch (...) {
        return 0;
    }
}
