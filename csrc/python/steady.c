/* fastopt._steady: the steady-state step of a fastopt.torch optimizer, checked and run in C.
 *
 * A training loop repeats one step: the same param groups, params, state and hyper-parameters
 * (but for those schedulers change: lr, and betas or momentum, which a one-cycle schedule cycles;
 * and a merged group's per-tensor weight decay), only the gradients new.  fastopt.torch plans such a step in Python (_Optimizer._native_plan) and hands
 * the plan to a Plan here, which checks at each step, in C, everything the plan relies on through
 * the torch calls Python would make (a param's .grad, a tensor's is_contiguous() and nbytes) and
 * every tensor's data pointer, then makes the planned C calls and bumps the written tensors'
 * versions.  When anything differs the call returns False having written nothing, and the Python
 * step runs, which finds what changed and plans again.  The checks cost the torch calls themselves
 * (about 40 ns each); a data pointer is read through torch's C function for it where torch has
 * one (about 5 ns), else through data_ptr().
 *
 * Plan(state, generation, groups, values, skip, params, env, entries):
 *   state, generation: opt.state (fastopt.torch._State) and its count of changes;
 *   groups: opt.param_groups' dicts, in order; values[g]: group g's items (key, value) in order,
 *     each value the plan's object or one equal to it, but at the positions in skip[g] (lr; a
 *     merged group's weight_decay; a plain group's betas and momentum), whose values are read
 *     each step (Python floats or ints);
 *   params[g]: group g's params, the very objects;
 *   env: (torch.autograd.profiler, torch.optim.optimizer, torch._C._increment_version, a function
 *     dividing a list of gradients by the grad scale in place, the address of torch's C function
 *     void *(PyObject *tensor) giving a tensor's data pointer, or 0: none);
 *   entries: one C call each (see entry_init).
 * plan(opt) -> True when it made the step, False when it did not (nothing written); raises the
 * C library's error (TypeError for a dtype, ValueError otherwise) as fastopt's check() does. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastopt.h"

#define MAX_STATE 3 /* state arrays of a C optimizer function at most (adam, rmsprop) */

typedef fastopt_status (*fn0)(fastopt_dtype, size_t, const size_t *, void *const *, const void *const *,
                              const void *);
typedef fastopt_status (*fn1)(fastopt_dtype, size_t, const size_t *, void *const *, const void *const *,
                              void *const *, const void *);
typedef fastopt_status (*fn2)(fastopt_dtype, size_t, const size_t *, void *const *, const void *const *,
                              void *const *, void *const *, const void *);
typedef fastopt_status (*fn3)(fastopt_dtype, size_t, const size_t *, void *const *, const void *const *,
                              void *const *, void *const *, void *const *, const void *);

typedef struct entry {
    PyObject *name;                 /* "adamw": fastopt.<name> in errors */
    void (*function)(void);         /* fastopt_<c_name>, taking n_state state arrays */
    int n_state;
    fastopt_dtype dtype;
    size_t n;                       /* tensors */
    const size_t *numel;
    void *const *params;
    uintptr_t *grads;               /* the call's gradient pointer array, filled each step */
    PyObject **holding;             /* the gradients, held from their check to the end of the call: another
                                     * thread's p.grad = None must not free memory a kernel reads */
    Py_ssize_t held_grads;
    void *const *state[MAX_STATE];
    void *const *masters;           /* NULL: none */
    fastopt_common *options;        /* the options struct (fastopt_common is its first member) */
    Py_ssize_t step_offset;         /* of its int64 step in the struct; -1: none */
    void *counts;                   /* each tensor's step count (the state's "step" views), float or double
                                     * (counts_wide: torch's under a float64 default dtype); NULL: none */
    int counts_wide;
    int64_t *steps;                 /* the step each tensor takes, where they differ (c->steps); else unused */
    int uniform;                    /* every tensor at one count this step (set by ready) */
    Py_ssize_t group;               /* the param group whose lr it takes; -1: per tensor (merged) */
    Py_ssize_t beta_at[2];          /* plain groups: where beta1 and beta2 go in the struct, read from the group's
                                     * "betas" each step (a scheduler's cycled momentum); -1: compared instead */
    Py_ssize_t momentum_at;         /* likewise the group's "momentum" (> 0: a buffer is kept) */
    Py_ssize_t *member_of;          /* merged: each tensor's param group */
    double *lrs, *weight_decays;    /* merged: per tensor, filled each step (weight_decays NULL: none) */
    PyObject **tensors;             /* the params */
    uintptr_t *addresses;           /* their memory */
    Py_ssize_t *nbytes;             /* their sizes in bytes: a gradient's must be its param's */
    PyObject **held;                /* state tensors and master copies */
    uintptr_t *held_addresses;
    Py_ssize_t n_held;
    PyObject *written;              /* list of what the call writes: their versions are bumped */
    void *(*address_of)(PyObject *); /* torch's C function for a tensor's data pointer; NULL: data_ptr() */
} entry;

