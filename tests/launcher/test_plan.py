"""The launcher's pure part: where each process runs, with what, and the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.topology import config_from_dict
from launcher.plan import (
    Login,
    Options,
    PlanError,
    Row,
    cluster_name,
    joined,
    make_plan,
    remote_secret_path,
    render_table,
    report_json,
    report_ok,
)

SECRET = "0123456789abcdef0123456789abcdef"


def options(**kw: Any) -> Options:
    base: dict[str, Any] = {
        "repo": "/opt/idunno",
        "python": "/opt/idunno/.venv/bin/python",
        "identity": "/home/op/.ssh/id_ed25519",
        "known_hosts": "/home/op/.ssh/known_hosts",
        "user": "op",
        "run_dir": "~/.idunno/room",
    }
    base.update(kw)
    return Options(**base)


def raw_cluster(**cluster: Any) -> dict[str, Any]:
    return {
        "cluster": {"introducer": "10.0.0.9:8888", "secret": SECRET, **cluster},
        "ssh": {"port": 2200},
        "nodes": [
            {"name": "H1", "host": "10.0.0.1", "port": 7000},
            {"name": "H2", "host": "10.0.0.2", "port": 7000, "ssh_port": 22},
            {"name": "H3", "host": "10.0.0.1", "port": 7001},
        ],
    }


def plan_of(raw: dict[str, Any], tmp_path: Path | None = None, **kw: Any) -> Any:
    base = tmp_path or Path("/nowhere")
    config = config_from_dict(raw, base)
    return make_plan(config, raw, base / "room.toml", options(**kw))


def test_every_host_is_logged_in_to_once_introducer_first_with_its_ssh_port() -> None:
    plan = plan_of(raw_cluster())
    assert plan.logins == (
        Login("10.0.0.9", 2200),  # the introducer's host: [ssh] port
        Login("10.0.0.1", 2200),  # H1 and H3
        Login("10.0.0.2", 22),  # H2's own ssh_port
    )
    assert [p.name for p in plan.on(Login("10.0.0.1", 2200))] == ["H1", "H3"]
    assert [p.name for p in plan.procs] == ["introducer", "H1", "H2", "H3"]


def test_the_introducer_shares_a_nodes_ssh_port_on_the_same_host() -> None:
    raw = raw_cluster(introducer="10.0.0.2:8888")
    plan = plan_of(raw)
    assert plan.introducer.login == Login("10.0.0.2", 22)
    assert plan.logins == (Login("10.0.0.2", 22), Login("10.0.0.1", 2200))


def test_command_lines_logs_pid_files_and_data_dirs() -> None:
    plan = plan_of(raw_cluster())
    py, run = "/opt/idunno/.venv/bin/python", "~/.idunno/room"
    assert plan.introducer.argv == (
        *(py, "-m", "introducer", "--hostname", "10.0.0.9", "--port", "8888"),
        *("--config", f"{run}/cluster.toml"),
    )
    h3 = plan.nodes[2]
    assert h3.argv == (
        *(py, "/opt/idunno/main.py", "--hostname", "10.0.0.1", "--port", "7001"),
        *("--config", f"{run}/cluster.toml", "--no-console", "--data-dir", f"{run}/data/H3"),
    )
    assert (h3.log, h3.pid_file) == (f"{run}/logs/H3.log", f"{run}/pids/H3.pid")
    assert (plan.introducer.log, plan.introducer.pid_file) == (
        f"{run}/logs/introducer.log",
        f"{run}/pids/introducer.pid",
    )
    spec = plan.remote_spec("start", [h3], tail=5)
    assert spec["action"] == "start" and spec["tail"] == 5
    assert spec["procs"] == [
        {
            "name": "H3",
            "argv": list(h3.argv),
            "cwd": "/opt/idunno",
            "log": h3.log,
            "pid_file": h3.pid_file,
        }
    ]
    assert spec["env"] == {"PYTHONUNBUFFERED": "1", "PYTHONPATH": "/opt/idunno"}
    assert spec["dirs"] == [run, f"{run}/logs", f"{run}/pids"]


def test_uploads_the_cluster_file_and_its_secret_file_where_the_nodes_look(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "keys" / "room.secret"
    secret.parent.mkdir()
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    raw = raw_cluster(secret_file="keys/room.secret")
    del raw["cluster"]["secret"]
    plan = plan_of(raw, tmp_path)
    assert [(u.local, u.remote, u.mode) for u in plan.uploads] == [
        (str(tmp_path / "room.toml"), "~/.idunno/room/cluster.toml", 0o600),
        (str(secret), "~/.idunno/room/keys/room.secret", 0o600),
    ]
    assert "~/.idunno/room/keys" in plan.dirs
    # An inline secret: the cluster file alone (mode 0600, as it holds the secret).
    assert len(plan_of(raw_cluster()).uploads) == 1


@pytest.mark.parametrize(
    ("secret_file", "remote"),
    [
        ("secret", "/r/secret"),
        ("../shared/secret", "/shared/secret"),
        ("~/.idunno/secret", "~/.idunno/secret"),
        ("/etc/idunno/secret", "/etc/idunno/secret"),
    ],
)
def test_remote_secret_path(secret_file: str, remote: str) -> None:
    assert remote_secret_path(secret_file, "/r") == remote


def test_a_secret_file_in_another_users_home_is_refused() -> None:
    with pytest.raises(PlanError, match="another user's home"):
        remote_secret_path("~bob/secret", "/r")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"repo": "idunno"}, "--repo: must be an absolute path"),
        ({"python": "my python"}, "--python"),
        ({"run_dir": "runs/room"}, "--run-dir"),
        ({"run_dir": "~"}, "--run-dir"),
        ({"run_dir": "/"}, "--run-dir"),
        ({"timeout": 0}, "--timeout"),
        ({"parallel": 0}, "--parallel"),
    ],
)
def test_bad_options_are_one_line_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message) as info:
        plan_of(raw_cluster(), **kw)
    assert "\n" not in str(info.value)


def test_node_names_that_would_share_files_are_refused() -> None:
    raw = raw_cluster()
    raw["nodes"][0]["name"] = "introducer"
    with pytest.raises(PlanError, match=r"nodes\[0\]\.name"):
        plan_of(raw)
    raw = raw_cluster()
    raw["nodes"][0]["name"], raw["nodes"][1]["name"] = "a:1", "a_1"
    with pytest.raises(PlanError, match="differ only"):
        plan_of(raw)


def test_cluster_name_is_the_file_name_without_toml() -> None:
    assert cluster_name("/etc/idunno/room.toml") == "room"
    assert cluster_name("my room.toml") == "my_room"
    assert cluster_name("cluster") == "cluster"
    assert cluster_name(".toml") == "cluster"


def rows() -> list[Row]:
    plan = plan_of(raw_cluster())
    intro, h1, h2, h3 = plan.procs
    return [
        Row.of(intro, "up", pid=10, seconds=1.0),
        Row.of(h1, "up", pid=11, seconds=2.5),
        Row.of(h2, "failed", reason="the server refused key /k for user op"),
        Row.of(
            h3,
            "failed",
            pid=13,
            reason="exited",
            log="~/.idunno/room/logs/H3.log",
            log_tail=["Traceback (most recent call last):", "OSError: address in use"],
        ),
    ]


def test_the_up_table_names_each_failure_and_shows_its_log() -> None:
    text = render_table("up", rows(), 7.25)
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "HOST", "PID", "STATE"]
    assert lines[1].split() == ["introducer", "10.0.0.9:8888", "10", "up", "1.0", "s"]
    assert "H2" in lines[3] and "failed" in lines[3] and "refused key /k" in lines[3]
    assert "--- H3: last lines of ~/.idunno/room/logs/H3.log" in text
    assert "    OSError: address in use" in lines
    assert lines[-1] == "2 of 4 up in 7.2 s"


def test_ok_only_when_every_process_is_in_a_good_state() -> None:
    assert not report_ok("up", rows())
    assert report_ok("up", [r for r in rows() if r.state == "up"])
    assert not report_ok("up", [])
    good = [Row("H1", "node", "h", 1, "already running"), Row("H2", "node", "h", 1, "up")]
    assert report_ok("up", good)
    assert report_ok("down", [Row("H1", "node", "h", 1, s) for s in ("stopped", "not running")])
    assert not report_ok("status", [Row("H1", "node", "h", 1, "stopped")])


def test_the_json_report() -> None:
    report = report_json("up", rows(), 7.254)
    assert report["command"] == "up" and report["ok"] is False and report["seconds"] == 7.25
    assert report["processes"][0] == {
        "name": "introducer",
        "kind": "introducer",
        "host": "10.0.0.9",
        "port": 8888,
        "state": "up",
        "pid": 10,
        "seconds": 1.0,
    }
    assert report["processes"][2]["reason"] == "the server refused key /k for user op"
    assert report["processes"][3]["log_tail"][-1] == "OSError: address in use"


def test_a_node_has_joined_when_a_list_of_two_or_more_members_names_it() -> None:
    assert not joined("H2", {"H2": {"H2"}})  # only itself: not joined yet
    assert not joined("H2", {"H2": {"H2"}, "H1": {"H1"}, "H3": None})
    assert joined("H2", {"H2": {"H2"}, "H1": {"H1", "H2"}})
    assert joined("H2", {"H2": {"H1", "H2"}})  # its own list, with another member
    assert not joined("H3", {"H1": {"H1", "H2"}})
    assert joined("H1", {"H1": {"H1"}}, alone=True)
