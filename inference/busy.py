"""The leader's bounded record of recent batches: each worker's busy timeline.

Theory of operation
-------------------
The dashboard draws, for each worker, when it was busy with which job over the last
minute.  The leader knows when it sent a batch (:meth:`BusyRecord.sent`) and when its
answer came back with the processing time of each query (:meth:`BusyRecord.done`, fed
where the answers the scheduler counted are applied, beside the timing log).  A span
ends when the answer arrived and starts ``sum(timings)`` before that (the worker runs
one batch at a time, so a batch queued behind another starts when that one ends),
but never before it was sent (queries a kind runs side by side report overlapping
times).  A batch sent by an earlier leader (a takeover) has no send time here: its
span is the processing time alone.

Invariants
----------
1. Memory is bounded: at most ``max_spans`` spans and ``max_pending`` send times (the
   oldest go first); a failed or lost batch's send time is dropped when it is known.
2. A span never starts after it ends, nor before its batch was sent (when known).
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
# Send times of batches not answered yet: far more than can be in flight.
MAX_PENDING = 10_000


class BusyRecord:
    def __init__(self, max_spans: int = MAX_SPANS, max_pending: int = MAX_PENDING) -> None:
        self._spans: deque[BusySpan] = deque(maxlen=max_spans)
        self._sent: dict[int, float] = {}
        self._max_pending = max_pending

    def sent(self, batch_id: int, now: float) -> None:
        """Batch ``batch_id`` went to its worker at ``now``."""
        self._sent.pop(batch_id, None)
        self._sent[batch_id] = now
        while len(self._sent) > self._max_pending:
            del self._sent[next(iter(self._sent))]  # the oldest: insertion order

    def gone(self, batch_id: int) -> None:
        """Batch ``batch_id`` failed or was lost: it will not be answered (here)."""
        self._sent.pop(batch_id, None)

    def done(
        self,
        worker: str,
        batch_id: int,
        job_id: str,
        model: str,
        timings: Sequence[float],
        now: float,
    ) -> BusySpan:
        """Batch ``batch_id``'s answer came at ``now``; its span is recorded and returned."""
        sent = self._sent.pop(batch_id, None)
        start = now - max(0.0, float(sum(timings)))
        if sent is not None:
            start = max(start, min(sent, now))
        span = BusySpan(worker, job_id, model, start, now, len(timings))
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