typedef struct {
    PyObject_HEAD
    PyObject *args;                 /* the constructor's arguments: owns every object used below */
    PyObject *state, *generation;
    PyObject **groups;
    Py_ssize_t n_groups;
    PyObject *profiler, *optim, *increment_version, *unscale;
    entry *entries;
    Py_ssize_t n_entries;
    void *memory;                   /* one block for every C array of the entries */
    int dry;                        /* make every check and bookkeeping but no C call: the host side measured */
    Py_ssize_t steps, calls;        /* steps made, C calls made */
} Plan;

static PyObject *s_grad, *s_data_ptr, *s_is_contiguous, *s_params, *s_lr, *s_state, *s_param_groups,
    *s_grad_scale, *s_found_inf, *s_pre_hooks, *s_post_hooks, *s_profiling, *s_global_pre, *s_global_post,
    *s_generation, *s_weight_decay, *s_nbytes, *s_betas, *s_momentum;

static PyObject **items(PyObject *tuple) { return &PyTuple_GET_ITEM(tuple, 0); }

/* torch.Tensor's data_ptr and is_contiguous, and the descriptors of its grad and nbytes, called as
 * fastopt.torch's Python calls them (torch.Tensor.data_ptr(t)), without a lookup per call. */
static PyObject *data_ptr, *is_contiguous, *grad, *nbytes;

/* An address from a Python int (PyLong_AsVoidPtr: the fast conversion of a pointer-sized int);
 * 0 on error (set). */
static uintptr_t address(PyObject *o)
{
    return (uintptr_t)PyLong_AsVoidPtr(o);
}

/* torch's function called behind a C++ exception barrier (guarded.cpp): 0 when it threw.  A build
 * without the barrier (no C++ compiler for its target) never calls it: every answer is "no address",
 * so fastopt.torch's probe of the function fails and it passes none. */
#ifdef FASTOPT_NO_BARRIER
static int fastopt_tensor_address(void *(*address_of)(PyObject *), PyObject *t, uintptr_t *a)
{
    (void)address_of, (void)t, (void)a;
    return 0;
}
#else
int fastopt_tensor_address(void *(*address_of)(PyObject *), PyObject *t, uintptr_t *a);
#endif

/* Whether t's data pointer could be read, into *a (0 for an empty tensor); a torch error is cleared
 * (the Python step reports it). */
static int memory_of(const entry *e, PyObject *t, uintptr_t *a)
{
    if (e->address_of) return fastopt_tensor_address(e->address_of, t, a);
    PyObject *r = PyObject_Vectorcall(data_ptr, &t, 1, NULL);
    if (!r) return PyErr_Clear(), 0;
    *a = address(r);
    Py_DECREF(r);
    return PyErr_Occurred() ? (PyErr_Clear(), 0) : 1;
}

/* t's data pointer == expected. */
static int at(const entry *e, PyObject *t, uintptr_t expected)
{
    uintptr_t a;
    return memory_of(e, t, &a) && a == expected;
}

/* t.nbytes == expected. */
static int sized(PyObject *t, Py_ssize_t expected)
{
    PyObject *r = Py_TYPE(nbytes)->tp_descr_get(nbytes, t, (PyObject *)Py_TYPE(t));
    if (!r) return PyErr_Clear(), 0;
    Py_ssize_t n = PyLong_AsSsize_t(r);
    Py_DECREF(r);
    return PyErr_Occurred() ? (PyErr_Clear(), 0) : n == expected;
}

/* t.is_contiguous(); an error (a layout without one) is cleared: not contiguous. */
static int contiguous(PyObject *t)
{
    PyObject *r = PyObject_Vectorcall(is_contiguous, &t, 1, NULL);
    if (!r) return PyErr_Clear(), 0;
    Py_DECREF(r);
    return r == Py_True;
}

/* The plan's objects may hold it (a param's attribute naming its optimizer): the collector sees them. */
static int plan_traverse(Plan *self, visitproc visit, void *arg)
{
    Py_VISIT(self->args);
    return 0;
}

static int plan_clear(Plan *self)
{
    self->n_entries = 0, self->n_groups = 0; /* (nothing to check or run: every call declines) */
    Py_CLEAR(self->args);
    return 0;
}

