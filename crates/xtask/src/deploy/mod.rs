//! `xtask check-deploy`: static checks of everything that ships mp3converter to Kubernetes, with
//! no Docker engine and no cluster. scripts/check-deploy.sh installs the pinned tools (into a
//! virtualenv outside the repository) and runs this.
//!
//! ```text
//!  1. render        kubectl kustomize of manifests/, overlays/in-cluster-db, overlays/keda,
//!                   overlays/prometheus-operator and the combination `xtask minikube up` applies
//!                   with every component (cert-manager's objects, like KEDA's and the Prometheus
//!                   Operator's, have no schema in steps 4/5)
//!  2. cross-check   the checks of manifests.rs on those renders (references, hardening, drain vs
//!                   grace period, docs/configuration.md vs ConfigMaps+Secrets, images vs Dockerfile)
//!  3. manifest_env  testkit::manifests resolves an environment and probes for every service
//!  4./5. kubernetes-validate --strict, for the Kubernetes minikube starts (--k8s-version) and for
//!                   the newest the pinned validator knows (KEDA's, cert-manager's and the
//!                   Prometheus Operator's objects have no schema there: listed as skipped, and
//!                   checked in steps 2 and 5b instead)
//!  5b. alerts       crate::alerts (alerts and dashboard read exported metrics, every alert has a
//!                   unit test), promtool check rules, promtool test rules
//!  6. hadolint on docker/*Dockerfile*; docker_context.rs (.dockerignore keeps every workspace
//!     member, the Dockerfile builds real packages)
//!  7. shellcheck on scripts/*.sh and .ci/run
//!  8. checkov on manifests/ (kubernetes, kustomize, secrets)   9. checkov on docker/
//! ```
//! Skips of checkov checks are justified in .checkov.yaml or next to the resource. Prints one
//! PASS/FAIL line per check (the log of each in .dev/check-deploy/) and fails if any failed.

mod docker_context;
mod manifests;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use serde_yaml::Value;

use self::manifests::Set;

#[derive(clap::Args)]
pub struct Options {
    /// The Kubernetes version minikube runs (as `xtask minikube up` starts it).
    #[arg(long, env = "MINIKUBE_K8S_VERSION", default_value = crate::minikube::K8S_VERSION)]
    k8s_version: String,
    /// The virtualenv holding kubernetes-validate, hadolint and checkov (scripts/check-deploy.sh
    /// installs them there); default ~/.cache/mp3converter/deploy-tools.
    #[arg(long, env = "DEPLOY_TOOLS_VENV")]
    tools_venv: Option<PathBuf>,
}

/// The kustomizations rendered, by label; the last is written by [`render`] itself.
const KUSTOMIZATIONS: [(&str, &str); 5] = [
    ("base", "manifests"),
    ("in-cluster-db", "manifests/overlays/in-cluster-db"),
    ("keda", "manifests/overlays/keda"),
    ("prometheus-operator", "manifests/overlays/prometheus-operator"),
    ("minikube-up-all", ".dev/check-deploy/minikube-up-all"),
];
/// API groups kubernetes-validate has no schema for (KEDA's, the Prometheus Operator's and
/// cert-manager's CRDs): their objects are counted as skipped. Anything else without a schema (a
/// typo in apiVersion) is a failure.
const NO_SCHEMA: [&str; 3] = ["keda.sh/", "monitoring.coreos.com/", "cert-manager.io/"];

