#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/corpus/<target>/seed-*: a few valid inputs per
target, hand-encoded (no protobuf library needed). Rerun after changing a message shape."""
import json, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])

def f(num, value):
    """One field: int -> varint, float -> double, bytes/str -> length-delimited."""
    if isinstance(value, bool) or isinstance(value, int):
        return varint(num << 3) + varint(int(value))
    if isinstance(value, float):
        return varint(num << 3 | 1) + struct.pack("<d", value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value

def scalar(name, v, revocable=False):
    return f(1, name) + f(2, v) + (f(5, True) if revocable else b"")

def ranges(name, rs):
    return f(1, name) + f(3, b"".join(f(1, f(1, b) + f(2, e)) for b, e in rs))

def task(tid, res, cmd="sleep 1"):
    return f(1, tid) + f(2, tid) + b"".join(f(4, r) for r in res) + f(5, f(1, True) + f(2, cmd))

def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)

cpu, mem = scalar("cpus", 0.5), scalar("mem", 64.0)
rcpu = scalar("cpus", 0.5, revocable=True)
ports = ranges("ports", [(31000, 31001)])
agent_info = f(1, "h") + f(2, "127.0.0.1:5051") + f(3, scalar("cpus", 2.0)) + f(3, scalar("mem", 512.0))
register = f(1, f(1, agent_info) + f(2, f(1, task("t0", [cpu, mem])) + f(2, "fw") + f(3, 3)))
status = f(3, f(1, f(1, "t1") + f(2, 3) + f(7, "") + f(9, b"\x01" * 16)))
slack = f(5, f(1, rcpu) + f(2, mem))
launch = f(3, f(1, f(1, task("t1", [cpu, mem, ports])) + f(1, task("t2", [rcpu, mem]))))
framework = f(1, "nobody") + f(2, "fw2") + f(4, "web") + f(5, 60.0) + f(6, "PARTITION_AWARE")

# proto_messages: first byte picks the message type.
write("proto_messages", "register", b"\x00" + register)
write("proto_messages", "status", b"\x00" + status)
write("proto_messages", "slack", b"\x00" + slack)
write("proto_messages", "run-task", b"\x01" + f(2, f(2, task("t1", [cpu, mem]))))
write("proto_messages", "subscribe", b"\x02" + f(1, framework))
write("proto_messages", "accept", b"\x03" + f(1, "fw") + f(2, "o1") + launch + f(4, f(1, 5.0)))
write("proto_messages", "offers", b"\x04" + f(2, f(1, f(1, "o1") + f(5, cpu) + f(5, ports))))

# master_state: records of kind, u16 LE length, payload.
def rec(kind, payload):
    return bytes([kind]) + struct.pack("<H", len(payload)) + payload
write("master_state", "launch-run-finish",
      rec(2, launch) + rec(0, status) + rec(0, f(3, f(1, f(1, "t1") + f(2, 4) + f(9, b"\x02" * 16))))
      + rec(5, f(3, "t1") + f(4, b"\x02" * 16)) + rec(7, b"\x05"))
write("master_state", "reregister-kill", rec(0, register) + rec(4, f(2, "t0")) + rec(6, b""))
write("master_state", "second-framework", rec(1, f(1, framework)) + rec(3, b"") + rec(8, b"\x00") + rec(9, b"web=2.5"))
write("master_state", "slack-timeout", rec(0, slack) + rec(2, launch) + rec(7, b"\xff") + rec(7, b"\xff"))

# mesos_call: Mesos v1 scheduler calls (JSON).
fw = {"user": "root", "name": "pymesos", "roles": ["*"], "failover_timeout": 100,
      "capabilities": [{"type": "MULTI_ROLE"}, {"type": "REVOCABLE_RESOURCES"}]}
write("mesos_call", "subscribe", json.dumps({"type": "SUBSCRIBE", "subscribe": {"framework_info": fw}}))
write("mesos_call", "accept", json.dumps({
    "type": "ACCEPT", "framework_id": {"value": "f1"},
    "accept": {"offer_ids": [{"value": "o1"}], "filters": {"refuse_seconds": 5.0}, "operations": [
        {"type": "LAUNCH", "launch": {"task_infos": [{
            "name": "t", "task_id": {"value": "t1"}, "agent_id": {"value": "a1"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}, "revocable": {}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31005}]}},
                {"name": "disks", "type": "SET", "set": {"item": ["a", "b"]}}],
            "command": {"value": "echo hi", "shell": True,
                        "environment": {"variables": [{"name": "A", "type": "VALUE", "value": "1"}]}},
            "kill_policy": {"grace_period": {"nanoseconds": 2000000000}},
            "labels": {"labels": [{"key": "k", "value": "v"}]}}]}}]}}))
write("mesos_call", "kill", json.dumps({"type": "KILL", "framework_id": {"value": "f1"},
      "kill": {"task_id": {"value": "t1"}, "kill_policy": {"grace_period": {"nanoseconds": 1}}}}))
write("mesos_call", "acknowledge", json.dumps({"type": "ACKNOWLEDGE", "framework_id": {"value": "f1"},
      "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAECAwQFBgcICQoLDA0ODw=="}}))
write("mesos_call", "decline", json.dumps({"type": "DECLINE", "framework_id": {"value": "f1"},
      "decline": {"offer_ids": [{"value": "o1"}], "filters": {"refuse_seconds": 1}}}))
write("mesos_call", "update-framework", json.dumps({"type": "UPDATE_FRAMEWORK", "framework_id": {"value": "f1"},
      "update_framework": {"framework_info": dict(fw, id={"value": "f1"})}}))

# recordio: up to 8 split bytes, then the stream.
write("recordio", "two-records", b"\x01\x03\x07\x00\x10\x02\x05\x09" + b'20\n{"type":"HEARTBEAT"}2\n{}')
write("recordio", "partial", b"\x00\x00\x00\x00\x00\x00\x00\x00" + b"64\nabc")

write("resources_parse", "scalars", "cpus:4;mem:1024;disk:2048.5")
write("resources_parse", "ranges", "ports:[31000-32000,8080-8080]")
write("resources_parse", "set", "cpus:0.001;gpus:{a,b,c};ports:[1-2]")

write("service_spec", "toml", b"\x00" + b'''id = "web"
instances = 3
cmd = "python3 -m http.server $PORT0"
cpus = 0.1
mem = 64
ports = 1
constraints = ["hostname:UNIQUE", "rack:LIKE:r[12]"]
[health_check]
kind = "http"
port_index = 0
path = "/"
[upgrade]
max_unavailable = 1
max_surge = 1
[backoff]
initial_seconds = 1.0
factor = 2.0
max_seconds = 60.0
reset_after_seconds = 300.0
''')
write("service_spec", "json", b"\x01" + json.dumps({"id": "api", "instances": 2, "cmd": "sleep 100",
      "cpus": 0.5, "mem": 128, "env": {"A": "B"}}).encode())

write("cron_expr", "daily", "30 2 * * *\nEurope/Berlin\n1700000000")
write("cron_expr", "seconds", "*/15 * * * * *\nUTC\n0")
write("cron_expr", "names", "0 9-17/2 1,15 JAN-MAR MON-FRI\nAmerica/New_York\n1711846800")
write("cron_expr", "macro", "@hourly")

nested = {"value": "dbg-1", "parent": {"value": "0b7c6f1e-2f6b-4a57-9d1b-0a2c3e4f5a6b"}}
write("agent_api_call", "launch-shell", json.dumps({"type": "LAUNCH_NESTED_CONTAINER",
      "launch_nested_container": {"container_id": nested, "command": {"value": "ss -ltn"}}}))
write("agent_api_call", "launch-argv", json.dumps({"type": "LAUNCH_NESTED_CONTAINER",
      "launch_nested_container": {"container_id": nested, "command": {"shell": False,
      "value": "/bin/echo", "arguments": ["echo", "a"],
      "environment": {"variables": [{"name": "K", "value": "v"}]}}}}))
write("agent_api_call", "wait", json.dumps({"type": "WAIT_NESTED_CONTAINER",
      "wait_nested_container": {"container_id": nested}}))
write("agent_api_call", "kill", json.dumps({"type": "KILL_NESTED_CONTAINER",
      "kill_nested_container": {"container_id": nested, "signal": 15}}))
write("agent_api_call", "remove", json.dumps({"type": "REMOVE_NESTED_CONTAINER",
      "remove_nested_container": {"container_id": nested}}))
