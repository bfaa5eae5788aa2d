# Reconnect policy: the backoff schedule, and what the supervisor does while the
# gateway refuses connections.
from harness import Node, fact
from mimamori_sensor.backoff import Backoff

low = Backoff(base_ms=1000, cap_ms=300000, rand=lambda bits: 0)
high = Backoff(base_ms=1000, cap_ms=300000, rand=lambda bits: (1 << bits) - 1)
fact("low", [low.next_ms() for _ in range(12)])
fact("high", [high.next_ms() for _ in range(12)])
low.reset()
fact("after_reset", low.next_ms())

node = Node(rand_bits=lambda bits: 0)
node.broker.refuse = 4
t0 = node.clock.slept
node.supervisor.run(iterations=5)
fact("connects", len(node.broker.connects))
fact("reconnects", node.supervisor.reconnects)
fact("slept_ms", node.clock.slept - t0)
fact("logs", node.logs)
fact("feeds", node.watchdog.feeds)
fact("backoff_failures_after_success", node.backoff.failures)
# Wi-Fi that never comes up: the join gives up after its timeout, feeding the watchdog.
node2 = Node(rand_bits=lambda bits: 0)
node2.wifi.wlan.reachable = False
feeds0 = node2.watchdog.feeds
node2.supervisor.run(iterations=1)
fact("wifi_logs", node2.logs)
fact("wifi_feeds", node2.watchdog.feeds - feeds0)
