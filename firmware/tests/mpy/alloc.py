# The steady-state loop allocates nothing of its own: run it with the heap locked (any
N = 200
# allocation raises MemoryError) and measure gc.mem_alloc() around many iterations.
import gc
import micropython
from harness import Node, fact


class CountingSession:
    """A transport seam that consumes messages without allocating."""

    up = True

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.check = 0

    def open(self, subscribe) -> None:
        pass

    def publish(self, topic, view, n, qos=0) -> None:
        self.messages += 1
        self.bytes += n
        i = 0
        while i < n:
            self.check = (self.check * 31 + view[i]) & 0xFFFFFF
            i += 1

    def publish_bytes(self, topic, data) -> None:
        self.publish(topic, data, len(data))

    def poll(self) -> None:
        pass

    def ping(self) -> None:
        pass

    def close(self) -> None:
        pass


node = Node(config=dict(__import__("harness").CONFIG, heartbeat_s=10))
sup = node.supervisor
sup.session = CountingSession()
sup.mem_free = gc.mem_free
sup.canary.open()
sup._report_due = False
ips = ["192.168.1.%d" % i for i in range(8)]   # strings made before the lock


def iterate(n: int) -> None:
    i = 0
    while i < n:
        node.clock.sleep_ms(10000)          # a heartbeat is due at every step
        if i % 4 == 0:                      # and a canary event every 4th
            sup.canary.record(445, ips[i % 8], 40000 + i, node.clock.ticks_ms())
        sup.step()
        i += 1


def locked(n: int) -> bool:
    # Only locals and preexisting objects in here: a new global name would allocate too.
    micropython.heap_lock()
    try:
        iterate(n)
        return True
    except MemoryError:
        return False
    finally:
        micropython.heap_unlock()


iterate(20)  # warm up: first calls fill caches, the canary ring's slots get their values
gc.collect()
before = gc.mem_alloc()
locked_ok = locked(N)
after = gc.mem_alloc()
fact("heap_locked_ok", locked_ok)
fact("alloc_delta", after - before)
fact("iterations", N)
fact("messages", sup.session.messages)
fact("bytes", sup.session.bytes)
# The same loop with a change that allocates must be caught by this test.
sup.reporter.out.key_int = lambda key, value: [key, value]
fact("control_detected", not locked(1))
