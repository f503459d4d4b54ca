"""The job helper the hub runs as the user: it must accept checked values only."""

from __future__ import annotations

import json
import pwd
from pathlib import Path

import pytest
from condorlab import contract, helper

SITE_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

CONFIG = {
    "template": str(SITE_TEMPLATES / "session.sub.j2"),
    "session_command": "/opt/condorlab/singleuser/bin/condorlab-session",
    "shared_area": "",
    "transfer_dir": "condorlab",
}
USER_GROUPS = [
    {
        "name": "physics",
        "unix_groups": ["physics"],
        "accounting_group": "group_physics",
        "profiles": [
            {
                "name": "big",
                "label": "big",
                "cpus": 8,
                "memory_mb": 4096,
                "gpus": 1,
                "walltime": 7200,
                "requirements": 'OpSys == "LINUX"',
            },
        ],
    },
    {
        "name": "astro",
        "unix_groups": ["astro"],
        "accounting_group": "group_astro",
        "profiles": [{"name": "quick", "label": "q", "cpus": 1, "memory_mb": 256, "gpus": 0, "walltime": 1800}],
    },
]
GOOD = {
    "server": "default",
    "env": {"JUPYTERHUB_API_TOKEN": "tok"},
    "group": "physics",
    "profile": "big",
    "request_cpus": 2,
    "request_memory_mb": 2048,
}
MEMBER = {"alice", "physics"}
ALICE = pwd.struct_passwd(("alice", "x", 2001, 2001, "", "/home/alice", "/bin/bash"))


def test_a_good_request_passes():
    checked = helper.check_request(GOOD, USER_GROUPS, MEMBER)
    assert checked["server"] == "default" and checked["session"]["request_memory_mb"] == 2048
    assert checked["session"]["accounting_group"] == "group_physics" and checked["session"]["walltime"] == 7200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"server": "../etc"}, "bad server name"),
        ({"server": ".hidden"}, "bad server name"),
        ({"server": "a\nuniverse = local"}, "bad server name"),
        ({"request_cpus": 0}, "request_cpus"),
        ({"request_cpus": 9}, "request_cpus 9 is outside profile physics/big's limit of 1 to 8"),
        ({"request_cpus": True}, "request_cpus"),
        ({"request_memory_mb": "2GB\nexecutable = /bin/sh"}, "request_memory_mb"),
        ({"request_memory_mb": 8192}, "request_memory_mb 8192 MB is above profile physics/big's limit of 4096 MB"),
        ({"group": "astro", "profile": "quick"}, "you are not in the user group 'astro'"),
        ({"group": "gw"}, "there is no user group 'gw'"),
        ({"profile": "huge"}, "has no profile 'huge'"),
        ({"env": {"A B": "x"}}, "env"),
        ({"env": {"X": 1}}, "env"),
        ({"env": "X=1"}, "env"),
        ({"files": {"../../.bashrc": "-----BEGIN X"}}, "files may only name"),
        ({"files": {"session-tls.key": 1}}, "must be PEM text"),
        ({"files": {"session-tls.key": "echo pwned"}}, "must be PEM text"),
        ({"files": {"session-tls.key": "-----BEGIN " + "A" * 70000}}, "must be PEM text"),
        ({"executable": "/bin/sh"}, "unknown request fields: executable"),
        ({"avoid_nodes": "wn2"}, "avoid_nodes must be a list"),
        ({"avoid_nodes": ["wn2"]}, "is not a \\[host name, time\\] pair"),
        ({"avoid_nodes": [['wn2" || true || "', 1]]}, "is not a host name"),
        ({"avoid_nodes": [["wn2\nexecutable = /bin/sh", 1]]}, "is not a host name"),
        ({"avoid_nodes": [["wn2", "1 || true"]]}, "must be whole seconds"),
        ({"avoid_nodes": [["wn2", True]]}, "must be whole seconds"),
        ({"avoid_nodes": [[f"wn{n}", 1] for n in range(40)]}, "at most 32"),
    ],
)
def test_bad_requests_are_refused(change, message):
    with pytest.raises(helper.RequestError, match=message):
        helper.check_request({**GOOD, **change}, USER_GROUPS, MEMBER)


def test_the_rendered_description_is_the_site_template():
    text = helper.render(CONFIG, ALICE, helper.check_request(GOOD, USER_GROUPS, MEMBER), shared_dir="")
    assert "executable = /opt/condorlab/singleuser/bin/condorlab-session" in text
    assert "universe = vanilla" in text
    assert "transfer_input_files = .condorlab/sessions/default/session.json, condorlab" in text
    assert "request_cpus = 2" in text and "request_memory = 2048" in text
    assert "request_gpus = 1" in text and 'requirements = OpSys == "LINUX"' in text
    assert "(time() - JobCurrentStartExecutingDate) > 7500" in text and "+CondorlabWalltime = 7200" in text
    assert "accounting_group = group_physics" in text and "accounting_group_user = alice" in text
    assert '+CondorlabGroup = "physics"' in text and '+CondorlabProfile = "big"' in text
    assert '+CondorlabServer = "alice/default"' in text
    assert "job_lease_duration = 180" in text, "a lost node's job is given up in minutes, not 40"
    assert "+CondorlabFallback = false" in text
    assert "tok" not in text, "the token never goes into the description"


def test_shared_area_mode_transfers_no_work_directory():
    text = helper.render(CONFIG, ALICE, helper.check_request(GOOD, USER_GROUPS, MEMBER), shared_dir="/shared/alice")
    assert "transfer_input_files = .condorlab/sessions/default/session.json\n" in text
    assert "transfer_output_files = session.summary\n" in text


