"""A virtual clock with the ``time`` module's tick API: ``sleep_ms`` advances it."""

# MicroPython's ticks wrap at 2**30. 2**30 itself is not a small int on a 32-bit port
# (that would allocate), so the constants are the mask and the half period.
_MASK = 0x3FFFFFFF
_HALF = 0x20000000


class Clock:
    def __init__(self, start_ms: int = 0) -> None:
        self.now = start_ms & _MASK
        self.slept = 0

    def ticks_ms(self) -> int:
        return self.now

    def ticks_diff(self, a: int, b: int) -> int:
        d = (a - b) & _MASK
        return d - _MASK - 1 if d >= _HALF else d

    def sleep_ms(self, ms: int) -> None:
        self.now = (self.now + ms) & _MASK
        self.slept += ms
