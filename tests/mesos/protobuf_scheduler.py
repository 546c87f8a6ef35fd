#!/usr/bin/env python3
"""A Mesos scheduler speaking only protobuf (application/x-protobuf both ways) to a brim master:
SUBSCRIBE, OFFERS, ACCEPT with a LAUNCH of one task run by tests/mesos/protobuf_executor.py
(a custom executor that also speaks only protobuf to the agent), UPDATEs acknowledged, then
TEARDOWN. Prints `STEP …` lines that tests/mesos_protobuf.rs checks.

Usage: protobuf_scheduler.py <master host:port> <mesos FileDescriptorSet>"""

import os
import shlex
import sys

from protobuf_mesos import EventStream, load, post

MASTER, FDS = sys.argv[1], sys.argv[2]
EXECUTOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protobuf_executor.py")
Call, Event = load(FDS, "mesos.v1.scheduler.Call", "mesos.v1.scheduler.Event")
TYPE = Event.DESCRIPTOR.fields_by_name["type"].enum_type
STATE = Event.DESCRIPTOR.fields_by_name["update"].message_type.fields_by_name[
    "status"].message_type.fields_by_name["state"].enum_type
SOURCE = Event.DESCRIPTOR.fields_by_name["update"].message_type.fields_by_name[
    "status"].message_type.fields_by_name["source"].enum_type


def step(*words):
    print("STEP", *words, flush=True)


sub = Call(type=Call.SUBSCRIBE)
fi = sub.subscribe.framework_info
fi.user, fi.name = "root", "protobuf-probe"
fi.roles.append("*")
cap = fi.capabilities.add()
cap.type = cap.MULTI_ROLE
events = EventStream(MASTER, "/api/v1/scheduler", sub, Event)
framework_id = None
launched = False
finished = False
while not finished:
    ev = events.next()
    kind = TYPE.values_by_number[ev.type].name
    if kind == "SUBSCRIBED":
        framework_id = ev.subscribed.framework_id.value
        step("subscribed", framework_id, "heartbeat", ev.subscribed.heartbeat_interval_seconds,
             "master port", ev.subscribed.master_info.port)
    elif kind == "OFFERS" and not launched:
        offer = ev.offers.offers[0]
        step("offer", offer.id.value, "from", offer.hostname,
             "cpus", [r.scalar.value for r in offer.resources if r.name == "cpus"])
        accept = Call(type=Call.ACCEPT)
        accept.framework_id.value = framework_id
        accept.accept.offer_ids.add().value = offer.id.value
        op = accept.accept.operations.add()
        op.type = op.LAUNCH
        task = op.launch.task_infos.add()
        task.name = "pb-task"
        task.task_id.value = "pb-task"
        task.agent_id.value = offer.agent_id.value
        for name, value in (("cpus", 0.1), ("mem", 64.0)):
            r = task.resources.add()
            r.name, r.scalar.value = name, value
            r.type = r.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_name["SCALAR"].number
        task.executor.type = task.executor.CUSTOM
        task.executor.executor_id.value = "pb-executor"
        task.executor.framework_id.value = framework_id
        task.executor.command.shell = True
        task.executor.command.value = "exec %s -B %s %s" % (
            shlex.quote(sys.executable), shlex.quote(EXECUTOR), shlex.quote(FDS))
        accept.accept.filters.refuse_seconds = 1.0
        status, body = post(MASTER, "/api/v1/scheduler", accept,
                            {"Mesos-Stream-Id": events.stream_id})
        step("accept", status, body.decode(errors="replace"))
        launched = True
    elif kind == "UPDATE":
        st = ev.update.status
        state = STATE.values_by_number[st.state].name
        step("update", st.task_id.value, state, SOURCE.values_by_number[st.source].name,
             "uuid%d" % len(st.uuid), st.message)
        if st.uuid:
            ack = Call(type=Call.ACKNOWLEDGE)
            ack.framework_id.value = framework_id
            ack.acknowledge.agent_id.value = st.agent_id.value
            ack.acknowledge.task_id.value = st.task_id.value
            ack.acknowledge.uuid = st.uuid
            status, body = post(MASTER, "/api/v1/scheduler", ack,
                                {"Mesos-Stream-Id": events.stream_id})
            step("ack", state, status, body.decode(errors="replace"))
        if state in ("TASK_FINISHED", "TASK_FAILED", "TASK_LOST", "TASK_ERROR", "TASK_KILLED"):
            finished = True
    elif kind == "ERROR":
        step("FAIL error", ev.error.message)
        sys.exit(1)

teardown = Call(type=Call.TEARDOWN)
teardown.framework_id.value = framework_id
status, body = post(MASTER, "/api/v1/scheduler", teardown, {"Mesos-Stream-Id": events.stream_id})
step("teardown", status)
