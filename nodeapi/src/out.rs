//! Output of the command-line tools. `println!` panics when the reader has gone away
//! (`router routes | head`); these end the program quietly then, as SIGPIPE ends a C tool.
//! SIGPIPE itself stays ignored: the same program runs the node, whose writes to sockets
//! must fail with an error, never kill it.

use std::io::Write as _;

/// Writes to stdout; exits 0 when the reader is gone, 1 on another error.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `print!` that ends the program quietly when stdout's reader has gone.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::out::write_stdout(format_args!($($t)*)) };
}

/// `println!` that ends the program quietly when stdout's reader has gone.
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::out::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}
