//! The `tomodiff` command line. Parsing, validation and reporting only; the work is in the library.
mod cli;

fn main() {
    // Exit quietly when the reader of our output goes away (`tomodiff ... | head`), as Unix tools do.
    // SAFETY: resetting a signal disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = cli::run() {
        // One line, whatever the chain of causes: the CLI contract for every user error.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
