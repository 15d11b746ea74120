//! Reading the Kubernetes manifests (`manifests/`): the objects of a YAML file, of the base
//! folders, or of a kustomization rendered by `kubectl kustomize`; the environment and the probes
//! a Deployment gives its container, resolved as the kubelet does. The one reader the manifest
//! consistency test, the deployment checks and the container runner (crates/xtask) share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use serde_yaml::Value;

/// Secret values anyone can read, which no shipped manifest may hold: RabbitMQ's default
/// account, dev-seed.sql's development password, and the placeholders this repository used to
/// deploy.
pub const KNOWN_SECRETS: [&str; 6] = [
    "guest",
    "Auth123",
    "dev-placeholder-jwt-secret-change-me-not-for-production",
    "dev-placeholder-root-password",
    "placeholder-gmail-app-password",
    "dev-placeholder-download-link-secret-not-for-production",
];

/// The repository's `manifests/` folder.
pub fn dir() -> PathBuf {
    crate::repo_root().join("manifests")
}

/// Every object (a mapping with a `kind`) of a multi-document YAML text.
pub fn parse(text: &str, source: &str) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).with_context(|| format!("{source}: not YAML"))?;
        if value.get("kind").is_some() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The objects of one YAML file.
pub fn load_file(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// The objects `kubectl kustomize DIR` renders (Debian's kubernetes-client provides kubectl).
pub fn kustomize(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let out = Command::new("kubectl").arg("kustomize").arg(dir).output().context("run kubectl kustomize (Debian's kubernetes-client)")?;
    if !out.status.success() {
        bail!("kubectl kustomize {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    parse(&String::from_utf8_lossy(&out.stdout), &format!("kustomize {}", dir.display()))
}

/// Folders of `manifests/` that are not part of what `kubectl apply -k manifests/` deploys as-is.
const NOT_BASE: [&str; 2] = ["components", "overlays"];

/// Every object of the base folders of `dir` (`manifests/<folder>/*.yaml`, in path order):
/// `components/` and `overlays/` are not applied, and kustomization files are not objects.
pub fn load_base(dir: &Path) -> anyhow::Result<Vec<Value>> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    let mut objects = Vec::new();
    for path in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let top = rel.components().next().and_then(|c| c.as_os_str().to_str()).unwrap_or_default();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if NOT_BASE.contains(&top) || matches!(name, "kustomization.yaml" | "kustomization.yml") {
            continue;
        }
        objects.extend(load_file(&path)?);
    }
    Ok(objects)
}

/// `kind/name` of an object, for messages.
pub fn label(obj: &Value) -> String {
    format!("{}/{}", str_at(obj, &["kind"]), str_at(obj, &["metadata", "name"]))
}

/// The string at a path of mapping keys, or "".
pub fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    path.iter().try_fold(obj, |v, k| v.get(*k)).and_then(Value::as_str).unwrap_or_default()
}

/// The object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects.iter().find(|o| str_at(o, &["kind"]) == kind && str_at(o, &["metadata", "name"]) == name)
}

/// The Deployment (or StatefulSet) named `service`.
pub fn workload<'a>(objects: &'a [Value], service: &str) -> anyhow::Result<&'a Value> {
    if let Some(obj) = find(objects, "Deployment", service).or_else(|| find(objects, "StatefulSet", service)) {
        return Ok(obj);
    }
    let mut names: Vec<&str> = objects
        .iter()
        .filter(|o| matches!(str_at(o, &["kind"]), "Deployment" | "StatefulSet"))
        .map(|o| str_at(o, &["metadata", "name"]))
        .collect();
    names.sort_unstable();
    bail!("no Deployment or StatefulSet named {service:?} (there are: {})", names.join(", "))
}

/// The container named `service` of a workload, else its first.
pub fn container<'a>(workload: &'a Value, service: &str) -> anyhow::Result<&'a Value> {
    let containers = workload["spec"]["template"]["spec"]["containers"].as_sequence().map(Vec::as_slice).unwrap_or_default();
    containers
        .iter()
        .find(|c| str_at(c, &["name"]) == service)
        .or_else(|| containers.first())
        .with_context(|| format!("{}: no containers", label(workload)))
}

/// A scalar as the text a container sees (ConfigMap values are strings; numbers tolerated).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim_end().to_owned(),
    }
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping().into_iter().flatten().map(|(k, v)| (scalar(k), scalar(v))).collect()
}

