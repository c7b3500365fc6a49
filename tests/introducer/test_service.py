"""The introducer refuses joins whose numbers are out of range (bad input from a peer)."""

from __future__ import annotations

import pytest

from config.topology import default_config
from introducer.service import Introducer
from net.messages import ErrorReply, JoinRequest, MembershipSnapshot
from net.wire import encode

PEER = ("127.0.0.1", 40000)


@pytest.mark.parametrize("incarnation", [-1, 2**53 + 1, 2**64 - 1])
async def test_a_join_with_an_incarnation_out_of_range_is_refused(incarnation):
    introducer = Introducer(default_config())
    reply = await introducer.handle(JoinRequest("H1", "127.0.0.1", 8001, incarnation), PEER)
    assert reply == ErrorReply("a join needs an incarnation in 0..9007199254740992")
    assert introducer.admitted == 0


async def test_a_join_in_range_is_admitted_and_the_next_one_goes_above_it():
    introducer = Introducer(default_config())
    first = await introducer.handle(JoinRequest("H1", "127.0.0.1", 8001, 2**53), PEER)
    assert isinstance(first, MembershipSnapshot)
    again = await introducer.handle(JoinRequest("H1", "127.0.0.1", 8001, 0), PEER)
    assert isinstance(again, MembershipSnapshot)
    encode(again)  # 2**53 + 1: still a number every message can carry


@pytest.mark.parametrize("host", ["a b", "bad\x86host", ""])
async def test_a_join_from_an_address_that_is_no_address_is_refused(host):
    introducer = Introducer(default_config())
    reply = await introducer.handle(JoinRequest("H1", host, 8001, 0), PEER)
    assert isinstance(reply, ErrorReply) and "usable address" in reply.error
    assert introducer.admitted == 0
