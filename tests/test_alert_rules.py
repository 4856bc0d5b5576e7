"""config/prometheus-alerts.yml names only metrics the daemon exports (so that renaming one
breaks a test, not an operator's alerting), and every rule has an expression."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from switch.metrics import Metrics

RULES = Path(__file__).resolve().parent.parent / "config" / "prometheus-alerts.yml"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _family(sample_name: str) -> str:
    for suffix in _SUFFIXES:
        if sample_name.endswith(suffix):
            return sample_name.removesuffix(suffix)
    return sample_name


def test_alert_rules_name_exported_metrics() -> None:
    text = RULES.read_text(encoding="utf-8")
    used = {_family(name) for name in re.findall(r"\bswitchd_[a-z_]+", text)}
    exported = {f.name for f in text_string_to_metric_families(Metrics().render().decode())}
    assert used, "the rules name no switchd metric"
    assert used <= exported, f"not exported by the daemon: {sorted(used - exported)}"


def test_every_alert_has_an_expression() -> None:
    text = RULES.read_text(encoding="utf-8")
    alerts = re.findall(r"^\s*- alert: (\w+)$", text, re.M)
    assert len(alerts) == len(set(alerts)) >= 5
    assert len(re.findall(r"^\s+expr: ", text, re.M)) == len(alerts)
