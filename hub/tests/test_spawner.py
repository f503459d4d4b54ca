from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from condorlab import handlers
from condorlab.spawner import CondorlabSpawner
from jupyterhub.apihandlers import default_handlers

TEMPLATE = (
    __import__("pathlib").Path(__file__).resolve().parents[2] / "roles" / "jupyterhub" / "files" / "session.sub.j2"
)


@pytest.fixture
def spawner(tmp_path):
    s = CondorlabSpawner(
        user=SimpleNamespace(name="alice", url="/user/alice/"),
        submit_template=str(TEMPLATE),
        port_range=(50000, 50010),
    )
    s.api_token = "secret-token-value"
    return s


def test_batchspawner_handler_is_not_reachable_and_ours_is():
    paths = [h[0] for h in default_handlers]
    assert r"/api/batchspawner" not in paths
    assert paths.count(handlers.PORT_REPORT_PATH) == 1


def test_submit_description_has_no_secret_and_marks_the_session(spawner):
    text = spawner.render_submit(shared_dir="")
    assert "secret-token-value" not in text
    assert "+CondorlabSession = true" in text
    assert '+CondorlabServer = "alice/default"' in text
    assert "transfer_input_files = .condorlab/sessions/default/session.json, condorlab" in text
    assert "getenv" not in text.lower() and "environment" not in text.lower()


def test_shared_area_mode_transfers_no_work_directory(spawner):
    text = spawner.render_submit(shared_dir="/shared/alice")
    assert "transfer_input_files = .condorlab/sessions/default/session.json\n" in text
    assert "transfer_output_files = session.summary\n" in text


def test_the_token_travels_only_in_the_session_file(spawner, monkeypatch):
    monkeypatch.setattr(spawner, "get_env", lambda: {"JUPYTERHUB_API_TOKEN": spawner.api_token})
    session = json.loads(spawner.session_file(shared_dir=""))
    assert session["env"]["JUPYTERHUB_API_TOKEN"] == "secret-token-value"
    assert session["work_dir"] == "condorlab" and session["port_range"] == [50000, 50010]


def test_shared_dir_is_used_only_when_it_exists(spawner, tmp_path):
    spawner.shared_area = str(tmp_path / "{username}")
    assert spawner.shared_dir() == ""
    (tmp_path / "alice").mkdir()
    assert spawner.shared_dir() == str(tmp_path / "alice")


@pytest.mark.parametrize(
    ("job_id", "port", "reported", "error"),
    [
        ("12", 0, 50005, ""),
        ("12", 0, 49999, "outside the allowed range"),
        ("12", 0, 50011, "outside the allowed range"),
        ("", 0, 50005, "not waiting for a port"),
        ("12", 50001, 50005, "not waiting for a port"),
    ],
)
def test_accept_port(spawner, job_id, port, reported, error):
    spawner.job_id = job_id
    spawner.port = port
    message = spawner.accept_port(reported)
    if error:
        assert error in message and spawner.port == port
    else:
        assert message == "" and spawner.port == reported


def test_the_helper_runs_through_sudo_as_the_user(spawner):
    assert spawner.helper_cmd("remove", "12") == [
        "sudo",
        "-n",
        "-u",
        "alice",
        "/usr/local/libexec/condorlab/condorlab-job",
        "remove",
        "12",
    ]
