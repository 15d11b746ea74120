//! `xtask manifest-env SERVICE`: the environment (or the probes) a service's Kubernetes
//! Deployment gives its container, read from the base manifests by testkit::manifests (the one
//! resolution the consistency test and `pods up` use too).

use std::collections::BTreeMap;

use testkit::manifests;

#[derive(clap::Args)]
pub struct Options {
    /// Deployment/StatefulSet name: auth, gateway, converter, notification, rabbitmq.
    service: String,
    /// Replace host HOST inside URL and *_HOST/*_ADDRESS values (repeatable).
    #[arg(long = "map", value_name = "HOST=ADDR[:PORT]")]
    maps: Vec<String>,
    /// Print the probes (`liveness /healthz 8081`) instead.
    #[arg(long)]
    probes: bool,
    /// Print the environment as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What `xtask manifest-env` prints: one KEY=VALUE line per variable, sorted, the value quoted for
/// a POSIX shell (so `eval "$(xtask manifest-env auth)"` is safe); or JSON; or the probes.
pub fn render(opts: &Options) -> anyhow::Result<String> {
    if opts.probes {
        let objects = manifests::load_base(&manifests::dir())?;
        return Ok(manifests::probes(&objects, &opts.service)?.iter().map(|p| format!("{p}\n")).collect());
    }
    let env: BTreeMap<String, String> = manifests::service_env(&opts.service, &manifests::HostMap::parse(&opts.maps)?)?;
    if opts.json {
        return Ok(serde_json::to_string_pretty(&env)? + "\n");
    }
    Ok(env.iter().map(|(k, v)| format!("{k}={}\n", shell_quote(v))).collect())
}

/// A word a POSIX shell reads back as `value` (Python's `shlex.quote`).
fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', r#"'"'"'"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("amqp://u:p@h:5672/%2f"), "amqp://u:p@h:5672/%2f");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b'c"), r#"'a b'"'"'c'"#);
    }
}