static void plan_dealloc(Plan *self)
{
    PyObject_GC_UnTrack(self);
    plan_clear(self);
    PyMem_Free(self->entries);
    PyMem_Free(self->memory);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int tuple_of(PyObject *o, Py_ssize_t n, const char *what)
{
    if (PyTuple_Check(o) && (n < 0 || PyTuple_GET_SIZE(o) == n)) return 1;
    PyErr_Format(PyExc_TypeError, "_steady.Plan: %s must be a tuple%s", what, n < 0 ? "" : " of the right length");
    return 0;
}

/* An entry from (name, function, n_state, dtype, n, numel, params, grads, state, masters, options,
 * step_offset, counts, group, member_of, decayed, tensors, addresses, held, held_addresses,
 * contiguous, written, keep, beta_at, momentum_at, counts_wide): addresses as ints, arrays given as
 * tuples; keep holds the memory the addresses point into (the bucket, the plan's own options struct). */
#define ENTRY_FIELDS 26
static size_t entry_bytes(PyObject *e)
{
    Py_ssize_t n = PyLong_AsSsize_t(PyTuple_GET_ITEM(e, 4)), held = PyTuple_GET_SIZE(PyTuple_GET_ITEM(e, 18));
    return (size_t)(4 * n + held) * sizeof(uintptr_t) + (size_t)(2 * n) * sizeof(double) + (size_t)n * sizeof(int64_t);
}

static int entry_init(entry *e, PyObject *t, void *(*address_of)(PyObject *), char **memory)
{
    e->address_of = address_of;
    PyObject **f = items(t);
    e->name = f[0];
    e->function = (void (*)(void))address(f[1]);
    e->n_state = (int)PyLong_AsLong(f[2]);
    e->dtype = (fastopt_dtype)PyLong_AsLong(f[3]);
    e->n = (size_t)PyLong_AsSsize_t(f[4]);
    e->numel = (const size_t *)address(f[5]);
    e->params = (void *const *)address(f[6]);
    e->grads = (uintptr_t *)address(f[7]);
    if (!tuple_of(f[8], MAX_STATE, "an entry's state")) return 0;
    for (int i = 0; i < MAX_STATE; i++) e->state[i] = (void *const *)address(PyTuple_GET_ITEM(f[8], i));
    e->masters = (void *const *)address(f[9]);
    e->options = (fastopt_common *)address(f[10]);
    e->step_offset = PyLong_AsSsize_t(f[11]);
    e->counts = (void *)address(f[12]);
    e->counts_wide = PyObject_IsTrue(f[25]);
    e->group = PyLong_AsSsize_t(f[13]);
    if (!tuple_of(f[23], 2, "an entry's beta_at")) return 0;
    e->beta_at[0] = PyLong_AsSsize_t(PyTuple_GET_ITEM(f[23], 0)), e->beta_at[1] = PyLong_AsSsize_t(PyTuple_GET_ITEM(f[23], 1));
    e->momentum_at = PyLong_AsSsize_t(f[24]);
    if (PyErr_Occurred() || e->n_state < 0 || e->n_state > MAX_STATE || !e->function || !e->options) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "_steady.Plan: a malformed entry");
        return 0;
    }
    size_t n = e->n;
    if (!tuple_of(f[16], (Py_ssize_t)n, "an entry's tensors") || !tuple_of(f[17], (Py_ssize_t)n, "its addresses") ||
        !tuple_of(f[18], -1, "its held tensors") || !tuple_of(f[19], PyTuple_GET_SIZE(f[18]), "their addresses") ||
        !PyList_Check(f[21]))
        return 0;
    e->tensors = items(f[16]);
    for (size_t i = 0; i < n; i++) { /* .grad read through torch.Tensor's descriptor: not overridden */
        PyObject *d = PyObject_GetAttr((PyObject *)Py_TYPE(e->tensors[i]), s_grad);
        Py_XDECREF(d);
        if (d != grad) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_steady.Plan: a param's type overrides .grad");
            return 0;
        }
    }
    e->addresses = (uintptr_t *)*memory, *memory += n * sizeof(uintptr_t);
    for (size_t i = 0; i < n; i++) e->addresses[i] = address(PyTuple_GET_ITEM(f[17], i));
    e->nbytes = (Py_ssize_t *)*memory, *memory += n * sizeof(uintptr_t);
    for (size_t i = 0; i < n; i++) {
        PyObject *bytes = PyObject_GetAttr(e->tensors[i], s_nbytes);
        if (!bytes) return 0;
        e->nbytes[i] = PyLong_AsSsize_t(bytes);
        Py_DECREF(bytes);
    }
    e->holding = (PyObject **)*memory, *memory += n * sizeof(uintptr_t);
    e->held_grads = 0;
    e->n_held = PyTuple_GET_SIZE(f[18]);
    e->held = items(f[18]);
    e->held_addresses = (uintptr_t *)*memory, *memory += (size_t)e->n_held * sizeof(uintptr_t);
    for (Py_ssize_t i = 0; i < e->n_held; i++) e->held_addresses[i] = address(PyTuple_GET_ITEM(f[19], i));
    /* a merged group: its members' param groups, and its per-tensor arrays */
    e->member_of = (Py_ssize_t *)*memory, *memory += n * sizeof(uintptr_t);
    e->lrs = (double *)*memory, *memory += n * sizeof(double);
    e->weight_decays = (double *)*memory, *memory += n * sizeof(double);
    e->steps = (int64_t *)*memory, *memory += n * sizeof(int64_t);
    if (f[14] == Py_None) {
        e->member_of = NULL, e->lrs = e->weight_decays = NULL;
    } else {
        if (!tuple_of(f[14], (Py_ssize_t)n, "an entry's member_of")) return 0;
        for (size_t i = 0; i < n; i++) e->member_of[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(f[14], i));
        if (!PyObject_IsTrue(f[15])) e->weight_decays = NULL;
    }
    if (!PyObject_IsTrue(f[20])) /* contiguous params: what the gradients' checks assume */
        return PyErr_SetString(PyExc_ValueError, "_steady.Plan: a bucket of non-contiguous params"), 0;
    e->written = f[21];
    return !PyErr_Occurred();
}

