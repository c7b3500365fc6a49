"""Every message the cluster sends, with its protocol tag.

THE TAG NUMBERS ARE PART OF THE PROTOCOL.  Append new messages with new numbers;
never renumber or reuse one.  Change a message's fields only by giving it a higher
``version`` in :func:`net.wire.message` and keeping old readers in mind.

Tags 1-19: membership datagrams (UDP).  20-29: admission (TCP, introducer).
30-39: console (TCP).  40-49: generic replies and streams.  50-79: SDFS (TCP).
80-99: inference requests (TCP; 86 is retired).  100-139: scheduler events for the
inference standby (registered by ``inference/events.py``, beside the scheduler), and
the standby's own messages (109-119).  140-159: SDFS, continued (50-79 is full):
140-149 the chain's relays, 150-159 the SDFS leader's majority lease and grant journal
(``sdfs.lease``).  160-169: the dashboard (the leader's snapshot for ``web``).
170-179: inference requests, continued (80-99 is full): a job's results so far, for
the Python client (``idunno``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from net.wire import message


class Status(enum.IntEnum):
    """A member's state as one node sees it.  Order matters nowhere; values do."""

    ALIVE = 0
    SUSPECT = 1
    FAILED = 2
    LEFT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class UpdateKind(enum.IntEnum):
    ALIVE = 0  # the member is up at this incarnation (join, or refutation)
    SUSPECT = 1  # `by` got no ack from it within the ping timeout
    FAILED = 2  # nobody heard a refutation within the cleanup time
    LEFT = 3  # the member left on purpose


@dataclass(frozen=True)
class Update:
    """One piece of membership news, gossiped on pings, acks and gossip pushes.

    ``host`` and ``port`` are only meaningful for ALIVE (so an unknown member can be
    added); other kinds send "" and 0 to stay small.
    """

    kind: int
    name: str
    incarnation: int
    host: str = ""
    port: int = 0
    by: str = ""


@dataclass(frozen=True)
class MemberRecord:
    """A member's entry in a membership snapshot."""

    name: str
    host: str
    port: int
    incarnation: int
    status: int


# --- membership datagrams ---------------------------------------------------------


@message(tag=1)
@dataclass(frozen=True)
class Ping:
    """Are you there?  ``incarnation`` is the sender's own, so a receiver that had
    declared the sender failed can tell it so."""

    seq: int
    sender: str
    incarnation: int
    updates: tuple[Update, ...] = ()


@message(tag=2)
@dataclass(frozen=True)
class Ack:
    """Answer to a Ping.  ``sender`` is the member that answered, also when a relay
    forwards the ack of an indirect probe."""

    seq: int
    sender: str
    incarnation: int
    updates: tuple[Update, ...] = ()


@message(tag=3)
@dataclass(frozen=True)
class PingReq:
    """Please ping ``target`` for me and forward its ack with my ``seq``."""

    seq: int
    sender: str
    target: str
    host: str
    port: int


@message(tag=4)
@dataclass(frozen=True)
class Gossip:
    """A push of queued updates to a random member, between pings."""

    sender: str
    updates: tuple[Update, ...]


@message(tag=5)
@dataclass(frozen=True)
class Merge:
    """Push-pull with a member we removed as failed: maybe a partition has healed.

    ``members`` are the sender's live members as ALIVE updates (itself first); a
    receiver merges them and, if ``reply``, answers with its own Merge (reply False).
    """

    sender: str
    reply: bool
    members: tuple[Update, ...]


# --- admission (TCP) ----------------------------------------------------------------


@message(tag=20)
@dataclass(frozen=True)
class JoinRequest:
    """A node asks the introducer to be admitted."""

    name: str
    host: str
    port: int
    incarnation: int


@message(tag=21)
@dataclass(frozen=True)
class MembershipSnapshot:
    """The membership as one member (or the introducer) knows it, tombstones included."""

    members: tuple[MemberRecord, ...]


@message(tag=22)
@dataclass(frozen=True)
class SnapshotRequest:
    """The introducer asks a member for its view."""


