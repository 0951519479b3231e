//! Standard output for the verbs. A verb's reader may go away before it is done
//! (`offboard history ID | head`): the work the verb was asked for is already committed
//! by the time it prints, and no one reads the rest, so the process ends quietly with
//! exit 0 instead of panicking as `println!` does on a closed pipe. The verbs print
//! through [`outln!`] and [`out!`], which take `println!`'s and `print!`'s arguments.

use std::io::{ErrorKind, Write};

/// Prints a line on standard output, or ends the process as [`write`] says.
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints on standard output without a newline, or ends the process as [`write`] says.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

/// Writes `text` to standard output. When the reader has gone away (a closed pipe) the
/// process exits at once with status 0 and nothing on stderr; any other failure to write
/// (a full disk under a redirect) is reported on stderr with exit 1.
pub fn write(text: std::fmt::Arguments<'_>) {
    if !write_unless_gone(text) {
        std::process::exit(super::EXIT_OK);
    }
}

/// Writes `text` like [`write`], but when the reader has gone away returns `false`
/// instead of ending the process: for a verb whose work goes on whoever reads its
/// output (`submit --csv` publishes every row it has started on).
pub fn write_unless_gone(text: std::fmt::Arguments<'_>) -> bool {
    let Err(e) = std::io::stdout().lock().write_fmt(text) else {
        return true;
    };
    if e.kind() == ErrorKind::BrokenPipe {
        return false;
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(super::EXIT_FAILURE);
}
