"""Host CLI: run test images on the accelerator over its byte protocol, on a board's
serial port or on the RTL in simulation.

    python -m boards.host run --port /dev/ttyUSB1 --images 100 [--baud 1000000]
    python -m boards.host run --sim --images 20
        [--qmodel Q] [--accel A] [--dataset fashion-mnist|mnist|random] [--timeout S]

Pings (the ``NAS`` magic and protocol version, else "wrong bitstream"), loads the program,
parameters and weights, streams the images, prints each prediction, the accuracy and
images/s, and checks every logit against the golden model. The session is
``sim.network.session`` paced by :func:`uart_steps` (a UART has no flow control); the
serial port and the simulation (``sim/verilator_stream.cpp`` on two pipes) run the same
code. Exit status 1 with one line on any failure (no port, timeout, wrong bitstream,
logits that differ), 2 for a bad model, config or dataset.
"""
import argparse
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw import protocol
from hw.config import AccelConfig, ConfigError
from sim.network import SimError, build, parse, session
from sw.compile import compile_model
from sw.golden import model as golden
from sw.program import ProgramError

__all__ = ["HostError", "Step", "uart_steps", "SerialLink", "SimLink", "run_session", "main"]

STREAM_HARNESS = Path(__file__).resolve().parent.parent / "sim" / "verilator_stream.cpp"
RUN_HEADER = len(protocol.run(0, 0, 0, 0, 0, 0))
WRITE_CHUNK = 4096


class HostError(RuntimeError):
    """The session failed; the message is one line naming the problem and the fix."""


@dataclass(frozen=True)
class Step:
    """Send ``send``, then read ``reply`` bytes (the logits frame of ``image``, if set)."""
    send: bytes
    reply: int
    image: int | None = None


def uart_steps(cmds, slots, n_images):
    """The commands of ``sim.network.session`` as steps for a link without flow control:
    the run's trailing inputs are held back, and the input of image ``i + slots`` goes out
    only once image ``i``'s logits are in (the bridge then waits for it). The replies,
    concatenated, are those of ``cmds``."""
    *loads, (run, size) = cmds
    steps = [Step(cmd, n) for cmd, n in loads]
    frame = (size - 5) // n_images
    tail = run[RUN_HEADER:]
    per = len(tail) // max(1, n_images - slots)
    inputs = [tail[k * per:(k + 1) * per] for k in range(max(0, n_images - slots))]
    for i in range(n_images):
        send = run[:RUN_HEADER] if i == 0 else (inputs[i - 1] if i - 1 < len(inputs) else b"")
        steps.append(Step(send, frame, image=i))
    steps.append(Step(b"", 5))
    return steps


class SerialLink:
    """A serial port (pyserial) at ``baud``, 8N1, no flow control."""

    def __init__(self, port, baud):
        import serial
        self.baud = baud
        try:
            self.port = serial.Serial(port, baud, timeout=0, write_timeout=10)
        except (serial.SerialException, OSError) as e:
            reason = getattr(e, "strerror", None) or str(e).split(":")[-1].strip()
            raise HostError(f"cannot open serial port {port}: {reason}; is the board "
                            "plugged in (ls /dev/ttyUSB* /dev/ttyACM*) and --port right?") \
                from None
        self.port.reset_input_buffer()

    def write(self, data):
        import serial
        try:
            for at in range(0, len(data), WRITE_CHUNK):
                self.port.write(data[at:at + WRITE_CHUNK])
        except serial.SerialTimeoutException:
            raise HostError("serial write timed out: the port does not send (unplugged?)") \
                from None

    def read_some(self, n, timeout):
        self.port.timeout = timeout
        return self.port.read(max(1, min(n, self.port.in_waiting)))

    def close(self):
        self.port.close()


class SimLink:
    """The accelerator's RTL on Verilator (``sim/verilator_stream.cpp``), on two pipes."""

    def __init__(self, cfg, out):
        try:
            exe = build(cfg, Path(out), harness=STREAM_HARNESS)
        except SimError as e:
            raise HostError(str(e)) from None
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def _exited(self):
        err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        return HostError(f"the simulation exited ({self.proc.wait()}): "
                         f"{err[-1] if err else 'no message'}")

    def write(self, data):
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._exited() from None

    def read_some(self, n, timeout):
        fd = self.proc.stdout.fileno()
        if not select.select([fd], [], [], timeout)[0]:
            return b""
        data = os.read(fd, n)
        if not data:
            raise self._exited()
        return data

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _what(step, index):
    if index == 0:
        return "the ping"
    if step.image is not None:
        return f"the logits of image {step.image}"
    return {protocol.WRITE: "a write", protocol.INPUT: "an input write",
            protocol.RUN: "the run"}.get(step.send[:1], "the run's end")


