//! Cross-checks of the Kubernetes manifests that no schema validator or linter makes, over each
//! rendered kustomization (the first one the base, manifests/):
//!   - every reference resolves: envFrom / env ConfigMaps and Secrets (Secrets may be left to the
//!     deploy script only where components/script-secrets dropped them), volumes' ConfigMaps,
//!     probe and Service target ports, Ingress backends, HPA / ScaledObject targets, KEDA
//!     TriggerAuthentication Secrets, PodDisruptionBudget and Service selectors;
//!   - every object (but the Namespace) is in namespace mp3converter;
//!   - pod hardening: runAsNonRoot, a numeric runAsUser (10001 for our images, as
//!     docker/Dockerfile's USER), no privilege escalation, capabilities dropped, RuntimeDefault
//!     seccomp, liveness and readiness probes, CPU and memory requests and limits, no service
//!     account token;
//!   - SHUTDOWN_GRACE_SECONDS + preStop sleep < terminationGracePeriodSeconds;
//!   - no Ingress path routes /metrics; every service's pod has prometheus.io scrape annotations
//!     naming one of its ports; PodMonitors select pods and name their ports;
//!   - our images are mp3converter/<target>:dev and <target> is a stage of docker/Dockerfile;
//!   - the base: every variable docs/configuration.md lists for a service is set by its
//!     manifests, and nothing undocumented is;
//!   - every later set contains every object of the base, except what a component removes on
//!     purpose (the CPU HPA under KEDA, placeholder Secrets under script-secrets);
//!   - deployment secrets (issue 13): no rendered set carries a Secret object or a value anyone
//!     can read (guest, Auth123, the former placeholders); every Secret a workload names has a
//!     template with empty values in manifests/secret-templates/ (the deploy script makes it);
//!     RabbitMQ takes its users from definitions (no RABBITMQ_DEFAULT_*); with the in-cluster
//!     databases both require a password and no ConfigMap holds a MongoDB URI;
//!   - the cluster's inside: every Ingress has TLS for each of its hosts, none reaches the
//!     RabbitMQ management port; each of our four Deployments has an Egress NetworkPolicy, and
//!     the converter's allows DNS, RabbitMQ and MongoDB only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use serde_yaml::Value;

const NAMESPACE: &str = "mp3converter";
const OUR_UID: i64 = 10001;
const SERVICES: [&str; 4] = ["auth", "gateway", "converter", "notification"];
const WORKLOADS: [&str; 2] = ["Deployment", "StatefulSet"];
use testkit::manifests::KNOWN_SECRETS;
/// The converter parses hostile media: what it may reach (DNS, AMQP, MongoDB).
const CONVERTER_EGRESS_PORTS: [i64; 3] = [53, 5672, 27017];

/// One rendered kustomization: its label (`base`, `keda`, ...) and its objects.
pub struct Set {
    pub label: String,
    pub objects: Vec<Value>,
}

/// What the files beside the manifests say: docker/Dockerfile's stages, the Secret templates,
/// docs/configuration.md's variables per service, and the plain objects of the base.
pub struct Inputs {
    pub targets: BTreeSet<String>,
    pub templates: Vec<Value>,
    pub documented: BTreeMap<&'static str, BTreeSet<String>>,
    pub base_files: Vec<Value>,
}

impl Inputs {
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        let mut targets = BTreeSet::new();
        for df in super::dockerfiles(root)? {
            let text = std::fs::read_to_string(&df).with_context(|| format!("read {}", df.display()))?;
            targets.extend(text.lines().filter_map(stage_name).map(str::to_owned));
        }
        let mut templates = Vec::new();
        for path in super::sorted_files(&root.join("manifests/secret-templates"), |n| n.ends_with(".yaml"))? {
            templates.extend(testkit::manifests::load_file(&path)?);
        }
        let doc = root.join("docs/configuration.md");
        let documented = documented_vars(&std::fs::read_to_string(&doc).with_context(|| format!("read {}", doc.display()))?);
        Ok(Self { targets, templates, documented, base_files: testkit::manifests::load_base(&root.join("manifests"))? })
    }
}

/// `FROM IMAGE AS NAME` (any case): the stage's name.
fn stage_name(line: &str) -> Option<&str> {
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        [from, _, as_, name, ..] if from.eq_ignore_ascii_case("FROM") && as_.eq_ignore_ascii_case("AS") => Some(name),
        _ => None,
    }
}

