from __future__ import annotations

import re
import sys

import pytest
from ansible.errors import AnsibleFilterError

condor = sys.modules["condorlab_filter_condor"]


def test_renders_sorted_lines():
    knobs = {"UPDATE_INTERVAL": 2, "CONDOR_HOST": "cm", "RunBenchmarks": False, "X": None}
    assert condor.condor_config_lines(knobs) == ["CONDOR_HOST = cm", "RunBenchmarks = False", "UPDATE_INTERVAL = 2"]


def test_lists_and_booleans():
    knobs = {"ALLOW_READ": ["cm", "hub"], "TRUST_UID_DOMAIN": True}
    assert condor.condor_config_lines(knobs) == ["ALLOW_READ = cm, hub", "TRUST_UID_DOMAIN = True"]


def test_empty_value_is_allowed():
    assert condor.condor_config_lines({"STARTD_ATTRS": ""}) == ["STARTD_ATTRS ="]


@pytest.mark.parametrize("name", ["1ABC", "BAD NAME", "A=B", "", "X\nY", "FOO\n"])
def test_bad_names_are_refused(name):
    with pytest.raises(AnsibleFilterError, match="not a valid HTCondor knob name"):
        condor.condor_config_lines({name: 1})


def test_line_break_in_value_is_refused():
    with pytest.raises(AnsibleFilterError, match="START contains a line break"):
        condor.condor_config_lines({"START": "True\nSTART = False"})


def test_unsupported_types_are_refused():
    with pytest.raises(AnsibleFilterError, match="ALLOW_READ is a dict"):
        condor.condor_config_lines({"ALLOW_READ": {"a": 1}})
    with pytest.raises(AnsibleFilterError, match="expected a mapping"):
        condor.condor_config_lines(["A"])


def test_filter_is_registered():
    assert condor.FilterModule().filters()["condor_config_lines"] is condor.condor_config_lines


def test_trailing_backslash_is_refused():
    with pytest.raises(AnsibleFilterError, match="START ends with a backslash"):
        condor.condor_config_lines({"START": "True \\"})


def test_reset_transform_sets_numbers_and_deletes_nulls_in_order():
    attrs = {"RemoteWallClockTime": 0.0, "NumJobStarts": 0, "JobRunCount": None, "CommittedTime": 0}
    assert condor.condor_reset_transform(attrs) == [
        "SET RemoteWallClockTime 0.0",
        "SET NumJobStarts 0",
        "DELETE JobRunCount",
        "SET CommittedTime 0",
    ]
    assert condor.condor_reset_transform({}) == []


@pytest.mark.parametrize("name", ["JobStatus", "jobstatus"])
def test_reset_transform_never_touches_the_job_status(name):
    with pytest.raises(AnsibleFilterError, match=f"{name} must not be reset at submission: the schedd sets it"):
        condor.condor_reset_transform({"RemoteWallClockTime": 0.0, name: 1})


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"Bad Name": 0}, "'Bad Name' is not a ClassAd attribute name"),
        ({"1Attr": 0}, "'1Attr' is not a ClassAd attribute name"),
        ({"X\nSET JobStatus": 0}, "is not a ClassAd attribute name"),
        ({"NumJobStarts": "0\nSET JobStatus 1"}, "the value of NumJobStarts is '0\\nSET JobStatus 1'"),
        ({"NumJobStarts": True}, "the value of NumJobStarts is True"),
        ({"RemoteWallClockTime": float("nan")}, "the value of RemoteWallClockTime is nan"),
    ],
)
def test_reset_transform_refuses_what_would_not_be_a_statement(attrs, message):
    with pytest.raises(AnsibleFilterError, match=re.escape(message)):
        condor.condor_reset_transform(attrs)
    with pytest.raises(AnsibleFilterError, match="expected a mapping"):
        condor.condor_reset_transform(["RemoteWallClockTime"])
