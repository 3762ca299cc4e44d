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
