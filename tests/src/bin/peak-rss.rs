//! `peak-rss OUT -- PROGRAM [ARGS…]`: runs PROGRAM (stdin, stdout and stderr inherited), waits for
//! it with `wait4`, writes `<peak RSS in bytes> <raw wait status>` to the file OUT, and exits with
//! PROGRAM's exit code (128 + signal when it was killed).
//!
//! Why a wrapper: on Linux a child's `ru_maxrss` is the maximum of its own peak and the RSS of the
//! address space it replaced at `exec` — for a child spawned by the test process, the whole test
//! process (services' clients, DataFusion, other tests' data). Spawned from this small process,
//! the child's `ru_maxrss` is its own peak (plus at most this wrapper's ~2 MB).

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, program, rest) = match args.as_slice() {
        [out, sep, program, rest @ ..] if sep == "--" => (out, program, rest),
        _ => {
            eprintln!("usage: peak-rss OUT -- PROGRAM [ARGS...]");
            return ExitCode::from(2);
        }
    };
    let child = match Command::new(program).args(rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peak-rss: spawning {program}: {e}");
            return ExitCode::from(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it for our own child `pid`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: plain FFI call with valid pointers to locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    if r != pid {
        eprintln!("peak-rss: wait4: {}", std::io::Error::last_os_error());
        return ExitCode::from(125);
    }
    // ru_maxrss is in KiB on Linux.
    let peak = usage.ru_maxrss as u64 * 1024;
    if let Err(e) = std::fs::write(out, format!("{peak} {status}\n")) {
        eprintln!("peak-rss: writing {out}: {e}");
        return ExitCode::from(125);
    }
    if libc::WIFEXITED(status) {
        ExitCode::from(libc::WEXITSTATUS(status) as u8)
    } else {
        ExitCode::from(128u8.wrapping_add(libc::WTERMSIG(status) as u8))
    }
}
