"""The drills: what each one breaks, when (as a fraction of the candles published), and how."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Action:
    """One fault, done once ``at`` of the run's candles are on the stream.

    kinds: ``kill`` (a process, by PID, with ``signal``), ``redis-kill``, ``redis-flush``,
    ``postgres-stop``, ``nats-kill`` (a server, down ``down_seconds``), ``poison`` (``count`` events).
    """

    at: float
    kind: str
    role: str = ""
    index: int = 0
    signal: str = "SIGKILL"
    # Seconds before the process is started again; None: it stays down (KEDA scaled it in).
    restart_after: float | None = 1.0
    down_seconds: float = 0.0
    count: int = 0


@dataclass(frozen=True)
class Drill:
    """A named drill: the pipeline's shape, its settings and its faults."""

    name: str
    title: str
    actions: tuple[Action, ...] = ()
    calculators: int = 1
    rules: int = 1
    env: dict[str, str] = field(default_factory=dict)
    speed: str | None = None  # None: the suite's speed
    needs: tuple[str, ...] = ()  # servers the harness must control (embedded)
    short: bool = False
    live: bool = False

    @property
    def poisoned(self) -> int:
        """Return how many malformed events the drill publishes."""
        return sum(a.count for a in self.actions if a.kind == "poison")


SIX_KILLS = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85)
POISONED = 62


def _kills(role: str, at: tuple[float, ...], index: int = 0) -> tuple[Action, ...]:
    return tuple(Action(a, "kill", role, index) for a in at)


def _poison(total: int, bursts: int = 10) -> tuple[Action, ...]:
    sizes = [total // bursts + (1 if i < total % bursts else 0) for i in range(bursts)]
    return tuple(Action(0.1 + 0.7 * i / (bursts - 1), "poison", count=n) for i, n in enumerate(sizes))


def catalog(
    *, short: bool, speeds: tuple[str, ...], reference_speed: str, postgres_outage: float | None = None
) -> list[Drill]:
    """Return every drill; ``short`` scales the long outages down.

    ``clean`` is the reference every other run is compared with: it runs at ``reference_speed``, slow
    enough that no backlog builds (a reference that lost events would make every comparison moot).
    """
    outage = postgres_outage or (15.0 if short else 60.0)
    drills = [
        Drill("clean", f"clean run at speed {reference_speed} (the reference)", speed=reference_speed, short=True)
    ]
    drills += [Drill(f"clean-{s}", f"clean run at speed {s}", speed=s) for s in speeds]
    drills += [
        Drill("calculator-kill", "calculator SIGKILL once, restarted", _kills("calculator", (0.5,)), short=True),
        Drill("calculator-kill-6", "calculator SIGKILL 6 times, restarted each time", _kills("calculator", SIX_KILLS)),
        Drill(
            "calculator-kill-6-c1",
            "the same with SCREENER_WORKER_CONCURRENCY=1",
            _kills("calculator", SIX_KILLS),
            env={"SCREENER_WORKER_CONCURRENCY": "1"},
        ),
        Drill(
            "redis-restart",
            "Redis killed and restarted mid-replay",
            (Action(0.5, "redis-kill", down_seconds=1.0),),
            needs=("redis",),
        ),
        Drill("redis-flush", "Redis flushed mid-replay (rings rebuilt by warm start)", (Action(0.5, "redis-flush"),)),
        Drill(
            "postgres-outage",
            f"PostgreSQL stopped {outage:.0f} s, then started",
            (Action(0.3, "postgres-stop", down_seconds=outage),),
            needs=("postgres",),
        ),
        Drill("poisoned", f"{POISONED} malformed candle events among the real ones", _poison(POISONED), short=True),
        Drill("rules-kill", "rules SIGKILL, restarted", _kills("rules", (0.5,)), short=True),
        Drill("recorder-kill", "recorder SIGKILL, restarted", _kills("recorder", (0.5,))),
        Drill("collector-kill", "collector SIGKILL, restarted", _kills("collector", (0.5,))),
        Drill(
            "nats-kill",
            "NATS SIGKILL, restarted after 2 s",
            (Action(0.5, "nats-kill", down_seconds=2.0),),
            needs=("nats",),
        ),
        Drill(
            "nats-restart-publishing",
            "NATS restarted twice (SIGTERM) while the collector publishes",
            (
                Action(0.3, "nats-kill", signal="SIGTERM", down_seconds=1.0),
                Action(0.6, "nats-kill", signal="SIGTERM", down_seconds=1.0),
            ),
            needs=("nats",),
        ),
        Drill(
            "scale-in",
            "2 calculators + 2 rules; one of each SIGTERMed mid-batch and not restarted (KEDA scale-in)",
            (
                Action(0.4, "kill", "calculator", 1, signal="SIGTERM", restart_after=None),
                Action(0.4, "kill", "rules", 1, signal="SIGTERM", restart_after=None),
            ),
            calculators=2,
            rules=2,
        ),
    ]
    for n in (1, 2, 3):
        drills.append(
            Drill(
                f"scale-{n}",
                f"{n} calculator(s) + {n} rules worker(s); one of each SIGKILLed, restarted",
                (Action(0.5, "kill", "calculator", 0), Action(0.5, "kill", "rules", 0)),
                calculators=n,
                rules=n,
                short=n == 2,
            )
        )
    drills.append(
        Drill(
            "live-drops",
            "live mode against the local Binance server; a connection dropped every 30 s",
            live=True,
        )
    )
    return drills
