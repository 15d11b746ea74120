//! The alert rules as Prometheus reads them (`xtask alert-rules DIR`, dev-up's `--prometheus`,
//! the deployment checks): the groups of the PrometheusRule, the one source of the rules,
//! written as a plain rules file beside a copy of its promtool unit tests, and a check that
//! every metric an alert or a dashboard panel reads is one that something exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_yaml::Value;

/// Where the PrometheusRule, its unit tests and the dashboard live.
fn source_dir() -> PathBuf {
    testkit::manifests::dir().join("components/prometheus-operator")
}

/// What [`write_rules`] found.
pub struct Rules {
    /// The rules file written (`DIR/alerts.rules.yaml`).
    pub file: PathBuf,
    pub alerts: usize,
    pub expressions: usize,
    /// Metrics read that nothing exports, and alerts without a unit test.
    pub problems: Vec<String>,
}

impl Rules {
    /// The last line printed: what check-deploy puts in its summary.
    pub fn summary(&self) -> String {
        match self.problems.len() {
            0 => format!("alert-rules: {} alerts, all tested; {} expressions read known metrics", self.alerts, self.expressions),
            n => format!("alert-rules: {n} problems"),
        }
    }
}

/// Writes `out/alerts.rules.yaml` (the PrometheusRule's groups) and `out/alerts.test.yaml`
/// beside it, for `promtool check rules` and `promtool test rules`, and checks the metrics.
pub fn write_rules(out: &Path) -> anyhow::Result<Rules> {
    let src = source_dir();
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let rule = testkit::manifests::load_file(&src.join("prometheusrule.yaml"))?
        .into_iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("prometheusrule.yaml holds no PrometheusRule")?;
    let groups = rule["spec"]["groups"].as_sequence().context("PrometheusRule without spec.groups")?;
    let file = out.join("alerts.rules.yaml");
    let mut rules_file = serde_yaml::Mapping::new();
    rules_file.insert("groups".into(), Value::Sequence(groups.clone()));
    crate::write(&file, &serde_yaml::to_string(&rules_file)?)?;
    let tests_text = read(&src.join("alerts.test.yaml"))?;
    crate::write(&out.join("alerts.test.yaml"), &tests_text)?;

    let ours = exported_metrics(&read(&testkit::repo_root().join("crates/common/src/metrics.rs"))?);
    let rules: Vec<&Value> = groups.iter().filter_map(|g| g["rules"].as_sequence()).flatten().collect();
    let mut exprs: Vec<String> = rules.iter().filter_map(|r| r["expr"].as_str()).map(str::to_owned).collect();
    let dashboard: serde_json::Value = serde_json::from_str(&read(&src.join("dashboard.json"))?).context("dashboard.json")?;
    let panels = dashboard["panels"].as_array().into_iter().flatten();
    let targets = panels.filter_map(|p| p["targets"].as_array()).flatten();
    exprs.extend(targets.filter_map(|t| t["expr"].as_str()).map(str::to_owned));

    let unknown: BTreeSet<&str> = exprs.iter().flat_map(|e| metrics_read(e)).filter(|m| !known(m, &ours)).collect();
    let tests: Value = serde_yaml::from_str(&tests_text).context("alerts.test.yaml is not YAML")?;
    let cases = tests["tests"].as_sequence().into_iter().flatten();
    let tested: BTreeSet<&str> =
        cases.filter_map(|c| c["alert_rule_test"].as_sequence()).flatten().filter_map(|t| t["alertname"].as_str()).collect();
    let alerts: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    let mut problems: Vec<String> =
        unknown.iter().map(|n| format!("metric read by an alert or the dashboard that nothing exports: {n}")).collect();
    problems.extend(alerts.difference(&tested).map(|a| format!("alert without a promtool unit test: {a}")));
    Ok(Rules { file, alerts: alerts.len(), expressions: exprs.len(), problems })
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Is `name` a metric name of ours (`http_*`, `mp3converter_*`) or RabbitMQ's, or `up`?
fn metric_name(name: &str, rabbitmq: bool) -> bool {
    let prefixes: &[&str] = if rabbitmq { &["http_", "mp3converter_", "rabbitmq_"] } else { &["http_", "mp3converter_"] };
    let rest = prefixes.iter().find_map(|p| name.strip_prefix(p));
    rest.is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
}

/// The metric names the services export: the quoted names in metrics.rs.
fn exported_metrics(source: &str) -> BTreeSet<String> {
    source.split('"').skip(1).step_by(2).filter(|s| metric_name(s, false)).map(str::to_owned).collect()
}

/// The metric names a PromQL expression reads: whole words (label values blanked) that look
/// like ours, RabbitMQ's, or `up`.
fn metrics_read(expr: &str) -> Vec<&str> {
    // The segments outside double quotes: label values are not metric names.
    let outside = expr.split('"').step_by(2);
    let words = outside.flat_map(|s| s.split(|c: char| !(c.is_alphanumeric() || c == '_')));
    words.filter(|w| *w == "up" || metric_name(w, true)).collect()
}

fn known(name: &str, ours: &BTreeSet<String>) -> bool {
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
    ours.contains(name) || ours.contains(base) || name.starts_with("rabbitmq_") || name == "up"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_from_expressions_but_not_from_label_values() {
        let expr = r#"sum(rate(http_request_duration_seconds_bucket{job="mp3converter_x"}[5m])) / up + rabbitmq_queue_messages_ready"#;
        assert_eq!(metrics_read(expr), ["http_request_duration_seconds_bucket", "up", "rabbitmq_queue_messages_ready"]);
        assert!(metrics_read("xhttp_requests_total + http_Requests").is_empty());
        let ours = exported_metrics(r#"pub const A: &str = "http_request_duration_seconds"; const B = "other_total";"#);
        assert!(known("http_request_duration_seconds_bucket", &ours));
        assert!(!known("mp3converter_missing_total", &ours));
    }

    #[test]
    fn the_suites_rules_are_written_and_every_alert_is_tested() {
        let out = std::env::temp_dir().join(format!("xtask-alerts-{}", std::process::id()));
        let rules = write_rules(&out).unwrap();
        assert!(rules.problems.is_empty(), "{:?}", rules.problems);
        assert!(rules.alerts > 0 && rules.expressions > rules.alerts);
        let written: Value = serde_yaml::from_str(&std::fs::read_to_string(&rules.file).unwrap()).unwrap();
        assert!(written["groups"][0]["rules"][0]["alert"].is_string());
        assert!(out.join("alerts.test.yaml").exists());
        std::fs::remove_dir_all(out).unwrap();
    }
}
