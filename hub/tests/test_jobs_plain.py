"""Values read from the bindings' ClassAds are plain Python values taken while the ad lives."""

from __future__ import annotations

import sys
import types

from condorlab import jobs


class ExprTree:
    def __init__(self, text):
        self.text = text


class Ad(dict):
    def eval(self, key):
        expression = self[key]
        if expression.text == "boom":
            raise ValueError("does not evaluate")
        return 1 if expression.text.startswith("ifthenelse") else types.SimpleNamespace()  # Undefined


def test_expressions_are_evaluated_and_anything_else_is_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "classad", types.SimpleNamespace(ExprTree=ExprTree))
    ad = Ad(
        RequestMemory=ExprTree("ifthenelse(MemoryUsage isnt undefined, MemoryUsage, 1)"),
        HoldReason=ExprTree("undefined"),
        Broken=ExprTree("boom"),
        Owner="carol",
        ClusterId=124,
        TransferringOutput=False,
    )
    assert jobs.plain(ad, "RequestMemory") == 1
    assert jobs.plain(ad, "HoldReason") is None
    assert jobs.plain(ad, "Broken") is None
    assert jobs.plain(ad, "Missing") is None
    assert (jobs.plain(ad, "Owner"), jobs.plain(ad, "ClusterId"), jobs.plain(ad, "TransferringOutput")) == (
        "carol",
        124,
        False,
    )
    assert not any(isinstance(jobs.plain(ad, k), ExprTree) for k in ad), "no expression object leaves the ad"
