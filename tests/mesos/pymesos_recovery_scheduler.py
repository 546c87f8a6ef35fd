#!/usr/bin/env python3
"""A plain pymesos scheduler for the agent-restart test (tests/executor_recovery.rs).

Usage: pymesos_recovery_scheduler.py HOST:PORT MODE CONTROL_DIR

Launches one task (id MODE) on a custom pymesos executor (pymesos_recovery_executor.py)
that runs until killed, and prints "STEP …" lines: every status update it gets (each
acknowledged explicitly). MODE "kill": once the file CONTROL_DIR/kill exists it kills the
task. It stops (tearing the framework down) 3 s after the task's first terminal update, so
a duplicate terminal update would show as a second line.
"""

import json
import logging
import os
import shlex
import sys
import threading
import time

from pymesos import MesosSchedulerDriver, Scheduler

TIMEOUT_S = 120
EXECUTOR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "pymesos_recovery_executor.py")


def log(*args):
    print(*args, flush=True)


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


class Probe(Scheduler):
    def __init__(self, task_id):
        self.task_id = task_id
        self.lock = threading.Lock()
        self.launched = False
        self.running = threading.Event()
        self.terminal = threading.Event()

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if self.launched:
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})
                    continue
                executor = {
                    "executor_id": {"value": "rec-" + self.task_id},
                    "name": "pymesos-recovery-executor",
                    "command": {"value": "exec %s %s" % (shlex.quote(sys.executable),
                                                         shlex.quote(EXECUTOR))},
                }
                task = {
                    "name": "long-" + self.task_id,
                    "task_id": {"value": self.task_id},
                    "agent_id": offer["agent_id"],
                    "resources": [scalar("cpus", 0.1), scalar("mem", 64)],
                    "executor": executor,
                }
                driver.launchTasks(offer["id"], [task], filters={"refuse_seconds": 3600})
                self.launched = True
                log("STEP launched", self.task_id)

    def statusUpdate(self, driver, update):
        tid = update["task_id"]["value"]
        state = update["state"]
        log("STEP update", tid, state, update.get("reason", "-"), update.get("source", "-"),
            update.get("message", ""))
        if "uuid" in update:
            driver.acknowledgeStatusUpdate(update)
        if state == "TASK_RUNNING":
            self.running.set()
        if state in ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST",
                     "TASK_ERROR", "TASK_DROPPED", "TASK_GONE"):
            self.terminal.set()

    def error(self, driver, message):
        log("STEP error", message)


def main():
    logging.basicConfig(level=logging.WARNING)
    master, mode, control = sys.argv[1], sys.argv[2], sys.argv[3]
    framework = {"user": "root", "name": "pymesos-recovery-" + mode,
                 "hostname": "localhost", "failover_timeout": 300}
    probe = Probe(mode)
    driver = MesosSchedulerDriver(probe, framework, master, use_addict=False,
                                  implicit_acknowledgements=False)
    driver.start()
    deadline = time.time() + TIMEOUT_S
    try:
        if mode == "kill":
            probe.running.wait(TIMEOUT_S)
            while not os.path.exists(os.path.join(control, "kill")):
                if time.time() > deadline:
                    log("STEP FAIL no kill file")
                    return 1
                time.sleep(0.1)
            driver.killTask({"value": mode})
            log("STEP kill sent", mode)
        if not probe.terminal.wait(max(1, deadline - time.time())):
            log("STEP FAIL no terminal update")
            return 1
        time.sleep(3)
    except KeyboardInterrupt:
        log("STEP FAIL pymesos IO thread aborted")
        return 1
    driver.stop()
    driver.join()
    log("STEP done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