# --- console (TCP) --------------------------------------------------------------------


@message(tag=30)
@dataclass(frozen=True)
class ConsoleRequest:
    command: str
    args: tuple[str, ...] = ()


@message(tag=31)
@dataclass(frozen=True)
class ConsoleReply:
    ok: bool
    data: dict[str, Any]
    error: str = ""


# --- generic ---------------------------------------------------------------------------


@message(tag=40)
@dataclass(frozen=True)
class ErrorReply:
    """A request that could not be served; ``error`` is one line for a person."""

    error: str


@message(tag=42)
@dataclass(frozen=True)
class Failure:
    """A request that failed, typed: ``kind`` is a :class:`net.errors.ErrorKind`.

    Replaces ErrorReply for services with typed errors (net.errors), so the caller
    can tell "retry soon" from "no such file" without reading the text."""

    kind: int
    error: str


@message(tag=41)
@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed file.  An empty chunk ends the stream."""

    data: bytes


# --- SDFS: moving file contents between nodes (transfer = "tcp") ----------------------
#
# Tags 50-52 (Upload, Download, TransferDone: files as sealed 1 MiB Chunk frames) are
# retired: a MAC and a msgpack copy per MiB on both sides made a put to 4 replicas cost
# 4x what one scp does.  Never reuse them.  The bulk of a file now travels unframed
# between a sealed header and a sealed StreamEnd that carries its Poly1305 tag under the
# stream's one-time key, its SHA-256 and CRC-32 (sdfs/transfer/rawstream.py explains
# the integrity argument).


@message(tag=73, version=2)
@dataclass(frozen=True)
class PutStream:
    """Start of an upload into the receiver's incoming directory as ``name``.

    Exactly ``size`` raw bytes follow, then the sender's :class:`StreamEnd`.  The
    receiver answers with the StreamEnd of what it stored, or with an ErrorReply,
    possibly before the bytes have all been sent (it then stops reading).  The bytes'
    tag is keyed by ``nonce`` (net.codec.Codec.upload_key): one upload to several
    replicas sends them one nonce, so the sender computes one tag for all.
    """

    name: str
    size: int
    nonce: bytes


@dataclass(frozen=True)
class Hop:
    """One replica further down a replication chain: where its node listens and the
    name the bytes take in its incoming directory (sdfs.transfer.chain)."""

    node: str
    host: str
    port: int
    name: str


@message(tag=79)
@dataclass(frozen=True)
class ChainStream:
    """A :class:`PutStream` that the receiver also forwards, while it arrives, to
    ``downstream[0]`` (itself a ChainStream with ``downstream[1:]``), keeping the
    nonce, so every hop checks the same tag.  Answered with a :class:`ChainEnd` (or an
    ErrorReply, as a PutStream); sdfs.transfer.chain has the theory."""

    name: str
    size: int
    nonce: bytes
    downstream: tuple[Hop, ...]


@dataclass(frozen=True)
class HopResult:
    """What one replica of a chain holds: ``size`` bytes with ``sha256`` (verified
    under the stream's tag, or by the sender's count over scp), or why not."""

    node: str
    ok: bool
    size: int = 0
    sha256: str = ""
    error: str = ""


@message(tag=43)
@dataclass(frozen=True)
class ChainEnd:
    """The answer to a ChainStream or a RelayFile: one result per hop, in chain order
    (the receiver's own first)."""

    results: tuple[HopResult, ...]


@message(tag=74)
@dataclass(frozen=True)
class GetStream:
    """Send me the stored file at ``path`` (inside your store).

    Answered with :class:`StreamStart`, that many raw bytes and a :class:`StreamEnd`;
    or with an ErrorReply instead of the StreamStart.
    """

    path: str


@message(tag=75)
@dataclass(frozen=True)
class StreamStart:
    """``size`` raw bytes follow on this connection, then a StreamEnd."""

    size: int


@message(tag=76, version=2)
@dataclass(frozen=True)
class StreamEnd:
    """After a raw stream: how many bytes it had, their CRC-32 (zlib's), their SHA-256
    (hex; "" where the sender did not compute it) and ``tag``, their Poly1305 under the
    stream's one-time key (an upload's: net.codec.Codec.upload_key; a download's:
    net.codec.Session.stream_key).  A receiver keeps the bytes
    only if the tag matches them; as an answer to a stream, the receiver's StreamEnd
    repeats what it verified, with an empty tag."""

    size: int
    crc32: int
    sha256: str
    tag: bytes


# --- SDFS: placement, versions and replicas --------------------------------------------


class VersionState(enum.IntEnum):
    PENDING = 0  # written, not yet part of an acknowledged put: never read
    COMMITTED = 1  # part of an acknowledged put: readable
    DELETED = 2  # a tombstone: this version and all before it are gone


@dataclass(frozen=True)
class VersionRecord:
    """One version of one file as a node stores it (or as the leader knows it)."""

    name: str
    version: int
    put_id: str
    size: int
    sha256: str
    state: int


@dataclass(frozen=True)
class LocatedVersion:
    """A committed version and the live nodes that hold it."""

    record: VersionRecord
    holders: tuple[str, ...]


@message(tag=53)
@dataclass(frozen=True)
class PutBegin:
    """Client to leader: I want to write a new version of ``name``.

    ``sha256`` is "" from clients that hash while they send (the digest is only known
    at the end of the stream, and the leader learns it with PutDone).
    """

    name: str
    size: int
    sha256: str
    client: str


@message(tag=54)
@dataclass(frozen=True)
class PutGrant:
    """Leader to client: write it as ``version`` (unique ``put_id``) to ``replicas``."""

    name: str
    version: int
    put_id: str
    replicas: tuple[str, ...]


@message(tag=55)
@dataclass(frozen=True)
class Ingest:
    """Take the file ``incoming`` (in your incoming directory) as ``record``.

    The receiver checks size and checksum, then moves it into its store, atomically,
    in ``record.state`` (PENDING for a put in progress, COMMITTED for re-replication).
    """

    record: VersionRecord
    incoming: str


@message(tag=56)
@dataclass(frozen=True)
class CommitVersion:
    """The put of ``version`` reached its write quorum: make it readable."""

    name: str
    version: int
    put_id: str


@message(tag=57)
@dataclass(frozen=True)
class AbortPut:
    """The put of ``version`` failed: drop the pending copy (and the leader's grant)."""

    name: str
    version: int
    put_id: str


@message(tag=58)
@dataclass(frozen=True)
class PutDone:
    """Client to leader: ``record`` is committed on ``holders``."""

    record: VersionRecord
    holders: tuple[str, ...]


@message(tag=59)
@dataclass(frozen=True)
class Locate:
    """Where are the committed versions of ``name``?"""

    name: str


@message(tag=60)
@dataclass(frozen=True)
class Location:
    """Committed versions, newest first; ``deleted`` if the newest event is a delete."""

    name: str
    versions: tuple[LocatedVersion, ...]
    deleted: bool


@message(tag=61)
@dataclass(frozen=True)
class StatRequest:
    """Which versions of ``name`` do you hold?"""

    name: str


@message(tag=62)
@dataclass(frozen=True)
class StatReply:
    node: str
    records: tuple[VersionRecord, ...]


@message(tag=63, version=2)
@dataclass(frozen=True)
class InventoryRequest:
    """Leader to node: what you store (the leader rebuilds its metadata from it), one
    page at a time: the records of the names after ``after`` in sorted order, every
    version of a name in the same page, about ``limit`` records (0: the node's own
    page size; a page never nears the frame limit)."""

    after: str = ""
    limit: int = 0


@message(tag=64, version=2)
@dataclass(frozen=True)
class Inventory:
    """A page of ``node``'s holdings.  ``next_after``: the cursor for the next page
    (the last name in this one), "" when this was the last.  Sent unasked (a node
    whose store was lost), the first page replaces what the leader thought it held and
    the leader asks for the rest.  ``outdated``: the node was away from the cluster
    longer than the tombstone grace period (sdfs.tombstones), so a name only it knows
    of may be one whose delete it missed."""

    node: str
    records: tuple[VersionRecord, ...]
    next_after: str = ""
    outdated: bool = False


@message(tag=65)
@dataclass(frozen=True)
class DeleteFile:
    """Client to leader: delete every version of ``name``."""

    name: str


@message(tag=66)
@dataclass(frozen=True)
class DeleteReplica:
    """Leader to holder: ``name`` is deleted as of ``version`` (a tombstone)."""

    name: str
    version: int


@message(tag=67)
@dataclass(frozen=True)
class ReplicateOrder:
    """Leader to a holder: copy these committed versions to ``targets``."""

    records: tuple[VersionRecord, ...]
    targets: tuple[str, ...]


@message(tag=68, version=2)
@dataclass(frozen=True)
class ListFiles:
    """Names of the files that exist (not deleted), matching a glob, in sorted order,
    one page at a time: at most ``limit`` names after ``after`` (0: the leader's page
    size)."""

    pattern: str
    after: str = ""
    limit: int = 0


@message(tag=69, version=2)
@dataclass(frozen=True)
class FileList:
    """A page of names; ``next_after`` is the cursor for the next page ("" at the end).
    A page may be empty and still have a next one (a sparse glob scans in steps)."""

    names: tuple[str, ...]
    next_after: str = ""


@message(tag=140)
@dataclass(frozen=True)
class RelayFile:
    """Writer (or the hop before) to a replica, for a chain over scp: the file
    ``temp`` is arriving in your incoming directory by scp and will be ``size`` bytes;
    copy it, as it grows, down the chain ``downstream`` (the first gets it by your own
    scp, and this request with the rest).  Answered with a :class:`ChainEnd` for the
    downstream hops only.  (Tag 140: SDFS's own range, 50-79, is full.)"""

    temp: str
    size: int
    downstream: tuple[Hop, ...]


@message(tag=70)
@dataclass(frozen=True)
class PeerInfoRequest:
    """Where do you keep files?  (for scp, which writes to paths on the peer)"""


@message(tag=71)
@dataclass(frozen=True)
class PeerInfo:
    node: str
    incoming_dir: str
    store_dir: str


@message(tag=72)
@dataclass(frozen=True)
class StoreAck:
    """The answer to SDFS requests that return no data; ``error`` is one line."""

    ok: bool
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


# --- SDFS: many small files at once (put-dir) --------------------------------------------
#
# A put-dir grants, stores, commits and reports files in batches (sdfs/putdir.py): one
# request per replica per batch instead of one per file, each replica fsyncing its
# directories once per batch.  The semantics per file are those of the single put.


@dataclass(frozen=True)
class PutWant:
    """One file a batch grant asks for."""

    name: str
    size: int


@message(tag=120)
@dataclass(frozen=True)
class PutBeginBatch:
    """Client to leader: grant a new version of each of ``files`` (PutBegin for many)."""

    files: tuple[PutWant, ...]
    client: str


@dataclass(frozen=True)
class Grant:
    """One file's grant in a PutGrantBatch (the fields of PutGrant)."""

    name: str
    version: int
    put_id: str
    replicas: tuple[str, ...]


@message(tag=121)
@dataclass(frozen=True)
class PutGrantBatch:
    """Leader to client: one grant per file asked for, in the same order."""

    grants: tuple[Grant, ...]


@dataclass(frozen=True)
class BatchItem:
    """One file of a StoreBatch: store it as ``record`` (PENDING).

    Its bytes are ``data`` when ``incoming`` is "" (a small file, sent inline in the
    authenticated frame), else the file ``incoming`` in the receiver's incoming
    directory (a large one, streamed there first)."""

    record: VersionRecord
    incoming: str
    data: bytes


@message(tag=122)
@dataclass(frozen=True)
class StoreBatch:
    """Writer to replica: take every item (Ingest for many; one group commit to disk)."""

    items: tuple[BatchItem, ...]


@dataclass(frozen=True)
class PutKey:
    """One put of a CommitBatch."""

    name: str
    version: int
    put_id: str


@message(tag=123)
@dataclass(frozen=True)
class CommitBatch:
    """Writer to replica: these puts reached their write quorum (CommitVersion for many)."""

    puts: tuple[PutKey, ...]


@message(tag=124)
@dataclass(frozen=True)
class BatchAck:
    """A replica's answer to a StoreBatch or CommitBatch: per item, in order, the
    :class:`net.errors.ErrorKind` of its failure (-1 for done) and a line saying why."""

    kinds: tuple[int, ...]
    errors: tuple[str, ...]


@dataclass(frozen=True)
class Done:
    """One put of a PutDoneBatch (the fields of PutDone)."""

    record: VersionRecord
    holders: tuple[str, ...]


@message(tag=125)
@dataclass(frozen=True)
class PutDoneBatch:
    """Client to leader: each record is committed on its holders (PutDone for many)."""

    puts: tuple[Done, ...]


@message(tag=32)
@dataclass(frozen=True)
class ConsoleProgress:
    """Sent before a ConsoleReply while a long command runs (bytes or items done)."""

    done: int
    total: int
    label: str


@message(tag=77)
@dataclass(frozen=True)
class ConsoleItems:
    """Sent before a ConsoleReply whose ``data[key]`` list is too big for one frame:
    these items come first, in order, and the console puts them ahead of what the
    reply's own ``data[key]`` holds (node/app.py, console/__main__.py)."""

    key: str
    items: tuple[Any, ...]


@message(tag=78)
@dataclass(frozen=True)
class DropReplica:
    """Leader to a node that was away longer than the tombstone grace period: forget
    your copy of ``name`` ``version`` (of put ``put_id``), without a tombstone
    (sdfs.tombstones: nobody else vouches for it, so it may predate a delete)."""

    name: str
    version: int
    put_id: str


# --- SDFS: the leader's majority lease and grant journal (sdfs.lease) -------------------


@dataclass(frozen=True)
class Floor:
    """The highest version of ``name`` a leader granted (a put's or a delete's)."""

    name: str
    version: int


@message(tag=150)
@dataclass(frozen=True)
class LeaseRenew:
    """Leader to every configured member: promise that ``leader`` leads in ``term`` for
    the next lease period, and record the version ``floors`` granted since the last
    round."""

    term: int
    leader: str
    floors: tuple[Floor, ...] = ()


@message(tag=151)
@dataclass(frozen=True)
class LeaseReply:
    """A member's answer: ``ok`` (promised, floors recorded), or refused because it
    promised ``leader`` in ``term`` (the candidate must outbid ``term``)."""

    ok: bool
    term: int
    leader: str = ""


@message(tag=152)
@dataclass(frozen=True)
class FloorsRequest:
    """New lease holder to a member that promised it: the floors you recorded, one
    page after ``after`` in name order."""

    term: int
    after: str = ""


@message(tag=153)
@dataclass(frozen=True)
class FloorsPage:
    """A page of floors; ``next_after`` is the cursor for the next, "" after the last."""

    floors: tuple[Floor, ...]
    next_after: str = ""


# --- IDunno: inference jobs (TCP) --------------------------------------------------------


@message(tag=80)
@dataclass(frozen=True)
class AssignBatch:
    """Leader to worker: run these queries (index, SDFS input) of ``job_id`` as one batch."""

    batch_id: int
    job_id: str
    model: str
    queries: tuple[tuple[int, str], ...]


@message(tag=81)
@dataclass(frozen=True)
class BatchResult:
    """Worker to leader: one row and one processing time (s) per query, or an error."""

    worker: str
    batch_id: int
    results: tuple[tuple[int, dict[str, Any]], ...]
    timings: tuple[float, ...]
    error: str = ""


@message(tag=82, version=3)
@dataclass(frozen=True)
class StandbyEvent:
    """Leader to hot standby: scheduler events ``seq``, ``seq + 1``, ...

    Each is a ``net.wire.encode``d event of :mod:`inference.events` (tags 100-139);
    the standby decodes and type-checks them.  ``term`` is the lease term under which
    the leader produced them (a copy refuses an older term).  (Version 1 carried
    hand-made dicts; version 2 had no term.)
    """

    leader: str
    seq: int
    events: tuple[bytes, ...]
    term: int = 0


@message(tag=83, version=2)
@dataclass(frozen=True)
class StandbySnapshot:
    """Leader to hot standby: the whole scheduler state as of event ``seq``, produced
    under lease ``term`` (version 1 had no term)."""

    leader: str
    seq: int
    snapshot: dict[str, Any]
    term: int = 0


@message(tag=109, version=2)
@dataclass(frozen=True)
class StandbySnapshotPart:
    """Leader to hot standby (or a member to a new leader that fetches its copy, see
    :class:`CopyPartRequest`): part ``part`` (0-based) of ``parts`` of the scheduler
    state as of event ``seq`` under lease ``term``, msgpack-encoded and cut into pieces
    that each fit a frame whatever the state's size; the copy restores it when the
    last part is in.  ``leader`` is the node whose scheduler it is.  (Version 1 had no
    term.)
    """

    leader: str
    seq: int
    part: int
    parts: int
    data: bytes
    term: int = 0


@message(tag=110)
@dataclass(frozen=True)
class CopyStateRequest:
    """A node taking over scheduling (it holds lease ``term``) to a member: which
    scheduler state do you hold (a standby copy, or your own from when you led)?"""

    term: int


@message(tag=111)
@dataclass(frozen=True)
class CopyState:
    """A member's answer to :class:`CopyStateRequest`: it holds ``leader``'s scheduler
    as of event ``seq`` under lease ``term`` (``leader`` "" when it holds none)."""

    node: str
    leader: str
    term: int
    seq: int


@message(tag=112)
@dataclass(frozen=True)
class CopyPartRequest:
    """A node taking over to the member holding the freshest state: part ``part`` of
    the state it named (``term``, ``seq``); answered with a
    :class:`StandbySnapshotPart`, or a failure when the member holds another state by
    now."""

    term: int
    seq: int
    part: int


@message(tag=84)
@dataclass(frozen=True)
class CapacityRequest:
    """Leader to node: what can you run (threads, GPU, batch slots)?"""


@message(tag=85)
@dataclass(frozen=True)
class Capacity:
    node: str
    capacity: dict[str, Any]


# Tag 86 was LeaderCommand (console argv forwarded to the leader), retired for the typed
# requests below.  It stays reserved: never reuse it.


# Requests only the scheduler (on the leader) answers; inference.client sends them with
# membership.peers.call_leader.  A node that is not the scheduler answers
# Failure(NOT_READY), so the caller retries; other failures are net.errors kinds.


@message(tag=87)
@dataclass(frozen=True)
class RatesRequest:
    """C1: query rate over the last 10 s, and queries done, per model."""


@message(tag=88)
@dataclass(frozen=True)
class Rates:
    models: dict[str, Any]  # {MODEL: {"query_rate", "query_count"}}


@message(tag=89)
@dataclass(frozen=True)
class LatencyRequest:
    """C2: query processing time per model."""


@message(tag=90)
@dataclass(frozen=True)
class Latency:
    models: dict[str, Any]  # {MODEL: {"mean", "std", "median", "p90", "p95", "p99"}}


@message(tag=91)
@dataclass(frozen=True)
class SetBatchSizeRequest:
    """C3: batches of ``model`` dispatched from now on hold up to ``batch_size`` queries."""

    model: str
    batch_size: int


@message(tag=92)
@dataclass(frozen=True)
class BatchSizeSet:
    model: str  # canonical
    batch_size: int


@message(tag=93)
@dataclass(frozen=True)
class SubmitJob:
    """C4 submit-job: a job of ``model`` over the inputs ``pattern`` names (the model's
    default if None), or over a random sample of ``count`` of them."""

    model: str
    pattern: str | None = None
    count: int | None = None


@message(tag=94)
@dataclass(frozen=True)
class JobSubmitted:
    job_id: str
    model: str  # canonical
    queries: int


@message(tag=95)
@dataclass(frozen=True)
class JobStatusRequest:
    """C4 status."""

    job_id: str


@message(tag=96)
@dataclass(frozen=True)
class JobStatus:
    job_id: str
    model: str
    state: str  # queued, running, done or failed
    done: int
    total: int
    errors: int  # queries that ended in an error row
    in_flight: int  # queries in batches on workers now
    submitted_at: float  # wall-clock seconds
    started_at: float | None
    finished_at: float | None


@message(tag=97)
@dataclass(frozen=True)
class AssignmentsRequest:
    """C5: the workers each queued or running job is using."""


@message(tag=98)
@dataclass(frozen=True)
class Assignments:
    jobs: dict[str, Any]  # {JOB_ID: {"model", "workers": [NODE...]}}


# --- inference requests, continued (80-99 is full) ------------------------------------


@message(tag=170)
@dataclass(frozen=True)
class JobResultsRequest:
    """A job's result rows so far, in the order its queries completed, from the
    ``offset``-th on (at most ``limit`` of them): what a client iterates while the job
    runs (``idunno``'s ``job.results()``)."""

    job_id: str
    offset: int = 0
    limit: int = 1000


@message(tag=171)
@dataclass(frozen=True)
class JobResults:
    """Answer to :class:`JobResultsRequest`: ``rows`` are ``(query index, output
    line)``, each line as ``outputs/JOB_ID.jsonl`` will hold it; ``next_offset`` is
    where the next request starts; ``more`` says rows were left for the next page.
    ``forgotten``: the job finished and its rows are only in its output file now (no
    rows here).  The order is the leader's completion order: a new leader may order
    the rows it inherited differently, so a reader also dedups by index."""

    job_id: str
    state: str
    done: int
    total: int
    rows: tuple[tuple[int, dict[str, Any]], ...]
    next_offset: int
    more: bool = False
    forgotten: bool = False


# --- the dashboard (TCP) ------------------------------------------------------------------


@dataclass(frozen=True)
class BusySpan:
    """A worker was busy with a batch of ``queries`` queries of ``job_id`` from
    ``start`` to ``end`` (the leader's wall-clock seconds; see inference.busy)."""

    worker: str
    job_id: str
    model: str
    start: float
    end: float
    queries: int


@message(tag=160)
@dataclass(frozen=True)
class DashboardRequest:
    """Any node to the leader: what the dashboard shows.  ``files``: how many files
    the per-file SDFS table lists (the most recently changed; the leader caps it)."""

    files: int = 50


@message(tag=161)
@dataclass(frozen=True)
class Dashboard:
    """The leader's answer to :class:`DashboardRequest`, bounded to fit a frame
    whatever the cluster's size (node.dashboard says how): the recent jobs with
    their progress and workers, the workers, per model its query rates over the last
    minute and its latency percentiles, the busy spans of the last minute, and SDFS
    per node and per file (``{"error": ...}`` while the file metadata is rebuilt)."""

    leader: str
    now: float  # the leader's wall clock, seconds
    jobs: tuple[dict[str, Any], ...]
    workers: dict[str, Any]
    models: dict[str, Any]
    busy: tuple[BusySpan, ...]
    sdfs: dict[str, Any]
    limits: dict[str, Any]


# --- inference requests, continued: the timing log (tags 180-189) ----------------------------


@message(tag=180)
@dataclass(frozen=True)
class TimingsRequest:
    """A job's rows of the leader's timing log (``query_timings.csv``), read from byte
    ``offset`` of the file on: what ``plot`` draws.  Big jobs come in pages."""

    job_id: str
    offset: int = 0


@message(tag=181)
@dataclass(frozen=True)
class TimingRows:
    """Answer to :class:`TimingsRequest`: the log's ``columns``, the job's ``rows``
    (strings, as in the file) in this page, and the byte offset of the next page
    (None: the end of the file was reached)."""

    job_id: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    next_offset: int | None
