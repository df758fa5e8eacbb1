//! Containing panics of third-party parsers and codecs. dicom-rs decoders can panic on corrupt
//! input (e.g. the RLE decoder indexes past a short segment); fmseg must turn any file content
//! into an error instead. [`contain`] runs a closure under `catch_unwind` with the panic
//! message silenced on this thread (a process-wide hook, installed once, that defers to the
//! previous hook everywhere else). This relies on unwinding: a profile with `panic = "abort"`
//! would turn such a file back into a crash.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Run `f`; a panic inside becomes `Err` with its message.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn panics_become_errors() {
        assert_eq!(super::contain(|| 3), Ok(3));
        let v: Vec<u8> = Vec::new();
        let e = super::contain(|| v[usize::MAX / 2]).unwrap_err();
        assert!(e.contains("index out of bounds"), "{e}");
    }
}
