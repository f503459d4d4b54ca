import sys
import types

import pytest
from condorlab import seal
from condorlab.contract import ATTRS


def held(cluster=12, owner="alice", server="alice/default", **extra):
    return {
        "ClusterId": cluster,
        "ProcId": 0,
        "Owner": owner,
        "JobStatus": 5,
        "HoldReasonCode": 15,
        ATTRS.session: True,
        ATTRS.server: server,
        **extra,
    }


class FakeSchedd:
    def __init__(self, jobs, older=()):
        self.jobs, self.older, self.done = jobs, list(older), []

    def query(self, constraint, projection):
        if constraint.startswith(f"{ATTRS.sealed} =?= true"):
            return [{"ClusterId": c} for c in self.older]
        return self.jobs

    def edit(self, constraint, attr, value):
        self.done.append(("edit", constraint, attr, value))

    def act(self, action, constraint, reason=None):
        self.done.append((action, constraint))

    def reschedule(self):
        self.done.append(("reschedule",))


@pytest.fixture(autouse=True)
def fake_bindings(monkeypatch):
    module = types.SimpleNamespace(JobAction=types.SimpleNamespace(Remove="remove", Release="release"))
    monkeypatch.setitem(sys.modules, "htcondor", module)


def test_the_hub_s_held_job_is_sealed_then_released():
    schedd = FakeSchedd([held()])
    assert seal.seal(schedd, "alice", "default", 12) == {"sealed": 12, "removed": []}
    kinds = [step[0] for step in schedd.done]
    assert kinds == ["edit", "release", "reschedule"], schedd.done
    edit = schedd.done[0]
    assert edit[2:] == (ATTRS.sealed, "true") and 'Owner == "alice"' in edit[1] and "ClusterId == 12" in edit[1]


def test_an_older_sealed_job_of_the_same_server_goes_first():
    schedd = FakeSchedd([held()], older=[9])
    assert seal.seal(schedd, "alice", "default", 12)["removed"] == [9]
    action, constraint = schedd.done[0]
    assert action == "remove" and "ClusterId != 12" in constraint and '"alice/default"' in constraint


@pytest.mark.parametrize(
    ("job", "why"),
    [
        (held(owner="bob"), "its owner is 'bob'"),
        (held(server="alice/named-x"), "names server"),
        (held(**{ATTRS.session: None}), "not a session job"),
        (held(**{ATTRS.sealed: True}), "sealed already"),
        (held(JobStatus=1), "not held as submitted"),
        (held(HoldReasonCode=21), "not held as submitted"),
    ],
)
def test_anything_but_that_job_is_refused_and_nothing_changes(job, why):
    schedd = FakeSchedd([job])
    with pytest.raises(seal.SealError, match=why):
        seal.seal(schedd, "alice", "default", 12)
    assert schedd.done == []


def test_a_missing_job_is_refused():
    with pytest.raises(seal.SealError, match="not one queued job"):
        seal.seal(FakeSchedd([]), "alice", "default", 12)


@pytest.mark.parametrize(
    "args",
    [["alice", "default"], ["Alice;rm", "default", "12"], ["alice", "../x", "12"], ["alice", "default", "12 || true"]],
)
def test_arguments_outside_the_contract_are_refused(args):
    with pytest.raises(seal.SealError):
        seal.parse_args(args)


def test_arguments_are_parsed():
    assert seal.parse_args(["erin.lee", "named-lab2", "42"]) == ("erin.lee", "named-lab2", 42)
