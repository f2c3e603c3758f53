"""The wire between the referee and the trainer's process, and how logits travel over it.

`Channel` frames messages over a socket: a 12-byte header (JSON length, payload length), a JSON
object, then raw payload bytes. The referee never unpickles what the trainer sends: messages are
size-limited JSON, logits are raw float32 bytes, and it reads a payload only into a buffer of the
size it expects. `LogitsTransport.for_device` picks how logits travel: `CpuTransport` sends them in
the frame's payload (tested); `CudaTransport` copies them into a CUDA buffer the referee allocated
and shared with CUDA IPC (written for the gpu profile, untested here: no GPU in the test machines).
Not covered: what the messages mean (prepare/referee.py, prepare/handover.py).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

_HEADER = struct.Struct("!IQ")
MAX_JSON = 1 << 16  # bytes of one JSON message


class Closed(Exception):
    """The other end closed the connection (its process ended)."""


class Deadline(Exception):
    """No complete message before the deadline."""


class ProtocolError(Exception):
    """A malformed or unexpected message."""


class Channel:
    """Length-prefixed JSON messages with an optional raw payload; safe to send from several threads."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: dict, payload=b"") -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        view = memoryview(payload).cast("B")
        with self._send_lock:
            self.sock.sendall(_HEADER.pack(len(data), view.nbytes) + data)
            if view.nbytes:
                self.sock.sendall(view)

    def _read_into(self, view: memoryview, deadline: float | None) -> None:
        got = 0
        while got < len(view):
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Deadline
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                n = self.sock.recv_into(view[got:])
            except socket.timeout:
                raise Deadline from None
            except (ConnectionResetError, BrokenPipeError):
                raise Closed from None
            if n == 0:
                raise Closed
            got += n

    def recv(self, deadline: float | None = None, into: bytearray | None = None,
             max_payload: int = 1 << 20) -> tuple[dict, memoryview]:
        """The next (message, payload). A payload goes into `into` when given (at most its size),
        else into a new buffer of at most `max_payload` bytes."""
        head = bytearray(_HEADER.size)
        self._read_into(memoryview(head), deadline)
        n_json, n_payload = _HEADER.unpack(head)
        limit = len(into) if into is not None else max_payload
        if n_json > MAX_JSON or n_payload > limit:
            raise ProtocolError(f"a message of {n_json} + {n_payload} bytes is over the limit ({MAX_JSON} + {limit})")
        raw = bytearray(n_json)
        self._read_into(memoryview(raw), deadline)
        try:
            message = json.loads(raw)
        except ValueError:
            raise ProtocolError("a message is not valid JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError("a message has no type")
        buf = into if into is not None else bytearray(n_payload)
        view = memoryview(buf)[:n_payload]
        self._read_into(view, deadline)
        return message, view

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class LogitsTransport:
    """How the trainer's logits reach the referee: `send` runs in the trainer's process,
    `receive` in the referee's, after it got the trainer's `logits` message. `receive` talks
    through `session` (prepare.referee.Session: `send`, and `next_message`, which turns a
    violation report arriving meanwhile into a refusal)."""

    @staticmethod
    def for_device(device_type: str) -> "LogitsTransport":
        return CudaTransport() if device_type == "cuda" else CpuTransport()

    def send(self, channel: Channel, logits) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def receive(self, session, message: dict, payload: memoryview, shape: tuple, deadline: float):
        raise NotImplementedError  # pragma: no cover - interface


class CpuTransport(LogitsTransport):
    """float32 logits as raw bytes in the message's payload (512 MB for the cpu profile's whole
    evaluation; a socket moves that in well under a second)."""

    device = "cpu"

    def send(self, channel: Channel, logits) -> None:
        import torch

        data = logits.detach().to("cpu", torch.float32).contiguous()
        channel.send({"type": "logits", "shape": list(data.shape)}, data.numpy())

    def receive(self, session, message: dict, payload: memoryview, shape: tuple, deadline: float):
        import torch

        n = 1
        for s in shape:
            n *= s
        if payload.nbytes != 4 * n:
            raise ProtocolError(f"logits of shape {list(shape)} need {4 * n} bytes, got {payload.nbytes}")
        return torch.frombuffer(payload, dtype=torch.float32).view(*shape)  # the referee's own buffer


class CudaTransport(LogitsTransport):
    """UNTESTED (no GPU where the tests run): written for the gpu profile, whose evaluation
    (~21M tokens x 8192 logits) is far too big for a socket. The referee allocates one float32
    CUDA buffer of the batch's shape and shares it with the trainer's process through CUDA IPC
    (torch.multiprocessing.reductions.reduce_tensor; the referee pickles, the trainer unpickles,
    never the other way round). Per batch: the trainer sends the shape, the referee answers
    `buffer` (with the handle: first batch; the shape may not change later) or `go`, the trainer copies its
    logits in, synchronizes, and sends `written`. The referee then reads the buffer in chunks
    into its own memory (prepare/referee.py), so later writes by the trainer change nothing it
    has scored."""

    device = "cuda"

    def __init__(self):
        self.buffer = None  # referee: its CUDA tensor; trainer: the shared view of it

    def send(self, channel: Channel, logits) -> None:
        import pickle

        import torch

        channel.send({"type": "logits", "shape": list(logits.shape), "cuda": True})
        reply, payload = channel.recv(max_payload=1 << 20)
        if reply.get("type") == "buffer":
            rebuild, args = pickle.loads(bytes(payload))  # from the referee: trusted
            self.buffer = rebuild(*args)
        elif reply.get("type") != "go" or self.buffer is None:
            raise ProtocolError(f"unexpected reply {reply.get('type')!r} from the referee")
        self.buffer.copy_(logits.detach().to(torch.float32))
        torch.cuda.synchronize()
        channel.send({"type": "written"})

    def receive(self, session, message: dict, payload: memoryview, shape: tuple, deadline: float):
        import pickle

        import torch
        from torch.multiprocessing.reductions import reduce_tensor

        if not message.get("cuda"):
            raise ProtocolError("expected logits in the shared CUDA buffer")
        if self.buffer is None:
            self.buffer = torch.empty(shape, dtype=torch.float32, device="cuda")  # kept until the end: the
            session.send({"type": "buffer"}, pickle.dumps(reduce_tensor(self.buffer)))  # trainer maps it
        elif tuple(self.buffer.shape) != tuple(shape):
            raise ProtocolError(f"the logits changed shape between batches ({list(self.buffer.shape)} -> {list(shape)})")
        else:
            session.send({"type": "go"})
        reply, _ = session.next_message(deadline, max_payload=0)
        if reply.get("type") != "written":
            raise ProtocolError(f"expected 'written', got {reply.get('type')!r}")
        torch.cuda.synchronize()
        return self.buffer
