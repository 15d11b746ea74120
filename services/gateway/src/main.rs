use common::Env;
use gateway::{Application, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::telemetry::init();
    common::telemetry::exit_on_error(run().await)
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env(&Env::from_process())?;
    let app = Application::build(config).await?;
    app.run_until_stopped(common::shutdown::token_on_signal()).await
}
