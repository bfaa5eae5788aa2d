"""Fake ``machine`` for tests under the WebAssembly port: a watchdog that counts feeds."""


class WDT:
    instances: list = []

    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        self.timeout = timeout
        self.feeds = 0
        WDT.instances.append(self)

    def feed(self) -> None:
        self.feeds += 1


def reset() -> None:
    raise SystemExit("machine.reset()")