/// A ConfigMap's `data`.
pub fn configmap_data(objects: &[Value], name: &str) -> Option<BTreeMap<String, String>> {
    find(objects, "ConfigMap", name).map(|cm| string_map(&cm["data"]))
}

/// A Secret's values: its base64 `data`, with `stringData` merged over it (as the API server does).
pub fn secret_data(objects: &[Value], name: &str) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    let Some(secret) = find(objects, "Secret", name) else { return Ok(None) };
    let mut out = BTreeMap::new();
    for (k, v) in string_map(&secret["data"]) {
        let bytes = B64.decode(v.as_bytes()).with_context(|| format!("{}: data.{k} is not base64", label(secret)))?;
        let text = String::from_utf8(bytes).with_context(|| format!("{}: data.{k} is not UTF-8 text", label(secret)))?;
        out.insert(k, text);
    }
    out.extend(string_map(&secret["stringData"]));
    Ok(Some(out))
}

/// Kubernetes' `$(VAR)` expansion: defined variables are substituted, `$$` is a literal `$`,
/// an undefined reference stays as written.
pub fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        let reference = rest.strip_prefix("$(").and_then(|r| {
            let end = r.find(')')?;
            let name = &r[..end];
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            valid.then_some((name, end + 3))
        });
        match reference {
            Some((name, len)) => {
                out.push_str(env.get(name).map_or(&rest[..len], String::as_str));
                rest = &rest[len..];
            }
            None => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The environment a service's Deployment gives its container, resolved as the kubelet does:
/// every `envFrom` source in order (a ConfigMap's data, a Secret's `data` and `stringData`, with
/// the optional prefix; later sources win), then the explicit `env` entries (`value` with
/// `$(VAR)` expansion, `configMapKeyRef`, `secretKeyRef`), which win over envFrom.
pub fn resolve_env(objects: &[Value], service: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let obj = workload(objects, service)?;
    let c = container(obj, service)?;
    let source_data = |kind: &str, name: &str| -> anyhow::Result<Option<BTreeMap<String, String>>> {
        if kind == "ConfigMap" {
            Ok(configmap_data(objects, name))
        } else {
            secret_data(objects, name)
        }
    };
    let optional = |r: &Value| r["optional"].as_bool().unwrap_or(false);
    let mut env = BTreeMap::new();
    for source in c["envFrom"].as_sequence().into_iter().flatten() {
        let prefix = str_at(source, &["prefix"]);
        let (kind, reference) = match (source.get("configMapRef"), source.get("secretRef")) {
            (Some(r), _) => ("ConfigMap", r),
            (None, Some(r)) => ("Secret", r),
            _ => bail!("{}: unsupported envFrom source {source:?}", label(obj)),
        };
        let name = str_at(reference, &["name"]);
        match source_data(kind, name)? {
            Some(data) => env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
            None if optional(reference) => {}
            None => bail!("{}: envFrom refers to {kind} {name:?}, which no manifest defines", label(obj)),
        }
    }
    for entry in c["env"].as_sequence().into_iter().flatten() {
        let name = str_at(entry, &["name"]).to_owned();
        if let Some(value) = entry.get("value") {
            let value = expand(&scalar(value), &env);
            env.insert(name, value);
            continue;
        }
        let value_from = &entry["valueFrom"];
        let (kind, reference) = match (value_from.get("configMapKeyRef"), value_from.get("secretKeyRef")) {
            (Some(r), _) => ("ConfigMap", r),
            (None, Some(r)) => ("Secret", r),
            _ if value_from.is_null() => {
                env.insert(name, String::new());
                continue;
            }
            _ => bail!("{}: env {name}: only value, configMapKeyRef and secretKeyRef are supported", label(obj)),
        };
        let (source, key) = (str_at(reference, &["name"]), str_at(reference, &["key"]));
        match source_data(kind, source)?.and_then(|mut d| d.remove(key)) {
            Some(value) => {
                env.insert(name, value);
            }
            None if optional(reference) => {}
            None => bail!("{}: env {name} refers to {kind} {source:?} key {key:?}, which is not defined", label(obj)),
        }
    }
    Ok(env)
}

/// Host names rewritten in values (`--map HOST=ADDR[:PORT]`), and only where a host can stand:
/// the host part of a URL (`amqp://user:pw@rabbitmq:5672/%2f`, `mongodb://h1,h2/`) and the whole
/// value of a `*_HOST` / `*_ADDRESS` / `*_ADDR` variable (`auth:5000`). So `auth=127.0.0.1`
/// changes AUTH_SVC_ADDRESS but not MYSQL_DB=auth nor MYSQL_USER=auth_user. An ADDR with a port
/// replaces the port too (where there was one).
#[derive(Debug, Default, Clone)]
pub struct HostMap(BTreeMap<String, (String, Option<String>)>);

impl HostMap {
    /// Parses `HOST=ADDR` / `HOST=ADDR:PORT` pairs (`[::1]:PORT` for IPv6).
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> anyhow::Result<Self> {
        let mut maps = BTreeMap::new();
        for pair in pairs {
            let pair = pair.as_ref();
            let (host, addr) = pair
                .split_once('=')
                .filter(|(h, a)| !h.is_empty() && !a.is_empty())
                .with_context(|| format!("--map {pair:?}: expected HOST=ADDR or HOST=ADDR:PORT"))?;
            let (ip, port) = if addr.starts_with('[') {
                let end = addr.find(']').with_context(|| format!("--map {pair:?}: unclosed ["))? + 1;
                (&addr[..end], addr[end..].strip_prefix(':'))
            } else if addr.matches(':').count() == 1 {
                addr.split_once(':').map(|(i, p)| (i, Some(p))).unwrap_or((addr, None))
            } else {
                (addr, None)
            };
            if let Some(p) = port.filter(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
                bail!("--map {pair:?}: port {p:?} is not a number");
            }
            maps.insert(host.to_lowercase(), (ip.to_owned(), port.map(str::to_owned)));
        }
        Ok(Self(maps))
    }

    fn host_port(&self, hostport: &str) -> String {
        if hostport.starts_with('[') {
            return hostport.to_owned();
        }
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        let Some((new_host, new_port)) = self.0.get(&host.to_lowercase()) else { return hostport.to_owned() };
        match port {
            Some(p) => format!("{new_host}:{}", new_port.as_deref().unwrap_or(p)),
            None => new_host.clone(),
        }
    }

    fn host_list(&self, hosts: &str) -> String {
        hosts.split(',').map(|h| self.host_port(h)).collect::<Vec<_>>().join(",")
    }

    /// `value` of variable `key` with the mapped hosts replaced.
    pub fn apply(&self, key: &str, value: &str) -> String {
        if self.0.is_empty() {
            return value.to_owned();
        }
        if let Some((scheme, rest)) = value.split_once("://") {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(end);
            let (userinfo, hosts) = match authority.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), authority),
            };
            return format!("{scheme}://{userinfo}{}{tail}", self.host_list(hosts));
        }
        if ["_HOST", "_ADDRESS", "_ADDR"].iter().any(|s| key.ends_with(s)) {
            return self.host_list(value);
        }
        value.to_owned()
    }
}