def read_exact(link, n, timeout, what):
    """``n`` bytes from ``link``; :class:`HostError` when ``timeout`` s pass without one."""
    buf = bytearray()
    while len(buf) < n:
        got = link.read_some(n - len(buf), timeout)
        if not got:
            raise HostError(f"timeout: no reply for {timeout:g} s waiting for {what} "
                            f"(got {len(buf)} of {n} bytes); check --baud against the "
                            "bitstream, and the error LED (framing errors), then reset the board")
        buf += got
    return bytes(buf)


def check_ping(reply):
    if reply == protocol.MAGIC:
        return
    if reply[:3] == protocol.MAGIC[:3]:
        raise HostError(f"the bitstream speaks protocol version {reply[3]}, this host "
                        f"{protocol.VERSION}: rebuild and flash it (make bitstream flash)")
    raise HostError(f"wrong bitstream: ping answered {reply!r}, expected {protocol.MAGIC!r}; "
                    "flash the accelerator (make bitstream flash) and check --baud")


def run_session(link, prog, cfg, images, timeout=10.0, on_image=None):
    """Ping, load and stream ``images`` over ``link``; returns logits [N, C], the run's
    cycles and the seconds from the first image sent to the last logits received.
    ``on_image(i, logits)`` is called as each image's logits arrive."""
    cmds = session(prog, cfg, images)
    replies, start = [], None
    for index, step in enumerate(uart_steps(cmds, cfg.slots, len(images))):
        if step.image == 0:
            start = time.monotonic()
        if step.send:
            link.write(step.send)
        reply = read_exact(link, step.reply, timeout, _what(step, index))
        if index == 0:
            check_ping(reply)
        if step.image is not None:
            if reply[:1] != protocol.OUTPUT:
                raise HostError(f"image {step.image}: expected a logits frame, got "
                                f"{reply[:8]!r}; the link is out of step: reset the board")
            if on_image:
                on_image(step.image, prog.decode_output(np.frombuffer(reply[1:], np.uint8)))
        replies.append(reply)
    seconds = time.monotonic() - start
    try:
        logits, cycles = parse(cmds, b"".join(replies), prog, len(images))
    except SimError as e:
        raise HostError(str(e)) from None
    return logits, cycles[0], seconds


def load_images(dataset, count, shape):
    if dataset == "random":
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count,) + tuple(shape), dtype=np.uint8), None
    from sw.datasets import DatasetError, load
    try:
        images, labels = load(dataset, "test")
    except DatasetError as e:
        raise ConfigError(str(e)) from None
    return images[:count], labels[:count]


def cmd_run(args):
    try:
        cfg = AccelConfig.load(args.accel)
        qm = golden.load(args.qmodel)
        prog = compile_model(qm, cfg)
        images, labels = load_images(args.dataset, args.images, qm.tensors[0]["shape"][1:])
    except (ConfigError, golden.QModelError, ProgramError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    expect = golden.forward(qm, images)

    def show(i, logits):
        label = "" if labels is None else f" (label {labels[i]})"
        print(f"image {i}: class {int(np.argmax(logits))}{label}", flush=True)

    link = None
    try:
        if args.sim:
            print("building the RTL simulation (Verilator) ...", flush=True)
            link = SimLink(cfg, Path(args.accel).parent / "host-sim")
        else:
            link = SerialLink(args.port, args.baud)
        where = "the RTL simulation" if args.sim else f"{args.port} at {args.baud} baud"
        print(f"{len(images)} images ({args.dataset}) on {where}", flush=True)
        logits, cycles, seconds = run_session(link, prog, cfg, images, args.timeout, show)
    except HostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if link:
            link.close()
    n = len(images)
    if labels is not None:
        print(f"accuracy {(logits.argmax(1) == labels).mean():.2%} on {n} images "
              f"(golden model {(expect.argmax(1) == labels).mean():.2%})")
    print(f"{n / seconds:.1f} images/s ({n} images in {seconds:.2f} s; "
          f"{cycles} accelerator cycles)")
    bad = np.flatnonzero((logits != expect).any(axis=1))
    if bad.size:
        print(f"error: logits differ from the golden model on {bad.size} of {n} images "
              f"(first: image {bad[0]}); is --accel the config of the flashed bitstream?",
              file=sys.stderr)
        return 1
    print(f"logits bit-exact with the golden model on all {n} images")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m boards.host", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run test images on the board (or --sim)")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial port of the board (e.g. /dev/ttyUSB1)")
    where.add_argument("--sim", action="store_true", help="the RTL on Verilator instead")
    run.add_argument("--images", type=int, default=10)
    run.add_argument("--qmodel", default="archs/default/qmodel.npz")
    run.add_argument("--accel", default="build/default-icebreaker/accel.json",
                     help="the accelerator config the bitstream was built from")
    run.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist or random")
    run.add_argument("--baud", type=int, default=1_000_000)
    run.add_argument("--timeout", type=float, default=10.0,
                     help="seconds without a reply byte before giving up (default 10)")
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error(f"--images must be at least 1, not {args.images}")
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