/// docs/configuration.md: the variables each service reads (every backticked NAME in the first
/// column of a table row; the shared table's second column says who uses it).
fn documented_vars(text: &str) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out: BTreeMap<&'static str, BTreeSet<String>> = SERVICES.iter().map(|s| (*s, BTreeSet::new())).collect();
    let mut section: Option<&str> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            let heading = heading.trim().to_lowercase();
            section = SERVICES.iter().copied().find(|s| heading.starts_with(s)).or(heading.contains("shared").then_some("shared"));
            continue;
        }
        let Some(section) = section.filter(|_| line.starts_with('|')) else { continue };
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let names: Vec<&str> = cells[0].split('`').skip(1).step_by(2).filter(|n| is_var_name(n)).collect();
        if names.is_empty() {
            continue;
        }
        let users = cells.get(1).map(|c| c.to_lowercase()).unwrap_or_default();
        for s in SERVICES {
            let uses = match section {
                "shared" => users == "all" || users.contains(s),
                own => own == s,
            };
            if uses {
                out.entry(s).or_default().extend(names.iter().map(|n| (*n).to_owned()));
            }
        }
    }
    out
}

/// `[A-Z][A-Z0-9_]+`
fn is_var_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_uppercase() && b[1..].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

// --- reading serde_yaml values as the checks need them ---------------------------------------

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn seq_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

fn keys_at<'a>(v: &'a Value, path: &[&str]) -> impl Iterator<Item = &'a str> {
    at(v, path).and_then(Value::as_mapping).into_iter().flat_map(|m| m.keys().filter_map(Value::as_str))
}

fn kind(o: &Value) -> &str {
    str_at(o, &["kind"]).unwrap_or_default()
}

fn name(o: &Value) -> &str {
    str_at(o, &["metadata", "name"]).unwrap_or_default()
}

fn by_kind<'a>(objs: &'a [Value], k: &str) -> BTreeMap<&'a str, &'a Value> {
    objs.iter().filter(|o| kind(o) == k).map(|o| (name(o), o)).collect()
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "None".into(),
        Some(Value::String(s)) => format!("'{s}'"),
        Some(v) => serde_yaml::to_string(v).map_or_else(|_| format!("{v:?}"), |s| s.trim().replace('\n', " ")),
    }
}

/// Whether a selector's matchLabels (every one) are labels of the workload's pod template.
fn selects(selector: Option<&Value>, workload: &Value) -> bool {
    let labels = at(workload, &["spec", "template", "metadata", "labels"]);
    match selector.and_then(Value::as_mapping) {
        Some(m) if !m.is_empty() => m.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)),
        _ => false,
    }
}

/// A label selector with matchLabels and/or matchExpressions (In only) against a pod template.
fn selects_expr(selector: &Value, workload: &Value) -> bool {
    let labels = at(workload, &["spec", "template", "metadata", "labels"]);
    let label = |k: &Value| labels.and_then(|l| l.get(k));
    if let Some(m) = at(selector, &["matchLabels"]).and_then(Value::as_mapping) {
        if m.iter().any(|(k, v)| label(k) != Some(v)) {
            return false;
        }
    }
    for expr in seq_at(selector, &["matchExpressions"]) {
        let values = seq_at(expr, &["values"]);
        let ok = str_at(expr, &["operator"]) == Some("In") && expr.get("key").and_then(label).is_some_and(|l| values.contains(l));
        if !ok {
            return false;
        }
    }
    selector.as_mapping().is_some_and(|m| !m.is_empty())
}

/// Whether a container of the workload has this port, by name or by number.
fn has_port(workload: &Value, port: &Value) -> bool {
    seq_at(workload, &["spec", "template", "spec", "containers"])
        .iter()
        .flat_map(|c| seq_at(c, &["ports"]))
        .any(|p| p.get("name") == Some(port) || p.get("containerPort") == Some(port))
}

/// Whether an Ingress path would send GET /metrics to its backend.
fn routes_metrics(path: &Value) -> bool {
    let p = str_at(path, &["path"]).unwrap_or("/");
    if str_at(path, &["pathType"]) == Some("Exact") {
        return p == "/metrics";
    }
    // Prefix (and ImplementationSpecific, which nginx treats as a prefix): by path segment.
    let p = p.trim_end_matches('/');
    p.is_empty() || p == "/metrics" || "/metrics".starts_with(&format!("{p}/"))
}

/// Every string value (not key) inside a node.
fn strings<'a>(node: &'a Value, out: &mut Vec<&'a str>) {
    match node {
        Value::Mapping(m) => m.values().for_each(|v| strings(v, out)),
        Value::Sequence(s) => s.iter().for_each(|v| strings(v, out)),
        Value::String(s) => out.push(s),
        _ => {}
    }
}

/// The outcome: how many assertions were made and the ones that did not hold.
#[derive(Default)]
pub struct Checker {
    pub problems: Vec<String>,
    pub checks: usize,
}

