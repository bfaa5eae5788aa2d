"""Fake ``ssl`` for tests under the WebAssembly port (which has no ssl module)."""

PROTOCOL_TLS_CLIENT = 0
CERT_REQUIRED = 2


class SSLContext:
    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.verify_mode = 0
        self.cadata = None

    def load_verify_locations(self, cafile=None, cadata=None) -> None:
        self.cadata = cadata
