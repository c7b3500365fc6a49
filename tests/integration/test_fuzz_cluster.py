"""Every message type, with adversarial field values, sent to a live cluster.

A small real cluster (``scripts.localcluster.LocalCluster``, tcp transfer) gets a few
thousand messages, each of a type from ``net.wire.registered()`` with hostile values:
huge and negative integers, NaN and infinities, enormous strings, control characters,
path tricks, empty and long tuples, deeply nested maps where a field takes any value,
and wrong types where only raw msgpack can carry them.  They go over TCP (sealed with
the cluster's secret, and with a wrong one) and over UDP to the membership port
(sealed, and unsealed).  Afterwards every node must still run, answer ``list_mem``
within a second and list every member: bad input is dropped, counted or refused, and
never ends a node.

The seed is printed (and taken from ``FUZZ_SEED`` when set) so that a failure can be
replayed; ``FUZZ_CASES`` changes the number of cases per type.

What the fuzzer leaves out on purpose, because the cluster's own secret authorises it:
console commands that exist (``leave`` would take a node out), and membership news
about the real members (a FAILED verdict about H2, sealed with the secret, is the
protocol doing its job) but for suspicions of the receiving node itself, which it
refutes.  Everything else is fair game.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import random
import socket
import time
import tomllib
import types
import typing
from typing import Any

import msgpack
import pytest
import trio
import trio.lowlevel

from inference.models import canonical_or_none
from net import wire
from net.codec import DATAGRAM_OVERHEAD as OVERHEAD
from net.codec import Codec, DatagramCodec
from net.messages import ConsoleReply, ConsoleRequest, Ping, PingReq, Update, UpdateKind
from net.rpc import HEADER, MAX_FRAME, frame_codec, greet
from node.commands import COMMANDS
from scripts.localcluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODES = 3
CASES_PER_TYPE = int(os.environ.get("FUZZ_CASES", "80"))
TIME_BUDGET = 100.0  # seconds of sending at most, whatever the count
CONCURRENCY = 12  # TCP conversations in flight at once
REPLY_WAIT = 1.0  # how long one TCP case waits for the first answer frame
DATAGRAM_LIMIT = 1400

# Names a hostile string must never be: real commands and real members (see above).
REAL_NAMES = {f"H{i}" for i in range(1, NODES + 1)}
FORBIDDEN = set(COMMANDS) | {c.lower() for c in COMMANDS} | REAL_NAMES
# Model names a batch would load torch for: a case never names one.
MODELS = {"resnet50", "inception_v3", "resnet", "inceptionv3", "noop"}

STRINGS = [
    "",
    " ",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "./.",
    "..",
    "a//b",
    "files/x/1.data",
    "incoming/../files",
    "images/*",
    "*",
    "[!",
    "**/**/**/**/**/**/**/**/**/**",
    "\x00",
    "a\x00b",
    "\x1b[2J\x1b[31mred",
    "line1\nline2",
    "\r\n",
    "\u202eevil",
    "ünïcödé",
    "😀" * 50,
    "%2e%2e%2f",
    "\\..\\windows",
    "x" * 255,
    "y" * 4096,
    "nan",
    "-1",
    "18446744073709551616",
    "127.0.0.1",
    "localhost",
    "::1",
]
INTS = [
    0,
    1,
    -1,
    2,
    255,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32,
    2**53,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
]
# Beyond msgpack: the encoder refuses them (net.rpc.call: RpcError), nothing is sent.
UNSENDABLE_INTS = [2**64, -(2**63) - 1, 10**30]
FLOATS = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324]


class Hostile:
    """Hostile values for each field type of the wire format (net.wire's annotations)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # The node a message goes to: news about a member may name it only in a
        # suspicion (which it refutes), never another real member (see the docstring).
        self.target = ""

    def text(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            s = self.rng.choice(STRINGS)
        elif r < 0.8:
            s = "".join(chr(self.rng.randrange(0, 0x2FF)) for _ in range(self.rng.randrange(40)))
        elif r < 0.95:
            s = self.rng.choice(STRINGS) * self.rng.randrange(2, 200)
        else:
            s = "z" * self.rng.choice([65_536, 300_000])  # enormous (under the frame limit)
        named_model = s.lower() in MODELS or canonical_or_none(s) is not None
        return "not-a-name" if s in FORBIDDEN or named_model else s

    def integer(self) -> int:
        if self.rng.random() < 0.01:
            return self.rng.choice(UNSENDABLE_INTS)
        if self.rng.random() < 0.7:
            return self.rng.choice(INTS)
        return self.rng.randrange(-(2**63), 2**64)

    def number(self) -> float:
        return self.rng.choice(FLOATS) if self.rng.random() < 0.8 else self.rng.uniform(-1e9, 1e9)

    def nested(self, depth: int) -> Any:
        value: Any = self.rng.choice([1, "x", None, [], 2**64 - 1])
        for i in range(depth):
            value = {f"k{i}": value} if i % 2 else [value]
        return {"deep": value}

    def anything(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if depth > 2 or r < 0.35:
            return self.rng.choice(
                [self.integer(), self.number(), self.text(), None, True, b"\x00\xff"]
            )
        if r < 0.5:
            return self.nested(self.rng.choice([10, 100, 400, 600]))  # 600: past msgpack's 511
        if r < 0.75:
            return [self.anything(depth + 1) for _ in range(self.rng.randrange(5))]
        return {self.text()[:50]: self.anything(depth + 1) for _ in range(self.rng.randrange(5))}

    def value(self, hint: Any, depth: int = 0) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if hint is Any:
            return self.anything()
        if origin in (typing.Union, types.UnionType):
            if type(None) in args and self.rng.random() < 0.3:
                return None
            return self.value(next(a for a in args if a is not type(None)), depth)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                n = self.rng.choice([0, 0, 1, 2, 3, 50]) if depth < 2 else 1
                return tuple(self.value(args[0], depth + 1) for _ in range(n))
            return tuple(self.value(a, depth + 1) for a in args)
        if origin is dict:
            if self.rng.random() < 0.3:
                return {}
            return self.anything() if self.rng.random() < 0.2 else self.nested(200)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            return self.record(hint, depth + 1)
        if hint is int:
            return self.integer()
        if hint is float:
            return self.number()
        if hint is str:
            return self.text()
        if hint is bytes:
            return self.rng.choice([b"", b"\x00" * 100, self.rng.randbytes(300)])
        if hint is bool:
            return self.rng.random() < 0.5
        raise AssertionError(f"no generator for {hint!r}")

    def record(self, cls: type[Any], depth: int = 0) -> Any:
        hints = typing.get_type_hints(cls)
        kwargs = {f.name: self.value(hints[f.name], depth) for f in dataclasses.fields(cls)}
        if cls is Update:
            if self.rng.random() < 0.5:
                kwargs["kind"] = int(self.rng.choice(list(UpdateKind)))
            if kwargs["kind"] == UpdateKind.SUSPECT and self.rng.random() < 0.3:
                kwargs["name"] = self.target  # e.g. at 2**64 - 1: it must not refute at 2**64
        return cls(**kwargs)

    def wrong_types(self, msg: Any) -> bytes:
        """``msg`` as raw msgpack with one field of a type its annotation refuses."""
        body = [type(msg).TAG, type(msg).VERSION, *wire.to_plain(msg)]
        if len(body) > 2:
            i = self.rng.randrange(2, len(body))
            body[i] = self.rng.choice(["str", -1, 1.5, None, True, [1, [2]], {"a": 1}, b"x"])
        else:
            body.append("an extra field")
        if self.rng.random() < 0.2:
            body[1] = self.rng.choice([99, -1, "1"])  # a version from the future, or junk
        return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


@dataclasses.dataclass
class Tally:
    sent: collections.Counter[tuple[str, str]] = dataclasses.field(
        default_factory=collections.Counter
    )
    unsendable: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    outcomes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


async def tcp_case(addr: tuple[str, int], codec: Codec, body: bytes, tally: Tally) -> None:
    try:
        stream = await trio.open_tcp_stream(*addr)
    except OSError as e:
        tally.outcomes[f"connect failed: {e.errno}"] += 1
        return
    async with stream:
        try:
            with trio.move_on_after(REPLY_WAIT) as greeting:
                session = await greet(stream, codec)  # the handshake, then one frame
            if greeting.cancelled_caught:
                tally.outcomes["no greeting"] += 1
                return
            frame = session.seal_bytes(body)
            await stream.send_all(HEADER.pack(len(frame)) + frame)
            with trio.move_on_after(REPLY_WAIT) as scope:
                got = await stream.receive_some(65536)
                tally.outcomes["answered" if got else "closed"] += 1
            if scope.cancelled_caught:
                tally.outcomes["no answer yet (stream or slow)"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
            tally.outcomes["reset"] += 1


async def fuzz(cluster: LocalCluster, secret: bytes, seed: int) -> Tally:
    rng = random.Random(seed)
    hostile = Hostile(rng)
    right = frame_codec(secret)
    wrong = frame_codec(b"not-the-cluster-secret")
    datagrams = DatagramCodec(secret, DATAGRAM_LIMIT)
    forger = DatagramCodec(b"not-the-cluster-secret", 65507)
    tally = Tally()
    udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await udp.bind(("127.0.0.1", 0))
    slots = trio.Semaphore(CONCURRENCY)
    deadline = trio.current_time() + TIME_BUDGET
    messages = sorted(wire.registered().items())

    async def conversation(addr: tuple[str, int], codec: Codec, body: bytes) -> None:
        try:
            await tcp_case(addr, codec, body, tally)
        finally:
            slots.release()

    async def tcp(addr: tuple[str, int], codec: Codec, body: bytes) -> None:
        await slots.acquire()  # at most CONCURRENCY in flight, and frames held
        nursery.start_soon(conversation, addr, codec, body)

    with udp:
        # The known killers first, to every node: a suspicion of itself at the top of
        # msgpack's range (it used to refute at 2**64 and die), and a PingReq to a port
        # that does not exist.
        for node in cluster.nodes:
            addr = (node.host, node.port)
            top = Update(int(UpdateKind.SUSPECT), node.name, 2**64 - 1, by="fuzz")
            for msg in (Ping(1, "fuzz", 0, (top,)), PingReq(2, "fuzz", "x", node.host, 99999)):
                tally.sent[(type(msg).__name__, "udp sealed")] += 1
                await udp.sendto(datagrams.seal(msg, node.port), addr)
        async with trio.open_nursery() as nursery:
            for _ in range(CASES_PER_TYPE):
                for _, cls in messages:
                    if trio.current_time() > deadline:
                        break
                    node = rng.choice(cluster.nodes)
                    hostile.target = node.name
                    addr = (node.host, node.port)
                    name = cls.__name__
                    try:
                        msg = hostile.record(cls)
                    except (TypeError, ValueError) as e:
                        tally.unsendable[f"{name}: {type(e).__name__}"] += 1
                        continue
                    if cls is ConsoleRequest and msg.command.lower() in FORBIDDEN:
                        continue
                    try:
                        body = wire.encode(msg)
                    except (TypeError, ValueError, OverflowError) as e:
                        # msgpack cannot carry it (an int past 64 bits, nesting past 511
                        # levels): net.rpc.call refuses it as RpcError, nothing is sent.
                        tally.unsendable[f"{name}: {type(e).__name__}"] += 1
                        body = b""
                    how = rng.random()
                    if body and len(body) + 16 <= MAX_FRAME:
                        if how < 0.55:
                            tally.sent[(name, "tcp sealed")] += 1
                            await tcp(addr, right, body)
                        elif how < 0.7:
                            tally.sent[(name, "tcp wrong secret")] += 1
                            await tcp(addr, wrong, body)
                        elif how < 0.85 and len(body) + OVERHEAD <= DATAGRAM_LIMIT:
                            tally.sent[(name, "udp sealed")] += 1
                            await udp.sendto(datagrams.seal_body(body, node.port), addr)
                        elif how < 0.92:
                            tally.sent[(name, "udp unsealed")] += 1
                            await udp.sendto(body[:DATAGRAM_LIMIT], addr)
                        else:
                            tally.sent[(name, "udp wrong secret")] += 1
                            forged = forger.seal_body(body, node.port)
                            await udp.sendto(forged[:65507], addr)
                    # Wrong types, which only raw msgpack can carry, both ways.
                    if body and rng.random() < 0.3:
                        raw = hostile.wrong_types(msg)
                        if len(raw) + OVERHEAD <= DATAGRAM_LIMIT and rng.random() < 0.5:
                            tally.sent[(name, "udp sealed, wrong types")] += 1
                            await udp.sendto(datagrams.seal_body(raw, node.port), addr)
                        elif len(raw) + 16 <= MAX_FRAME:
                            tally.sent[(name, "tcp sealed, wrong types")] += 1
                            await tcp(addr, right, raw)
                    await trio.lowlevel.checkpoint()  # let the conversations run
    return tally


async def list_mem_within(addr: tuple[str, int], codec: Codec, limit: float) -> dict[str, Any]:
    """``list_mem`` asked over the node's console protocol; fails past ``limit`` seconds."""
    with trio.fail_after(limit):
        stream = await trio.open_tcp_stream(*addr)
        async with stream:
            session = await greet(stream, codec)
            frame = session.seal(ConsoleRequest("list_mem"))
            await stream.send_all(HEADER.pack(len(frame)) + frame)
            while True:
                header = b""
                while len(header) < HEADER.size:
                    header += await stream.receive_some(HEADER.size - len(header))
                (length,) = HEADER.unpack(header)
                body = b""
                while len(body) < length:
                    body += await stream.receive_some(length - len(body))
                reply = session.open(body)
                if isinstance(reply, ConsoleReply):
                    assert reply.ok, reply.error
                    return reply.data


def table(rows: dict[Any, int]) -> str:
    return "\n".join(f"  {k}: {v}" for k, v in sorted(rows.items(), key=str))


def test_hostile_messages_of_every_type_never_end_a_node() -> None:
    seed = int(os.environ.get("FUZZ_SEED", str(random.randrange(2**32))))
    print(f"\nfuzz seed {seed} (replay with FUZZ_SEED={seed})")
    with LocalCluster(NODES, cluster={"transfer": "tcp"}) as cluster:
        cluster.wait_converged(timeout=30)
        secret = tomllib.loads(cluster.config_path.read_text())["cluster"]["secret"].encode()
        before = {
            n.name: cluster.console(n.name, "list_self")["incarnation"] for n in cluster.nodes
        }
        started = time.monotonic()
        tally = trio.run(fuzz, cluster, secret, seed)
        took = time.monotonic() - started
        time.sleep(2.0)  # let the last conversations end on the nodes' side

        by_transport: collections.Counter[str] = collections.Counter()
        for (_, how), n in tally.sent.items():
            by_transport[how] += n
        by_type: collections.Counter[str] = collections.Counter()
        for (name, _), n in tally.sent.items():
            by_type[name] += n
        print(f"{sum(tally.sent.values())} cases in {took:.1f} s, by transport:")
        print(table(by_transport))
        print("by type:")
        print(table(by_type))
        print("not sendable (refused by the encoder, nothing sent):")
        print(table(tally.unsendable))
        print("TCP outcomes:")
        print(table(tally.outcomes))

        codec = frame_codec(secret)
        down = [n.name for n in cluster.nodes if not cluster.procs[n.name].alive()]
        assert down == [], f"nodes ended by the fuzzer (seed {seed}): {down}\n" + "\n".join(
            f"{name}'s log ends:\n{cluster.procs[name].log_tail(40)}" for name in down
        )
        removed: dict[str, set[str]] = {}
        for node in cluster.nodes:
            view = trio.run(list_mem_within, (node.host, node.port), codec, 1.0)
            names = {m["name"] for m in view["members"]}
            removed[node.name] = REAL_NAMES - names
        print("members removed:", sum(len(v) for v in removed.values()))
        assert all(not v for v in removed.values()), f"seed {seed}: removed {removed}"
        for node in cluster.nodes:
            info = cluster.console(node.name, "list_self")
            print(
                f"{node.name}: incarnation {before[node.name]} -> {info['incarnation']}, "
                f"rejected {info['rejected']}, errors {info['errors']}"
            )
        print("handler errors (answered 'internal error') by cause:")
        print(table(handler_errors(cluster)))
        assert sum(tally.sent.values()) >= min(1000, CASES_PER_TYPE * len(wire.registered()))


def handler_errors(cluster: LocalCluster) -> collections.Counter[str]:
    """The exceptions handlers raised (logged by net.rpc), by request type and error."""
    found: collections.Counter[str] = collections.Counter()
    for node in cluster.nodes:
        lines = cluster.log_path(node.name).read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if "handler failed on" not in line:
                continue
            request = line.split("handler failed on", 1)[1].split()[0]
            cause = next(
                (x for x in lines[i + 1 : i + 80] if x and not x.startswith((" ", "Traceback"))),
                "?",
            )
            found[f"{request}: {cause[:120]}"] += 1
    return found
