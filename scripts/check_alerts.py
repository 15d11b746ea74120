#!/usr/bin/env python3
"""Prepares the alert rules for promtool and checks that alerts and dashboard read real metrics.

usage: scripts/check_alerts.py OUT_DIR

Writes OUT_DIR/alerts.rules.yaml (the groups of manifests/components/prometheus-operator/
prometheusrule.yaml, the one source of the rules) and a copy of alerts.test.yaml beside it, for
`promtool check rules` and `promtool test rules`. Then checks that every metric an alert or a
panel of dashboard.json reads is one the services export (named in crates/common/src/metrics.rs),
one of RabbitMQ's (rabbitmq_*), or `up`. Exit status 1 on a problem.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "manifests" / "components" / "prometheus-operator"


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    rule = yaml.safe_load((SRC / "prometheusrule.yaml").read_text(encoding="utf-8"))
    groups = rule["spec"]["groups"]
    (out / "alerts.rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    (out / "alerts.test.yaml").write_text((SRC / "alerts.test.yaml").read_text(encoding="utf-8"), encoding="utf-8")

    ours = set(re.findall(r'"((?:http|mp3converter)_[a-z0-9_]+)"', (REPO / "crates/common/src/metrics.rs").read_text(encoding="utf-8")))
    exprs = [r["expr"] for g in groups for r in g["rules"]]
    dashboard = json.loads((SRC / "dashboard.json").read_text(encoding="utf-8"))
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    unknown = set()
    for expr in exprs:
        expr = re.sub(r'"[^"]*"', '""', expr)  # label values are not metric names
        for name in re.findall(r"\b((?:http|mp3converter|rabbitmq)_[a-z0-9_]+|up)\b", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if not (name in ours or base in ours or name.startswith("rabbitmq_") or name == "up"):
                unknown.add(name)
    tests = yaml.safe_load((SRC / "alerts.test.yaml").read_text(encoding="utf-8"))
    tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])}
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    problems = [f"metric read by an alert or the dashboard that nothing exports: {n}" for n in sorted(unknown)]
    problems += [f"alert without a promtool unit test: {a}" for a in sorted(alerts - tested)]
    for p in problems:
        print(p)
    print(f"check_alerts: {len(alerts)} alerts, all tested; {len(exprs)} expressions read known metrics" if not problems else f"check_alerts: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
