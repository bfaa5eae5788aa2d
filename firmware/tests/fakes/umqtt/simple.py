"""Fake ``umqtt.simple`` for tests under the WebAssembly port (same API, no network).

Records what the node publishes and subscribes to, delivers injected incoming messages
from ``check_msg``, and can refuse connections or break mid-session to exercise the
supervisor's reconnect policy.
"""


class MQTTException(Exception):
    pass


class Broker:
    """Shared state of the fake broker."""

    def __init__(self) -> None:
        self.published: list = []      # (topic bytes, payload bytes)
        self.qos: list = []            # QoS of each published message
        self.subscriptions: list = []
        self.inbox: list = []          # (topic bytes, payload bytes) to deliver
        self.refuse = 0                # refuse this many CONNECTs
        self.fail_publish_after = -1   # break the session after this many publishes
        self.connects: list = []       # (client_id, server, port, user, password, ssl)

    def clear(self) -> None:
        self.__init__()


broker = Broker()


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, ssl_params={}):
        self.args = (client_id, server, port, user, password, ssl)
        self.cb = None
        self.sock = None
        self.connected = False

    def set_callback(self, f) -> None:
        self.cb = f

    def connect(self, clean_session=True, timeout=None):
        if broker.refuse > 0:
            broker.refuse -= 1
            raise OSError(113)  # EHOSTUNREACH
        broker.connects.append(self.args)
        self.connected = True
        return False

    def disconnect(self) -> None:
        self.connected = False

    def ping(self) -> None:
        if not self.connected:
            raise OSError(104)

    def publish(self, topic, msg, retain=False, qos=0) -> None:
        if not self.connected:
            raise OSError(104)
        if broker.fail_publish_after == 0:
            self.connected = False
            broker.fail_publish_after = -1
            raise OSError(104)  # ECONNRESET
        if broker.fail_publish_after > 0:
            broker.fail_publish_after -= 1
        broker.published.append((bytes(topic), bytes(msg)))
        broker.qos.append(qos)

    def subscribe(self, topic, qos=0) -> None:
        broker.subscriptions.append(bytes(topic))

    def check_msg(self):
        if not self.connected:
            raise OSError(104)
        if broker.inbox:
            topic, msg = broker.inbox.pop(0)
            self.cb(topic, msg)
