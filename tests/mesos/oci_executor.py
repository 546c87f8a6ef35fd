#!/usr/bin/env python3
"""A pymesos custom executor that runs each task's shell command and reports its output,
for tests/volumes.rs: the agent starts it inside an OCI image (busybox) where it finds the
agent's python through read-only host-path volumes, so the tasks' commands run with the
image's /bin/sh and see the image's files.

Each task: TASK_RUNNING, then its command through /bin/sh -c, then TASK_FINISHED (exit 0)
or TASK_FAILED, the message being "executor pid N: <stdout>".
"""

import os
import subprocess
import threading

from pymesos import Executor, MesosExecutorDriver


class ShellExecutor(Executor):
    def launchTask(self, driver, task):
        def run():
            tid = task["task_id"]
            driver.sendStatusUpdate({"task_id": tid, "state": "TASK_RUNNING"})
            cmd = (task.get("command") or {}).get("value") or "true"
            p = subprocess.run(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            state = "TASK_FINISHED" if p.returncode == 0 else "TASK_FAILED"
            driver.sendStatusUpdate({
                "task_id": tid, "state": state,
                "message": "executor pid %d: %s" % (os.getpid(), p.stdout.strip()),
            })

        threading.Thread(target=run, daemon=True).start()

    def killTask(self, driver, task_id):
        driver.sendStatusUpdate({"task_id": task_id, "state": "TASK_KILLED"})


if __name__ == "__main__":
    MesosExecutorDriver(ShellExecutor(), use_addict=False).run()
