#!/usr/bin/env python3
"""An unmodified pymesos scheduler that authenticates the Mesos way: the driver is given a
principal and a secret and sends `Authorization: Basic base64(principal:secret)` on the
subscription and on every call. Launches one command task and waits for TASK_FINISHED.

Usage: pymesos_basic_auth.py HOST:PORT PRINCIPAL SECRET
Prints "STEP ..." lines; exits 0 only when the task finished.
"""

import logging
import sys
import threading

from pymesos import MesosSchedulerDriver, Scheduler

TIMEOUT_S = 60


def log(*args):
    print(*args, flush=True)


def scalar(name, value):
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


class Once(Scheduler):
    def __init__(self):
        self.lock = threading.Lock()
        self.launched = False
        self.done = threading.Event()

    def registered(self, driver, framework_id, master_info):
        log("STEP registered", framework_id["value"])

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if self.launched:
                    driver.declineOffer(offer["id"], filters={"refuse_seconds": 3600})
                    continue
                task = {
                    "name": "authed",
                    "task_id": {"value": "authed"},
                    "agent_id": offer["agent_id"],
                    "resources": [scalar("cpus", 0.1), scalar("mem", 32)],
                    "command": {"value": "echo basic-auth-ok"},
                }
                driver.launchTasks(offer["id"], [task])
                self.launched = True
                log("STEP launched")

    def statusUpdate(self, driver, update):
        log("STEP update", update["task_id"]["value"], update["state"])
        if update["state"] == "TASK_FINISHED":
            self.done.set()

    def error(self, driver, message):
        log("STEP error", message)


def main():
    logging.basicConfig(level=logging.WARNING)
    master, principal, secret = sys.argv[1], sys.argv[2], sys.argv[3]
    framework = {
        "user": "nobody",
        "name": "pymesos-basic-auth",
        "hostname": "localhost",
        "principal": principal,
        "failover_timeout": 60,
    }
    sched = Once()
    driver = MesosSchedulerDriver(sched, framework, master, use_addict=False,
                                  principal=principal, secret=secret)
    driver.start()
    try:
        ok = sched.done.wait(TIMEOUT_S)
    except KeyboardInterrupt:
        log("STEP FAIL pymesos IO thread aborted")
        return 1
    driver.stop()
    driver.join()
    if not ok:
        log("STEP FAIL timed out")
        return 1
    log("STEP finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