pub fn run(opts: Options) -> anyhow::Result<ExitCode> {
    let root = testkit::repo_root();
    let work = root.join(".dev/check-deploy");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("remove {}", work.display()))?;
    }
    std::fs::create_dir_all(work.join("render")).with_context(|| format!("create {}", work.display()))?;
    let venv = opts.tools_venv.unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("mp3converter/deploy-tools")
    });
    let mut r = Runner { root: root.clone(), work: work.clone(), venv, passed: 0, failed: 0 };

    let mut sets = Vec::new();
    r.check("render", |c| render(c, &mut sets));
    // Without kubectl the later checks fall back to the plain files of the base.
    if sets.len() < KUSTOMIZATIONS.len() {
        let objects = testkit::manifests::load_base(&root.join("manifests")).unwrap_or_default();
        sets = vec![Set { label: "base".into(), objects }];
    }
    r.check("cross-check", |c| cross_check(c, &sets));
    r.check("manifest_env", manifest_env_smoke);
    let core = split_core(&work.join("render"), &sets);
    let latest = r.latest_k8s();
    for version in [opts.k8s_version.as_str(), latest.as_deref().unwrap_or("latest")] {
        r.check(&format!("kubernetes-validate-{version}"), |c| validate_k8s(c, version, &core));
    }
    r.check("alerts", alerts);
    r.check("hadolint", hadolint);
    r.check("docker-context", |c| {
        let report = docker_context::check(&c.root)?;
        c.log_lines(report.problems.iter());
        c.detail = report.summary;
        ensure!(report.problems.is_empty(), "the Docker build context misses what the build needs");
        Ok(())
    });
    r.check("shellcheck", shellcheck);
    r.check("checkov-manifests", |c| checkov(c, "manifests", &["kubernetes", "kustomize", "secrets"]));
    r.check("checkov-docker", |c| checkov(c, "docker", &["dockerfile", "secrets"]));

    let total = r.passed + r.failed;
    if r.failed > 0 {
        println!("check-deploy: {} of {total} checks FAILED (logs in .dev/check-deploy/)", r.failed);
        return Ok(ExitCode::FAILURE);
    }
    println!("check-deploy: all {total} checks passed");
    Ok(ExitCode::SUCCESS)
}

struct Runner {
    root: PathBuf,
    work: PathBuf,
    venv: PathBuf,
    passed: usize,
    failed: usize,
}

/// One check under way: what it logs, and the one-line detail of its PASS/FAIL line.
struct Check {
    root: PathBuf,
    venv: PathBuf,
    log: String,
    detail: String,
}

impl Runner {
    fn check(&mut self, name: &str, f: impl FnOnce(&mut Check) -> anyhow::Result<()>) {
        let mut c = Check { root: self.root.clone(), venv: self.venv.clone(), log: String::new(), detail: String::new() };
        let start = Instant::now();
        let result = f(&mut c);
        let took = start.elapsed().as_secs();
        if let Err(e) = &result {
            let _ = writeln!(c.log, "{e:#}");
        }
        let _ = std::fs::write(self.work.join(format!("{name}.log")), &c.log);
        let verdict = if result.is_ok() { "PASS" } else { "FAIL" };
        println!("{verdict}  {name:<28} {} ({took}s)", c.detail);
        if result.is_ok() {
            self.passed += 1;
        } else {
            self.failed += 1;
            let lines: Vec<&str> = c.log.lines().collect();
            for line in &lines[lines.len().saturating_sub(40)..] {
                println!("      | {line}");
            }
        }
    }

    /// The newest Kubernetes the pinned kubernetes-validate knows ("Defaults to 1.37.0.").
    fn latest_k8s(&self) -> Option<String> {
        let out = Command::new(self.venv.join("bin/kubernetes-validate")).arg("--help").output().ok()?;
        let help = String::from_utf8_lossy(&out.stdout);
        let rest = &help[help.find("Defaults to ")? + "Defaults to ".len()..];
        let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        Some(version.trim_end_matches('.').to_owned()).filter(|v| !v.is_empty())
    }
}

impl Check {
    /// Runs a command in the repository root, its output into the log; fails on a non-zero exit.
    /// Returns its standard output.
    fn run(&mut self, cmd: &mut Command) -> anyhow::Result<String> {
        let (ok, stdout) = self.output(cmd)?;
        ensure!(ok, "{cmd:?} failed");
        Ok(stdout)
    }

