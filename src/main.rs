use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = spinr::cli::Cli::parse();
    match spinr::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(spinr::cli::exit_code(&e))
        }
    }
}