static PyObject *plan_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (kwargs && PyDict_GET_SIZE(kwargs)) return PyErr_Format(PyExc_TypeError, "_steady.Plan takes no keywords");
    PyObject *state, *generation, *groups, *values, *skip, *params, *env, *entries;
    if (!PyArg_ParseTuple(args, "OOO!O!O!O!O!O!:Plan", &state, &generation, &PyTuple_Type,
                          &groups, &PyTuple_Type, &values, &PyTuple_Type, &skip, &PyTuple_Type, &params, &PyTuple_Type,
                          &env, &PyTuple_Type, &entries))
        return NULL;
    Py_ssize_t n_groups = PyTuple_GET_SIZE(groups), n_entries = PyTuple_GET_SIZE(entries);
    if (!tuple_of(values, n_groups, "values") || !tuple_of(skip, n_groups, "skip") ||
        !tuple_of(params, n_groups, "params") || !tuple_of(env, 5, "env"))
        return NULL;
    for (Py_ssize_t g = 0; g < n_groups; g++)
        if (!PyDict_Check(PyTuple_GET_ITEM(groups, g)) || !tuple_of(PyTuple_GET_ITEM(values, g), -1, "a group's values") ||
            !tuple_of(PyTuple_GET_ITEM(skip, g), -1, "a group's skip") || !tuple_of(PyTuple_GET_ITEM(params, g), -1, "a group's params"))
            return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "_steady.Plan: groups must be dicts");
    size_t bytes = 0;
    for (Py_ssize_t i = 0; i < n_entries; i++) {
        PyObject *e = PyTuple_GET_ITEM(entries, i);
        if (!tuple_of(e, ENTRY_FIELDS, "an entry")) return NULL;
        bytes += entry_bytes(e);
    }
    if (PyErr_Occurred()) return NULL;
    Plan *self = (Plan *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    Py_INCREF(args);
    self->args = args;
    self->state = state, self->generation = generation;
    self->groups = items(groups), self->n_groups = n_groups;
    self->profiler = PyTuple_GET_ITEM(env, 0), self->optim = PyTuple_GET_ITEM(env, 1);
    self->increment_version = PyTuple_GET_ITEM(env, 2), self->unscale = PyTuple_GET_ITEM(env, 3);
    self->n_entries = n_entries;
    self->entries = PyMem_Calloc((size_t)n_entries ? (size_t)n_entries : 1, sizeof(entry));
    self->memory = PyMem_Malloc(bytes ? bytes : 1);
    if (!self->entries || !self->memory) return Py_DECREF(self), PyErr_NoMemory();
    void *(*address_of)(PyObject *) = (void *(*)(PyObject *))address(PyTuple_GET_ITEM(env, 4));
    if (PyErr_Occurred()) return Py_DECREF(self), NULL;
    char *memory = self->memory;
    for (Py_ssize_t i = 0; i < n_entries; i++)
        if (!entry_init(&self->entries[i], PyTuple_GET_ITEM(entries, i), address_of, &memory))
            return Py_DECREF(self), NULL;
    return (PyObject *)self;
}

