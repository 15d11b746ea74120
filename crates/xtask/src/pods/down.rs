//! `xtask pods down`: remove what `pods up` made for one instance, and nothing else: its pods
//! (podman kube down of the play file it recorded), their volumes, its podman secrets, its MySQL
//! database and user, its RabbitMQ vhost and users, its MongoDB databases, and its state under
//! .dev/pods/. The host's servers keep running; images stay (`xtask images` made them).

use anyhow::bail;

use super::{log, rabbitmqctl, run_with_input, Instance, Name, Podman, SERVICES};

const ME: &str = "pods-down";

#[derive(clap::Args)]
pub struct Options {
    /// The instance of `pods up` to remove.
    #[arg(long, default_value = Name::DEFAULT)]
    pub name: Name,
}

pub async fn run(name: &Name) -> anyhow::Result<()> {
    let state = name.state_dir();
    let Some(instance) = Instance::read(name)? else {
        log(ME, format!("no instance {name} recorded ({}): nothing to remove", state.display()));
        return Ok(());
    };
    let mut failed = false;
    let play = state.join("play.yaml");
    let secrets = std::fs::read_to_string(state.join("secrets")).unwrap_or_default();
    // Without podman on the machine there are no pods to remove.
    if super::succeeds(std::process::Command::new("podman").arg("--version")) {
        let podman = Podman::setup()?;
        if play.is_file() {
            log(ME, format!("podman kube down (pods of {name})"));
            // Containers get SIGTERM and the pod's grace period, as in a cluster; then the volumes go.
            podman.ok(&["kube", "down", &play.display().to_string()]);
            for svc in SERVICES {
                podman.ok(&["pod", "rm", "-f", &format!("{name}-{svc}-pod-0")]);
                podman.ok(&["volume", "rm", "-f", &format!("{name}-{svc}-tmp")]);
            }
        }
        for s in secrets.lines() {
            podman.ok(&["secret", "rm", s]);
        }
    }

    let id = &instance.id;
    log(ME, format!("MySQL: dropping database and user {id}"));
    let sql =
        format!("DROP DATABASE IF EXISTS `{id}`;\nDROP USER IF EXISTS '{id}'@'127.0.0.1';\nDROP USER IF EXISTS '{id}'@'localhost';\n");
    failed |= !run_with_input(&mut crate::mysql::client(), &sql);

    log(ME, format!("RabbitMQ: deleting vhost {name} and its users"));
    rabbitmqctl(&["delete_vhost", &name.to_string()]);
    for svc in crate::rabbitmq::SERVICES {
        rabbitmqctl(&["delete_user", &format!("{name}-{svc}")]);
    }

    log(ME, format!("MongoDB: dropping {id}_videos and {id}_mp3s"));
    let dbs = [format!("{id}_videos"), format!("{id}_mp3s")];
    let dropped = async { crate::tools::drop_databases(&crate::tools::mongo(&instance.mongo).await?, &dbs).await };
    if let Err(e) = dropped.await {
        log(ME, format!("MongoDB: {e:#}"));
        failed = true;
    }

    std::fs::remove_dir_all(&state)?;
    if failed {
        bail!("some of {name} could not be removed (see above)");
    }
    log(ME, format!("removed {name}"));
    Ok(())
}
