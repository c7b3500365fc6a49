"""The scp transport: scp over SSH (paramiko and the ``scp`` package), one cached
connection per peer.

Invariants, beyond those of sdfs.transfer.base:

1. Key authentication only (``ssh.key_file``: no agent, no password, no default keys),
   and only to hosts sdfs.transfer.hostkeys trusts.
2. One SSH connection per (host, port), opened on first use and shared by every
   transfer to that peer, at most ``max_sessions`` channels at a time.  A cached
   connection found dead is replaced, and the transfer redone once: copies are
   atomic, so a redo is safe.
3. A push lands under a temporary name and one remote shell command checks its size
   (and with ``verify_remote`` its SHA-256) before renaming it into place; a failed
   push removes its remote temporary (best effort: the store sweeps incoming/).
4. A pull is written to a local temporary by scp, then hashed and fsynced, checked,
   and renamed into place.

paramiko and scp are imported late: a node that uses tcp never loads them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import posixpath
import shlex
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import trio

from config.topology import SSHConfig
from net.errors import one_line
from net.messages import ChainEnd, ErrorReply, Hop, HopResult, RelayFile
from net.progress import Progress
from net.rpc import IDLE_TIMEOUT
from sdfs.durable import fsync_dir
from sdfs.transfer import chain
from sdfs.transfer.base import (
    CHUNK_SIZE,
    Peer,
    TransferError,
    TransferResult,
    check_expected,
    pull_label,
    push_each,
    push_label,
    reason,
    short_hash,
)
from sdfs.transfer.files import is_temp_name, name_problem, path_problem, temp_sibling
from sdfs.transfer.hostkeys import host_key_refusal, load_private_key, trust_known_hosts
from sdfs.transfer.progress import Reporter, ThreadReporter, in_thread

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

T = TypeVar("T")

# paramiko encrypts in Python, packet by packet; with aes*-ctr it also runs a separate
# HMAC over every packet, which AES-GCM folds into the cipher.  Measured on loopback
# against OpenSSH 9.2, 200 MB, median of 5 interleaved runs: pull 170 -> 220-245 MB/s,
# push 140 -> 155-175 MB/s.  paramiko has no chacha20-poly1305.  The order is only a
# preference: a server without GCM still gets paramiko's other ciphers.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)


Relay = Callable[[Peer, RelayFile, float], Awaitable[Any]]
"""Sends a RelayFile to the peer's node (an RPC, with a timeout) and returns its answer:
how a chain over scp tells each hop to pass the file on (sdfs.transfer.chain)."""


class _Broken(Exception):
    """The cached SSH connection died before this transfer moved a byte: retry once."""


@dataclass
class _SshLink:
    client: Any  # paramiko.SSHClient
    sessions: trio.Semaphore

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and bool(transport.is_active())


class ScpTransfer:
    """scp over one cached SSH connection per peer (paramiko + the ``scp`` package).

    Security: key authentication only (``ssh.key_file``; no agent, no password, no
    default keys), and the host key must be in ``ssh.known_hosts``.  An unknown host
    is refused unless ``accept_new_host_keys`` is set, in which case its key is
    appended to known_hosts; a host whose key changed is always refused.

    A push lands under a temporary name in the peer's incoming directory and one
    remote shell command checks its size (and, with ``verify_remote``, runs
    ``sha256sum`` on it) and renames it into place.  ``verify_remote`` is off by
    default because SDFS's ingest step re-hashes every arrival anyway; turn it on
    where no later step does.  The remote needs a POSIX shell, ``wc``, ``mv``, ``sync``
    and (for ``verify_remote``) ``sha256sum``.

    A pull refuses a ``remote_path`` outside ``peer.store_dir`` after normalising
    ``..`` (the remote user can read anything else anyway: this catches mistakes,
    it is no sandbox).  The file is hashed locally as it is fsynced.
    """

    def __init__(
        self,
        ssh: SSHConfig,
        *,
        connect_timeout: float = 10.0,
        # Longest silence on a channel mid-transfer before the transfer fails.
        io_timeout: float = IDLE_TIMEOUT,
        verify_remote: bool = False,
        # Flow-control window and largest packet per channel we open: OpenSSH's own
        # 2 MiB / 32 KiB.  16 MiB / 256 KiB (or 64 MiB) measured no faster on loopback,
        # and 2 MiB already covers a 1 Gb/s link up to ~16 ms of round trip.
        window_size: int = 2 * 1024 * 1024,
        max_packet_size: int = 32 * 1024,
        # Bytes per read()/sendall on the scp channel (the scp package's default is
        # 16 KiB): fewer Python-level calls; pull measured 140 -> 175 MB/s with aes-ctr.
        buffer_size: int = CHUNK_SIZE,
        ciphers: tuple[str, ...] = PREFERRED_CIPHERS,
        # OpenSSH's MaxSessions defaults to 10 channels per connection.
        max_sessions: int = 8,
    ) -> None:
        self.ssh = ssh
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.verify_remote = verify_remote
        self.window_size = window_size
        self.max_packet_size = max_packet_size
        self.buffer_size = buffer_size
        self.ciphers = ciphers
        self.max_sessions = max_sessions
        self.key_file = os.path.expanduser(ssh.key_file)
        self.known_hosts = os.path.expanduser(ssh.known_hosts)
        self._links: dict[tuple[str, int], _SshLink] = {}
        # Set by the node (sdfs.service): without it, push_chain fans out.
        self.relay: Relay | None = None
        self._locks: dict[tuple[str, int], trio.Lock] = {}
        self._pkey: Any = None

    # --- the connection ----------------------------------------------------------

    def _port(self, peer: Peer) -> int:
        return peer.ssh_port if peer.ssh_port is not None else self.ssh.port

    def _label(self, direction: str, peer: Peer) -> str:
        return f"scp {direction} {peer.name} ({peer.host}:{self._port(peer)})"

    def _load_key(self) -> Any:
        if self._pkey is None:
            self._pkey = load_private_key(self.key_file)
        return self._pkey

    def _make_transport(self, sock: Any, disabled_algorithms: Any = None) -> paramiko.Transport:
        import paramiko

        t = paramiko.Transport(
            sock,
            disabled_algorithms=disabled_algorithms,
            default_window_size=self.window_size,
            default_max_packet_size=self.max_packet_size,
        )
        options = t.get_security_options()
        offered = tuple(options.ciphers)
        first = tuple(c for c in self.ciphers if c in offered)
        options.ciphers = first + tuple(c for c in offered if c not in first)
        return t

    def _connect_blocking(self, peer: Peer) -> Any:
        import paramiko

        pkey = self._load_key()
        client = paramiko.SSHClient()
        trust_known_hosts(client, self.known_hosts, self.ssh.accept_new_host_keys)
        try:
            client.connect(
                peer.host,
                self._port(peer),
                username=self.ssh.user,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                compress=False,  # files are mostly images and weights: compressed already
                transport_factory=self._make_transport,
            )
        except BaseException:
            client.close()
            raise
        return client

    def _explain(self, e: BaseException) -> str:
        """A connection or transfer failure, in words that say what to do."""
        import paramiko
        from scp import SCPException

        refusal = host_key_refusal(e, self.known_hosts)
        if refusal is not None:
            return refusal
        if isinstance(e, paramiko.AuthenticationException):
            return f"the server refused key {self.key_file} for user {self.ssh.user}"
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            errors = list(e.errors.values())
            return f"cannot connect: {reason(errors[0]) if errors else reason(e)}"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return "no answer in time"
        if isinstance(e, SCPException):
            text = reason(e)
            return text[5:] if text.startswith("scp: ") else text
        if isinstance(e, paramiko.SSHException) and "banner" in str(e):
            return f"not an SSH server, or it hung up ({reason(e)})"
        return reason(e)

    async def _link(self, peer: Peer) -> tuple[_SshLink, bool]:
        """The cached connection to ``peer`` (opened now if needed), and whether it is new."""
        key = (peer.host, self._port(peer))
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            link = self._links.get(key)
            if link is not None and link.alive:
                return link, False
            if link is not None:
                self._links.pop(key, None)
                await trio.to_thread.run_sync(link.client.close)
            client = await trio.to_thread.run_sync(self._connect_blocking, peer)
            link = _SshLink(client, trio.Semaphore(self.max_sessions))
            self._links[key] = link
            return link, True

    async def _drop(self, peer: Peer, link: _SshLink) -> None:
        key = (peer.host, self._port(peer))
        if self._links.get(key) is link:
            del self._links[key]
        await trio.to_thread.run_sync(link.client.close)

    async def _run(self, peer: Peer, direction: str, op: Callable[[Any], T]) -> T:
        """Run blocking ``op(client)`` on the peer's connection; reconnect once if the
        cached connection turns out dead before any byte moved."""
        for attempt in (1, 2):
            try:
                link, fresh = await self._link(peer)
            except TransferError as e:
                raise TransferError(f"{self._label(direction, peer)} failed: {e}") from None
            except Exception as e:
                raise TransferError(
                    f"{self._label(direction, peer)} failed: {self._explain(e)}"
                ) from None
            try:
                async with link.sessions:
                    return await in_thread(functools.partial(op, link.client))
            except _Broken as e:
                await self._drop(peer, link)
                if fresh or attempt == 2:
                    raise TransferError(
                        f"{self._label(direction, peer)} failed: connection lost ({e})"
                    ) from None
                log.info("SSH connection to %s was dead; reconnecting", peer.name)
            except TransferError as e:
                raise TransferError(f"{self._label(direction, peer)} failed: {e}") from None
            except Exception as e:
                # A cached connection can die under us mid-way, before paramiko's
                # transport thread notices (a socket error is the first sign).  Copies
                # are atomic, so redo it once on a new connection.
                dead = not link.alive or isinstance(e, OSError)
                if dead:
                    await self._drop(peer, link)
                if dead and not fresh and attempt == 1:
                    log.info("SSH connection to %s failed: %s; reconnecting", peer.name, e)
                    continue
                raise TransferError(
                    f"{self._label(direction, peer)} failed: {self._explain(e)}"
                ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _open_channel(client: Any) -> Any:
        """A session channel, or _Broken when the connection is dead (perhaps for a
        while, unnoticed in the cache: a restarted sshd, a NAT that forgot us)."""
        import paramiko

        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise _Broken("the SSH transport is closed")
        try:
            return transport.open_session(timeout=10.0)
        except paramiko.ChannelException:
            raise  # the server is there and said no (MaxSessions, a policy)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise _Broken(reason(e)) from None

    def _scp(self, client: Any, progress: Callable[[bytes, int, int], None] | None) -> Any:
        from scp import SCPClient

        scp = SCPClient(
            client.get_transport(),
            buff_size=self.buffer_size,
            socket_timeout=self.io_timeout,
            progress=progress,
        )
        scp.channel = self._open_channel(client)
        return scp

    def _exec(self, client: Any, command: str, timeout: float) -> tuple[int, str, str]:
        chan = self._open_channel(client)
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            out = chan.makefile("rb").read().decode(errors="replace")
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
            return chan.recv_exit_status(), out, err
        finally:
            chan.close()

    # --- push --------------------------------------------------------------------

    async def push(
        self,
        local: Path,
        peer: Peer,
        name: str,
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> TransferResult:
        what = self._label("to", peer)
        try:
            f = await trio.to_thread.run_sync(lambda: open(local, "rb"))  # noqa: SIM115
        except OSError as e:
            raise TransferError(f"{what} failed: cannot read {local}: {reason(e)}") from None
        try:
            size = os.fstat(f.fileno()).st_size
            reporter = Reporter(
                progress, push_label(local, [peer]) if label is None else label, size
            )
            return await self._push_from(f, size, peer, name, reporter)
        finally:
            f.close()

    async def _push_from(
        self,
        f: Any,
        size: int,
        peer: Peer,
        name: str,
        reporter: Reporter,
        temp: str | None = None,
        *,
        rename: bool = True,
    ) -> TransferResult:
        """Copy ``size`` bytes of the open file ``f`` to ``peer``'s incoming ``name``,
        through the remote temporary ``temp`` (a fresh one by default); ``rename=False``
        leaves the checked copy as ``temp`` (the caller renames it: :meth:`_rename`)."""
        what = self._label("to", peer)
        problem = name_problem(name)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        start = time.perf_counter()
        reporter(0)
        final = posixpath.join(peer.incoming_dir, name)
        temp = temp_sibling(final) if temp is None else temp

        def op(client: Any) -> str:
            f.seek(0)
            reader = _HashingReader(f, size, ThreadReporter(reporter))
            self._put_blocking(client, reader, temp, final if rename else None, size)
            return reader.hasher.hexdigest()

        digest = await self._run(peer, "to", op)
        reporter.finish(size)
        return TransferResult(size, digest, time.perf_counter() - start)

    async def _rename(self, peer: Peer, temp: str, name: str) -> None:
        """Give the checked copy ``temp`` on ``peer`` its name ``name`` in the incoming
        directory (the last step of a ``rename=False`` :meth:`_push_from`); the
        temporary is removed when that fails."""
        final = posixpath.join(peer.incoming_dir, name)

        def op(client: Any) -> None:
            command = f"mv -f -- {shlex.quote(temp)} {shlex.quote(final)}"
            status, _, err = self._exec(client, command, self.io_timeout)
            if status != 0:
                self._remove_remote(client, temp)
                detail = " ".join(err.split()) or f"exit status {status}"
                raise TransferError(f"cannot finish the upload on the remote: {detail}")

        await self._run(peer, "to", op)

    async def push_chain(
        self,
        local: Path,
        targets: Sequence[tuple[Peer, str]],
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> list[TransferResult | TransferError]:
        """``push_many`` as a chain (sdfs.transfer.chain): scp to the first target while
        its node, told by a RelayFile, copies the arriving file on down the chain."""
        if len(targets) < 2 or self.relay is None:
            return await self.push_many(local, targets, progress, label=label)
        try:
            f = await trio.to_thread.run_sync(lambda: open(local, "rb"))  # noqa: SIM115
        except OSError as e:
            why = f"cannot read {local}: {reason(e)}"
            return [TransferError(f"{self._label('to', p)} failed: {why}") for p, _ in targets]
        try:
            size = os.fstat(f.fileno()).st_size
            if label is None:
                label = push_label(local, [peer for peer, _ in targets])
            start = time.perf_counter()
            head, name = targets[0]
            mine, rest = await self.relay_chain(
                f, size, head, name, chain.hops(targets[1:]), Reporter(progress, label, size)
            )
            return [mine, *chain.as_transfer_results(rest, targets[1:], start, "scp")]
        finally:
            f.close()

    async def serve_relay(
        self,
        request: RelayFile,
        incoming_dir: Path,
        find_peer: Callable[[str], Awaitable[Peer]],
        *,
        node: str,
        log: logging.Logger = log,
    ) -> ChainEnd | ErrorReply:
        """A hop's side of a chain over scp: read ``request.temp`` in ``incoming_dir``
        as it arrives and copy it down ``request.downstream`` (:meth:`relay_chain`);
        the downstream's results, or a refusal of a bad request."""
        # A temporary's name, and nothing else: name_problem refuses those, but it
        # is what a copy under way is called (files.temp_sibling).
        temp = request.temp
        problem = None if is_temp_name(temp) else "not a temporary name"
        if not problem and ("/" in temp or any(ord(c) < 32 or ord(c) == 127 for c in temp)):
            problem = "not a plain file name"
        if not problem and not 0 < len(request.downstream) < chain.MAX_HOPS:
            problem = f"a chain of 1 to {chain.MAX_HOPS - 1} hops"
        if not problem and request.size < 0:
            problem = f"negative size {request.size}"
        for hop in request.downstream:
            problem = problem or name_problem(hop.name)
        if problem:
            return ErrorReply(one_line(f"{node}: relay refused: {problem}"))
        # Only the next hop is looked up here; the rest travel on as they came.  One
        # we cannot look up (a member that failed) is skipped, as HDFS drops a bad
        # datanode from its pipeline: the hop after it gets the file from us.
        hops = list(request.downstream)
        skipped: list[HopResult] = []
        head: Peer | None = None
        while hops and head is None:
            try:
                head = await find_peer(hops[0].node)
            except Exception as e:
                why = f"{node} cannot reach {hops[0].node}: {one_line(str(e))}"
                skipped.append(HopResult(hops[0].node, False, error=why))
                hops.pop(0)
        if head is None:
            return ChainEnd(tuple(skipped))
        growing = chain.GrowingFile(
            str(Path(incoming_dir) / temp),
            request.size,
            idle_timeout=self.io_timeout,
            appear_timeout=self.io_timeout,
        )
        growing.check = trio.from_thread.check_cancelled
        try:
            mine, rest = await self.relay_chain(
                growing,
                request.size,
                head,
                hops[0].name,
                tuple(hops[1:]),
                Reporter(None, "relay", request.size),
            )
        finally:
            growing.close()
        first = (
            HopResult(head.name, True, mine.size, mine.sha256)
            if isinstance(mine, TransferResult)
            else HopResult(head.name, False, error=str(mine))
        )
        out = [*skipped, first, *rest]
        bad = [r for r in out if not r.ok]
        if bad:
            log.info("relay of %s: %s: %s", temp, bad[0].node, bad[0].error)
        return ChainEnd(tuple(out))

    async def relay_chain(
        self,
        f: Any,
        size: int,
        head: Peer,
        name: str,
        downstream: tuple[Hop, ...],
        reporter: Reporter,
    ) -> tuple[TransferResult | TransferError, list[HopResult]]:
        """Copy ``size`` bytes of ``f`` (a file, or a chain.GrowingFile) to ``head`` as
        ``name`` by our own scp, and have its node pass them on down ``downstream``
        (a RelayFile); our copy's result, and one HopResult per downstream hop."""
        if not downstream:  # the end of the chain: a plain copy
            try:
                return await self._push_from(f, size, head, name, reporter), []
            except TransferError as e:
                return e, []
        temp = temp_sibling(posixpath.join(head.incoming_dir, name))
        results: list[TransferResult | TransferError] = []
        answer: Any = None

        # The head's node reads our copy as it arrives, from ``temp``: that copy keeps
        # its temporary name until the relay has answered, since a RelayFile that comes
        # late (a slow RPC, a busy node, the head's first SSH connection downstream)
        # would otherwise find the copy already renamed, wait for a temporary that
        # never appears, and time out.  The relay's open file outlives the rename.
        async def copy(relaying: trio.CancelScope) -> None:
            try:
                results.append(
                    await self._push_from(f, size, head, name, reporter, temp, rename=False)
                )
            except TransferError as e:
                results.append(e)
                # The head has no copy to pass on: stop waiting for its answer (its
                # node gives up by itself when the temporary goes or never comes).
                relaying.cancel()

        async def relay() -> None:
            nonlocal answer
            assert self.relay is not None
            request = RelayFile(posixpath.basename(temp), size, downstream)
            # Long enough for the whole chain behind, at a pessimistic 20 MB/s.
            try:
                answer = await self.relay(head, request, self.io_timeout + size / 20e6)
            except Exception as e:
                answer = ErrorReply(f"{head.name} did not relay: {reason(e)}")

        relaying = trio.CancelScope()

        async def relay_unless_cancelled() -> None:
            with relaying:
                await relay()

        renamed: list[TransferError | None] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(copy, relaying)
                nursery.start_soon(relay_unless_cancelled)
        finally:
            if results and isinstance(results[0], TransferResult):
                # As a plain copy would have finished it, also when we are cancelled.
                with trio.CancelScope(shield=True):
                    try:
                        await self._rename(head, temp, name)
                        renamed.append(None)
                    except TransferError as e:
                        renamed.append(e)
        [mine] = results
        if isinstance(mine, TransferError):
            answer = ErrorReply(f"{head.name} got no copy to pass on")
        digest = mine.sha256 if isinstance(mine, TransferResult) else ""
        rest = chain.check_results(answer, downstream, size, digest)
        if isinstance(answer, ErrorReply):
            rest = [HopResult(r.node, False, error=f"not reached: {answer.error}") for r in rest]
        # The relay read our copy whole (its answer says so) even where the rename
        # failed: then only the head lacks it.
        return (renamed[0] or mine) if renamed else mine, rest

    async def push_many(
        self,
        local: Path,
        targets: Sequence[tuple[Peer, str]],
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> list[TransferResult | TransferError]:
        return await push_each(self, local, targets, progress, label=label)

    def _put_blocking(
        self, client: Any, reader: _HashingReader, temp: str, final: str | None, size: int
    ) -> None:
        """scp ``reader`` to ``temp``, check it there, and rename it ``final`` (unless
        None: then the checked copy stays ``temp``)."""
        scp = self._scp(client, None)
        try:
            scp.putfo(reader, temp, mode="0644", size=size)
        except BaseException:
            # Whatever broke, the remote scp may have left part of a file behind.
            if scp.channel is not None:
                scp.channel.close()
            self._remove_remote(client, temp)
            raise
        digest = reader.hasher.hexdigest()
        lines = [f"f={shlex.quote(temp)}", 's=$(wc -c < "$f") || exit 3', "h=-"]
        if self.verify_remote:
            lines.append('h=$(sha256sum < "$f") || exit 3; h=${h%% *}')
        lines.append('echo "$s $h"')
        lines.append(f'[ "$s" -eq {size} ] || {{ rm -f -- "$f"; exit 4; }}')
        if self.verify_remote:
            lines.append(f'[ "$h" = {digest} ] || {{ rm -f -- "$f"; exit 4; }}')
        # Durability before the rename, as for the other transports; best effort where
        # sync(1) cannot take a file.
        lines.append('sync -- "$f" 2>/dev/null')
        if final is not None:
            lines.append(f'mv -f -- "$f" {shlex.quote(final)}')
        command = "\n".join(lines)
        # Hashing a large file remotely takes time: allow ~50 MB/s, at least the io timeout.
        status, out, err = self._exec(client, command, max(self.io_timeout, size / 50e6))
        if status == 4:
            got = out.split()
            got_size = got[0] if got else "?"
            got_hash = got[1] if len(got) > 1 else "-"
            raise TransferError(
                f"arrived damaged: sent {size} bytes sha256 "
                f"{short_hash(digest)}..., the remote has {got_size} bytes"
                + (f" sha256 {short_hash(got_hash)}..." if self.verify_remote else "")
            )
        if status != 0:
            self._remove_remote(client, temp)
            detail = " ".join(err.split()) or f"exit status {status}"
            raise TransferError(f"cannot finish the upload on the remote: {detail}")

    def _remove_remote(self, client: Any, path: str) -> None:
        try:
            self._exec(client, f"rm -f -- {shlex.quote(path)}", 10.0)
        except Exception as e:  # best effort: the store sweeps incoming/ on start
            log.debug("could not remove remote temporary %s: %s", path, e)

    # --- pull ---------------------------------------------------------------------

    async def pull(
        self,
        peer: Peer,
        remote_path: str,
        local: Path,
        progress: Progress | None = None,
        *,
        label: str | None = None,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        what = self._label("from", peer)
        problem = path_problem(remote_path)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        root = posixpath.normpath(peer.store_dir)
        path = posixpath.normpath(posixpath.join(root, remote_path))
        if not path.startswith(root.rstrip("/") + "/"):
            raise TransferError(f"{what} refused: {remote_path} is not inside the store {root}")
        start = time.perf_counter()
        reporter = Reporter(
            progress,
            pull_label(remote_path, peer) if label is None else label,
            -1 if expected_size is None else expected_size,
        )
        reporter(0)
        local = Path(local)

        def op(client: Any) -> tuple[int, str]:
            return self._get_blocking(
                client, path, local, ThreadReporter(reporter), expected_size, expected_sha256
            )

        size, digest = await self._run(peer, "from", op)
        reporter.finish(size)
        return TransferResult(size, digest, time.perf_counter() - start)

    def _get_blocking(
        self,
        client: Any,
        path: str,
        local: Path,
        report: ThreadReporter,
        expected_size: int | None,
        expected_sha256: str | None,
    ) -> tuple[int, str]:
        temp = Path(temp_sibling(local))
        started = False
        wrong_size: int | None = None

        def progress(_name: bytes, size: int, sent: int) -> None:
            # The scp package opens the file before its try/finally, and calls this once
            # in between: that first call must not raise (no cancellation check either),
            # or the file handle leaks.  It is (size, 0), or (1, 1) for an empty file.
            nonlocal started, wrong_size
            if not started:
                started = True
                if sent == 0 and expected_size is not None and size != expected_size:
                    wrong_size = size
                return
            if wrong_size is not None:
                raise TransferError(
                    f"the remote file has {wrong_size} bytes, expected {expected_size}"
                )
            report(sent, size)

        scp = self._scp(client, progress)
        try:
            if not local.parent.is_dir():
                raise FileNotFoundError(2, "No such file or directory", str(local.parent))
            try:
                scp.get(path, str(temp))
            except BaseException:
                if scp.channel is not None:
                    scp.channel.close()
                raise
            size, digest = _hash_fsync(temp)
            check_expected("pull", size, digest, expected_size, expected_sha256)
            os.replace(temp, local)
            fsync_dir(local.parent)
            return size, digest
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    async def aclose(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await trio.to_thread.run_sync(link.client.close)


class _HashingReader:
    """The file-like object scp reads: hashes what it hands out and stops at ``size``."""

    def __init__(self, f: IO[bytes], size: int, report: ThreadReporter) -> None:
        self.f = f
        self.size = size
        self.report = report
        self.hasher = hashlib.sha256()
        self.pos = 0

    def read(self, n: int) -> bytes:
        # A file that grows is cut at the announced size; one that shrinks would make
        # scp spin forever on empty reads.
        data = self.f.read(min(n, self.size - self.pos))
        if not data and self.pos < self.size:
            raise TransferError("the local file shrank while sending")
        self.hasher.update(data)
        self.pos += len(data)
        self.report(self.pos, self.size)
        return data

    def tell(self) -> int:
        return self.pos


def _hash_fsync(path: Path) -> tuple[int, str]:
    """Size and sha256 of a just-written file, made durable on the way."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb+") as f:
        while data := f.read(CHUNK_SIZE):
            h.update(data)
            size += len(data)
        os.fsync(f.fileno())
    return size, h.hexdigest()
