"""What the console prints for every node command's reply."""

from __future__ import annotations

from typing import Any

from console.render import RENDERERS, fmt_value, render, render_generic
from node.commands import COMMANDS, help_text


def members(*rows: tuple[str, int, str, int]) -> list[dict[str, Any]]:
    return [
        {"name": n, "host": "127.0.0.1", "port": p, "status": s, "incarnation": i}
        for n, p, s, i in rows
    ]


def test_every_node_command_has_a_renderer() -> None:
    # Commands may fall back to the generic renderer, but the ones that exist today
    # were given their own; a new command without one still renders (see below).
    assert {"join", "leave", "list_mem", "list_self", "bps", "fpr", "help"} <= set(RENDERERS)
    for name in COMMANDS:
        assert isinstance(render(name, {}), str)


def test_join_and_leave_print_ok() -> None:
    assert render("join", {"ok": True}) == "ok"
    assert render("leave", {"ok": True}) == "ok"


def test_list_mem_is_a_table_with_the_leader_and_self_marked() -> None:
    data = {
        "self": "H2",
        "leader": "H1",
        "members": members(
            ("H1", 8001, "alive", 0), ("H2", 8002, "alive", 3), ("H10", 8010, "suspect", 12)
        ),
    }
    lines = render("list_mem", data).splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATUS", "INC"]
    assert lines[1].split() == ["*", "H1", "127.0.0.1:8001", "alive", "0"]
    assert lines[2].split() == [">", "H2", "127.0.0.1:8002", "alive", "3"]
    assert lines[3].split() == ["H10", "127.0.0.1:8010", "suspect", "12"]
    # Aligned: every column starts at the same offset on every row.
    for word in ("127.0.0.1", "alive"):
        assert len({line.index(word) for line in lines[1:3]}) == 1
    assert lines[1].index("127.0.0.1") == lines[3].index("127.0.0.1")
    assert lines[0].index("STATUS") == lines[3].index("suspect")
    # Incarnations are numbers: right-aligned.
    assert lines[1].endswith(" 0") and lines[3].endswith("12")
    assert len({len(line) for line in lines[0:4]}) == 1
    assert "3 live members" in lines[4]
    assert lines[-1] == "self: H2  leader: H1"


def test_list_mem_when_not_a_member() -> None:
    text = render("list_mem", {"self": "H1", "leader": None, "members": []})
    assert "not in the cluster" in text
    assert text.splitlines()[-1] == "self: H1  leader: -"


def test_list_self_is_one_line() -> None:
    data = {"name": "H3", "host": "127.0.0.1", "port": 8003, "incarnation": 2, "member": True}
    assert render("list_self", data) == "H3  127.0.0.1:8003  incarnation 2  member"
    data["member"] = False
    assert "\n" not in render("list_self", data)
    assert render("list_self", data).endswith("not a member (use 'join')")
    del data["member"]  # the contract's keys alone
    assert render("list_self", data) == "H3  127.0.0.1:8003  incarnation 2"


def test_bps_and_fpr_are_aligned_key_value_lines() -> None:
    bps = {"bytes_sent_per_s": 212.5, "bytes_received_per_s": 198.0, "bytes_sent": 4096}
    assert render("bps", bps).splitlines() == [
        "bytes_sent_per_s:     212.5",
        "bytes_received_per_s: 198",
        "bytes_sent:           4096",
    ]
    fpr = {"false_positive_rate": 0.001234567, "pings_sent": 810, "false_positives": 1}
    assert render("fpr", fpr).splitlines() == [
        "false_positive_rate: 0.00123457",
        "pings_sent:          810",
        "false_positives:     1",
    ]


def test_help_prints_the_text() -> None:
    assert render("help", {"help": help_text()}) == help_text()
    assert "exit" in help_text() and "quit" in help_text()


