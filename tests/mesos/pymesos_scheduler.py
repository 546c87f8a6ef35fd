#!/usr/bin/env python3
"""A plain pymesos scheduler, as one would write it for Apache Mesos, run against brim.

Usage: pymesos_scheduler.py HOST:PORT

Flow: subscribe; on the first offer launch four tasks in one ACCEPT (a command that
finishes, a sleeper that is killed later, and two tasks for one custom pymesos executor,
pymesos_executor.py, which the agent starts once and which reports TASK_RUNNING and
TASK_FINISHED for both); decline every other offer with a refuse filter; acknowledge each update
explicitly; kill the sleeper once it runs; reconcile; tear down. Prints one line per step
("STEP ...") and exits 0 only when everything happened; the Rust test asserts on both.
"""

import json
import logging
import os
import shlex
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler, decode_data, encode_data

TIMEOUT_S = 90
EXECUTOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pymesos_executor.py")
CUSTOM = ("custom", "custom2")


def log(*args):
    print(*args, flush=True)


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


class Probe(Scheduler):
    def __init__(self):
        self.lock = threading.Lock()
        self.launched = False
        self.declined = 0
        self.acked = 0
        self.states = {}
        self.killed_sent = False
        self.reconciled = False
        self.reconcile_updates = 0
        self.message_sent = False
        self.message_back = False
        self.done = threading.Event()
        self.error = None

    # -- callbacks -------------------------------------------------------------------
    def registered(self, driver, framework_id, master_info):
        log("STEP registered", framework_id["value"], json.dumps(master_info, sort_keys=True))

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                names = sorted(r["name"] for r in offer["resources"])
                log("STEP offer", offer["id"]["value"], offer["agent_id"]["value"],
                    offer["hostname"], ",".join(names))
                assert offer["resources"], "offer has resources"
                for r in offer["resources"]:
                    assert "revocable" not in r, "no revocable resources without the capability"
                if self.launched:
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})
                    self.declined += 1
                    log("STEP declined", offer["id"]["value"], "refuse_seconds=3600")
                    self.check_done(driver)
                    continue
                agent_id = offer["agent_id"]
                tasks = [
                    {
                        "name": "echo",
                        "task_id": {"value": "echo"},
                        "agent_id": agent_id,
                        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
                        "command": {"value": "echo hello-from-pymesos"},
                    },
                    {
                        "name": "sleeper",
                        "task_id": {"value": "sleeper"},
                        "agent_id": agent_id,
                        "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
                        "command": {"shell": False, "value": "/bin/sleep",
                                    "arguments": ["sleep", "300"]},
                    },
                ]
                executor = {
                    "executor_id": {"value": "e1"},
                    "name": "pymesos-probe-executor",
                    "command": {"value": "exec %s %s" % (shlex.quote(sys.executable),
                                                         shlex.quote(EXECUTOR))},
                }
                for tid in CUSTOM:
                    tasks.append({
                        "name": "custom-executor-" + tid,
                        "task_id": {"value": tid},
                        "agent_id": agent_id,
                        "resources": [scalar("cpus", 0.1), scalar("mem", 64)],
                        "executor": executor,
                    })
                driver.launchTasks(offer["id"], tasks, filters={"refuse_seconds": 1})
                self.launched = True
                log("STEP launched %d tasks on" % len(tasks), agent_id["value"])

    def statusUpdate(self, driver, update):
        with self.lock:
            tid = update["task_id"]["value"]
            state = update["state"]
            self.states.setdefault(tid, []).append(state)
            log("STEP update", tid, state, update.get("reason", "-"), update.get("source", "-"),
                "uuid" if "uuid" in update else "no-uuid", update.get("message", ""))
            if "uuid" in update:
                driver.acknowledgeStatusUpdate(update)
                self.acked += 1
            if update.get("reason") == "REASON_RECONCILIATION":
                self.reconcile_updates += 1
            if tid == "custom" and state == "TASK_RUNNING" and not self.message_sent:
                # Framework -> executor MESSAGE; the executor answers with its own MESSAGE.
                self.message_sent = True
                driver.sendFrameworkMessage({"value": "e1"}, update["agent_id"],
                                            encode_data(b"ping"))
                log("STEP message sent to executor e1")
            if tid == "sleeper" and state == "TASK_RUNNING" and not self.killed_sent:
                self.killed_sent = True
                driver.killTask({"value": "sleeper"})
                log("STEP kill sent sleeper")
            self.check_done(driver)

    def frameworkMessage(self, driver, executor_id, agent_id, data):
        with self.lock:
            log("STEP message from executor", executor_id["value"], decode_data(data).decode())
            self.message_back = True
            self.check_done(driver)

    def check_done(self, driver):
        finished = "TASK_FINISHED" in self.states.get("echo", [])
        killed = "TASK_KILLED" in self.states.get("sleeper", [])
        custom = all("TASK_FINISHED" in self.states.get(t, []) for t in CUSTOM)
        if finished and killed and custom and not self.reconciled:
            self.reconciled = True
            driver.reconcileTasks([{"task_id": {"value": "echo"}}])
            log("STEP reconcile sent")
        if (self.reconciled and self.reconcile_updates >= 1 and self.declined >= 1
                and self.message_back):
            self.done.set()

    def error(self, driver, message):
        log("STEP error", message)

    def disconnected(self, driver):
        log("STEP disconnected")


def main():
    logging.basicConfig(level=logging.WARNING)
    master = sys.argv[1]
    framework = {
        "user": "nobody",
        "name": "pymesos-probe",
        "hostname": "localhost",
        "failover_timeout": 60,
    }
    probe = Probe()
    driver = MesosSchedulerDriver(probe, framework, master, use_addict=False,
                                  implicit_acknowledgements=False)
    driver.start()
    try:
        ok = probe.done.wait(TIMEOUT_S)
    except KeyboardInterrupt:
        # pymesos interrupts the main thread when its IO thread dies.
        log("STEP FAIL pymesos IO thread aborted")
        return 1
    if not ok:
        log("STEP FAIL timed out; task states:", json.dumps(probe.states, sort_keys=True))
        driver.stop()
        return 1
    log("STEP acked", probe.acked, "declined", probe.declined)
    driver.stop()  # not a failover: pymesos sends TEARDOWN
    driver.join()
    log("STEP torn down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
