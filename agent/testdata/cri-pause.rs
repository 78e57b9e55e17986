//! The sandbox image's only binary for the containerd integration test
//! (agent/tests/containerd_resolver.rs): a `pause` that parks forever. Built by the test
//! with `rustc -C target-feature=+crt-static`, so the image needs no libc. containerd stops
//! sandboxes with SIGKILL, so no signal handling is needed.
fn main() {
    loop {
        std::thread::park();
    }
}
