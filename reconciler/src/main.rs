//! The `fleet` command. All logic lives in the library (`reconciler::cli`), so tests drive
//! the same code in-process.

use std::io::IsTerminal;

fn main() -> std::process::ExitCode {
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let code = reconciler::cli::run(
        std::env::args_os(),
        &mut stdout.lock(),
        // Not locked for the whole run: `fleet run`'s log lines go to stderr from other
        // threads, which would wait forever on a lock held here.
        &mut std::io::stderr(),
        color,
    );
    std::process::ExitCode::from(code)
}
