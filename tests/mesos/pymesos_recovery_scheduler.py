#!/usr/bin/env python3
"""A plain pymesos scheduler for the agent-restart test (tests/executor_recovery.rs).

Usage: pymesos_recovery_scheduler.py HOST:PORT MODE CONTROL_DIR

Launches tasks on one custom pymesos executor (pymesos_recovery_executor.py) that run until
killed — MODE "kill": tasks "kill" and "kill2" (the second is handed to the running
executor, without a container of its own); MODE "stuck": task "stuck" — and prints
"STEP …" lines: every status update it gets (each acknowledged explicitly). MODE "kill":
it kills task T once the file CONTROL_DIR/kill-T exists. It stops (tearing the framework
down) 3 s after every task had a terminal update, so a duplicate terminal update (or a
TASK_LOST from the master) would show as another line.
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
    def __init__(self, mode):
        self.mode = mode
        self.task_ids = [mode, mode + "2"] if mode == "kill" else [mode]
        self.lock = threading.Lock()
        self.launched = False
        self.running_ids = set()
        self.terminal_ids = set()
        self.running = threading.Event()
        self.terminal = threading.Event()

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if self.launched:
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})
                    continue
                executor = {
                    "executor_id": {"value": "rec-" + self.mode},
                    "name": "pymesos-recovery-executor",
                    "command": {"value": "exec %s %s" % (shlex.quote(sys.executable),
                                                         shlex.quote(EXECUTOR))},
                }
                tasks = [{
                    "name": "long-" + tid,
                    "task_id": {"value": tid},
                    "agent_id": offer["agent_id"],
                    "resources": [scalar("cpus", 0.1), scalar("mem", 64)],
                    "executor": executor,
                } for tid in self.task_ids]
                driver.launchTasks(offer["id"], tasks, filters={"refuse_seconds": 3600})
                self.launched = True
                log("STEP launched", " ".join(self.task_ids))

    def statusUpdate(self, driver, update):
        tid = update["task_id"]["value"]
        state = update["state"]
        log("STEP update", tid, state, update.get("reason", "-"), update.get("source", "-"),
            update.get("message", ""))
        if "uuid" in update:
            driver.acknowledgeStatusUpdate(update)
        with self.lock:
            if state == "TASK_RUNNING":
                self.running_ids.add(tid)
                if self.running_ids >= set(self.task_ids):
                    self.running.set()
            if state in ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST",
                         "TASK_ERROR", "TASK_DROPPED", "TASK_GONE"):
                self.terminal_ids.add(tid)
                if self.terminal_ids >= set(self.task_ids):
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
            pending = list(probe.task_ids)
            while pending:
                if time.time() > deadline:
                    log("STEP FAIL no kill file for", " ".join(pending))
                    return 1
                for tid in list(pending):
                    if os.path.exists(os.path.join(control, "kill-" + tid)):
                        driver.killTask({"value": tid})
                        log("STEP kill sent", tid)
                        pending.remove(tid)
                time.sleep(0.1)
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