impl Checker {
    fn expect(&mut self, ok: bool, place: &str, message: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.problems.push(format!("{place}: {}", message()));
        }
    }

    /// Every check over the rendered sets, the first of them the base.
    pub fn run(ctx: &Inputs, sets: &[Set]) -> Self {
        let mut me = Self::default();
        let mut base: Option<BTreeSet<(&str, &str)>> = None;
        for set in sets {
            let objs = &set.objects;
            let kinds: BTreeSet<(&str, &str)> = objs.iter().map(|o| (kind(o), name(o))).collect();
            let secrets_external = !objs.iter().any(|o| kind(o) == "Secret");
            me.check_set(&set.label, objs, secrets_external, &ctx.targets);
            me.check_secrets_and_network(&set.label, objs, &ctx.templates);
            let Some(base) = &base else {
                base = Some(kinds);
                continue;
            };
            for (k, n) in base.difference(&kinds) {
                // Objects a component removes on purpose: the CPU HPA (KEDA) and placeholder Secrets.
                let removable = (*k, *n) == ("HorizontalPodAutoscaler", "converter") || *k == "Secret";
                me.expect(removable, &set.label, || format!("{k}/{n} of the base is missing"));
            }
        }
        me.check_docs(ctx);
        me
    }

    fn check_set(&mut self, label: &str, objs: &[Value], secrets_external: bool, targets: &BTreeSet<String>) {
        let (cms, secrets, services) = (by_kind(objs, "ConfigMap"), by_kind(objs, "Secret"), by_kind(objs, "Service"));
        let workloads: BTreeMap<&str, &Value> = WORKLOADS.iter().flat_map(|k| by_kind(objs, k)).collect();
        for o in objs.iter().filter(|o| kind(o) != "Namespace") {
            let ns = at(o, &["metadata", "namespace"]);
            self.expect(ns.and_then(Value::as_str) == Some(NAMESPACE), &format!("{label} {}/{}", kind(o), name(o)), || {
                format!("namespace is {}, not {NAMESPACE}", show(ns))
            });
        }
        for (n, w) in &workloads {
            self.check_workload(&format!("{label} {}/{n}", kind(w)), w, &cms, &secrets, secrets_external, targets);
        }
        for (n, svc) in &services {
            let place = format!("{label} Service/{n}");
            let selector = at(svc, &["spec", "selector"]);
            let pods: Vec<&Value> = workloads.values().copied().filter(|w| selects(selector, w)).collect();
            self.expect(!pods.is_empty(), &place, || format!("selector {} matches no workload", show(selector)));
            for port in seq_at(svc, &["spec", "ports"]) {
                let tp = port.get("targetPort").or(port.get("port")).unwrap_or(&Value::Null);
                self.expect(pods.iter().all(|w| has_port(w, tp)), &place, || {
                    format!("targetPort {} is not a port of the selected pods", show(Some(tp)))
                });
            }
        }
        for (n, ing) in by_kind(objs, "Ingress") {
            for rule in seq_at(ing, &["spec", "rules"]) {
                for path in seq_at(rule, &["http", "paths"]) {
                    let backend = at(path, &["backend", "service"]).unwrap_or(&Value::Null);
                    let backend_name = str_at(backend, &["name"]).unwrap_or_default();
                    let svc = services.get(backend_name);
                    let place = format!(
                        "{label} Ingress/{n} {}{}",
                        str_at(rule, &["host"]).unwrap_or("None"),
                        str_at(path, &["path"]).unwrap_or("None")
                    );
                    self.expect(svc.is_some(), &place, || format!("backend Service '{backend_name}' does not exist"));
                    // Our services serve /metrics on their HTTP port (RabbitMQ's management UI does not).
                    if SERVICES.contains(&backend_name) {
                        self.expect(!routes_metrics(path), &place, || "routes /metrics: the services' metrics are not public".into());
                    }
                    if let Some(svc) = svc {
                        let number = at(backend, &["port", "number"]);
                        let ok = seq_at(svc, &["spec", "ports"]).iter().any(|p| p.get("port") == number);
                        self.expect(ok, &place, || format!("Service has no port {}", show(number)));
                    }
                }
            }
        }
        // Prometheus finds every service's /metrics: scrape annotations naming a port of the pod,
        // and (Prometheus Operator component) PodMonitors whose ports and selectors resolve.
        for n in SERVICES {
            let Some(w) = workloads.get(n) else { continue };
            let ann = |key: &str| at(w, &["spec", "template", "metadata", "annotations", key]).and_then(Value::as_str);
            let place = format!("{label} {}/{n}", kind(w));
            self.expect(ann("prometheus.io/scrape") == Some("true"), &place, || "no prometheus.io/scrape annotation".into());
            let port = ann("prometheus.io/port").unwrap_or_default();
            let ok = port.parse::<u64>().is_ok_and(|p| has_port(w, &Value::from(p)));
            self.expect(ok, &place, || format!("prometheus.io/port '{port}' is not a port of the pod"));
        }
        for (n, pm) in by_kind(objs, "PodMonitor") {
            let place = format!("{label} PodMonitor/{n}");
            let selector = at(pm, &["spec", "selector"]).unwrap_or(&Value::Null);
            let pods: Vec<&Value> = workloads.values().copied().filter(|w| selects_expr(selector, w)).collect();
            self.expect(!pods.is_empty(), &place, || "selector matches no workload".into());
            for ep in seq_at(pm, &["spec", "podMetricsEndpoints"]) {
                let port = ep.get("port").unwrap_or(&Value::Null);
                self.expect(pods.iter().any(|w| has_port(w, port)), &place, || {
                    format!("port {} is a port of no selected pod", show(Some(port)))
                });
            }
        }
        for k in ["HorizontalPodAutoscaler", "ScaledObject"] {
            for (n, obj) in by_kind(objs, k) {
                let target = str_at(obj, &["spec", "scaleTargetRef", "name"]).unwrap_or_default();
                self.expect(workloads.contains_key(target), &format!("{label} {k}/{n}"), || format!("target '{target}' does not exist"));
            }
        }
        // KEDA objects have no schema in kubernetes-validate: their references are checked here.
        let auths = by_kind(objs, "TriggerAuthentication");
        for (n, so) in by_kind(objs, "ScaledObject") {
            let place = format!("{label} ScaledObject/{n}");
            let triggers = seq_at(so, &["spec", "triggers"]);
            self.expect(!triggers.is_empty(), &place, || "no triggers".into());
            for trigger in triggers {
                let r = str_at(trigger, &["authenticationRef", "name"]);
                self.expect(r.is_none_or(|r| auths.contains_key(r)), &place, || {
                    format!("authenticationRef '{}' does not exist", r.unwrap_or_default())
                });
            }
        }
        for (n, ta) in &auths {
            for r in seq_at(ta, &["spec", "secretTargetRef"]) {
                let (secret, key) = (str_at(r, &["name"]).unwrap_or_default(), str_at(r, &["key"]).unwrap_or_default());
                let ok = secrets_external
                    || secrets.get(secret).is_some_and(|s| keys_at(s, &["data"]).chain(keys_at(s, &["stringData"])).any(|k| k == key));
                self.expect(ok, &format!("{label} TriggerAuthentication/{n}"), || format!("Secret '{secret}' key '{key}' does not exist"));
            }
        }
        for (n, pdb) in by_kind(objs, "PodDisruptionBudget") {
            let selector = at(pdb, &["spec", "selector", "matchLabels"]);
            let pods: Vec<&Value> = workloads.values().copied().filter(|w| selects(selector, w)).collect();
            let place = format!("{label} PodDisruptionBudget/{n}");
            self.expect(!pods.is_empty(), &place, || "selector matches no workload".into());
            let min_available = at(pdb, &["spec", "minAvailable"]).and_then(Value::as_i64).unwrap_or(0);
            for w in pods {
                let replicas = at(w, &["spec", "replicas"]).and_then(Value::as_i64).unwrap_or(1);
                self.expect(replicas > min_available, &place, || format!("minAvailable >= replicas ({replicas}) blocks every eviction"));
            }
        }
    }

    fn check_secrets_and_network(&mut self, label: &str, objs: &[Value], template_objects: &[Value]) {
        let templates: BTreeMap<&str, &Value> = template_objects.iter().map(|o| (name(o), o)).collect();
        for (n, t) in &templates {
            let mut filled: Vec<&str> = at(t, &["stringData"])
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
                .filter(|(_, v)| !matches!(v, Value::Null) && v.as_str() != Some(""))
                .filter_map(|(k, _)| k.as_str())
                .collect();
            filled.sort_unstable();
            let mut data: Vec<&str> = keys_at(t, &["data"]).collect();
            data.sort_unstable();
            filled.extend(data);
            self.expect(filled.is_empty(), &format!("secret-templates {n}"), || format!("a template must carry no value: {filled:?}"));
        }
        for o in objs {
            let place = format!("{label} {}/{}", kind(o), name(o));
            let placeholder = str_at(o, &["metadata", "labels", "mp3converter.dev/placeholder"]) == Some("true");
            self.expect(kind(o) != "Secret" || placeholder, &place, || {
                "the manifests ship a Secret: its values would be public (make it in the deploy script)".into()
            });
            let mut values = Vec::new();
            strings(o, &mut values);
            let known: BTreeSet<&str> =
                KNOWN_SECRETS.iter().copied().filter(|k| values.iter().any(|v| v == k || v.contains(&format!(":{k}@")))).collect();
            self.expect(known.is_empty(), &place, || format!("carries a publicly known secret value: {known:?}"));
            if !WORKLOADS.contains(&kind(o)) {
                continue;
            }
            let Some(pod) = at(o, &["spec", "template", "spec"]) else { continue };
            let mut named = BTreeSet::new();
            for c in seq_at(pod, &["containers"]).iter().chain(seq_at(pod, &["initContainers"])) {
                named.extend(seq_at(c, &["envFrom"]).iter().filter_map(|s| str_at(s, &["secretRef", "name"])));
                named.extend(seq_at(c, &["env"]).iter().filter_map(|e| str_at(e, &["valueFrom", "secretKeyRef", "name"])));
                let rabbit_default = seq_at(c, &["env"])
                    .iter()
                    .filter_map(|e| str_at(e, &["name"]))
                    .any(|n| n == "RABBITMQ_DEFAULT_USER" || n == "RABBITMQ_DEFAULT_PASS");
                self.expect(!rabbit_default, &place, || "RabbitMQ's users come from definitions, not RABBITMQ_DEFAULT_*".into());
            }
            let mounted: BTreeSet<&str> = seq_at(pod, &["volumes"]).iter().filter_map(|v| str_at(v, &["secret", "secretName"])).collect();
            named.extend(&mounted);
            for n in named.iter().filter(|n| **n != "mp3converter-tls") {
                self.expect(templates.contains_key(n), &place, || {
                    format!("Secret '{n}' has no template in manifests/secret-templates/ (what must the deployer create?)")
                });
            }
            match name(o) {
                "rabbitmq" => self
                    .expect(mounted.contains("rabbitmq-definitions"), &place, || "does not mount the rabbitmq-definitions Secret".into()),
                db @ ("mongo" | "mysql") => {
                    let env_from = seq_at(pod, &["containers"]).iter().flat_map(|c| seq_at(c, &["envFrom"]));
                    let secret = format!("{db}-secret");
                    let ok = env_from.filter_map(|s| str_at(s, &["secretRef", "name"])).any(|n| n == secret);
                    self.expect(ok, &place, || format!("{db} without its {secret}: no authentication"));
                }
                _ => {}
            }
        }
        let cms = by_kind(objs, "ConfigMap");
        let rabbit_conf: String = cms
            .get("rabbitmq-configmap")
            .and_then(|cm| at(cm, &["data"]))
            .and_then(Value::as_mapping)
            .into_iter()
            .flat_map(|m| m.values().filter_map(Value::as_str))
            .collect();
        self.expect(rabbit_conf.contains("load_definitions"), &format!("{label} ConfigMap/rabbitmq-configmap"), || {
            "no load_definitions: RabbitMQ would create guest".into()
        });
        if by_kind(objs, "StatefulSet").contains_key("mongo") {
            for (n, cm) in &cms {
                self.expect(!keys_at(cm, &["data"]).any(|k| k == "MONGODB_URI"), &format!("{label} ConfigMap/{n}"), || {
                    "MONGODB_URI of the authenticated in-cluster MongoDB belongs in the service's Secret".into()
                });
            }
        }
        for (n, ing) in by_kind(objs, "Ingress") {
            let place = format!("{label} Ingress/{n}");
            let tls_hosts: BTreeSet<&str> =
                seq_at(ing, &["spec", "tls"]).iter().flat_map(|t| seq_at(t, &["hosts"])).filter_map(Value::as_str).collect();
            for rule in seq_at(ing, &["spec", "rules"]) {
                let host = str_at(rule, &["host"]);
                self.expect(host.is_some_and(|h| tls_hosts.contains(h)), &place, || {
                    format!("host '{}' is served without TLS", host.unwrap_or("None"))
                });
                for path in seq_at(rule, &["http", "paths"]) {
                    let backend = at(path, &["backend", "service"]).unwrap_or(&Value::Null);
                    let ok = str_at(backend, &["name"]) != Some("rabbitmq")
                        && at(backend, &["port", "number"]).and_then(Value::as_i64) != Some(15672);
                    self.expect(ok, &place, || "the RabbitMQ management UI must not be on an ingress".into());
                }
            }
        }
        let policies = by_kind(objs, "NetworkPolicy");
        let deployments = by_kind(objs, "Deployment");
        for svc in SERVICES.into_iter().filter(|s| deployments.contains_key(s)) {
            let place = format!("{label} Deployment/{svc}");
            let egress: Vec<&Value> = policies
                .values()
                .copied()
                .filter(|p| seq_at(p, &["spec", "policyTypes"]).iter().any(|t| t.as_str() == Some("Egress")))
                .filter(|p| str_at(p, &["spec", "podSelector", "matchLabels", "app"]) == Some(svc))
                .collect();
            self.expect(!egress.is_empty(), &place, || "no Egress NetworkPolicy selects it".into());
            if svc == "converter" {
                // A rule without ports allows every port.
                let any = Value::from("any");
                let mut ports: Vec<&Value> = Vec::new();
                for rule in egress.iter().flat_map(|p| seq_at(p, &["spec", "egress"])) {
                    match rule.get("ports") {
                        None => ports.push(&any),
                        Some(_) => ports.extend(seq_at(rule, &["ports"]).iter().map(|p| p.get("port").unwrap_or(&Value::Null))),
                    }
                }
                let allowed = ports.iter().all(|p| p.as_i64().is_some_and(|p| CONVERTER_EGRESS_PORTS.contains(&p)));
                self.expect(!egress.is_empty() && allowed, &place, || {
                    let shown: BTreeSet<String> =
                        ports.iter().map(|p| p.as_i64().map_or_else(|| show(Some(p)), |n| n.to_string())).collect();
                    format!("the converter may reach ports {shown:?}; only {CONVERTER_EGRESS_PORTS:?} (DNS, RabbitMQ, MongoDB)")
                });
            }
        }
    }

    fn check_workload(
        &mut self,
        place: &str,
        w: &Value,
        cms: &BTreeMap<&str, &Value>,
        secrets: &BTreeMap<&str, &Value>,
        secrets_external: bool,
        targets: &BTreeSet<String>,
    ) {
        let pod = at(w, &["spec", "template", "spec"]).unwrap_or(&Value::Null);
        let is = |v: Option<&Value>, b: bool| v.and_then(Value::as_bool) == Some(b);
        self.expect(selects(at(w, &["spec", "selector", "matchLabels"]), w), place, || {
            "selector does not match the pod template's labels".into()
        });
        self.expect(is(pod.get("automountServiceAccountToken"), false), place, || "automountServiceAccountToken is not false".into());
        let psc = pod.get("securityContext").unwrap_or(&Value::Null);
        self.expect(is(psc.get("runAsNonRoot"), true), place, || "pod runAsNonRoot is not true".into());
        self.expect(str_at(psc, &["seccompProfile", "type"]) == Some("RuntimeDefault"), place, || {
            "pod seccompProfile is not RuntimeDefault".into()
        });
        let grace = pod.get("terminationGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
        let volumes: BTreeMap<&str, &Value> =
            seq_at(pod, &["volumes"]).iter().map(|v| (str_at(v, &["name"]).unwrap_or_default(), v)).collect();
        for v in volumes.values() {
            // mysql-initdb is made from init.sql by the deploy script.
            if let Some(cm) = str_at(v, &["configMap", "name"]).filter(|n| *n != "mysql-initdb") {
                self.expect(cms.contains_key(cm), place, || format!("volume ConfigMap '{cm}' does not exist"));
            }
        }
        let claims: BTreeSet<&str> =
            seq_at(w, &["spec", "volumeClaimTemplates"]).iter().filter_map(|t| str_at(t, &["metadata", "name"])).collect();
        for c in seq_at(pod, &["containers"]) {
            let cw = format!("{place} container {}", str_at(c, &["name"]).unwrap_or_default());
            let image = str_at(c, &["image"]).unwrap_or_default();
            let sc = c.get("securityContext").unwrap_or(&Value::Null);
            let uid = sc.get("runAsUser").or(psc.get("runAsUser"));
            self.expect(uid.and_then(Value::as_i64).is_some_and(|u| u > 0), &cw, || {
                format!("runAsUser {} is not a numeric non-root uid", show(uid))
            });
            self.expect(is(sc.get("allowPrivilegeEscalation"), false), &cw, || "allowPrivilegeEscalation is not false".into());
            let drop = seq_at(sc, &["capabilities", "drop"]);
            self.expect(drop.len() == 1 && drop[0].as_str() == Some("ALL"), &cw, || "capabilities do not drop ALL".into());
            for probe in ["livenessProbe", "readinessProbe"] {
                self.expect(c.get(probe).is_some(), &cw, || format!("no {probe}"));
                let handler = ["httpGet", "tcpSocket"].into_iter().find_map(|k| at(c, &[probe, k]));
                if let Some(port) = handler.and_then(|h| h.get("port")).filter(|p| !p.is_null()) {
                    self.expect(has_port(w, port), &cw, || format!("{probe} port {} is not a containerPort", show(Some(port))));
                }
            }
            for part in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    self.expect(at(c, &["resources", part, r]).is_some(), &cw, || format!("no {r} {}", part.trim_end_matches('s')));
                }
            }
            for m in seq_at(c, &["volumeMounts"]) {
                let m = str_at(m, &["name"]).unwrap_or_default();
                self.expect(volumes.contains_key(m) || claims.contains(m), &cw, || format!("volumeMount '{m}' has no volume"));
            }
            for source in seq_at(c, &["envFrom"]) {
                if let Some(n) = str_at(source, &["configMapRef", "name"]) {
                    self.expect(cms.contains_key(n), &cw, || format!("envFrom ConfigMap '{n}' does not exist"));
                }
                if let Some(n) = str_at(source, &["secretRef", "name"]) {
                    self.expect(secrets.contains_key(n) || secrets_external, &cw, || format!("envFrom Secret '{n}' does not exist"));
                }
            }
            if image.starts_with("mp3converter/") {
                self.check_our_container(&cw, c, (uid, grace), &volumes, cms, targets);
            }
        }
    }

    /// The containers of our images: built from docker/Dockerfile, read-only, draining in time.
    fn check_our_container(
        &mut self,
        cw: &str,
        c: &Value,
        (uid, grace): (Option<&Value>, i64),
        volumes: &BTreeMap<&str, &Value>,
        cms: &BTreeMap<&str, &Value>,
        targets: &BTreeSet<String>,
    ) {
        let image = str_at(c, &["image"]).unwrap_or_default();
        let (repo, tag) = image.split_once(':').unwrap_or((image, ""));
        let target = repo.split_once('/').map_or("", |(_, t)| t);
        self.expect(targets.contains(target), cw, || format!("image '{image}': docker/Dockerfile has no stage '{target}'"));
        self.expect(tag == "dev" && str_at(c, &["imagePullPolicy"]) == Some("Never"), cw, || {
            "our images are :dev with imagePullPolicy Never (built in minikube)".into()
        });
        self.expect(uid.and_then(Value::as_i64) == Some(OUR_UID), cw, || {
            format!("runAsUser {} is not docker/Dockerfile's USER {OUR_UID}", show(uid))
        });
        let sc = c.get("securityContext").unwrap_or(&Value::Null);
        self.expect(sc.get("readOnlyRootFilesystem").and_then(Value::as_bool) == Some(true), cw, || {
            "readOnlyRootFilesystem is not true".into()
        });
        let tmp = seq_at(c, &["volumeMounts"]).iter().find(|m| str_at(m, &["mountPath"]) == Some("/tmp"));
        let empty_dir = tmp.and_then(|m| str_at(m, &["name"])).and_then(|n| volumes.get(n)).is_some_and(|v| v.get("emptyDir").is_some());
        self.expect(empty_dir, cw, || "no emptyDir at /tmp".into());
        // The drain time: SHUTDOWN_GRACE_SECONDS of the first envFrom ConfigMap that exists (20 s unset).
        let drain = seq_at(c, &["envFrom"])
            .iter()
            .filter_map(|s| str_at(s, &["configMapRef", "name"]).and_then(|n| cms.get(n)))
            .next()
            .map_or(Some(20), |cm| match at(cm, &["data", "SHUTDOWN_GRACE_SECONDS"]) {
                None => Some(20),
                Some(v) => v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()),
            });
        let pre = seq_at(c, &["lifecycle", "preStop", "exec", "command"]);
        let sleep = match pre {
            [cmd, secs] if cmd.as_str() == Some("sleep") => secs.as_str().and_then(|s| s.parse().ok()).or(secs.as_i64()),
            _ => Some(0),
        };
        let ok = matches!((drain, sleep), (Some(d), Some(s)) if d + s < grace);
        self.expect(ok, cw, || {
            let n = |v: Option<i64>| v.map_or("(not a number)".to_owned(), |v| v.to_string());
            format!("SHUTDOWN_GRACE_SECONDS {} + preStop {}s >= terminationGracePeriodSeconds {grace}", n(drain), n(sleep))
        });
    }

    /// The base: docs/configuration.md and what the manifests set agree, service by service.
    fn check_docs(&mut self, ctx: &Inputs) {
        for s in SERVICES {
            let place = format!("base {s}");
            let docs = &ctx.documented[s];
            let env: BTreeSet<String> = match testkit::manifests::resolve_env(&ctx.base_files, s) {
                Ok(env) => env.into_keys().collect(),
                Err(e) => {
                    self.expect(false, &place, || format!("the manifests do not resolve: {e}"));
                    continue;
                }
            };
            let missing: Vec<&String> = docs.difference(&env).collect();
            self.expect(missing.is_empty(), &place, || format!("documented in docs/configuration.md but not set: {missing:?}"));
            let undocumented: Vec<&String> = env.difference(docs).collect();
            self.expect(undocumented.is_empty(), &place, || format!("set but not documented in docs/configuration.md: {undocumented:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Vec<Value> {
        testkit::manifests::parse(text, "test").unwrap()
    }

    /// A workload that passes every check of a pod, to be broken one field at a time.
    const GOOD: &str = r#"
kind: Deployment
metadata: {name: converter, namespace: mp3converter}
spec:
  selector: {matchLabels: {app: converter}}
  template:
    metadata:
      labels: {app: converter}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "8081"}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 40
      securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: RuntimeDefault}}
      volumes: [{name: tmp, emptyDir: {}}]
      containers:
        - name: converter
          image: mp3converter/converter:dev
          imagePullPolicy: Never
          ports: [{name: health, containerPort: 8081}]
          envFrom: [{configMapRef: {name: converter-configmap}}]
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          livenessProbe: {httpGet: {path: /healthz, port: health}}
          readinessProbe: {httpGet: {path: /readyz, port: health}}
          resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: "1", memory: 256Mi}}
          volumeMounts: [{name: tmp, mountPath: /tmp}]
          lifecycle: {preStop: {exec: {command: [sleep, "5"]}}}
