//! The stop signals a command honours: Ctrl-C (SIGINT) and SIGTERM (systemd, Kubernetes).

use std::sync::OnceLock;

/// A stop signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM: a service manager's stop.
    Terminate,
}

impl Stop {
    /// The exit status of a process that stopped for it: 128 + the signal's number, as a
    /// shell reports a process the signal ended.
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Stop::Interrupt => 128 + libc::SIGINT,
            Stop::Terminate => 128 + libc::SIGTERM,
        }
    }

    /// Its name in a line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT (Ctrl-C)",
            Stop::Terminate => "SIGTERM",
        }
    }
}

/// The first stop signal [`stop`] saw, if any.
static RECEIVED: OnceLock<Stop> = OnceLock::new();

/// The first stop signal [`stop`] saw, if any.
pub(crate) fn received() -> Option<Stop> {
    RECEIVED.get().copied()
}

/// Completes with the next stop signal the process receives.
pub(crate) async fn stop() -> Stop {
    let interrupt = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Stop::Interrupt,
            Err(_) => std::future::pending().await,
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                Stop::Terminate
            }
            Err(_) => std::future::pending().await,
        }
    };
    let stop = tokio::select! {
        stop = interrupt => stop,
        stop = terminate => stop,
    };
    let _ = RECEIVED.set(stop);
    stop
}

/// Completes with the line saying what stopped the process at the first stop signal, from
/// when on a second one ends it at once, with the first one's exit status.
pub(crate) async fn stop_gently() -> String {
    let first = stop().await;
    tokio::spawn(async move {
        stop().await;
        eprintln!("fruits: stopped at once by a second signal");
        std::process::exit(first.exit_code());
    });
    format!("stopped by {}", first.name())
}
