use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = dbprov_agent::cli::Cli::parse();
    cli.log.init()?;
    dbprov_agent::run(cli).await
}
