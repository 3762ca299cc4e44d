/* fastopt._single: the latency path of fastopt.sgd, adam and adamw, for one NumPy array per role
 * (the CPython API, beside the cffi binding, which has everything else).  For a small update the
 * C work is a few microseconds, and through cffi building its arguments (an option struct, pointer
 * lists, a buffer export per array) and checking the arrays would cost more than that.  Here the
 * checks that only the Python objects allow (type, dtype, shape, C-contiguity, writability) read
 * each array's buffer in C.  Each function returns True when it made the update and False when the call is not
 * one for it or anything is refused: the general path then runs and names the problem (the C API
 * validates before it writes, so nothing has been written). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "fastopt.h"

static PyTypeObject *ndarray; /* numpy.ndarray */

typedef struct arrays {
    Py_buffer view[4]; /* adam's four arrays at most */
    int taken;
    fastopt_dtype dtype;
    size_t numel;
} arrays;

static void release(arrays *a)
{
    for (int i = 0; i < a->taken; i++) PyBuffer_Release(&a->view[i]);
    a->taken = 0;
}

static fastopt_dtype dtype_of(const char *format)
{
    return strcmp(format, "f") == 0 ? FASTOPT_FLOAT32 : strcmp(format, "d") == 0 ? FASTOPT_FLOAT64
         : strcmp(format, "e") == 0 ? FASTOPT_FLOAT16 : 0;
}

/* The buffers of objects[0 .. n): NumPy arrays of one float dtype (float32, float64 or float16) and
 * one shape, C-contiguous, writable where bit i of `written` is set.  0 when refused (no error set). */
static int take(arrays *a, PyObject *const *objects, int n, unsigned written)
{
    a->taken = 0;
    for (int i = 0; i < n; i++) {
        Py_buffer *v = &a->view[i], *first = &a->view[0];
        int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | ((written >> i) & 1 ? PyBUF_WRITABLE : 0);
        if (Py_TYPE(objects[i]) != ndarray || PyObject_GetBuffer(objects[i], v, flags) != 0) {
            PyErr_Clear();
            return release(a), 0;
        }
        a->taken++;
        if (i == 0 ? !(a->dtype = dtype_of(v->format))
                   : strcmp(v->format, first->format) != 0 || v->ndim != first->ndim ||
                         (v->ndim && memcmp(v->shape, first->shape, (size_t)v->ndim * sizeof *v->shape) != 0))
            return release(a), 0;
    }
    a->numel = (size_t)(a->view[0].len / a->view[0].itemsize);
    return 1;
}

/* A Python float (ints, bools and NumPy scalars take the general path, which checks them). */
static int real(PyObject *o, double *x)
{
    if (!PyFloat_CheckExact(o)) return 0;
    *x = PyFloat_AS_DOUBLE(o);
    return 1;
}

/* Runs the call with the GIL released and the buffers released after; True when it updated. */
#define RUN(a, call)                                                                                 \
    do {                                                                                             \
        fastopt_status status_;                                                                      \
        Py_BEGIN_ALLOW_THREADS status_ = (call);                                                     \
        Py_END_ALLOW_THREADS release(a);                                                             \
        return PyBool_FromLong(status_ == FASTOPT_OK);                                               \
    } while (0)

/* sgd(params, grads, momentum_buffers or None, lr, momentum, dampening, weight_decay, l1_prox,
 *     nesterov, maximize, first_step) */
static PyObject *single_sgd(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    fastopt_sgd_options o = {{0}};
    if (nargs != 11) return PyErr_Format(PyExc_TypeError, "_single.sgd takes 11 arguments, got %zd", nargs);
    if (!real(args[3], &o.common.lr) || !real(args[4], &o.momentum) || !real(args[5], &o.dampening) ||
        !real(args[6], &o.common.weight_decay) || !real(args[7], &o.common.l1_prox))
        Py_RETURN_FALSE;
    int with_momentum = o.momentum != 0;
    if (with_momentum == (args[2] == Py_None)) Py_RETURN_FALSE;
    arrays a;
    if (!take(&a, args, 2 + with_momentum, 1u | 4u)) Py_RETURN_FALSE;
    if ((o.nesterov = PyObject_IsTrue(args[8])) < 0 || (o.common.maximize = PyObject_IsTrue(args[9])) < 0 ||
        (o.first_step = PyObject_IsTrue(args[10])) < 0) {
        PyErr_Clear();
        release(&a);
        Py_RETURN_FALSE;
    }
    void *p = a.view[0].buf, *b = with_momentum ? a.view[2].buf : NULL;
    const void *g = a.view[1].buf;
    RUN(&a, fastopt_sgd(a.dtype, 1, &a.numel, &p, &g, with_momentum ? &b : NULL, &o));
}

/* adam(params, grads, exp_avgs, exp_avg_sqs, lr, beta1, beta2, eps, weight_decay, l1_prox, step,
 *      decoupled_weight_decay, maximize) */
static PyObject *single_adam(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    fastopt_adam_options o = {{0}};
    if (nargs != 13) return PyErr_Format(PyExc_TypeError, "_single.adam takes 13 arguments, got %zd", nargs);
    if (!real(args[4], &o.common.lr) || !real(args[5], &o.beta1) || !real(args[6], &o.beta2) ||
        !real(args[7], &o.eps) || !real(args[8], &o.common.weight_decay) || !real(args[9], &o.common.l1_prox) ||
        !PyLong_CheckExact(args[10]))
        Py_RETURN_FALSE;
    int overflow;
    o.step = PyLong_AsLongLongAndOverflow(args[10], &overflow);
    if (overflow || (o.step == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    arrays a;
    if (!take(&a, args, 4, 1u | 4u | 8u)) Py_RETURN_FALSE;
    if ((o.decoupled_weight_decay = PyObject_IsTrue(args[11])) < 0 || (o.common.maximize = PyObject_IsTrue(args[12])) < 0) {
        PyErr_Clear();
        release(&a);
        Py_RETURN_FALSE;
    }
    void *p = a.view[0].buf, *m = a.view[2].buf, *v = a.view[3].buf;
    const void *g = a.view[1].buf;
    RUN(&a, fastopt_adam(a.dtype, 1, &a.numel, &p, &g, &m, &v, NULL, &o));
}

static PyMethodDef methods[] = {
    {"sgd", (PyCFunction)(void (*)(void))single_sgd, METH_FASTCALL, "fastopt.sgd for one NumPy array per role."},
    {"adam", (PyCFunction)(void (*)(void))single_adam, METH_FASTCALL, "fastopt.adam/adamw for one NumPy array per role."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fastopt._single", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__single(void)
{
    PyObject *numpy = PyImport_ImportModule("numpy");
    if (!numpy) return NULL;
    ndarray = (PyTypeObject *)PyObject_GetAttrString(numpy, "ndarray"); /* kept for the module's life */
    Py_DECREF(numpy);
    if (!ndarray) return NULL;
    return PyModule_Create(&module);
}