/* A Python float or int as a double (a tensor, or anything else, is for the Python step). */
static int number(PyObject *o, double *x)
{
    if (PyFloat_CheckExact(o)) return *x = PyFloat_AS_DOUBLE(o), 1;
    if (PyLong_Check(o)) {
        *x = PyLong_AsDouble(o);
        return PyErr_Occurred() ? (PyErr_Clear(), 0) : 1;
    }
    return 0;
}

/* Whether the optimizer's param groups, their values and params are the plan's (but for the
 * values read each step). */
static int same_groups(Plan *self, PyObject *opt_dict)
{
    PyObject *list = PyDict_GetItemWithError(opt_dict, s_param_groups);
    if (!list || !PyList_CheckExact(list) || PyList_GET_SIZE(list) != self->n_groups) return 0;
    PyObject **values = items(PyTuple_GET_ITEM(self->args, 3)), **skips = items(PyTuple_GET_ITEM(self->args, 4)),
             **params = items(PyTuple_GET_ITEM(self->args, 5));
    for (Py_ssize_t g = 0; g < self->n_groups; g++) {
        PyObject *group = self->groups[g];
        if (PyList_GET_ITEM(list, g) != group) return 0;
        PyObject *expected = values[g], *skip = skips[g];
        Py_ssize_t n = PyTuple_GET_SIZE(expected), pos = 0, i = 0, s = 0, next_skip;
        if (PyDict_GET_SIZE(group) != n) return 0;
        next_skip = PyTuple_GET_SIZE(skip) ? PyLong_AsSsize_t(PyTuple_GET_ITEM(skip, 0)) : -1;
        PyObject *key, *value;
        for (; PyDict_Next(group, &pos, &key, &value); i++) {
            PyObject *item = PyTuple_GET_ITEM(expected, i);
            if (key != PyTuple_GET_ITEM(item, 0)) return 0;
            if (i == next_skip) {
                next_skip = ++s < PyTuple_GET_SIZE(skip) ? PyLong_AsSsize_t(PyTuple_GET_ITEM(skip, s)) : -1;
                continue;
            }
            /* the plan's very object, or one equal to it (the same C value: as the Python step's
             * options struct, made again only when a value differs) */
            PyObject *planned = PyTuple_GET_ITEM(item, 1);
            if (value != planned && PyObject_RichCompareBool(value, planned, Py_EQ) != 1) return 0;
        }
        PyObject *now = PyDict_GetItemWithError(group, s_params), *planned = params[g];
        Py_ssize_t m = PyTuple_GET_SIZE(planned);
        if (!now || !PyList_CheckExact(now) || PyList_GET_SIZE(now) != m) return 0;
        for (Py_ssize_t j = 0; j < m; j++)
            if (PyList_GET_ITEM(now, j) != PyTuple_GET_ITEM(planned, j)) return 0;
    }
    return 1;
}

static int empty_or_absent(PyObject *dict, PyObject *name)
{
    PyObject *o = PyDict_GetItemWithError(dict, name);
    if (!o) return !PyErr_Occurred();
    Py_ssize_t n = PyObject_Length(o);
    return n == 0 || (n < 0 && (PyErr_Clear(), 0));
}

/* GradScaler's value handed over as the optimizer's attribute `name` (a one-element tensor), into
 * *x (0 when absent or None); 0 when it cannot be read as a number. */
static int handed(PyObject *dict, PyObject *name, double *x)
{
    PyObject *o = PyDict_GetItemWithError(dict, name);
    *x = 0.0;
    if (!o || o == Py_None) return !PyErr_Occurred();
    *x = PyFloat_AsDouble(o);
    return !PyErr_Occurred();
}

/* The module attribute `name` is empty (a dict of hooks) or false (the profiler's flag). */
static int off(PyObject *module, PyObject *name)
{
    PyObject *o = PyObject_GetAttr(module, name);
    if (!o) return PyErr_Clear(), 0;
    int truth = PyObject_IsTrue(o);
    Py_DECREF(o);
    return truth == 0;
}

/* Drops the gradients an entry holds. */
static void let_go(entry *e)
{
    for (Py_ssize_t i = 0; i < e->held_grads; i++) Py_DECREF(e->holding[i]);
    e->held_grads = 0;
}

/* Tensor i's step count. */
static double count(const entry *e, size_t i)
{
    return e->counts_wide ? ((const double *)e->counts)[i] : ((const float *)e->counts)[i];
}

