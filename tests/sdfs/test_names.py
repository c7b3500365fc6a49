"""SDFS names: what is allowed, the one-line refusals, and the mapping to a disk name."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sdfs.names import MAX_NAME_BYTES, BadName, check_name, disk_name, from_disk_name

VALID = [
    "a",
    "images/cat.jpg",
    "models/resnet50.pth",
    "images/ünïcødé/猫.png",
    "a b/c d.txt",
    "100%/done",
    "dir.with.dots/file",
    "...",
    ".hidden/x",
    "a/..b/c..",
    "x" * 50 + "/" + "y" * 50,
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert check_name(name) == name


def refusal(name: str) -> str:
    with pytest.raises(BadName) as info:
        check_name(name)
    message = str(info.value)
    assert message
    assert "\n" not in message and "\r" not in message
    return message


def test_bad_name_is_a_value_error() -> None:
    assert issubclass(BadName, ValueError)


def test_empty_name_is_refused() -> None:
    assert "empty" in refusal("")


@pytest.mark.parametrize("name", ["/a", "/images/cat.jpg", "/"])
def test_absolute_names_are_refused(name: str) -> None:
    assert "absolute" in refusal(name)


@pytest.mark.parametrize(
    "name", ["..", ".", "../a", "a/..", "a/../b", "./a", "a/.", "a/./b", "images/../../etc"]
)
def test_dot_and_dotdot_parts_are_refused(name: str) -> None:
    assert "'.' or '..'" in refusal(name)


@pytest.mark.parametrize(
    "name", ["a\x00b", "\x00", "a\nb", "a\rb", "tab\there", "bell\x07", "del\x7f", "esc\x1b[0m"]
)
def test_nul_and_control_characters_are_refused(name: str) -> None:
    assert "control character" in refusal(name)


@pytest.mark.parametrize("name", ["a\\b", "images\\cat.jpg", "\\", "..\\..\\x"])
def test_backslash_is_refused(name: str) -> None:
    assert "backslash" in refusal(name)


@pytest.mark.parametrize("name", ["a/", "a//b", "images/", "a/b//c", "//"])
def test_empty_parts_are_refused(name: str) -> None:
    message = refusal(name)
    assert "empty part" in message or "absolute" in message


def test_leading_double_slash_is_refused_as_absolute() -> None:
    assert "absolute" in refusal("//a")


@pytest.mark.parametrize("name", ["a\udcff", "\ud800", "images/\udc80.jpg"])
def test_text_that_is_not_utf8_is_refused(name: str) -> None:
    """Undecodable bytes in sys.argv arrive as lone surrogates: a BadName, not a crash."""
    assert "UTF-8" in refusal(name)


def test_length_limit_counts_quoted_bytes() -> None:
    assert check_name("a" * MAX_NAME_BYTES) == "a" * MAX_NAME_BYTES
    assert "too long" in refusal("a" * (MAX_NAME_BYTES + 1))
    # 'é' quotes to %C3%A9 (6 bytes): fewer characters suffice to go over the limit.
    assert "too long" in refusal("é" * (MAX_NAME_BYTES // 6 + 1))
    # '/' quotes to %2F.
    assert "too long" in refusal("/".join(["ab"] * 50))


def test_long_name_message_is_short() -> None:
    message = refusal("x" * 10_000)
    assert len(message) < 200


@pytest.mark.parametrize("name", VALID)
def test_disk_name_round_trips(name: str) -> None:
    entry = disk_name(name)
    assert "/" not in entry
    assert "\\" not in entry
    assert entry not in ("", ".", "..")
    assert from_disk_name(entry) == name


def test_disk_name_is_injective_for_lookalikes() -> None:
    names = ["a/b", "a%2Fb", "a%252Fb", "a_b", "A/b"]
    entries = [disk_name(n) for n in names]
    assert len(set(entries)) == len(names)
    assert [from_disk_name(e) for e in entries] == names


def test_disk_name_of_a_valid_name_fits_a_directory_entry() -> None:
    longest = "é" * (MAX_NAME_BYTES // 6)
    check_name(longest)
    assert len(disk_name(longest).encode()) <= 255


names_text = st.text(
    alphabet=st.one_of(
        st.sampled_from("/.\\\x00\n%a~"),
        st.characters(exclude_categories=()),  # controls included
        st.characters(categories=["Cs"]),  # lone surrogates (undecodable argv bytes)
    ),
    max_size=60,
)


@given(names_text)
@example("\ud800")
@example("a/\udcff")
@example("%2F..%2F")
@example("...")
@example("a" * (MAX_NAME_BYTES + 1))
def test_any_text_is_refused_or_maps_to_one_safe_path_component(name: str) -> None:
    try:
        checked = check_name(name)
    except BadName as e:
        assert "\n" not in str(e)
        return
    assert checked == name
    entry = disk_name(name)
    assert entry
    assert "/" not in entry and "\x00" not in entry
    assert entry not in (".", "..")
    assert len(entry.encode()) <= MAX_NAME_BYTES
    assert from_disk_name(entry) == name


@given(st.lists(st.text(st.characters(exclude_characters="/\\"), min_size=1), min_size=1))
def test_relative_paths_are_accepted_exactly_when_no_rule_refuses(parts: list[str]) -> None:
    name = "/".join(parts)
    expected = (
        not any(p in (".", "..") for p in parts)
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
        # Lone surrogates are not UTF-8 (and cannot be quoted): refused before the length.
        and not any(0xD800 <= ord(c) <= 0xDFFF for c in name)
        and len(disk_name(name)) <= MAX_NAME_BYTES
    )
    try:
        check_name(name)
    except BadName:
        accepted = False
    else:
        accepted = True
    assert accepted == expected
