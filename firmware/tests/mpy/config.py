# Authenticated config updates. DATA (prepended by pytest) holds updates signed by the
# cloud-side code under CPython, and MAC test vectors.
import json
from harness import Node, fact
from mimamori_sensor.auth import hmac_sha256, DOMAIN
import binascii

for key_hex, msg_hex in DATA["vectors"]:
    mac = hmac_sha256(binascii.unhexlify(key_hex), binascii.unhexlify(msg_hex))
    fact("vector", binascii.hexlify(mac).decode())

node = Node()
node.supervisor.run(iterations=1)
outcomes = []
for name, payload in DATA["updates"]:
    node.broker.inbox.append((node.reporter.topic_config, payload.encode()))
    before_hb = node.settings.heartbeat_s
    node.supervisor.run(iterations=1)
    outcomes.append([name, node.supervisor.verifier.last_reason or "accepted", node.settings.heartbeat_s,
                     node.settings.counter])
fact("outcomes", outcomes)
fact("accepted", node.supervisor.verifier.accepted)
fact("rejected", node.supervisor.verifier.rejected)
with open("/flash/state.json") as f:
    fact("state", json.load(f))
# An update on another node's topic is ignored (the ACL forbids it anyway).
node.broker.inbox.append((b"site/sensors/other/config", DATA["updates"][0][1].encode()))
node.supervisor.run(iterations=1)
fact("after_foreign", node.supervisor.verifier.accepted + node.supervisor.verifier.rejected)
# The self-report after an accepted update states the new settings.
fact("self_report_last", node.published("self_report")[-1])
# A restarted node keeps the counter: the first update replayed is still refused.
from mimamori_sensor.settings import load_state
node2 = Node(state=load_state("/flash/state.json"))
node2.supervisor.verifier.state_path = "/flash/state2.json"
node2.supervisor.run(iterations=1)
node2.broker.inbox.append((node2.reporter.topic_config, DATA["updates"][0][1].encode()))
node2.supervisor.run(iterations=1)
fact("replay_after_restart", [node2.supervisor.verifier.last_reason, node2.settings.heartbeat_s])
