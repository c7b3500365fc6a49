"""The leader's bounded record of recent batches: each worker's busy timeline.

Theory of operation
-------------------
The dashboard draws, for each worker, when it was busy with which job over the last
minute.  Each answered batch is one span, fed where the answers the scheduler counted
are applied (beside the timing log): it ends when the answer arrived and starts when
the scheduler says the batch started running (``Answered.started_at``: its dispatch,
or its worker's previous answer if that came later, since a worker runs one batch at a
time), the same start C1 and the ``plot`` command count the batch's queries from.
Without that start (a batch sent by an earlier leader), the span is the processing
time the worker reported, back from the answer.

Invariants
----------
1. Memory is bounded: at most ``max_spans`` spans (the oldest go first).
2. A span never starts after it ends.
3. Nothing here reads a clock, awaits or does I/O; times come in as arguments.

It is not replicated: a new leader starts an empty record (the standby copies the
scheduler, not this), so the timeline restarts after a change of leader.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from net.messages import BusySpan

# Spans kept: a minute of batches for a cluster of ten workers answering a few
# batches a second each, with room to spare (about 100 bytes each).
MAX_SPANS = 5000


class BusyRecord:
    def __init__(self, max_spans: int = MAX_SPANS) -> None:
        self._spans: deque[BusySpan] = deque(maxlen=max_spans)

    def done(
        self,
        worker: str,
        job_id: str,
        model: str,
        start: float | None,
        end: float,
        timings: Sequence[float],
    ) -> BusySpan:
        """A batch of ``len(timings)`` queries that ``worker`` ran from ``start`` (None:
        unknown) until its answer at ``end``; its span is recorded and returned."""
        if start is None:
            start = end - max(0.0, float(sum(timings)))
        span = BusySpan(worker, job_id, model, min(start, end), end, len(timings))
        self._spans.append(span)
        return span

    def spans(self, now: float, horizon: float, limit: int) -> list[BusySpan]:
        """Spans that ended within ``horizon`` seconds before ``now``, the newest
        ``limit`` of them, oldest first."""
        out: list[BusySpan] = []
        for span in reversed(self._spans):
            if span.end < now - horizon or len(out) >= limit:
                break
            out.append(span)
        out.reverse()
        return out

    def __len__(self) -> int:
        return len(self._spans)
