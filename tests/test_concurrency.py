"""Many Python threads at once: the same bits as one thread, and the GIL is released in C."""
import threading

import numpy as np

from cases import CASES, call, copy, make_arrays

import fastopt


def test_threads_stepping_distinct_sets_give_the_same_bits(threads):
    """8 Python threads, each stepping its own parameter set 20 times with its own optimizer, all at
    once, while fastopt's own pool is contended: bit-identical to doing the same one after another."""
    names = list(CASES)[:8]
    sets = [make_arrays(n, CASES[n][-1], 70_001, np.float32, np.random.default_rng(i)) for i, n in enumerate(names)]
    alone = [copy(s) for s in sets]
    for name, arrays in zip(names, alone):
        for step in range(1, 21):
            call(fastopt, name, arrays, CASES[name][-1], step)

    def run(name, arrays):
        for step in range(1, 21):
            call(fastopt, name, arrays, CASES[name][-1], step)
    fastopt.set_num_threads(2)
    workers = [threading.Thread(target=run, args=(n, a)) for n, a in zip(names, sets)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for a, b in zip(sets, alone):
        for k in a:
            assert np.array_equal(a[k].view(np.uint32), b[k].view(np.uint32)), k


def test_the_gil_is_released_during_a_call():
    """While one thread is inside a long C call, another keeps running Python."""
    n = 1 << 24
    p, g, m, v = (np.ones(n, np.float32) for _ in range(4))
    counter, stop, during = [0], threading.Event(), []

    def count():
        while not stop.is_set():
            counter[0] += 1

    def step():
        before = counter[0]
        for t in range(1, 4):
            fastopt.adamw(p, g, m, v, step=t)
        during.append(counter[0] - before)

    counting = threading.Thread(target=count)
    counting.start()
    stepping = threading.Thread(target=step)
    stepping.start()
    stepping.join()
    stop.set()
    counting.join()
    assert during[0] > 1000, during  # with the GIL held, the counter could not move during the calls


def test_a_child_forked_during_a_threaded_step_steps_correctly(threads):
    """fork() while another thread is inside a threaded call: the child inherits no workers and maybe
    a held pool mutex; fastopt rebuilds its pool there (pthread_atfork), so the child's own threaded
    step must finish and give the one-thread bits, every time; the parent goes on unchanged."""
    import os
    import time
    fastopt.set_num_threads(2)
    n = 1 << 21  # well above the size at which a call is split over threads
    rng = np.random.default_rng(0)
    background = [np.abs(rng.standard_normal(n)).astype(np.float32) for _ in range(4)]
    stop = threading.Event()

    def step_forever():
        t = 0
        while not stop.is_set():
            t += 1
            fastopt.adamw(*background, step=t, lr=1e-3)

    stepper = threading.Thread(target=step_forever)
    stepper.start()
    children = []
    try:
        for _ in range(30):
            time.sleep(0.003)  # fork at varied points of the background thread's calls
            pid = os.fork()
            if pid == 0:  # the child: a threaded step, checked against one thread
                code = 1
                try:
                    p, g, m, v = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
                    arrays = [p, g, m, np.abs(v)]
                    one = [a.copy() for a in arrays]
                    fastopt.set_num_threads(2)
                    fastopt.adamw(*arrays, step=1, lr=1e-3)
                    fastopt.set_num_threads(1)
                    fastopt.adamw(*one, step=1, lr=1e-3)
                    code = 0 if all(np.array_equal(a, b) for a, b in zip(arrays, one)) else 2
                finally:
                    os._exit(code)
            children.append(pid)
    finally:
        stop.set()
        stepper.join()
    deadline = time.monotonic() + 60
    codes = {}
    while len(codes) < len(children) and time.monotonic() < deadline:
        for pid in children:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    hung = [pid for pid in children if pid not in codes]
    for pid in hung:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert not hung, f"{len(hung)} of {len(children)} forked children hung in their first threaded call"
    assert all(c == 0 for c in codes.values()), f"children's exit codes: {sorted(codes.values())}"
    # the parent's pool still works, threaded, with the one-thread bits
    threaded = [a.copy() for a in background]
    one = [a.copy() for a in threaded]
    fastopt.adamw(*threaded, step=1, lr=1e-3)
    fastopt.set_num_threads(1)
    fastopt.adamw(*one, step=1, lr=1e-3)
    assert all(np.array_equal(a, b) for a, b in zip(threaded, one))
