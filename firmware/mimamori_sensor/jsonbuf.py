"""JSON documents written into one preallocated buffer.

The main loop sends a message every few seconds for months on a device with ~100 KiB of
heap: building each message with ``json.dumps`` would allocate a dict, its strings and
the result every time and fragment the heap. :class:`JsonBuf` writes keys and values
straight into a ``bytearray`` that is allocated once, so building a message allocates
nothing (integers stay small ints, keys are constant ``bytes``).

Only what the sensor sends is supported: flat objects with integer, boolean and ASCII
string values. Strings are escaped conservatively (anything outside printable ASCII, the
quote and the backslash become ``?``), which is enough for ids, addresses and versions.
"""


class Overflow(Exception):
    """The document does not fit into the buffer."""


class JsonBuf:
    """A flat JSON object built in place: ``start()``, ``key_*()`` calls, ``finish()``."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0
        self._first = True

    def start(self) -> None:
        """Begin a new document, discarding the previous one."""
        self.n = 0
        self._first = True
        self._byte(0x7B)  # {

    def finish(self) -> int:
        """Close the object; return its length in bytes (the document is ``buf[:n]``)."""
        self._byte(0x7D)  # }
        return self.n

    def key_int(self, key: bytes, value: int) -> None:
        self._key(key)
        self._int(value)

    def key_bool(self, key: bytes, value: bool) -> None:
        self._key(key)
        self._raw(b"true" if value else b"false")

    def key_str(self, key: bytes, value: str | bytes) -> None:
        self._key(key)
        self._byte(0x22)
        for ch in value:
            # Iterating a str yields 1-char strs (interned for ASCII in MicroPython, so no
            # allocation); iterating bytes yields ints.
            c = ord(ch) if isinstance(ch, str) else ch
            if c < 0x20 or c > 0x7E or c == 0x22 or c == 0x5C:
                c = 0x3F  # ?
            self._byte(c)
        self._byte(0x22)

    def key_null(self, key: bytes) -> None:
        self._key(key)
        self._raw(b"null")

    def _key(self, key: bytes) -> None:
        if self._first:
            self._first = False
        else:
            self._byte(0x2C)  # ,
        self._byte(0x22)
        self._raw(key)
        self._byte(0x22)
        self._byte(0x3A)  # :

    def _raw(self, data: bytes) -> None:
        end = self.n + len(data)
        if end > len(self.buf):
            raise Overflow()
        i = 0
        for c in data:
            self.buf[self.n + i] = c
            i += 1
        self.n = end

    def _byte(self, c: int) -> None:
        if self.n >= len(self.buf):
            raise Overflow()
        self.buf[self.n] = c
        self.n += 1

    def _int(self, value: int) -> None:
        if value < 0:
            self._byte(0x2D)  # -
            value = -value
        if value == 0:
            self._byte(0x30)
            return
        # Digits most significant first without a temporary string: find the largest
        # power of ten not above the value, then divide down.
        div = 1
        while div * 10 <= value:
            div *= 10
        while div:
            digit = value // div
            self._byte(0x30 + digit)
            value -= digit * div
            div //= 10
