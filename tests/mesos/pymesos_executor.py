#!/usr/bin/env python3
"""A plain pymesos custom executor, as one would write it for Apache Mesos, run by a brim
agent (named in the tasks' ExecutorInfo by pymesos_scheduler.py).

pymesos's MesosExecutorDriver reads MESOS_AGENT_ENDPOINT, MESOS_FRAMEWORK_ID,
MESOS_EXECUTOR_ID, MESOS_CHECKPOINT … from the environment the agent gives it, SUBSCRIBEs on
the agent's /api/v1/executor, receives each task as a LAUNCH event and reports
TASK_RUNNING then TASK_FINISHED (TASK_KILLED on KILL) with UPDATE calls. A framework
message (MESSAGE event) is answered with a MESSAGE call carrying "pong:" + the message; the
first task ("custom") finishes only after that exchange (or after 20 s).
"""

import logging
import os
import threading
import time

from pymesos import Executor, MesosExecutorDriver, decode_data, encode_data


class ProbeExecutor(Executor):
    def __init__(self):
        self.messaged = threading.Event()

    def frameworkMessage(self, driver, message):
        text = decode_data(message)
        print("executor got message", text, flush=True)
        driver.sendFrameworkMessage(encode_data(b"pong:" + text))
        self.messaged.set()

    def registered(self, driver, executor_info, framework_info, agent_info):
        print("executor registered", executor_info["executor_id"]["value"],
              "framework", framework_info["id"]["value"], flush=True)

    def launchTask(self, driver, task):
        def run():
            tid = task["task_id"]
            driver.sendStatusUpdate({"task_id": tid, "state": "TASK_RUNNING",
                                     "message": "running in pymesos executor pid %d" % os.getpid()})
            time.sleep(0.5)
            if tid["value"] == "custom":
                self.messaged.wait(20)
            driver.sendStatusUpdate({"task_id": tid, "state": "TASK_FINISHED",
                                     "message": "finished by the pymesos executor"})

        threading.Thread(target=run, daemon=True).start()

    def killTask(self, driver, task_id):
        driver.sendStatusUpdate({"task_id": task_id, "state": "TASK_KILLED"})

    def shutdown(self, driver):
        print("executor shutdown", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    MesosExecutorDriver(ProbeExecutor(), use_addict=False).run()