def test_generic_fallback_for_commands_without_a_renderer() -> None:
    # Shapes like the file store's and the scheduler's replies.
    assert render("frob", {"ok": True}) == "ok"
    assert render("frob", {"name": "a.jpg", "version": 2, "replicas": ["H1", "H4"]}) == (
        "name: a.jpg\nversion: 2\nreplicas: H1, H4"
    )
    assert render("frob", {"files": []}) == "files: (none)"
    text = render(
        "C1",
        {"models": {"resnet50": {"query_rate": 2.5, "query_count": 40}, "inception_v3": {}}},
    )
    assert text.splitlines() == [
        "models:",
        "  resnet50:",
        "    query_rate: 2.5",
        "    query_count: 40",
        "  inception_v3: (none)",
    ]
    table = render(
        "jobs", {"jobs": [{"id": 1, "model": "resnet50"}, {"id": 12, "model": "inception_v3"}]}
    ).splitlines()
    assert table[0] == "jobs:"
    assert table[1].split() == ["ID", "MODEL"]
    assert table[2].split() == ["1", "resnet50"] and table[3].split() == ["12", "inception_v3"]
    assert render("x", {"text": "line one\nline two"}) == "text:\n  line one\n  line two"
    assert render("x", {}) == "ok"


def test_a_reply_of_an_unexpected_shape_still_renders() -> None:
    # An older or newer node may send something else; never a traceback.
    assert "members: 3" in render("list_mem", {"self": "H1", "members": 3})
    assert render_generic({"ok": False}) == "failed"


def test_value_formatting() -> None:
    assert fmt_value(None) == "-"
    assert fmt_value(True) == "yes"
    assert fmt_value(0.1 + 0.2) == "0.3"
    assert fmt_value([1, "a"]) == "1, a"
    assert fmt_value([]) == "(none)"


def test_file_store_commands() -> None:
    assert render("put", {"name": "a.jpg", "version": 2, "replicas": ["H1", "H4"]}) == (
        "a.jpg version 2 stored on H1, H4"
    )
    assert render("get", {"name": "a.jpg", "version": 2, "bytes": 1234}) == (
        "a.jpg version 2: 1234 bytes"
    )
    assert render("delete", {"ok": True}) == "ok"
    assert render("ls", {"name": "a.jpg", "replicas": ["H1", "H2"], "versions": [3, 2]}) == (
        "a.jpg\n  replicas: H1, H2\n  versions: 3, 2"
    )
    assert render("ls-all", {"files": []}) == "0 files"
    assert render("store", {"node": "H3", "files": ["a", "b"]}) == "H3 holds 2 files\n  a\n  b"
    assert render("get-versions", {"name": "a", "versions": [5, 4]}) == (
        "a: versions 5, 4 (newest first)"
    )


def test_progress_lines() -> None:
    from console.render import progress_line

    assert progress_line(20_000_000, 40_000_000, "a.bin -> H2") == (
        "a.bin -> H2: 20.0 MB of 40.0 MB  50.0%"
    )
    assert progress_line(3, 4, "files") == "3 of 4 files  75.0%"
    # A put-dir's: files, then bytes.
    assert progress_line(3, 4, "files, 1.5 KB of 2.0 KB") == (
        "3 of 4 files  75.0%, 1.5 KB of 2.0 KB"
    )
    # net.progress.human_bytes: past 1000 GB it counts in TB.
    assert progress_line(1_500_000_000_000, 3_000_000_000_000, "w") == (
        "w: 1.5 TB of 3.0 TB  50.0%"
    )


def test_models_are_listed_per_kind_wrapped_with_skipped_plugins() -> None:
    names = [f"model_number_{i}" for i in range(12)]
    data = {
        "models": [*names, "toynet"],
        "kinds": {"image-classification": names, "toynet": ["toynet"]},
        "skipped": {"broken": "ImportError: no module named x"},
    }
    lines = render("models", data).splitlines()
    assert lines[0] == "image-classification (12):"
    body = [line for line in lines[1:] if line.startswith("  ")]
    assert all(len(line) <= 88 for line in body) and len(body) > 2
    assert " ".join(body).split() == [*names, "toynet"]
    assert "toynet (1):" in lines
    assert lines[-1] == "skipped plug-in broken: ImportError: no module named x"
    assert render("models", {"models": ["a", "b"]}) == "models (2):\n  a  b"
