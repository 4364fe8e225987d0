"""The kernel's floor under a fan-out: one process writing one frame to each of N loopback TCP sockets.

No gateway, no event loop, no WebSocket library: a plain ``socket.send`` per socket in a loop, from a
process pinned where the gateway would run, to readers pinned where the load generator would run. What
that loop takes is what handing one alert to N sockets costs this machine at the least, so
``bench/fanout.py`` prints it next to the gateway's own time per flush (the same cores, the same run).

On loopback a ``send`` also runs the receiving side's TCP processing and wakes its reader, on the
sender's core; behind a network interface that work moves off the sender's core. With
``--stopped-readers`` the reader processes are stopped (SIGSTOP) while the frames are sent: no reader
wakes up, so what remains is the loopback TCP path itself.

    .venv/bin/python bench/socket_floor.py --clients 10000 --frame-bytes 420
    .venv/bin/python bench/socket_floor.py --clients 1000 10000 --stopped-readers
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import statistics
import time
from dataclasses import dataclass

# File descriptors a process needs beyond its sockets (servers' connections, pipes, the interpreter).
SPARE_FDS = 200


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-files limit to the hard limit; fail if that is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        raise SystemExit(
            f"open-files limit is {hard} (hard), {needed} needed: raise it (ulimit -Hn, or limits.conf) "
            "or spread the sockets over more processes"
        )
    return hard


def _reader(port: int, count: int, cpus: list[int] | None, pipe: multiprocessing.connection.Connection) -> None:
    """Connect ``count`` sockets to ``port`` and read whatever arrives until told to stop."""
    raise_fd_limit(count + SPARE_FDS)
    if cpus:
        os.sched_setaffinity(0, cpus)
    import uvloop

    class Sink(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass  # the bytes only have to leave the kernel's buffers, as a client's would

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transports = []
        for start in range(0, count, 200):  # in waves: the listen backlog stays sane
            made = await asyncio.gather(
                *(loop.create_connection(Sink, "127.0.0.1", port) for _ in range(start, min(count, start + 200)))
            )
            transports += [transport for transport, _ in made]
        pipe.send("READY")
        await loop.run_in_executor(None, pipe.recv)  # "STOP"
        for transport in transports:
            transport.close()

    uvloop.run(main())


@dataclass(frozen=True)
class _Plan:
    clients: int
    frame_bytes: int
    rounds: int
    writer_cpus: list[int] | None
    reader_cpus: list[int] | None
    reader_processes: int
    stop_readers: bool = False


def _writer(plan: _Plan, result: multiprocessing.connection.Connection) -> None:
    """Accept the plan's connections, send one frame to each, round after round; send the times (ms) back."""
    clients, frame_bytes, rounds = plan.clients, plan.frame_bytes, plan.rounds
    writer_cpus, reader_cpus, reader_processes = plan.writer_cpus, plan.reader_cpus, plan.reader_processes
    raise_fd_limit(clients + SPARE_FDS)
    if writer_cpus:
        os.sched_setaffinity(0, writer_cpus)
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    per, extra = divmod(clients, reader_processes)
    readers = []
    for index in range(reader_processes):
        mine, theirs = context.Pipe()
        process = context.Process(target=_reader, args=(port, per + (index < extra), reader_cpus, theirs), daemon=True)
        process.start()
        readers.append((process, mine))
    sockets: list[socket.socket] = []
    try:
        while len(sockets) < clients:
            connection, _ = listener.accept()
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the gateway's sockets
            connection.setblocking(False)
            sockets.append(connection)
        for _, pipe in readers:
            if not pipe.poll(300) or pipe.recv() != "READY":
                raise RuntimeError("a reader did not connect its sockets")
        # A WebSocket text frame of the alert's size (header for 126..65535 bytes of payload).
        frame = bytes([0x81, 126]) + frame_bytes.to_bytes(2, "big") + b"x" * frame_bytes
        if plan.stop_readers:
            # A round is a few hundred bytes per socket: ten of them fit the receive buffers unread.
            for process, _ in readers:
                if process.pid is not None:
                    os.kill(process.pid, signal.SIGSTOP)
        times = []
        for _ in range(rounds):
            time.sleep(0.2)  # let the readers drain, as between alerts
            began = time.perf_counter()
            for connection in sockets:
                connection.send(frame)
            times.append((time.perf_counter() - began) * 1000)
        result.send(times)
    finally:
        for process, pipe in readers:
            if plan.stop_readers and process.pid is not None:
                os.kill(process.pid, signal.SIGCONT)
            pipe.send("STOP")
            process.join(10)
            if process.is_alive():
                process.kill()
        for connection in sockets:
            connection.close()
        listener.close()


def floor_ms(
    clients: int,
    frame_bytes: int,
    *,
    rounds: int = 10,
    writer_cpus: list[int] | None = None,
    reader_cpus: list[int] | None = None,
    reader_processes: int = 2,
    stop_readers: bool = False,
) -> list[float]:
    """Return the milliseconds each of ``rounds`` loops of one ``send`` per socket to ``clients`` sockets took.

    With ``stop_readers`` the readers are stopped while the frames are sent (no wake-ups).
    """
    context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    plan = _Plan(clients, frame_bytes, rounds, writer_cpus, reader_cpus, reader_processes, stop_readers)
    writer = context.Process(target=_writer, args=(plan, theirs))
    writer.start()
    try:
        if not mine.poll(600):
            raise RuntimeError("the floor's writer sent no result")
        times: list[float] = mine.recv()
    finally:
        writer.join(30)
        if writer.is_alive():
            writer.kill()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--frame-bytes", type=int, default=420, help="payload bytes of the frame sent")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--stopped-readers", action="store_true", help="stop the readers while sending (the TCP path alone)"
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    writer_cpus, reader_cpus = (cpus[:1], cpus[1:]) if len(cpus) > 1 else (None, None)
    print(f"writer on {writer_cpus}, readers on {reader_cpus}; load average {os.getloadavg()[0]:.2f}")
    for clients in args.clients:
        times = floor_ms(
            clients,
            args.frame_bytes,
            rounds=args.rounds,
            writer_cpus=writer_cpus,
            reader_cpus=reader_cpus,
            stop_readers=args.stopped_readers,
        )
        print(
            f"{clients:>6} sockets: one send each in median {statistics.median(times):.1f} ms "
            f"(min {min(times):.1f}, max {max(times):.1f}; {statistics.median(times) / clients * 1000:.1f} us a send)"
        )


if __name__ == "__main__":
    main()
