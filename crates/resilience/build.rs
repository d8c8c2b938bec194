//! Declares the `loom` cfg, under which the breaker's state runs on loom's atomics.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