/// The environment of `service` in the repository's base manifests, hosts mapped.
pub fn service_env(service: &str, maps: &HostMap) -> anyhow::Result<BTreeMap<String, String>> {
    let env = resolve_env(&load_base(&dir())?, service)?;
    Ok(env.into_iter().map(|(k, v)| (k.clone(), maps.apply(&k, &v))).collect())
}

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    pub const ALL: [Self; 3] = [Self::Liveness, Self::Readiness, Self::Startup];

    pub fn name(self) -> &'static str {
        match self {
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
            Self::Startup => "startup",
        }
    }
}

/// What a probe does; ports are numbers (named container ports resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Http { path: String, port: u16 },
    Tcp { port: u16 },
    Grpc { port: u16 },
    Exec(Vec<String>),
}

/// One probe of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub action: ProbeAction,
}

impl std::fmt::Display for Probe {
    /// `liveness /healthz 8081`, `readiness tcp 5672`, `liveness exec CMD...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind.name();
        match &self.action {
            ProbeAction::Http { path, port } => write!(f, "{kind} {path} {port}"),
            ProbeAction::Tcp { port } => write!(f, "{kind} tcp {port}"),
            ProbeAction::Grpc { port } => write!(f, "{kind} grpc {port}"),
            ProbeAction::Exec(cmd) => write!(f, "{kind} exec {}", cmd.join(" ")),
        }
    }
}

