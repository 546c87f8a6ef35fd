#!/usr/bin/env python3
"""pymesos finding the brim master through ZooKeeper (`zk://`, pymesos's MasterDetector with
kazoo reads the lowest `json.info_` znode), then running one command task to TASK_FINISHED
and tearing down. Prints `STEP …` lines that tests/mesos_zk.rs checks.

Usage: pymesos_zk.py zk://host:port/path"""

import logging
import sys
import threading

from pymesos import MesosSchedulerDriver, Scheduler


class OneTask(Scheduler):
    def __init__(self):
        self.launched = False
        self.done = threading.Event()

    def registered(self, driver, framework_id, master_info):
        # driver.master: the address pymesos took from the json.info_ znode.
        print("STEP registered", framework_id["value"], "with master", driver.master,
              flush=True)

    def resourceOffers(self, driver, offers):
        for offer in offers:
            if self.launched:
                driver.declineOffer(offer["id"])
                continue
            self.launched = True
            task = {
                "name": "zk-task",
                "task_id": {"value": "zk-task"},
                "agent_id": offer["agent_id"],
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ],
                "command": {"shell": True, "value": "true"},
            }
            driver.launchTasks(offer["id"], [task])
            print("STEP launched", flush=True)

    def statusUpdate(self, driver, update):
        print("STEP update", update["task_id"]["value"], update["state"],
              update.get("reason", "-"), update.get("message", ""), flush=True)
        if "uuid" in update:
            driver.acknowledgeStatusUpdate(update)
        if update["state"] in ("TASK_FINISHED", "TASK_FAILED", "TASK_LOST", "TASK_ERROR"):
            self.done.set()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sched = OneTask()
    driver = MesosSchedulerDriver(
        sched, {"user": "nobody", "name": "pymesos-zk", "failover_timeout": 0},
        sys.argv[1], use_addict=False)
    driver.start()
    ok = sched.done.wait(60)
    driver.stop()
    driver.join()
    print("STEP torn down" if ok else "STEP FAIL timeout", flush=True)
    sys.exit(0 if ok else 1)
