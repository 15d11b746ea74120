//! What `pods up` hands to `podman kube play`, and what it checks afterwards.
//!
//! [`split`] keeps our four Deployments and their ConfigMaps of the rendered overlay (the play
//! file) and turns each of their Secrets into a podman secret (the `data` map, base64 values,
//! which is what podman 4.3's kube play reads for envFrom/secretKeyRef). It refuses a Secret
//! value that is public knowledge (the development values this repository once shipped,
//! RabbitMQ's guest), so no known secret reaches a container. [`inspect`] checks each running
//! container as its manifest says: the user and group of the pod's securityContext, a read-only
//! root filesystem, no added capabilities, and nothing written to the root filesystem
//! (`podman diff` is empty: writes went to volumes only).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_yaml::Value;
use testkit::manifests::{self, str_at};

use super::{Name, Podman, SERVICES};

use testkit::manifests::KNOWN_SECRETS;

/// Paths every container has written by its runtime: runc creates the mount points and
/// /etc/{hosts,resolv.conf,hostname}.
const RUNTIME_PATHS: [&str; 9] =
    ["/etc", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/run", "/run/.containerenv", "/dev", "/proc", "/sys"];

/// The rendered overlay, split for podman.
pub struct Split {
    /// What podman plays: the Deployments (probes with numeric ports, no `ports`) and ConfigMaps.
    pub keep: Vec<Value>,
    /// Each Secret's name and its `data` (base64 values).
    pub secrets: Vec<(String, BTreeMap<String, String>)>,
}

impl Split {
    pub fn play_yaml(&self) -> anyhow::Result<String> {
        let docs: Vec<String> = self.keep.iter().map(serde_yaml::to_string).collect::<Result<_, _>>()?;
        Ok(docs.join("---\n"))
    }

    pub fn deployments(&self) -> usize {
        self.keep.iter().filter(|o| str_at(o, &["kind"]) == "Deployment").count()
    }
}

fn app_of(obj: &Value) -> &str {
    str_at(obj, &["metadata", "labels", "app"])
}

pub fn split(rendered: &[Value]) -> anyhow::Result<Split> {
    let (mut keep, mut secrets, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    for obj in rendered {
        let (kind, name) = (str_at(obj, &["kind"]), str_at(obj, &["metadata", "name"]));
        if !SERVICES.contains(&app_of(obj)) || !matches!(kind, "Deployment" | "ConfigMap" | "Secret") {
            dropped.push(manifests::label(obj));
            continue;
        }
        if kind == "Secret" {
            let values = manifests::secret_data(std::slice::from_ref(obj), name)?.unwrap_or_default();
            let known: Vec<&str> = values
                .iter()
                .filter(|(_, v)| KNOWN_SECRETS.contains(&v.as_str()) || v.contains(":guest@"))
                .map(|(k, _)| k.as_str())
                .collect();
            if !known.is_empty() {
                bail!("Secret {name} keeps the repository's placeholder for {}", known.join(", "));
            }
            secrets.push((name.to_owned(), values.into_iter().map(|(k, v)| (k, B64.encode(v))).collect()));
            continue;
        }
        let mut obj = obj.clone();
        if kind == "Deployment" {
            for c in obj["spec"]["template"]["spec"]["containers"].as_sequence_mut().into_iter().flatten() {
                // podman 4.3 refuses port mappings with hostNetwork ("PortMappings can only be used
                // with Bridge or slirp4netns networking") and a hostNetwork container listens on
                // the host anyway: drop `ports`, after giving the probes the numbers they named.
                for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                    let Some(port) = c.get(probe).and_then(|p| p.get("httpGet")).map(|g| g["port"].clone()) else { continue };
                    if port.is_string() {
                        let number = manifests::probe_port(c, &port)?;
                        c[probe]["httpGet"]["port"] = Value::from(number);
                    }
                }
                if let Some(map) = c.as_mapping_mut() {
                    map.remove("ports");
                }
            }
        }
        keep.push(obj);
    }
    eprintln!("[pods-up] {} objects to play; not run by podman: {}", keep.len(), dropped.join(", "));
    Ok(Split { keep, secrets })
}

/// An httpGet probe of a played Deployment.
pub struct HttpProbe {
    pub service: String,
    pub kind: &'static str,
    pub path: String,
    pub port: u16,
}

/// Every Deployment of the play file with its pod spec and containers.
fn containers(play: &[Value]) -> impl Iterator<Item = (&Value, &Value, &Value)> {
    play.iter().filter(|o| str_at(o, &["kind"]) == "Deployment").flat_map(|obj| {
        let spec = &obj["spec"]["template"]["spec"];
        spec["containers"].as_sequence().into_iter().flatten().map(move |c| (obj, spec, c))
    })
}

/// The httpGet probes of every Deployment, startup first.
pub fn probes(play: &[Value]) -> anyhow::Result<Vec<HttpProbe>> {
    let mut out = Vec::new();
    for (obj, _, c) in containers(play) {
        for kind in ["startup", "liveness", "readiness"] {
            let Some(get) = c.get(format!("{kind}Probe").as_str()).and_then(|p| p.get("httpGet")) else { continue };
            let path = get.get("path").and_then(Value::as_str).unwrap_or("/").to_owned();
            out.push(HttpProbe { service: app_of(obj).to_owned(), kind, path, port: manifests::probe_port(c, &get["port"])? });
        }
    }
    Ok(out)
}

/// Each running container as its manifest says; every problem found, or Ok.
pub fn inspect(podman: &Podman, name: &Name, play: &[Value]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (obj, spec, c) in containers(play) {
        let container = format!("{}-pod-0-{}", str_at(obj, &["metadata", "name"]), str_at(c, &["name"]));
        let info: Vec<serde_json::Value> = serde_json::from_str(&podman.output(&["inspect", &container])?).context("podman inspect")?;
        let info = info.into_iter().next().with_context(|| format!("podman inspect {container}: nothing"))?;
        let (psc, csc) = (&spec["securityContext"], &c["securityContext"]);
        let id_of = |key: &str| csc.get(key).or_else(|| psc.get(key)).and_then(Value::as_u64);
        let want = match (id_of("runAsUser"), id_of("runAsGroup")) {
            (Some(uid), Some(gid)) => Some(format!("{uid}:{gid}")),
            (Some(uid), None) => Some(uid.to_string()),
            (None, _) => None,
        };
        let user = info["Config"]["User"].as_str().unwrap_or_default();
        if let Some(want) = want.filter(|w| w != user) {
            problems.push(format!("{container}: runs as {user:?}, the manifest says {want}"));
        }
        let read_only = info["HostConfig"]["ReadonlyRootfs"].as_bool().unwrap_or(false);
        if csc["readOnlyRootFilesystem"].as_bool() == Some(true) && !read_only {
            problems.push(format!("{container}: root filesystem is writable, the manifest says read-only"));
        }
        let drops_all = csc["capabilities"]["drop"].as_sequence().is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL")));
        let effective = info["EffectiveCaps"].as_array().filter(|caps| !caps.is_empty());
        if let Some(caps) = effective.filter(|_| drops_all) {
            problems.push(format!("{container}: has capabilities {caps:?} (+{}), the manifest drops ALL", info["HostConfig"]["CapAdd"]));
        }
        let changes: serde_json::Value =
            serde_json::from_str(&podman.output(&["diff", "--format", "json", &container])?).unwrap_or_default();
        let mounts: Vec<&str> = info["Mounts"].as_array().into_iter().flatten().filter_map(|m| m["Destination"].as_str()).collect();
        let outside: Vec<&str> = ["changed", "added", "deleted"]
            .iter()
            .flat_map(|k| changes[k].as_array().into_iter().flatten().filter_map(serde_json::Value::as_str))
            .filter(|p| !mounts.iter().any(|m| p == m || p.starts_with(&format!("{}/", m.trim_end_matches('/')))))
            .filter(|p| !RUNTIME_PATHS.contains(p))
            .collect();
        if !outside.is_empty() {
            problems.push(format!("{container}: wrote outside its volumes: {outside:?}"));
        }
        println!("{container}: user {user}, read-only root {read_only}, volumes {mounts:?}");
    }
    for p in &problems {
        eprintln!("[{name}] {p}");
    }
    if !problems.is_empty() {
        bail!("{} problem(s) in the containers of {name}", problems.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"
kind: Deployment
metadata: {name: x-auth, labels: {app: auth}}
spec:
  template:
    spec:
      containers:
        - name: auth
          ports: [{name: http, containerPort: 25000}]
          readinessProbe: {httpGet: {path: /readyz, port: http}}
---
kind: ConfigMap
metadata: {name: x-auth-configmap, labels: {app: auth}}
data: {PORT: "25000"}
---
kind: Service
metadata: {name: x-auth, labels: {app: auth}}
---
kind: Secret
metadata: {name: x-auth-secret, labels: {app: auth}}
stringData: {JWT_SECRET: generated-value}
"#;

    #[test]
    fn keeps_what_podman_plays_and_numbers_the_probes() {
        let split = split(&manifests::parse(RENDERED, "t").unwrap()).unwrap();
        assert_eq!(split.keep.len(), 2);
        assert_eq!(split.deployments(), 1);
        assert!(split.keep[0]["spec"]["template"]["spec"]["containers"][0].get("ports").is_none());
        let probes = probes(&split.keep).unwrap();
        assert_eq!(
            (probes[0].service.as_str(), probes[0].kind, probes[0].path.as_str(), probes[0].port),
            ("auth", "readiness", "/readyz", 25000)
        );
        assert_eq!(split.secrets, [("x-auth-secret".to_owned(), [("JWT_SECRET".to_owned(), B64.encode("generated-value"))].into())]);
    }

    #[test]
    fn refuses_a_known_secret() {
        let text = RENDERED.replace("generated-value", "amqp://u:guest@rabbitmq:5672/");
        assert!(split(&manifests::parse(&text, "t").unwrap()).is_err());
        let text = RENDERED.replace("generated-value", "Auth123");
        assert!(split(&manifests::parse(&text, "t").unwrap()).is_err());
    }
}