    /// As [`Check::run`], but a non-zero exit is returned, not an error.
    fn output(&mut self, cmd: &mut Command) -> anyhow::Result<(bool, String)> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if cmd.get_current_dir().is_none() {
            cmd.current_dir(&self.root);
        }
        let out = cmd.output().with_context(|| format!("run {program}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        self.log.push_str(&stdout);
        self.log.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), stdout))
    }

    fn log_lines<T: std::fmt::Display>(&mut self, lines: impl Iterator<Item = T>) {
        for line in lines {
            let _ = writeln!(self.log, "{line}");
        }
    }

    /// A tool of the virtualenv scripts/check-deploy.sh installs.
    fn tool(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.venv.join("bin").join(name);
        ensure!(path.exists(), "{} is missing: scripts/check-deploy.sh installs it", path.display());
        Ok(path)
    }
}

/// Whether a program is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// A kustomization of manifests/ and the named components, `up` being the way from its folder
/// to the repository root (kustomize wants relative paths).
pub fn kustomization(header: &str, up: &str, components: &[&str]) -> String {
    let mut text =
        format!("{header}apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {up}/manifests\ncomponents:\n");
    for c in components {
        let _ = writeln!(text, "  - {up}/manifests/components/{c}");
    }
    text
}

/// Every file under a folder, recursively.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// The files of a folder (not its subfolders) whose names pass `keep`, sorted.
fn sorted_files(dir: &Path, keep: impl Fn(&str) -> bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && keep(&path.file_name().unwrap_or_default().to_string_lossy()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// docker/'s Dockerfiles, as paths relative to the repository root.
fn dockerfiles(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = walk(&root.join("docker"))?
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("Dockerfile")))
        .filter_map(|p| p.strip_prefix(root).ok().map(Path::to_path_buf))
        .collect();
    files.sort();
    Ok(files)
}

/// Objects as a multi-document YAML file whose every document is JSON: serde_yaml writes YAML
/// 1.2, in which `off` is a string, but the Python tools read YAML 1.1, in which it is false;
/// JSON is read the same by both.
fn to_yaml(objects: &[&Value]) -> anyhow::Result<String> {
    let docs: Result<Vec<String>, _> = objects.iter().map(serde_json::to_string_pretty).collect();
    Ok(docs?.iter().map(|d| format!("---\n{d}\n")).collect())
}

// --- 1. render --------------------------------------------------------------------------------
fn render(c: &mut Check, sets: &mut Vec<Set>) -> anyhow::Result<()> {
    if !on_path("kubectl") {
        c.detail = "kubectl (which has kustomize built in) is missing".into();
        bail!("{}", c.detail);
    }
    // The combination `xtask minikube up --in-cluster-db --keda --cert-manager` applies; it lives
    // inside the repository (.dev/ is gitignored) because kustomize wants relative paths.
    let all = c.root.join(KUSTOMIZATIONS[4].1);
    std::fs::create_dir_all(&all)?;
    let components = crate::minikube::components(&crate::minikube::Components { in_cluster_db: true, keda: true, cert_manager: true });
    std::fs::write(all.join("kustomization.yaml"), kustomization("", "../../..", &components))?;
    let mut objects = 0;
    for (label, dir) in KUSTOMIZATIONS {
        let rendered = testkit::manifests::kustomize(&c.root.join(dir))?;
        let _ = writeln!(c.log, "{dir}: {} objects", rendered.len());
        objects += rendered.len();
        let path = c.root.join(".dev/check-deploy/render").join(format!("{label}.yaml"));
        std::fs::write(&path, to_yaml(&rendered.iter().collect::<Vec<_>>())?)?;
        sets.push(Set { label: label.into(), objects: rendered });
    }
    c.detail = format!("{} kustomizations, {objects} objects", KUSTOMIZATIONS.len());
    Ok(())
}

// --- 2. cross-checks --------------------------------------------------------------------------
fn cross_check(c: &mut Check, sets: &[Set]) -> anyhow::Result<()> {
    let ctx = manifests::Inputs::read(&c.root)?;
    let checker = manifests::Checker::run(&ctx, sets);
    c.log_lines(checker.problems.iter().map(|p| format!("  {p}")));
    let problems = checker.problems.len();
    c.detail = format!("{} of {} assertions hold, {problems} problems", checker.checks - problems, checker.checks);
    c.log_lines(std::iter::once(&c.detail.clone()));
    ensure!(problems == 0, "the manifests do not hold together");
    Ok(())
}

