"""Put back the latest metrics snapshots Redis lost, from the metrics events already published.

The gateway's table (``/api/metrics``) and the rules' cross-symbol reads come from ``MetricsStore``,
which lives in Redis only. When Redis loses everything (a restart without persistence, a flush), the
next minute's batch would bring a symbol back, up to a minute later. The METRICS stream holds each
symbol's last metrics event, the one its position is recovered from
(``functions.calculator.positions``): its payload packs to the very bytes the calculator saved for that
minute (``snapshot_codec.pack`` of the payload and ``pack_rows`` of the arrays it was built from: floats
survive JSON exactly, and NaN, infinities and null all become the one NaN), so nothing is computed
again and no metric value can change.

Restoring publishes nothing and moves no position or ring: ``MetricsStore``'s save is idempotent and
never moves a symbol's latest minute back, so a batch that saved a newer minute meanwhile keeps it.
A symbol with no metrics event in the stream gets nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from functions.calculator.positions import last_metrics_events
from screener.names import STREAM_METRICS, SUBJECT_PREFIX_BY_TYPE, TYPE_METRICS_COMPUTED
from state.metrics_store import MetricsStore, PackedSnapshot, pack_payload

log = logging.getLogger(__name__)

_PREFIX = SUBJECT_PREFIX_BY_TYPE[TYPE_METRICS_COMPUTED]


async def published_symbols(js: JetStreamContext) -> list[str]:
    """Return the symbols that have a closed-minute metrics event in the METRICS stream (one request)."""
    try:
        info = await js.stream_info(STREAM_METRICS.name, subjects_filter=f"{_PREFIX}.>")
    except NotFoundError:
        return []
    subjects = info.state.subjects or {}
    return sorted(subject[len(_PREFIX) + 1 :] for subject in subjects)


async def last_snapshots(js: JetStreamContext, symbols: Sequence[str]) -> list[PackedSnapshot]:
    """Return the packed snapshot of each symbol's newest metrics event (symbols without one are left out)."""
    snapshots = []
    for symbol, message in (await last_metrics_events(js, symbols)).items():
        try:
            snapshots.append(pack_payload(orjson.loads(message.data or b"{}")))
        except (KeyError, TypeError, ValueError) as exc:  # not a metrics payload: nothing to restore
            log.warning("restore: the last metrics event of %s is unreadable (%r); not restored", symbol, exc)
    return snapshots


async def restore_snapshots(store: MetricsStore, js: JetStreamContext) -> int:
    """Save every symbol's last published snapshot into ``store`` again; return how many were saved."""
    snapshots = await last_snapshots(js, await published_symbols(js))
    await store.save_packed(snapshots)
    return len(snapshots)
