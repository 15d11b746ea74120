use auth::{users, Application, Config};
use common::Env;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::telemetry::init();
    common::telemetry::exit_on_error(run().await)
}

async fn run() -> anyhow::Result<()> {
    let env = Env::from_process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("user") {
        println!("{}", users::run(&args[1..], &env).await?);
        return Ok(());
    }
    if !args.is_empty() {
        anyhow::bail!("{}\n   or: auth (no arguments) to run the service", users::USAGE);
    }
    let config = Config::from_env(&env)?;
    let app = Application::build(config).await?;
    app.run_until_stopped(common::shutdown::token_on_signal()).await
}
