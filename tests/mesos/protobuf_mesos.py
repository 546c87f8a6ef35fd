"""Mesos v1 protobuf messages for the protobuf test scheduler and executor, built at run time
from the FileDescriptorSet of the Mesos protos (written by tests/mesos_protobuf.rs) with
Google's `protobuf` package, plus RecordIO over http.client. Independent of brim's own
transcoding (prost-reflect): what this encodes, brim must read, and the other way round."""

import http.client

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PB = "application/x-protobuf"


def load(fds_path, *names):
    pool = descriptor_pool.DescriptorPool()
    with open(fds_path, "rb") as f:
        for fd in descriptor_pb2.FileDescriptorSet.FromString(f.read()).file:
            pool.Add(fd)
    classes = []
    for name in names:
        desc = pool.FindMessageTypeByName(name)
        if hasattr(message_factory, "GetMessageClass"):
            classes.append(message_factory.GetMessageClass(desc))
        else:
            classes.append(message_factory.MessageFactory(pool).GetPrototype(desc))
    return classes


def post(endpoint, path, call, headers=None):
    """One call; returns (status, body bytes)."""
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    h = {"Content-Type": PB, "Accept": PB}
    h.update(headers or {})
    conn.request("POST", path, body=call.SerializeToString(), headers=h)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


class EventStream:
    """A SUBSCRIBE whose RecordIO records are protobuf Events."""

    def __init__(self, endpoint, path, call, event_class):
        host, port = endpoint.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.conn.request("POST", path, body=call.SerializeToString(),
                          headers={"Content-Type": PB, "Accept": PB})
        self.resp = self.conn.getresponse()
        self.event_class = event_class
        if self.resp.status != 200:
            raise RuntimeError("SUBSCRIBE failed: %d %r" % (self.resp.status, self.resp.read()))
        if self.resp.getheader("Content-Type") != PB:
            raise RuntimeError("stream is %s, not protobuf" % self.resp.getheader("Content-Type"))
        self.stream_id = self.resp.getheader("Mesos-Stream-Id")

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.resp.read(n - len(out))
            if not chunk:
                raise EOFError("event stream ended")
            out += chunk
        return out

    def next(self):
        length = b""
        while not length.endswith(b"\n"):
            length += self._read(1)
        event = self.event_class()
        event.ParseFromString(self._read(int(length)))
        return event