---
kind: ConfigMap
metadata: {name: converter-configmap, namespace: mp3converter}
data: {SHUTDOWN_GRACE_SECONDS: "30"}
"#;

    fn workload_problems(text: &str) -> Vec<String> {
        let objs = yaml(text);
        let mut checker = Checker::default();
        let targets = BTreeSet::from(["converter".to_owned()]);
        checker.check_set("test", &objs, true, &targets);
        checker.problems
    }

    #[test]
    fn a_hardened_workload_passes() {
        assert_eq!(workload_problems(GOOD), Vec::<String>::new());
    }

    #[test]
    fn broken_workloads_are_reported() {
        let cases = [
            ("runAsUser: 10001,", "runAsUser: 0,", "is not a numeric non-root uid"),
            ("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "allowPrivilegeEscalation is not false"),
            ("SHUTDOWN_GRACE_SECONDS: \"30\"", "SHUTDOWN_GRACE_SECONDS: \"36\"", ">= terminationGracePeriodSeconds 40"),
            (
                "port: health}}\n          readinessProbe",
                "port: web}}\n          readinessProbe",
                "livenessProbe port 'web' is not a containerPort",
            ),
            ("image: mp3converter/converter:dev", "image: mp3converter/convertor:dev", "docker/Dockerfile has no stage 'convertor'"),
            ("prometheus.io/port: \"8081\"", "prometheus.io/port: \"9090\"", "prometheus.io/port '9090' is not a port of the pod"),
            ("namespace: mp3converter}\nspec", "namespace: default}\nspec", "namespace is 'default', not mp3converter"),
        ];
        for (good, bad, message) in cases {
            assert!(GOOD.contains(good), "{good}");
            let problems = workload_problems(&GOOD.replacen(good, bad, 1));
            assert!(problems.iter().any(|p| p.contains(message)), "{bad}: expected {message:?} in {problems:?}");
        }
    }

    #[test]
    fn shipped_secrets_and_open_egress_are_reported() {
        let objs = yaml(&format!(
            "{GOOD}---
kind: Secret
metadata: {{name: converter-secret, namespace: mp3converter}}
stringData: {{AMQP_URL: 'amqp://converter:guest@rabbitmq:5672/%2f'}}
---
kind: NetworkPolicy
metadata: {{name: converter-egress, namespace: mp3converter}}
spec:
  podSelector: {{matchLabels: {{app: converter}}}}
  policyTypes: [Egress]
  egress: [{{ports: [{{port: 53}}]}}, {{to: [{{ipBlock: {{cidr: 0.0.0.0/0}}}}]}}]
"
        ));
        let mut checker = Checker::default();
        checker.check_secrets_and_network("test", &objs, &[]);
        let expected = ["the manifests ship a Secret", "publicly known secret value: {\"guest\"}", "the converter may reach ports"];
        for message in expected {
            assert!(checker.problems.iter().any(|p| p.contains(message)), "expected {message:?} in {:?}", checker.problems);
        }
    }

    #[test]
    fn variables_set_but_not_documented_are_reported() {
        let inputs = Inputs { targets: BTreeSet::new(), templates: Vec::new(), documented: documented_vars(""), base_files: yaml(GOOD) };
        let mut checker = Checker::default();
        checker.check_docs(&inputs);
        let undocumented = "base converter: set but not documented in docs/configuration.md: [\"SHUTDOWN_GRACE_SECONDS\"]";
        assert!(checker.problems.iter().any(|p| p == undocumented), "{:?}", checker.problems);
        assert!(checker.problems.iter().any(|p| p.starts_with("base auth: the manifests do not resolve")), "{:?}", checker.problems);
    }

    #[test]
    fn ingress_paths_that_reach_metrics() {
        let path = |p: &str, t: &str| yaml(&format!("kind: X\npath: {p}\npathType: {t}"))[0].clone();
        assert!(routes_metrics(&path("/", "Prefix")));
        assert!(routes_metrics(&path("/metrics/", "Prefix")));
        assert!(!routes_metrics(&path("/metricsx", "Prefix")));
        assert!(!routes_metrics(&path("/upload", "Prefix")));
        assert!(!routes_metrics(&path("/", "Exact")));
    }

    #[test]
    fn documented_variables_by_service() {
        let doc = "## Shared\n| Variable | Used by |\n|---|---|\n| `AMQP_URL` (secret) | gateway, converter |\n| `RUST_LOG` | all |\n\
                   ## auth\n| `JWT_SECRET`, `x` | |\n";
        let vars = documented_vars(doc);
        assert_eq!(vars["auth"], BTreeSet::from(["RUST_LOG".to_owned(), "JWT_SECRET".to_owned()]));
        assert_eq!(vars["converter"], BTreeSet::from(["RUST_LOG".to_owned(), "AMQP_URL".to_owned()]));
        assert_eq!(stage_name("FROM debian:bookworm-slim AS gateway"), Some("gateway"));
        assert_eq!(stage_name("from rust as builder # x"), Some("builder"));
        assert_eq!(stage_name("FROM --platform=x rust AS builder"), None);
    }
}
