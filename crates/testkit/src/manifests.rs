//! Reading the Kubernetes manifests (`manifests/`): the objects of a YAML file, of the base
//! folders, or of a kustomization rendered by `kubectl kustomize`. The one reader the manifest
//! consistency test, the deployment checks and the container runner (crates/xtask) share.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_yaml::Value;

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