/* Checks one entry and gathers its gradients' addresses, holding the gradients; 1 when it may run
 * (else nothing held). */
static int ready(entry *e)
{
    for (size_t i = 0; i < e->n; i++) {
        PyObject *p = e->tensors[i];
        PyObject *g = Py_TYPE(grad)->tp_descr_get(grad, p, (PyObject *)Py_TYPE(p));
        if (!g) return PyErr_Clear(), let_go(e), 0;
        e->holding[e->held_grads++] = g;
        /* a gradient with its param's layout and size: C-contiguous as its param (a non-contiguous
         * param's bucket is not planned), as many bytes (a .grad.data swapped or resized); a
         * sparse one is not contiguous (or raises): the Python step names it; the param at its
         * memory and contiguous (a .data swapped for a view of another layout at the same address) */
        if (g == Py_None || !contiguous(g) || !sized(g, e->nbytes[i]) || !memory_of(e, g, &e->grads[i]) ||
            !at(e, p, e->addresses[i]) || !contiguous(p))
            return let_go(e), 0;
    }
    for (Py_ssize_t i = 0; i < e->n_held; i++)
        if (!at(e, e->held[i], e->held_addresses[i])) return let_go(e), 0;
    e->uniform = 1; /* the counts read from memory each step (in-place changes to the "step" views included) */
    for (size_t i = 1; e->counts && i < e->n; i++) e->uniform &= count(e, i) == count(e, 0);
    return 1;
}

/* The entry's hyper-parameters read this step; 0 when one is not a number for C. */
static int read_values(Plan *self, entry *e)
{
    if (!e->member_of) {
        PyObject *group = self->groups[e->group], *lr = PyDict_GetItemWithError(group, s_lr);
        if (!lr || !number(lr, &e->options->lr)) return 0;
        char *o = (char *)e->options;
        if (e->beta_at[0] >= 0) {
            PyObject *betas = PyDict_GetItemWithError(group, s_betas);
            if (!betas || !PyTuple_CheckExact(betas) || PyTuple_GET_SIZE(betas) != 2 ||
                !number(PyTuple_GET_ITEM(betas, 0), (double *)(o + e->beta_at[0])) ||
                !number(PyTuple_GET_ITEM(betas, 1), (double *)(o + e->beta_at[1])))
                return 0;
        }
        if (e->momentum_at >= 0) {
            PyObject *momentum = PyDict_GetItemWithError(group, s_momentum);
            double *m = (double *)(o + e->momentum_at);
            if (!momentum || !number(momentum, m) || !(*m > 0)) return 0; /* (0: no buffer; the Python step) */
        }
        return 1;
    }
    Py_ssize_t last = -1;
    double lr = 0, decay = 0;
    for (size_t i = 0; i < e->n; i++) {
        Py_ssize_t g = e->member_of[i];
        if (g != last) {
            PyObject *group = self->groups[g], *value = PyDict_GetItemWithError(group, s_lr);
            if (!value || !number(value, &lr)) return 0;
            if (e->weight_decays &&
                (!(value = PyDict_GetItemWithError(group, s_weight_decay)) || !number(value, &decay)))
                return 0;
            last = g;
        }
        e->lrs[i] = lr;
        if (e->weight_decays) e->weight_decays[i] = decay;
    }
    return 1;
}

static fastopt_status run(entry *e, double grad_scale)
{
    fastopt_common *c = e->options;
    const void *o = c;
    void *const *const *s = e->state;
    void *const *p = e->params;
    const void *const *g = (const void *const *)e->grads;
    c->grad_scale = grad_scale, c->steps = NULL, c->master_params = e->masters;
    if (e->member_of) c->lr = 0.0, c->lrs = e->lrs, c->weight_decays = e->weight_decays;
    else c->lrs = c->weight_decays = NULL;
    if (e->step_offset >= 0) { /* the step taken: each member's count + 1 (a param skipped on a step lags) */
        *(int64_t *)((char *)c + e->step_offset) = (int64_t)count(e, 0) + 1;
        if (!e->uniform) {
            for (size_t i = 0; i < e->n; i++) e->steps[i] = (int64_t)count(e, i) + 1;
            c->steps = e->steps;
        }
    }
    fastopt_status status = FASTOPT_OK;
    Py_BEGIN_ALLOW_THREADS
    switch (e->n_state) {
    case 0: status = ((fn0)e->function)(e->dtype, e->n, e->numel, p, g, o); break;
    case 1: status = ((fn1)e->function)(e->dtype, e->n, e->numel, p, g, s[0], o); break;
    case 2: status = ((fn2)e->function)(e->dtype, e->n, e->numel, p, g, s[0], s[1], o); break;
    default: status = ((fn3)e->function)(e->dtype, e->n, e->numel, p, g, s[0], s[1], s[2], o); break;
    }
    Py_END_ALLOW_THREADS
    return status;
}

