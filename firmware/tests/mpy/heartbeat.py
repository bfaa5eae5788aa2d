# Heartbeat and self-report content after connecting; heartbeat timing.
from harness import Node, fact

node = Node()
node.supervisor.run(iterations=1)          # connect, self-report, first heartbeat
fact("topics", node.topics())
fact("connect", list(node.broker.connects[0][:5]))
fact("subscriptions", [t.decode() for t in node.broker.subscriptions])
fact("self_report", node.published("self_report")[0])
fact("heartbeat_0", node.published("heartbeat")[0])
# 60 s later (the default interval) the next heartbeat is due, not before.
node.supervisor.run(iterations=int(59000 / 200))
fact("heartbeats_at_59s", len(node.published("heartbeat")))
node.supervisor.run(iterations=10)
beats = node.published("heartbeat")
fact("heartbeats_at_61s", len(beats))
fact("heartbeat_1", beats[-1])
fact("watchdog_feeds", node.watchdog.feeds)
