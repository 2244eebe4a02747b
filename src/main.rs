use clap::Parser;

fn main() {
    quiet_on_closed_pipe();
    let cli = attncache::cli::Cli::parse();
    if let Err(err) = attncache::cli::run(cli) {
        // One line: the error and its causes, joined.
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// Output piped into a reader that stops early (`attncache db-info DIR | head`)
/// ends the program quietly, as other command-line tools do, instead of a
/// panic in `println!`: Rust ignores SIGPIPE by default, restore its default
/// action.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first in `main`, before any other thread exists; it
    // only sets the signal's disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