/// The number a probe's `port` names: a number, or a named `containerPort` of the container.
pub fn probe_port(container: &Value, port: &Value) -> anyhow::Result<u16> {
    if let Some(n) = port.as_u64().or_else(|| port.as_str().and_then(|s| s.parse().ok())) {
        return u16::try_from(n).with_context(|| format!("probe port {n} is out of range"));
    }
    let name = port.as_str().unwrap_or_default();
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| str_at(p, &["name"]) == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
        .with_context(|| format!("{}: probe port {port:?} is not a named containerPort", str_at(container, &["name"])))
}

/// The probes of one container, liveness first.
pub fn container_probes(container: &Value) -> anyhow::Result<Vec<Probe>> {
    let mut probes = Vec::new();
    for kind in ProbeKind::ALL {
        let probe = &container[format!("{}Probe", kind.name()).as_str()];
        let action = if let Some(get) = probe.get("httpGet") {
            let path = get.get("path").and_then(Value::as_str).unwrap_or("/").to_owned();
            ProbeAction::Http { path, port: probe_port(container, &get["port"])? }
        } else if let Some(tcp) = probe.get("tcpSocket") {
            ProbeAction::Tcp { port: probe_port(container, &tcp["port"])? }
        } else if let Some(grpc) = probe.get("grpc") {
            ProbeAction::Grpc { port: probe_port(container, &grpc["port"])? }
        } else if let Some(exec) = probe.get("exec") {
            ProbeAction::Exec(exec["command"].as_sequence().into_iter().flatten().map(scalar).collect())
        } else {
            continue;
        };
        probes.push(Probe { kind, action });
    }
    Ok(probes)
}

/// The probes of a service's container in the objects given.
pub fn probes(objects: &[Value], service: &str) -> anyhow::Result<Vec<Probe>> {
    container_probes(container(workload(objects, service)?, service)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_defined_references_only() {
        let env = BTreeMap::from([("A".to_owned(), "x".to_owned())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$-$(", &env), "x-$(B)-$(A)-$-$(");
    }

    #[test]
    fn maps_hosts_only_where_a_host_stands() {
        let maps = HostMap::parse(&["auth=127.0.0.1:5001", "rabbitmq=127.0.0.1"]).unwrap();
        assert_eq!(maps.apply("AUTH_SVC_ADDRESS", "auth:5000"), "127.0.0.1:5001");
        assert_eq!(maps.apply("MYSQL_DB", "auth"), "auth");
        assert_eq!(maps.apply("AMQP_URL", "amqp://u:p@rabbitmq:5672/%2f"), "amqp://u:p@127.0.0.1:5672/%2f");
        assert_eq!(maps.apply("MONGODB_URI", "mongodb://auth,rabbitmq:1/x"), "mongodb://127.0.0.1,127.0.0.1:1/x");
        assert!(HostMap::parse(&["auth=1.2.3.4:x"]).is_err());
        assert!(HostMap::parse(&["auth"]).is_err());
    }

    #[test]
    fn resolves_env_from_sources_and_entries() {
        let objects = parse(
            r#"
kind: ConfigMap
metadata: {name: cm}
data: {A: "1", B: two}
---
kind: Secret
metadata: {name: s}
data: {C: c2VjcmV0}
stringData: {D: plain}
---
kind: Deployment
metadata: {name: svc}
spec:
  template:
    spec:
      containers:
        - name: svc
          envFrom: [{configMapRef: {name: cm}}, {secretRef: {name: s}, prefix: S_}, {secretRef: {name: gone, optional: true}}]
          env:
            - {name: E, value: "$(B)-x"}
            - {name: F, valueFrom: {configMapKeyRef: {name: cm, key: A}}}
          ports: [{name: http, containerPort: 8080}]
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          readinessProbe: {tcpSocket: {port: 9}}
"#,
            "test",
        )
        .unwrap();
        let env = resolve_env(&objects, "svc").unwrap();
        let want: BTreeMap<String, String> = [("A", "1"), ("B", "two"), ("S_C", "secret"), ("S_D", "plain"), ("E", "two-x"), ("F", "1")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(env, want);
        let lines: Vec<String> = probes(&objects, "svc").unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["liveness /healthz 8080", "readiness tcp 9"]);
        assert!(resolve_env(&objects, "other").is_err());
    }
}
