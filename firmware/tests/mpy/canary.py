# Canary: a connection to a listened port becomes one canary message; ring overflow.
import socket
from harness import Node, fact

node = Node()
socket.busy_ports.append(502)  # something else holds 502: the node must say so
node.supervisor.run(iterations=1)
fact("listening", node.canary.listening())
fact("failed_ports", node.canary.failed_ports)
fact("touch_unlistened", socket.touch(8080, "192.168.1.66", 40000))
fact("touch_445", socket.touch(445, "192.168.1.66", 40001))
node.clock.sleep_ms(150)  # the event waits a little before the next step sends it
node.supervisor.run(iterations=1)
fact("canary_0", node.published("canary")[0])
fact("closed_conns", [list(a) for a in socket.closed_conns])

# A fast scan: 20 touches between two polls overrun the 16-slot ring.
for i in range(20):
    socket.touch((23, 80, 445, 3389)[i % 4], "192.168.1.%d" % (100 + i), 50000 + i)
node.canary.poll(node.clock.ticks_ms())
fact("pending_after_scan", node.canary.pending())
fact("dropped_after_scan", node.canary.dropped)
node.supervisor.run(iterations=1)
events = node.published("canary")
fact("canary_count", len(events))
fact("canary_last", events[-1])
fact("pending_after_send", node.canary.pending())
# The next heartbeat counts them.
node.supervisor.run(iterations=int(61000 / 200))
fact("heartbeat_last", node.published("heartbeat")[-1])

# While the link is down the canary still listens; events are sent after reconnecting.
node.broker.fail_publish_after = 0
node.broker.refuse = 2
node.clock.sleep_ms(60000)
node.supervisor.run(iterations=1)         # heartbeat publish fails -> backoff wait
socket.touch(23, "192.168.1.77", 41000)
node.supervisor.run(iterations=3)         # two refused connects, then back up
fact("reconnects", node.supervisor.reconnects)
fact("canary_after_outage", node.published("canary")[-1])
# Canary events go at QoS 1 (acknowledged), heartbeats and self-reports at QoS 0.
kinds = {}
for (topic, _), qos in zip(node.broker.published, node.broker.qos):
    kinds[topic.decode().rsplit("/", 1)[1]] = qos
fact("qos_by_kind", kinds)
