#!/usr/bin/env python3
"""A plain avmesos (PyPI; the maintained fork of mesoshttp) scheduler run against brim: a
second Mesos client library besides pymesos, with its own HTTP/RecordIO code (requests).

Usage: avmesos_scheduler.py HOST:PORT

Flow: subscribe; launch one command task on the first offer, decline the others; avmesos
acknowledges every update itself; once the task finished, tear down. Prints "STEP ..." lines
and exits 0 only when everything happened.
"""

import logging
import sys
import threading

from avmesos.client import MesosClient

TIMEOUT_S = 60


def log(*args):
    print(*args, flush=True)


class Probe:
    def __init__(self, client):
        self.client = client
        self.launched = False
        self.states = []
        self.finished = threading.Event()

    def subscribed(self, driver):
        log("STEP subscribed", self.client.frameworkId)

    def offers(self, offers):
        for offer in offers:
            o = offer.get_offer()
            if self.launched:
                offer.decline(options={"filters": {"refuse_seconds": 3600}})
                log("STEP declined", o["id"]["value"])
                continue
            self.launched = True
            task = {
                "name": "av-echo",
                "task_id": {"value": "av-echo"},
                "agent_id": o["agent_id"],
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ],
                "command": {"value": "echo hello-from-avmesos"},
            }
            offer.accept([task], options={"filters": {"refuse_seconds": 1}})
            log("STEP launched av-echo on", o["agent_id"]["value"])

    def update(self, update):
        status = update["status"]
        state = status["state"]
        self.states.append(state)
        log("STEP update", status["task_id"]["value"], state, status.get("source", "-"),
            "uuid" if "uuid" in status else "no-uuid")
        if state == "TASK_FINISHED":
            self.finished.set()
            self.client.stop = True
            self.client.get_driver().tearDown()
            log("STEP teardown sent")


def main():
    logging.basicConfig(level=logging.WARNING)
    client = MesosClient(mesos_urls=["http://" + sys.argv[1]], frameworkName="avmesos-probe",
                         frameworkUser="nobody")
    probe = Probe(client)
    client.on(MesosClient.SUBSCRIBED, probe.subscribed)
    client.on(MesosClient.OFFERS, probe.offers)
    client.on(MesosClient.UPDATE, probe.update)
    runner = threading.Thread(target=client.register, daemon=True)
    runner.start()
    if not probe.finished.wait(TIMEOUT_S):
        log("STEP FAIL timed out; states:", probe.states)
        return 1
    runner.join(20)
    if runner.is_alive():
        log("STEP FAIL the event stream did not end after TEARDOWN")
        return 1
    log("STEP done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
