//! Thread pools, GIL release and error mapping: the one path every kernel call takes.

use pyo3::prelude::*;
use reprkit_core::Error;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Pools by size, tagged with the pid that built them: after `fork` the child
/// has the pool objects but not their threads, so a pid change means "build anew".
struct Pools {
    pid: u32,
    by_size: HashMap<usize, Arc<ThreadPool>>,
}

static POOLS: Mutex<Option<Pools>> = Mutex::new(None);

fn pool(n_threads: usize) -> Result<Arc<ThreadPool>, Error> {
    let n = n_threads.max(1);
    let pid = std::process::id();
    let mut guard = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().map(|p| p.pid) != Some(pid) {
        if let Some(old) = guard.take() {
            // Threads of a parent process do not exist here: never join or drop them.
            std::mem::forget(old);
        }
        *guard = Some(Pools { pid, by_size: HashMap::new() });
    }
    let pools = guard.as_mut().expect("initialised above");
    if let Some(p) = pools.by_size.get(&n) {
        return Ok(p.clone());
    }
    let p = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("reprkit-{i}"))
        .build()
        .map_err(|e| Error::InvalidInput(format!("could not start {n} threads: {e}")))?;
    let p = Arc::new(p);
    pools.by_size.insert(n, p.clone());
    Ok(p)
}

/// Runs `f` with the GIL released inside a pool of `n_threads` threads and
/// maps a kernel error to the matching `reprkit.errors` exception.
pub fn run<R, F>(py: Python<'_>, n_threads: usize, f: F) -> PyResult<R>
where
    R: Send,
    F: FnOnce() -> Result<R, Error> + Send,
{
    let out = py.detach(move || pool(n_threads).and_then(|p| p.install(f)));
    out.map_err(|e| to_pyerr(py, e))
}

/// Converts a kernel error into an instance of the matching `reprkit.errors` class.
pub fn to_pyerr(py: Python<'_>, e: Error) -> PyErr {
    let (class, msg) = match &e {
        Error::Shape(m) => ("ShapeError", m.clone()),
        Error::NonFinite(m) => ("NonFiniteError", m.clone()),
        Error::InvalidParameter(m) => ("InvalidParameterError", m.clone()),
        Error::InvalidInput(m) => ("InvalidInputError", m.clone()),
        Error::Interrupted => return pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted"),
    };
    let made = py
        .import("reprkit.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((msg.clone(),)));
    match made {
        Ok(obj) => PyErr::from_value(obj),
        Err(_) => pyo3::exceptions::PyValueError::new_err(msg),
    }
}

/// Number of threads a pool of the given size really runs (for tests).
#[pyfunction]
fn _pool_threads(py: Python<'_>, n_threads: usize) -> PyResult<usize> {
    run(py, n_threads, || Ok(rayon::current_num_threads()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_pool_threads, m)?)?;
    Ok(())
}

/// Like [`run`], but the kernel gets a "should stop" hook: while it runs on a
/// worker thread, the calling (main) thread wakes every 100 ms, takes the GIL
/// briefly and checks for signals; a pending Ctrl-C sets the flag the hook
/// reads, the kernel returns `Error::Interrupted`, and Python sees KeyboardInterrupt.
pub fn run_interruptible<R, F>(py: Python<'_>, n_threads: usize, f: F) -> PyResult<R>
where
    R: Send,
    F: FnOnce(&(dyn Fn() -> bool + Sync)) -> Result<R, Error> + Send,
{
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let stop = AtomicBool::new(false);
    let stop_ref = &stop;
    let out = py.detach(move || {
        let p = pool(n_threads)?;
        std::thread::scope(|s| {
            let (tx, rx) = channel();
            s.spawn(move || {
                let hook = move || stop_ref.load(Ordering::Relaxed);
                let _ = tx.send(p.install(|| f(&hook)));
            });
            loop {
                match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                    Ok(r) => return r,
                    Err(RecvTimeoutError::Timeout) => {
                        if Python::attach(|py| py.check_signals()).is_err() {
                            stop_ref.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(Error::InvalidInput("the worker thread stopped unexpectedly".into()))
                    }
                }
            }
        })
    });
    out.map_err(|e| to_pyerr(py, e))
}
