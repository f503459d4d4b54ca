from __future__ import annotations

import base64
import hashlib
import os
import stat
import sys

import pytest

from .helpers import run_module

module = sys.modules["condorlab_modules_condor_signing_key"]


@pytest.fixture
def keydir(tmp_path):
    path = tmp_path / "passwords.d"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def store_cred(tmp_path, keydir):
    """A stand-in for condor_store_cred that stores stdin as the key."""
    script = tmp_path / "condor_store_cred"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\numask 077\ncat > {keydir}/POOL\n')
    script.chmod(0o755)
    return script


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generates_missing_key(keydir, store_cred, capsys):
    failed, result = run_module(module, {"directory": str(keydir), "store_cred": str(store_cred)}, capsys)
    assert not failed
    assert result["changed"] and result["action"] == "generated"
    key = (keydir / "POOL").read_bytes()
    assert len(key) >= 48
    assert result["fingerprint"] == hashlib.sha256(key).hexdigest()
    assert (store_cred.parent / "args").read_text().split() == ["add", "-c", "-i", "-"]
    assert mode_of(keydir / "POOL") == 0o600


def test_existing_key_is_kept(keydir, store_cred, capsys):
    (keydir / "POOL").write_bytes(b"existing")
    os.chmod(keydir / "POOL", 0o600)
    failed, result = run_module(module, {"directory": str(keydir), "store_cred": str(store_cred)}, capsys)
    assert not failed and not result["changed"]
    assert (keydir / "POOL").read_bytes() == b"existing"
    assert not (store_cred.parent / "args").exists()


def test_two_generated_keys_differ(tmp_path, capsys):
    keys = []
    for n in range(2):
        d = tmp_path / f"d{n}"
        d.mkdir()
        script = tmp_path / f"sc{n}"
        script.write_text(f"#!/bin/sh\ncat > {d}/POOL\n")
        script.chmod(0o755)
        run_module(module, {"directory": str(d), "store_cred": str(script)}, capsys)
        keys.append((d / "POOL").read_bytes())
    assert keys[0] != keys[1]


def test_installs_supplied_key(keydir, capsys):
    content = b"\x01\x02secret\xff"
    args = {"directory": str(keydir), "content_b64": base64.b64encode(content).decode()}
    failed, result = run_module(module, args, capsys)
    assert not failed and result["changed"] and result["action"] == "installed"
    assert (keydir / "POOL").read_bytes() == content
    assert mode_of(keydir / "POOL") == 0o600
    failed, result = run_module(module, args, capsys)
    assert not failed and not result["changed"]


def test_replaces_different_key_and_never_returns_it(keydir, capsys):
    (keydir / "POOL").write_bytes(b"old")
    args = {"directory": str(keydir), "content_b64": base64.b64encode(b"new-key").decode()}
    failed, result = run_module(module, args, capsys)
    assert not failed and result["action"] == "replaced"
    assert (keydir / "POOL").read_bytes() == b"new-key"
    assert "new-key" not in repr(result) and args["content_b64"] not in repr(result)


def test_check_mode_writes_nothing(keydir, store_cred, capsys):
    failed, result = run_module(
        module, {"directory": str(keydir), "store_cred": str(store_cred)}, capsys, check_mode=True
    )
    assert not failed and result["changed"]
    assert not (keydir / "POOL").exists()
    args = {"directory": str(keydir), "content_b64": base64.b64encode(b"k").decode()}
    failed, result = run_module(module, args, capsys, check_mode=True)
    assert not failed and result["changed"] and not (keydir / "POOL").exists()


def test_loose_permissions_are_tightened(keydir, capsys):
    (keydir / "POOL").write_bytes(b"k")
    os.chmod(keydir / "POOL", 0o644)
    args = {"directory": str(keydir), "content_b64": base64.b64encode(b"k").decode()}
    failed, result = run_module(module, args, capsys)
    assert not failed and result["changed"] and result["action"] == "permissions"
    assert mode_of(keydir / "POOL") == 0o600


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"content_b64": "not base64!"}, "content_b64"),
        ({"content_b64": ""}, "content_b64"),
        ({"name": "../etc"}, "name"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_input_names_the_field(keydir, capsys, args, field):
    failed, result = run_module(module, {"directory": str(keydir), **args}, capsys)
    assert failed
    assert result["msg"].startswith(f"{field}:")
    assert list(keydir.iterdir()) == []


def test_missing_directory(tmp_path, capsys):
    failed, result = run_module(module, {"directory": str(tmp_path / "nope")}, capsys)
    assert failed and "install HTCondor first" in result["msg"]


def test_store_cred_failure_is_reported(keydir, tmp_path, capsys):
    script = tmp_path / "fail"
    # Like condor_store_cred, it reads the secret before it fails.
    script.write_text("#!/bin/sh\ncat >/dev/null\necho broken >&2\nexit 3\n")
    script.chmod(0o755)
    failed, result = run_module(module, {"directory": str(keydir), "store_cred": str(script)}, capsys)
    assert failed and "rc=3" in result["msg"] and "broken" in result["msg"], result


def test_check_mode_before_htcondor_is_installed(tmp_path, capsys):
    failed, result = run_module(module, {"directory": str(tmp_path / "nope")}, capsys, check_mode=True)
    assert not failed and result["changed"] and result["action"] == "generated"


def test_only_the_pool_key_can_be_generated(keydir, store_cred, capsys):
    failed, result = run_module(
        module, {"directory": str(keydir), "store_cred": str(store_cred), "name": "SITE"}, capsys
    )
    assert failed and result["msg"].startswith("name:") and "content_b64" in result["msg"]
    assert list(keydir.iterdir()) == []


def test_store_cred_writing_elsewhere_is_reported(tmp_path, store_cred, capsys):
    other = tmp_path / "other"
    other.mkdir()
    failed, result = run_module(module, {"directory": str(other), "store_cred": str(store_cred)}, capsys)
    assert failed and result["msg"].startswith("directory:") and "SEC_PASSWORD_DIRECTORY" in result["msg"]


def test_check_mode_reports_loose_permissions_without_fixing_them(keydir, capsys):
    (keydir / "POOL").write_bytes(b"k")
    os.chmod(keydir / "POOL", 0o640)
    args = {"directory": str(keydir), "content_b64": base64.b64encode(b"k").decode()}
    failed, result = run_module(module, args, capsys, check_mode=True)
    assert not failed and result["changed"] and result["action"] == "permissions"
    assert mode_of(keydir / "POOL") == 0o640
