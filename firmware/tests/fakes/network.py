"""Fake ``network`` for tests: a station interface that associates after N polls."""

STA_IF = 0
AP_IF = 1


_ifaces: dict = {}


def WLAN(iface: int = STA_IF) -> "_WLAN":
    """Shared per interface, like the real driver: WLAN(STA_IF) is always the same one."""
    if iface not in _ifaces:
        _ifaces[iface] = _WLAN(iface)
    return _ifaces[iface]


class _WLAN:
    def __init__(self, iface: int) -> None:
        self.iface = iface
        self._active = False
        self._connected = False
        self.polls_until_up = 2   # isconnected() calls before the link comes up
        self.reachable = True     # False: the access point never answers
        self.rssi = -58
        self.connects = 0

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        return None

    def connect(self, ssid: str, password: str) -> None:
        self.connects += 1
        self._countdown = self.polls_until_up

    def disconnect(self) -> None:
        self._connected = False

    def isconnected(self) -> bool:
        if not self._connected and self.reachable and getattr(self, "_countdown", -1) >= 0:
            self._countdown -= 1
            if self._countdown < 0:
                self._connected = True
        return self._connected

    def status(self, param=None):
        if param == "rssi":
            return self.rssi
        return 1010 if self._connected else 0


def reset() -> None:
    _ifaces.clear()
