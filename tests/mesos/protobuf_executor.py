#!/usr/bin/env python3
"""A custom Mesos executor speaking only protobuf to the brim agent's /api/v1/executor:
SUBSCRIBE (protobuf event stream), each LAUNCHed task reported TASK_RUNNING then
TASK_FINISHED with UPDATE calls, exit once both are ACKNOWLEDGED (or on SHUTDOWN).
Started by tests/mesos/protobuf_scheduler.py's task. Usage: protobuf_executor.py <fds>"""

import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from protobuf_mesos import EventStream, load, post  # noqa: E402

Call, Event = load(sys.argv[1], "mesos.v1.executor.Call", "mesos.v1.executor.Event")
TYPE = Event.DESCRIPTOR.fields_by_name["type"].enum_type
AGENT = os.environ["MESOS_AGENT_ENDPOINT"]
FRAMEWORK, EXECUTOR = os.environ["MESOS_FRAMEWORK_ID"], os.environ["MESOS_EXECUTOR_ID"]


def call(kind):
    c = Call(type=kind)
    c.framework_id.value = FRAMEWORK
    c.executor_id.value = EXECUTOR
    return c


sub = call(Call.SUBSCRIBE)
sub.subscribe.SetInParent()
events = EventStream(AGENT, "/api/v1/executor", sub, Event)
unacked = set()
while True:
    ev = events.next()
    kind = TYPE.values_by_number[ev.type].name
    print("executor event", kind, flush=True)
    if kind == "LAUNCH":
        for state in ("TASK_RUNNING", "TASK_FINISHED"):
            u = call(Call.UPDATE)
            st = u.update.status
            st.task_id.value = ev.launch.task.task_id.value
            st.state = st.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_name[state].number
            st.source = st.SOURCE_EXECUTOR
            st.message = "from the protobuf executor"
            st.uuid = uuid.uuid4().bytes
            unacked.add(st.uuid)
            status, body = post(AGENT, "/api/v1/executor", u)
            if status != 202:
                print("update refused", status, body, flush=True)
                sys.exit(1)
    elif kind == "ACKNOWLEDGED":
        unacked.discard(ev.acknowledged.uuid)
        if not unacked:
            sys.exit(0)
    elif kind == "SHUTDOWN":
        sys.exit(0)
