//! The `kiln` binary. Before anything else — before any thread exists — a rootless kiln re-executes
//! itself inside a user namespace (uid 0 → the caller, 1..65536 → its subuid range), and the hidden
//! sandbox subcommand dispatches to the single-threaded helper that sets up a RUN step.

#![deny(unsafe_code)]

fn main() {
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(kiln::exec::HELPER_SUBCOMMAND))
    {
        // The helper dies with the build thread that started it (which waits for it): a daemon
        // killed with -9 leaves no RUN step running behind it. Its pid 1 dies with it in turn
        // (exec/helper.rs), and with pid 1 the step's pid namespace.
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        std::process::exit(kiln::exec::sandbox_main());
    }
    // Defaults (store root, config file, socket) follow the user who started kiln, not the root
    // it appears to be inside its user namespace: pin the real uid before re-executing.
    kiln::config::defaults::pin_host_uid();
    if let Err(e) = kiln::exec::maybe_reexec_into_userns() {
        // Never a panic on a closed stderr (`eprintln!` would): the exit status still says it.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "error: entering a user namespace: {e}");
        std::process::exit(1);
    }
    std::process::exit(kiln::cli::main());
}