/* The gradients divided by the grad scale in place, as torch's fused optimizers leave them: a
 * power of two in C (grads * (1 / scale) is then exactly grads / scale), with their versions
 * bumped as an in-place op bumps them; another scale by the Python step's function. */
static int unscale(Plan *self, double grad_scale)
{
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < self->n_entries; i++) n += self->entries[i].held_grads;
    PyObject *grads = PyList_New(n);
    if (!grads) return 0;
    for (Py_ssize_t i = 0, k = 0; i < self->n_entries; i++)
        for (Py_ssize_t j = 0; j < self->entries[i].held_grads; j++)
            PyList_SET_ITEM(grads, k++, Py_NewRef(self->entries[i].holding[j]));
    int exponent;
    PyObject *r;
    if (frexp(grad_scale, &exponent) == 0.5) {
        fastopt_status status = FASTOPT_OK;
        for (Py_ssize_t i = 0; i < self->n_entries && status == FASTOPT_OK; i++) {
            entry *e = &self->entries[i];
            Py_BEGIN_ALLOW_THREADS
            status = fastopt_scale(e->dtype, e->n, e->numel, (void *const *)e->grads, 1.0 / grad_scale);
            Py_END_ALLOW_THREADS
        }
        r = status == FASTOPT_OK ? PyObject_CallOneArg(self->increment_version, grads)
                                 : PyErr_Format(PyExc_ValueError, "fastopt.scale: %s", fastopt_last_error());
    } else {
        PyObject *scale = PyFloat_FromDouble(grad_scale);
        r = scale ? PyObject_CallFunctionObjArgs(self->unscale, grads, scale, NULL) : NULL;
        Py_XDECREF(scale);
    }
    Py_DECREF(grads);
    Py_XDECREF(r);
    return r != NULL;
}

static void let_go_all(Plan *self)
{
    for (Py_ssize_t i = 0; i < self->n_entries; i++) let_go(&self->entries[i]);
}

static PyObject *plan_call(Plan *self, PyObject *args, PyObject *kwargs)
{
    PyObject *opt;
    if (kwargs && PyDict_GET_SIZE(kwargs)) return PyErr_Format(PyExc_TypeError, "a Plan takes no keywords");
    if (!PyArg_ParseTuple(args, "O:Plan", &opt)) return NULL;
    if (!self->args) Py_RETURN_FALSE; /* cleared by the collector */
    PyObject *dict = PyObject_GenericGetDict(opt, NULL);
    if (!dict) return NULL;
    /* GradScaler's scale and found-inf flag, as torch's fused optimizers take them: a step with an
     * inf skipped (nothing written, nothing counted), the others dividing by the scale in the
     * update's pass, the gradients then left unscaled */
    double grad_scale, found_inf;
    int go = PyDict_GetItemWithError(dict, s_state) == self->state && empty_or_absent(dict, s_pre_hooks) &&
             empty_or_absent(dict, s_post_hooks) && handed(dict, s_found_inf, &found_inf) &&
             handed(dict, s_grad_scale, &grad_scale) && grad_scale >= 0 && same_groups(self, dict);
    Py_DECREF(dict);
    if (!go || PyErr_Occurred()) return PyErr_Clear(), Py_NewRef(Py_False);
    if (found_inf != 0) Py_RETURN_TRUE;
    PyObject *generation = PyObject_GetAttr(self->state, s_generation);
    go = generation && PyObject_RichCompareBool(generation, self->generation, Py_EQ) == 1 &&
         off(self->profiler, s_profiling) && off(self->optim, s_global_pre) && off(self->optim, s_global_post);
    Py_XDECREF(generation);
    for (Py_ssize_t i = 0; go && i < self->n_entries; i++)
        go = read_values(self, &self->entries[i]) && ready(&self->entries[i]);
    if (!go || PyErr_Occurred()) return PyErr_Clear(), let_go_all(self), Py_NewRef(Py_False);
    PyObject *result = Py_True;
    for (Py_ssize_t i = 0; i < self->n_entries && result; i++) {
        entry *e = &self->entries[i];
        fastopt_status status = self->dry ? FASTOPT_OK : (self->calls++, run(e, grad_scale));
        if (status != FASTOPT_OK) { /* validated before writing: this entry wrote nothing */
            PyErr_Format(status == FASTOPT_ERR_DTYPE ? PyExc_TypeError : PyExc_ValueError, "fastopt.%U: %s", e->name,
                         fastopt_last_error());
            result = NULL;
            break;
        }
        for (size_t j = 0; e->counts && j < e->n; j++)
            if (e->counts_wide) ((double *)e->counts)[j] += 1.0;
            else ((float *)e->counts)[j] += 1.0f;
        PyObject *r = PyObject_CallOneArg(self->increment_version, e->written);
        if (!r) result = NULL;
        Py_XDECREF(r);
    }
    if (result && grad_scale != 0 && !unscale(self, grad_scale)) result = NULL;
    let_go_all(self);
    if (!result) return NULL;
    self->steps++;
    Py_RETURN_TRUE;
}

