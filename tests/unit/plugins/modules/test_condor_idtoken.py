from __future__ import annotations

import base64
import json
import os
import stat
import sys
import time

import pytest

from .helpers import run_module

module = sys.modules["condorlab_modules_condor_idtoken"]


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def make_token(sub="condor@pool", iss="pool", kid="POOL", scope=None, iat=None, exp=None) -> str:
    payload = {"sub": sub, "iss": iss, "iat": int(iat if iat is not None else time.time()), "jti": "x"}
    if scope:
        payload["scope"] = scope
    if exp is not None:
        payload["exp"] = int(exp)
    return f"{b64({'alg': 'HS256', 'kid': kid})}.{b64(payload)}.c2lnbmF0dXJl"


@pytest.fixture
def bed(tmp_path):
    keys = tmp_path / "passwords.d"
    keys.mkdir()
    key = keys / "POOL"
    key.write_bytes(b"k")
    old = time.time() - 3600
    os.utime(key, (old, old))
    tokens = tmp_path / "tokens.d"
    tokens.mkdir()
    # A stand-in for condor_token_create: prints a token built from its arguments.
    fake = tmp_path / "condor_token_create"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import sys, json, base64, time\n"
        "a = sys.argv[1:]\n"
        "open(%r, 'a').write(' '.join(a) + '\\n')\n"
        "ident = a[a.index('-identity') + 1]; kid = a[a.index('-key') + 1]\n"
        "scopes = [a[i + 1] for i, x in enumerate(a) if x == '-authz']\n"
        "p = {'sub': ident, 'iss': 'pool', 'iat': int(time.time()), 'jti': 'j'}\n"
        "if scopes: p['scope'] = ' '.join('condor:/' + s for s in scopes)\n"
        "if '-lifetime' in a: p['exp'] = int(time.time()) + int(a[a.index('-lifetime') + 1])\n"
        "e = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip('=')\n"
        "print(e({'alg': 'HS256', 'kid': kid}) + '.' + e(p) + '.c2ln')\n" % str(tmp_path / "calls")
    )
    fake.chmod(0o755)

    class Bed:
        path = tokens / "daemon"
        calls = tmp_path / "calls"

        def args(self, **extra):
            return {
                "path": str(self.path),
                "identity": "condor@pool",
                "issuer": "pool",
                "key_directory": str(keys),
                "token_create": str(fake),
                **extra,
            }

        def ncalls(self):
            return len(self.calls.read_text().splitlines()) if self.calls.exists() else 0

    return Bed()


def test_mints_missing_token(bed, capsys):
    failed, result = run_module(module, bed.args(), capsys)
    assert not failed and result["changed"] and result["reason"] == "no token yet"
    assert stat.S_IMODE(os.stat(bed.path).st_mode) == 0o600
    assert result["claims"]["sub"] == "condor@pool" and result["claims"]["kid"] == "POOL"
    token = bed.path.read_text().strip()
    assert token not in json.dumps(result)


def test_second_run_changes_nothing(bed, capsys):
    run_module(module, bed.args(authz=["READ", "ADVERTISE_STARTD"]), capsys)
    before = bed.path.read_text()
    failed, result = run_module(module, bed.args(authz=["ADVERTISE_STARTD", "READ"]), capsys)
    assert not failed and not result["changed"]
    assert bed.path.read_text() == before and bed.ncalls() == 1


@pytest.mark.parametrize(
    ("token_kwargs", "reason"),
    [
        ({"sub": "someone@pool"}, "identity differs"),
        ({"kid": "OTHER"}, "signing key differs"),
        ({"iss": "elsewhere"}, "issuer differs"),
        ({"scope": "condor:/READ"}, "scopes differ"),
        ({"exp": time.time() + 10**6}, "token expires but no lifetime was asked"),
        ({"iat": time.time() - 7200}, "signing key is newer than the token"),
    ],
)
def test_stale_tokens_are_reminted(bed, capsys, token_kwargs, reason):
    bed.path.write_text(make_token(**token_kwargs))
    failed, result = run_module(module, bed.args(), capsys)
    assert not failed and result["changed"] and result["reason"] == reason
    assert bed.ncalls() == 1


def test_lifetime_and_renewal(bed, capsys):
    bed.path.write_text(make_token(exp=time.time() + 3600))
    failed, result = run_module(module, bed.args(lifetime=86400 * 7), capsys)
    assert not failed and result["reason"] == "token expires soon"
    assert "-lifetime 604800" in bed.calls.read_text()
    failed, result = run_module(module, bed.args(lifetime=86400 * 7), capsys)
    assert not failed and not result["changed"]


def test_garbage_file_is_replaced(bed, capsys):
    bed.path.write_text("not a token")
    failed, result = run_module(module, bed.args(), capsys)
    assert not failed and result["changed"] and result["reason"] == "the file does not hold a token"


def test_check_mode_mints_nothing(bed, capsys):
    failed, result = run_module(module, bed.args(), capsys, check_mode=True)
    assert not failed and result["changed"]
    assert not bed.path.exists() and bed.ncalls() == 0


def test_absent_removes(bed, capsys):
    run_module(module, bed.args(), capsys)
    failed, result = run_module(module, bed.args(state="absent"), capsys)
    assert not failed and result["changed"] and not bed.path.exists()
    failed, result = run_module(module, bed.args(state="absent"), capsys)
    assert not failed and not result["changed"]


def test_missing_key_is_a_clear_error(bed, capsys):
    failed, result = run_module(module, bed.args(key="NOPE"), capsys)
    assert failed and result["msg"].startswith("key:") and "does not exist" in result["msg"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"authz": ["READ", "EVERYTHING"]}, "authz"),
        ({"identity": "condor"}, "identity"),
        ({"lifetime": -5}, "lifetime"),
    ],
)
def test_bad_input_names_the_field(bed, capsys, extra, field):
    failed, result = run_module(module, bed.args(**extra), capsys)
    assert failed and result["msg"].startswith(f"{field}:")
    assert not bed.path.exists()


def test_failed_mint_is_reported(bed, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'Failed to read key' >&2\nexit 2\n")
    broken.chmod(0o755)
    failed, result = run_module(module, bed.args(token_create=str(broken)), capsys)
    assert failed and "rc=2" in result["msg"] and not bed.path.exists()


def test_check_mode_before_the_key_exists(bed, capsys):
    failed, result = run_module(module, bed.args(key="NOT_YET"), capsys, check_mode=True)
    assert not failed and result["changed"] and result["reason"] == "signing key not installed yet"


def test_check_mode_reports_loose_permissions_without_fixing_them(bed, capsys):
    run_module(module, bed.args(), capsys)
    os.chmod(bed.path, 0o644)
    failed, result = run_module(module, bed.args(), capsys, check_mode=True)
    assert not failed and result["changed"] and result["reason"] == "permissions"
    assert stat.S_IMODE(os.stat(bed.path).st_mode) == 0o644
