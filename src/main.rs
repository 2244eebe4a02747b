use clap::Parser;

fn main() {
    let cli = attncache::cli::Cli::parse();
    if let Err(err) = attncache::cli::run(cli) {
        // One line: the error and its causes, joined.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