// --- 3. manifest_env --------------------------------------------------------------------------
/// testkit::manifests' environment of every service (what `xtask manifest-env` prints and the
/// container runner starts with): cluster hosts mapped, probes resolved.
fn manifest_env_smoke(c: &mut Check) -> anyhow::Result<()> {
    use testkit::manifests::{load_base, probes, service_env, HostMap};
    let maps = HostMap::parse(&["rabbitmq=127.0.0.1", "host.minikube.internal=127.0.0.1", "auth=127.0.0.1"])?;
    let objects = load_base(&testkit::manifests::dir())?;
    let mut lines = 0;
    for svc in ["auth", "gateway", "converter", "notification"] {
        let env = service_env(svc, &maps)?;
        c.log_lines(env.iter().map(|(k, v)| format!("{k}={v}")));
        // A mapped value must not keep a cluster-only host.
        let unmapped: Vec<&String> = env
            .iter()
            .filter(|(_, v)| v.contains("rabbitmq:") || v.contains("host.minikube.internal") || v.starts_with("auth:"))
            .map(|(k, _)| k)
            .collect();
        ensure!(unmapped.is_empty(), "{svc}: a host was not mapped in {unmapped:?}");
        lines += env.len();
        let probes: Vec<String> = probes(&objects, svc)?.iter().map(ToString::to_string).collect();
        c.log_lines(probes.iter());
        let has = |kind: &str, path: &str| {
            probes
                .iter()
                .any(|l| l.strip_prefix(&format!("{kind} {path} ")).is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        };
        ensure!(
            has("liveness", "/healthz") && has("readiness", "/readyz"),
            "{svc}: expected 'liveness /healthz PORT' and 'readiness /readyz PORT'"
        );
    }
    c.detail = format!("4 services, {lines} variables, probes resolved");
    Ok(())
}

// --- 4./5. kubernetes-validate ----------------------------------------------------------------
/// The objects with a schema, one file per rendered set: (file, objects, objects skipped).
struct CoreFile {
    path: PathBuf,
    objects: usize,
    skipped: usize,
}

fn split_core(dir: &Path, sets: &[Set]) -> Vec<CoreFile> {
    let mut files: Vec<CoreFile> = sets
        .iter()
        .filter_map(|set| {
            let (core, crd): (Vec<&Value>, Vec<&Value>) = set.objects.iter().partition(|o| {
                let api = o.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
                !NO_SCHEMA.iter().any(|g| api.starts_with(g))
            });
            let path = dir.join(format!("{}.core.yml", set.label));
            std::fs::write(&path, to_yaml(&core).ok()?).ok()?;
            Some(CoreFile { path, objects: core.len(), skipped: crd.len() })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn validate_k8s(c: &mut Check, version: &str, files: &[CoreFile]) -> anyhow::Result<()> {
    let total: usize = files.iter().map(|f| f.objects).sum();
    let skipped: usize = files.iter().map(|f| f.skipped).sum();
    let mut cmd = Command::new(c.tool("kubernetes-validate")?);
    cmd.args(["--strict", "--kubernetes-version", version, "--quiet"]).args(files.iter().map(|f| &f.path));
    let (ok, out) = c.output(&mut cmd)?;
    if !ok || out.contains("Couldn't find schema") {
        c.detail = format!("Kubernetes {version}: FAILED");
        bail!("kubernetes-validate found invalid objects");
    }
    c.detail = format!(
        "Kubernetes {version}: {total} objects valid in {} renders, {skipped} KEDA/Prometheus Operator/cert-manager CRD objects skipped (no schema)",
        files.len()
    );
    Ok(())
}

// --- 5b. alert rules and dashboard ------------------------------------------------------------
fn alerts(c: &mut Check) -> anyhow::Result<()> {
    if !on_path("promtool") {
        c.detail = "promtool missing (scripts/deps.sh installs Debian's prometheus)".into();
        bail!("{}", c.detail);
    }
    let rules = crate::alerts::write_rules(&c.root.join(".dev/check-deploy/alerts"))?;
    c.log_lines(rules.problems.iter().chain([&rules.summary()]));
    c.detail = rules.summary().trim_start_matches("alert-rules: ").to_owned();
    ensure!(rules.problems.is_empty(), "the alerts or the dashboard read what nothing exports, or an alert has no unit test");
    c.run(Command::new("promtool").args(["check", "rules"]).arg(&rules.file))?;
    let dir = rules.file.parent().context("the rules file's folder")?;
    c.run(Command::new("promtool").args(["test", "rules", "alerts.test.yaml"]).current_dir(dir))?;
    c.detail = format!("{}; promtool check + unit tests pass", c.detail);
    Ok(())
}

// --- 6. hadolint ------------------------------------------------------------------------------
fn hadolint(c: &mut Check) -> anyhow::Result<()> {
    let files = dockerfiles(&c.root)?;
    if files.is_empty() {
        c.detail = "no Dockerfile under docker/".into();
        bail!("{}", c.detail);
    }
    c.detail = format!("{} Dockerfile(s), findings below", files.len());
    c.run(Command::new(c.tool("hadolint")?).args(["--failure-threshold", "info"]).args(&files))?;
    c.detail = format!("{} Dockerfile(s), 0 findings", files.len());
    Ok(())
}

// --- 7. shellcheck ----------------------------------------------------------------------------
fn shellcheck(c: &mut Check) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = sorted_files(&c.root.join("scripts"), |n| n.ends_with(".sh"))?;
    files.extend(Some(c.root.join(".ci/run")).filter(|p| p.is_file()));
    let files: Vec<&Path> = files.iter().filter_map(|p| p.strip_prefix(&c.root).ok()).collect();
    if !on_path("shellcheck") {
        c.detail = "shellcheck missing".into();
        bail!("{}", c.detail);
    }
    c.detail = format!("{} scripts, findings below", files.len());
    c.run(Command::new("shellcheck").arg("-x").args(&files))?;
    c.detail = format!("{} scripts, 0 findings", files.len());
    Ok(())
}

// --- 8./9. checkov ----------------------------------------------------------------------------
fn checkov(c: &mut Check, dir: &str, frameworks: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(c.tool("checkov")?);
    cmd.args(["-d", dir, "--config-file", ".checkov.yaml", "--framework"]).args(frameworks);
    let (ok, out) = c.output(&mut cmd)?;
    let totals = checkov_totals(&out);
    c.detail = format!("{} passed, {} failed, {} skipped ({} frameworks)", totals[0], totals[1], totals[2], totals[3]);
    ensure!(ok && totals[3] > 0 && totals[1] == 0, "checkov failed");
    Ok(())
}

/// Passed, failed and skipped checks summed over checkov's "Passed checks: P, Failed checks: F,
/// Skipped checks: S" lines, and how many such lines (frameworks) there were.
fn checkov_totals(out: &str) -> [u64; 4] {
    let mut totals = [0; 4];
    for line in out.lines().filter(|l| l.contains("Passed checks:")) {
        let fields: Vec<&str> = line.split([':', ',']).collect();
        for (i, field) in [1, 3, 5].into_iter().enumerate() {
            totals[i] += fields.get(field).and_then(|f| f.trim().parse::<u64>().ok()).unwrap_or(0);
        }
        totals[3] += 1;
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkov_summaries_are_summed() {
        let out = "kubernetes scan results:\n\nPassed checks: 3000, Failed checks: 0, Skipped checks: 20\n\
                   secrets scan results:\n\nPassed checks: 168, Failed checks: 2, Skipped checks: 4\n";
        assert_eq!(checkov_totals(out), [3168, 2, 24, 2]);
        assert_eq!(checkov_totals("no scan"), [0, 0, 0, 0]);
    }

    #[test]
    fn the_kustomization_of_every_component() {
        let text = kustomization("", "../../..", &["keda", "script-secrets"]);
        assert_eq!(
            text,
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../../manifests\ncomponents:\n  \
             - ../../../manifests/components/keda\n  - ../../../manifests/components/script-secrets\n"
        );
    }
}
