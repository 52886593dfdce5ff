//! The tokio runtimes jobs do their I/O on, built one way: a current-thread runtime for a
//! caller that blocks on it, or a pool of one background thread for tasks that run beside the
//! timely workers.

use anyhow::Context;
use tokio::runtime::{Builder, Runtime};

/// A runtime that runs what the calling thread blocks on; `what` names it in the error.
pub fn current_thread(what: &str) -> anyhow::Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("starting the {what} runtime"))
}

/// A runtime with one background thread (`vigil-io`), so spawned tasks go on while the
/// caller computes; `what` names it in the error.
pub fn background(what: &str) -> anyhow::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vigil-io")
        .enable_all()
        .build()
        .with_context(|| format!("starting the {what} runtime"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_runtimes_run_what_is_given_them() -> anyhow::Result<()> {
        assert_eq!(current_thread("test")?.block_on(async { 1 + 1 }), 2);
        let pool = background("test")?;
        let task = pool.spawn(async { std::thread::current().name().map(str::to_owned) });
        assert_eq!(pool.block_on(task)?.as_deref(), Some("vigil-io"));
        Ok(())
    }
}
