#!/usr/bin/env python3
"""A plain pymesos custom executor whose tasks run until killed, for the agent-restart test
(tests/executor_recovery.rs, driven by pymesos_recovery_scheduler.py).

It reports TASK_RUNNING with its pid, then waits; a KILL event is answered with TASK_KILLED
naming its pid and how many HEARTBEAT events it saw. pymesos's driver itself ignores
HEARTBEAT; the subclass below only counts them. Across an agent restart the unmodified
driver reconnects (MESOS_CHECKPOINT=1) and re-SUBSCRIBEs with its unacknowledged tasks.
"""

import logging
import os
import threading

from pymesos import Executor, MesosExecutorDriver


class CountingDriver(MesosExecutorDriver):
    heartbeats = 0

    def on_event(self, event):
        if event.get("type") == "HEARTBEAT":
            CountingDriver.heartbeats += 1
        super().on_event(event)


class LongExecutor(Executor):
    def registered(self, driver, executor_info, framework_info, agent_info):
        print("executor registered pid", os.getpid(), flush=True)

    def reregistered(self, driver, agent_info):
        print("executor re-registered pid", os.getpid(), flush=True)

    def disconnected(self, driver):
        print("executor disconnected from the agent", flush=True)

    def launchTask(self, driver, task):
        driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_RUNNING",
                                 "message": "running in executor pid %d" % os.getpid()})

    def killTask(self, driver, task_id):
        def kill():
            driver.sendStatusUpdate({
                "task_id": task_id, "state": "TASK_KILLED",
                "message": "killed by the executor pid %d after %d heartbeats" % (
                    os.getpid(), CountingDriver.heartbeats),
            })
        threading.Thread(target=kill, daemon=True).start()

    def shutdown(self, driver):
        print("executor shutdown", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    CountingDriver(LongExecutor(), use_addict=False).run()
