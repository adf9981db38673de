use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = dbprov_hub::cli::Cli::parse();
    cli.log.init()?;
    dbprov_hub::run(cli).await
}
