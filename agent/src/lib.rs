//! dbprov agent: the workload-cluster side of dbprov.

pub mod cli;
pub mod tools;

/// Runs the command the user asked for.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    match cli.command {
        cli::Command::Tools(args) => {
            let found = tools::detect(&args.search_path()).await;
            let caps = tools::capabilities(&found);
            for tool in &found {
                match &tool.version {
                    Ok(v) => println!("{:<12} {:<8} {}", tool.name, v, tool.path.display()),
                    Err(e) => println!("{:<12} {:<8} {e}", tool.name, "-"),
                }
            }
            println!("engines: {}", caps.engines.join(", "));
            Ok(())
        }
    }
}
