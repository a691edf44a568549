//! The `tomodiff` command line. Parsing, validation and reporting only; the work is in the library.
mod cli;

fn main() {
    if let Err(e) = cli::run() {
        // One line, whatever the chain of causes: the CLI contract for every user error.
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}
