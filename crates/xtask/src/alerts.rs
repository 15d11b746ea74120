//! The alert rules for promtool: the groups of the PrometheusRule
//! (manifests/components/prometheus-operator/prometheusrule.yaml, their one source) written as a
//! Prometheus rules file, with the promtool unit tests beside it, and the check that every metric
//! an alert or a panel of the dashboard reads is one that something exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_yaml::Value;

/// Writes DIR/alerts.rules.yaml and DIR/alerts.test.yaml (for `promtool check rules` and, run in
/// DIR, `promtool test rules alerts.test.yaml`) and returns the rules file. Fails when an alert
/// or the dashboard reads a metric the services (crates/common/src/metrics.rs), RabbitMQ
/// (`rabbitmq_*`) or Prometheus (`up`) do not export, or when an alert has no unit test.
pub fn write_rules(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = testkit::repo_root();
    let src = root.join("manifests/components/prometheus-operator");
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
    let rule: Value = serde_yaml::from_str(&read(&src.join("prometheusrule.yaml"))?).context("prometheusrule.yaml")?;
    let groups =
        rule.get("spec").and_then(|s| s.get("groups")).and_then(Value::as_sequence).context("prometheusrule.yaml has no spec.groups")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let rules_file = dir.join("alerts.rules.yaml");
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("groups".into(), Value::Sequence(groups.clone()));
    std::fs::write(&rules_file, serde_yaml::to_string(&doc)?).with_context(|| format!("write {}", rules_file.display()))?;
    let tests_text = read(&src.join("alerts.test.yaml"))?;
    std::fs::write(dir.join("alerts.test.yaml"), &tests_text).context("write alerts.test.yaml")?;

    let ours = quoted_metric_names(&read(&root.join("crates/common/src/metrics.rs"))?);
    let rules: Vec<&Value> = groups.iter().flat_map(|g| g.get("rules").and_then(Value::as_sequence).into_iter().flatten()).collect();
    let mut exprs: Vec<String> = rules.iter().filter_map(|r| r.get("expr").and_then(Value::as_str)).map(str::to_owned).collect();
    let dashboard: serde_json::Value = serde_json::from_str(&read(&src.join("dashboard.json"))?).context("dashboard.json")?;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        exprs.extend(panel["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str()).map(str::to_owned));
    }
    let mut unknown = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(&blank_strings(expr)) {
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            if !(ours.contains(name) || ours.contains(base) || name.starts_with("rabbitmq_") || name == "up") {
                unknown.insert(name.to_owned());
            }
        }
    }
    let tests: Value = serde_yaml::from_str(&tests_text).context("alerts.test.yaml")?;
    let tested: BTreeSet<&str> = seq(tests.get("tests"))
        .iter()
        .flat_map(|case| seq(case.get("alert_rule_test")))
        .filter_map(|t| t.get("alertname").and_then(Value::as_str))
        .collect();
    let alerts: BTreeSet<&str> = rules.iter().filter_map(|r| r.get("alert").and_then(Value::as_str)).collect();
    let mut problems: Vec<String> =
        unknown.iter().map(|n| format!("metric read by an alert or the dashboard that nothing exports: {n}")).collect();
    problems.extend(alerts.difference(&tested).map(|a| format!("alert without a promtool unit test: {a}")));
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(rules_file)
}

fn seq(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

const OUR_PREFIXES: [&str; 2] = ["http_", "mp3converter_"];

fn is_metric_tail(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The metric names written as string literals (`"http_…"`, `"mp3converter_…"`).
fn quoted_metric_names(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = source;
    while let Some(i) = rest.find('"') {
        rest = &rest[i + 1..];
        if let Some(end) = rest.find('"') {
            let inner = &rest[..end];
            if OUR_PREFIXES.iter().any(|p| inner.strip_prefix(p).is_some_and(is_metric_tail)) {
                names.insert(inner.to_owned());
                rest = &rest[end + 1..];
            }
        }
    }
    names
}

/// The expression with every "label value" emptied: label values are not metric names.
fn blank_strings(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find('"') {
        out.push_str(&rest[..i]);
        match rest[i + 1..].find('"') {
            Some(end) => {
                out.push_str("\"\"");
                rest = &rest[i + 1 + end + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The words of a PromQL expression that name a metric of ours, RabbitMQ's, or `up`.
fn metric_names(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| *w == "up" || OUR_PREFIXES.iter().chain(&["rabbitmq_"]).any(|p| w.strip_prefix(p).is_some_and(is_metric_tail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_not_metric_names() {
        let expr = r#"sum(rate(http_requests_total{path="mp3converter_fake"}[5m])) / up"#;
        let blanked = blank_strings(expr);
        let names: Vec<&str> = metric_names(&blanked).collect();
        assert_eq!(names, ["http_requests_total", "up"]);
        assert!(metric_names("xhttp_requests mp3converter_Jobs").next().is_none());
    }

    #[test]
    fn metric_names_come_from_string_literals() {
        let names = quoted_metric_names(r#"const A: &str = "http_requests_total"; let b = "other"; "mp3converter_jobs_total""#);
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["http_requests_total", "mp3converter_jobs_total"]);
    }
}
