//! `loglake-query`: the same entry point as `loglake query`, as its own binary (used by this
//! crate's CLI snapshot tests, which need a binary of their own package).

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "loglake-query",
    version,
    about = "SQL over a Delta Lake log lake"
)]
struct Cli {
    #[command(flatten)]
    args: loglake_query::QueryArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match loglake_query::run(cli.args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loglake query: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