def test_shared_dir_only_when_it_exists_and_is_writable(tmp_path):
    config = {**CONFIG, "shared_area": str(tmp_path / "{username}")}
    assert helper.shared_dir_of(ALICE, config) == ""
    (tmp_path / "alice").mkdir()
    assert helper.shared_dir_of(ALICE, config) == str(tmp_path / "alice")


def test_tls_files_are_sent_encrypted_and_never_inline(tmp_path):
    files = {"session-tls.key": "-----BEGIN PRIVATE KEY-----\nsecret", "session-ca.crt": "-----BEGIN CERTIFICATE"}
    checked = helper.check_request({**GOOD, "files": files}, USER_GROUPS, MEMBER)
    text = helper.render(CONFIG, ALICE, checked, shared_dir="/shared/alice")
    staged = ".condorlab/sessions/default/"
    secrets = f"{staged}session.json, {staged}session-ca.crt, {staged}session-tls.key"
    assert f"transfer_input_files = {secrets}\n" in text
    assert f"encrypt_input_files = {secrets}\n" in text
    assert "secret" not in text


def test_clean_deletes_only_the_staged_secrets(tmp_path, capsys):
    staging = tmp_path / ".condorlab" / "sessions" / "default"
    staging.mkdir(parents=True)
    for name in (*contract.SECRET_FILES, "session.err", "session.log"):
        (staging / name).write_text("x")
    user = pwd.struct_passwd(("alice", "x", 2001, 2001, "", str(tmp_path), "/bin/sh"))
    helper.clean(user, "default")
    assert sorted(p.name for p in staging.iterdir()) == ["session.err", "session.log"]
    assert "session-tls.key" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        helper.clean(user, "../../etc")


@pytest.mark.parametrize(
    ("share", "fallback", "requirements", "rank"),
    [
        (False, False, 'requirements = OpSys == "LINUX"', False),
        (True, False, 'requirements = (TARGET.CondorlabInteractive =?= True) && (OpSys == "LINUX")', True),
        (True, True, 'requirements = OpSys == "LINUX"', True),
    ],
    ids=["no-share", "share-only", "share-or-batch"],
)
def test_sessions_ask_for_the_interactive_share(share, fallback, requirements, rank):
    groups = [{**USER_GROUPS[0], "profiles": [{**USER_GROUPS[0]["profiles"][0], "fallback": fallback}]}]
    checked = helper.check_request(GOOD, groups, MEMBER)
    text = helper.render({**CONFIG, "interactive_share": share}, ALICE, checked, shared_dir="")
    assert f"{requirements}\n" in text
    assert ("rank = TARGET.CondorlabInteractive =?= True" in text) == rank


def test_nodes_the_hub_lost_a_session_on_are_avoided():
    avoid = [["wn2.example.org", 1764500000], ["wn1", 1764500100]]
    checked = helper.check_request({**GOOD, "avoid_nodes": avoid}, USER_GROUPS, MEMBER)
    text = helper.render({**CONFIG, "interactive_share": True}, ALICE, checked, shared_dir="")
    assert (
        'requirements = (TARGET.CondorlabInteractive =?= True) && (OpSys == "LINUX") && '
        '(TARGET.Machine =!= "wn1" || TARGET.LastHeardFrom > 1764500100) && '
        '(TARGET.Machine =!= "wn2.example.org" || TARGET.LastHeardFrom > 1764500000)\n'
    ) in text
    assert "# Not on wn1, wn2.example.org until the collector hears from it again" in text


FAKE_TOKEN_FETCH = """#!/bin/sh
# Records how it was run; answers like condor_token_fetch (the token on stdout).
printf '%s\\n' "$@" > "$0.args"
env > "$0.env"
[ -n "$FAIL" ] && { echo "eyJsecret.part.here"; echo "AUTHENTICATE:1003:Failed to authenticate" >&2; exit 1; }
echo "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
"""


@pytest.fixture
def token_fetch(tmp_path, monkeypatch):
    fake = tmp_path / "condor_token_fetch"
    fake.write_text(FAKE_TOKEN_FETCH)
    fake.chmod(0o755)
    monkeypatch.setattr(helper, "CONDOR_TOKEN_FETCH", str(fake))
    return fake


def test_a_lab_token_is_the_user_s_own_for_read_and_write_only_and_short_lived(token_fetch, capsys):
    helper.token(ALICE, "300")
    answer = json.loads(capsys.readouterr().out)
    assert answer == {"token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl", "lifetime": 300}
    args = Path(f"{token_fetch}.args").read_text().split()
    assert args == ["-lifetime", "300", "-authz", "READ", "-authz", "WRITE"]
    env = Path(f"{token_fetch}.env").read_text()
    assert "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS=FS" in env, "never derived from a token the user keeps"


@pytest.mark.parametrize("lifetime", ["59", "3601", "-1", "5m", "", "300 -authz ADMINISTRATOR"])
def test_a_lab_token_outside_the_contract_s_lifetimes_is_refused(token_fetch, lifetime, capsys):
    with pytest.raises(SystemExit):
        helper.token(ALICE, lifetime)
    assert "token lifetime" in capsys.readouterr().err
    assert not Path(f"{token_fetch}.args").exists(), "nothing was fetched"


def test_a_failed_fetch_says_why_and_never_shows_what_it_printed(token_fetch, monkeypatch, capsys):
    original = helper.token_env  # a fixed environment: FAIL reaches the stub only through it
    monkeypatch.setattr(helper, "token_env", lambda user: {**original(user), "FAIL": "1"})
    with pytest.raises(SystemExit):
        helper.token(ALICE, "300")
    out = capsys.readouterr()
    assert "Failed to authenticate" in out.err and "secret" not in out.err + out.out
