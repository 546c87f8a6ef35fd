#!/usr/bin/env python3
"""A pymesos scheduler launching a task group (pod) with LAUNCH_GROUP, run against brim.

Usage: pymesos_launch_group.py HOST:PORT

Flow: subscribe; on the first offer ACCEPT with two operations: an invalid LAUNCH_GROUP
(a DEFAULT executor with a command: every task of it gets TASK_ERROR) and a valid one of two
tasks under the default executor "pod" — "writer" puts a file in $MESOS_SANDBOX/shared,
"reader" waits for it there and prints it. Both must run (updates carry executor_id "pod");
/master/state must list them; killing "reader" must kill "writer" too (TASK_KILLED). Then
tear down. pymesos passes operations as raw dicts, so this is an unmodified client.
Prints "STEP ..." lines and exits 0 only when everything happened.
"""

import json
import logging
import sys
import threading
import urllib.request

from pymesos import MesosSchedulerDriver, Scheduler

TIMEOUT_S = 60


def log(*args):
    print(*args, flush=True)


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


class Pod(Scheduler):
    def __init__(self, master):
        self.master = master
        self.lock = threading.Lock()
        self.launched = False
        self.states = {}
        self.killed_sent = False
        self.done = threading.Event()

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if self.launched:
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})
                    continue
                agent_id = offer["agent_id"]

                def task(tid, cmd):
                    return {
                        "name": tid,
                        "task_id": {"value": tid},
                        "agent_id": agent_id,
                        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
                        "command": {"value": cmd},
                    }

                bad = {
                    "type": "LAUNCH_GROUP",
                    "launch_group": {
                        "executor": {"executor_id": {"value": "bad"}, "type": "DEFAULT",
                                     "command": {"value": "true"}},
                        "task_group": {"tasks": [task("bad1", "true"), task("bad2", "true")]},
                    },
                }
                good = {
                    "type": "LAUNCH_GROUP",
                    "launch_group": {
                        "executor": {"executor_id": {"value": "pod"}, "type": "DEFAULT",
                                     "resources": [scalar("cpus", 0.1), scalar("mem", 32)]},
                        "task_group": {"tasks": [
                            task("writer", 'echo from-writer > "$MESOS_SANDBOX/shared/f";'
                                           ' exec sleep 300'),
                            task("reader", 'until [ -s "$MESOS_SANDBOX/shared/f" ]; do'
                                           ' sleep 0.1; done; cat "$MESOS_SANDBOX/shared/f";'
                                           ' exec sleep 300'),
                        ]},
                    },
                }
                driver.acceptOffers([offer["id"]], [bad, good], filters={"refuse_seconds": 1})
                self.launched = True
                log("STEP launched groups on", agent_id["value"])

    def statusUpdate(self, driver, update):
        with self.lock:
            tid = update["task_id"]["value"]
            state = update["state"]
            self.states.setdefault(tid, []).append(state)
            executor = update.get("executor_id", {}).get("value", "-")
            log("STEP update", tid, state, "executor=" + executor, update.get("message", ""))
            if "uuid" in update:
                driver.acknowledgeStatusUpdate(update)
            running = all("TASK_RUNNING" in self.states.get(t, []) for t in ("writer", "reader"))
            if running and not self.killed_sent:
                self.killed_sent = True
                with urllib.request.urlopen("http://%s/master/state" % self.master) as r:
                    st = json.load(r)
                ids = sorted(t["id"] for f in st.get("frameworks", []) for t in f.get("tasks", []))
                log("STEP state tasks", ",".join(ids))
                driver.killTask({"value": "reader"})
                log("STEP kill sent reader")
            killed = all("TASK_KILLED" in self.states.get(t, []) for t in ("writer", "reader"))
            errors = all("TASK_ERROR" in self.states.get(t, []) for t in ("bad1", "bad2"))
            if killed and errors:
                self.done.set()

    def error(self, driver, message):
        log("STEP error", message)


def main():
    logging.basicConfig(level=logging.WARNING)
    master = sys.argv[1]
    framework = {"user": "nobody", "name": "pymesos-pod", "hostname": "localhost",
                 "failover_timeout": 60}
    pod = Pod(master)
    driver = MesosSchedulerDriver(pod, framework, master, use_addict=False,
                                  implicit_acknowledgements=False)
    driver.start()
    try:
        ok = pod.done.wait(TIMEOUT_S)
    except KeyboardInterrupt:
        log("STEP FAIL pymesos IO thread aborted")
        return 1
    if not ok:
        log("STEP FAIL timed out; task states:", json.dumps(pod.states, sort_keys=True))
        driver.stop()
        return 1
    driver.stop()
    driver.join()
    log("STEP torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
