"""Prometheus (on the monitoring host) scrapes the hub's metrics with a read:metrics token and every
host's node exporter; condorlab's alert rules pass their promtool unit tests; a session shows up."""

from __future__ import annotations

import json
import time
import urllib.parse

from conftest import hub_client, set_passwords, wait_for

PROMETHEUS = "http://localhost:9090"


def prometheus(cm, path: str, **params) -> dict:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return json.loads(cm.check_output(f"curl -sf '{PROMETHEUS}{path}{query}'"))


def targets(cm) -> dict[str, list[str]]:
    """job -> the health of each of its targets."""
    seen: dict[str, list[str]] = {}
    for target in prometheus(cm, "/api/v1/targets")["data"]["activeTargets"]:
        seen.setdefault(target["labels"]["job"], []).append(target["health"])
    return seen


def value(cm, expr: str) -> float | None:
    result = prometheus(cm, "/api/v1/query", query=expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_the_alert_rules_pass_their_unit_tests(cm):
    out = cm.check_output("cd /etc/prometheus && promtool test rules condorlab.rules.test.yml")
    assert "SUCCESS" in out
    rules = prometheus(cm, "/api/v1/rules")["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert names == {
        "CondorlabHubDown",
        "CondorlabScheddUnreachable",
        "CondorlabSessionStartsFailing",
        "CondorlabShareFull",
    }


def test_prometheus_scrapes_the_hub_and_every_node_it_can_reach(cm):
    assert wait_for(lambda: targets(cm).get("condorlab-hub") == ["up"], 60, interval=3), targets(cm)
    # cm, hub and wn1: wn2 has no inbound path (condorlab_inbound: false), Prometheus cannot pull from it.
    assert wait_for(lambda: targets(cm).get("node") == ["up"] * 3, 60, interval=3), targets(cm)


def test_the_hub_s_metrics_need_the_token_and_the_token_reads_nothing_else(cm, hub):
    ca = (
        "--cacert /etc/prometheus/condorlab-hub-ca.crt --resolve hub.localhost:8443:$(getent hosts hub | cut -d' ' -f1)"
    )
    url = "https://hub.localhost:8443/hub"
    assert cm.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {ca} {url}/metrics") == "403"
    token = '-H "Authorization: token $(cat /etc/prometheus/condorlab-hub.token)"'
    assert cm.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {ca} {token} {url}/metrics") == "200"
    assert cm.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' {ca} {token} {url}/api/users") == "403"
    token_file = cm.file("/etc/prometheus/condorlab-hub.token")
    assert (token_file.user, token_file.group, token_file.mode) == ("root", "prometheus", 0o640)


def test_a_node_exporter_answers_the_monitoring_host_only(outsider, cm):
    assert cm.run("curl -sf -m 5 -o /dev/null http://wn1:9100/metrics").rc == 0
    assert outsider.run("curl -sf -m 5 -o /dev/null http://wn1:9100/metrics").rc != 0, "the firewall drops it"


def test_a_session_is_counted_in_prometheus(outsider, hub, cm, capsys):
    client = hub_client(outsider, hub, set_passwords(hub, ["alice"]))
    stopped = client("stop", "alice")
    started = client("start", "alice", "180", json.dumps({"profile": "physics/small"}))
    assert "ready_after" in started, started
    began = time.monotonic()
    try:
        running = 'sum(condorlab_sessions{state="running", group="physics"})'
        assert wait_for(lambda: (value(cm, running) or 0) >= 1, 90, interval=3)
        seen = time.monotonic() - began
        starts = value(cm, 'sum(condorlab_session_start_seconds_count{group="physics"})')
        assert starts and starts >= 1
        assert value(cm, "condorlab_schedd_up") == 1
        with capsys.disabled():
            print(
                f"\n  [monitoring] a running session counted in Prometheus {seen:.1f} s after it was ready "
                f"(an earlier session stopped in {stopped.get('stopped_after', 0):.1f} s, "
                f"this one ready after {started['ready_after']:.1f} s)"
            )
    finally:
        client("stop", "alice")