static PyMemberDef plan_members[] = {
    {"dry", T_INT, offsetof(Plan, dry), 0, "1: check, count and bump versions but skip the C calls (benchmarks)"},
    {"steps", T_PYSSIZET, offsetof(Plan, steps), READONLY, "steps made"},
    {"calls", T_PYSSIZET, offsetof(Plan, calls), READONLY, "C calls made"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "fastopt._steady.Plan",
    .tp_basicsize = sizeof(Plan),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)plan_traverse,
    .tp_clear = (inquiry)plan_clear,
    .tp_doc = "A fastopt.torch optimizer's steady-state step: plan(opt) makes it (True) or declines (False).",
    .tp_new = plan_new,
    .tp_dealloc = (destructor)plan_dealloc,
    .tp_call = (ternaryfunc)plan_call,
    .tp_members = plan_members,
};

/* tensor_address(function, t): t's data pointer as a Plan reads it through torch's function (its
 * address); None where torch threw (the barrier's test). */
static PyObject *tensor_address(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *function, *t;
    if (!PyArg_ParseTuple(args, "OO:tensor_address", &function, &t)) return NULL;
    void *(*address_of)(PyObject *) = (void *(*)(PyObject *))address(function);
    if (!address_of) return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "tensor_address: a NULL function");
    uintptr_t a;
    if (!fastopt_tensor_address(address_of, t, &a)) Py_RETURN_NONE;
    return PyLong_FromVoidPtr((void *)a);
}

static PyMethodDef module_methods[] = {
    {"tensor_address", tensor_address, METH_VARARGS, "t's data pointer through torch's C function; None where it threw"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fastopt._steady", NULL, -1, module_methods, NULL, NULL, NULL,
                                    NULL};

PyMODINIT_FUNC PyInit__steady(void)
{
    struct { PyObject **name; const char *text; } names[] = {
        {&s_grad, "grad"}, {&s_data_ptr, "data_ptr"}, {&s_is_contiguous, "is_contiguous"},
        {&s_params, "params"}, {&s_lr, "lr"}, {&s_state, "state"}, {&s_param_groups, "param_groups"},
        {&s_grad_scale, "grad_scale"}, {&s_found_inf, "found_inf"}, {&s_pre_hooks, "_optimizer_step_pre_hooks"},
        {&s_post_hooks, "_optimizer_step_post_hooks"}, {&s_profiling, "_is_profiler_enabled"},
        {&s_global_pre, "_global_optimizer_pre_hooks"}, {&s_global_post, "_global_optimizer_post_hooks"},
        {&s_generation, "generation"}, {&s_weight_decay, "weight_decay"}, {&s_nbytes, "nbytes"}, {&s_betas, "betas"}, {&s_momentum, "momentum"},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!(*names[i].name = PyUnicode_InternFromString(names[i].text))) return NULL;
    PyObject *torch = PyImport_ImportModule("torch");
    PyObject *tensor = torch ? PyObject_GetAttrString(torch, "Tensor") : NULL;
    Py_XDECREF(torch);
    if (!tensor) return NULL;
    data_ptr = PyObject_GetAttr(tensor, s_data_ptr), is_contiguous = PyObject_GetAttr(tensor, s_is_contiguous);
    grad = PyObject_GetAttr(tensor, s_grad), nbytes = PyObject_GetAttr(tensor, s_nbytes);
    Py_DECREF(tensor);
    if (!data_ptr || !is_contiguous || !grad || !nbytes) return NULL;
    if (!Py_TYPE(grad)->tp_descr_get || !Py_TYPE(nbytes)->tp_descr_get)
        return PyErr_Format(PyExc_TypeError, "torch.Tensor.grad or nbytes is not a descriptor");
    if (PyType_Ready(&PlanType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Plan", (PyObject *)&PlanType) < 0) return Py_DECREF(m), NULL;
    return m;
}
