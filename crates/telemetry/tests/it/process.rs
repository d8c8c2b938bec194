//! The process collector reads live figures from /proc at scrape time.

use prometheus_client::registry::Registry;

#[test]
fn process_families_hold_live_values() {
    let mut registry = Registry::default();
    mainstay_telemetry::process::register_process_collector(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .expect("number")
    };
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    // The test harness runs this test on a thread of its own, beside the main thread.
    assert!(value("process_threads") >= 2.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 86_400.0,
        "start {start}, now {now}"
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds counter"),
        "{text}"
    );

    // A file opened now shows up at the next scrape: the figures are read live.
    let before = value("process_open_fds");
    let _file = tempfile::tempfile().expect("temp file");
    let mut again = String::new();
    prometheus_client::encoding::text::encode(&mut again, &registry).expect("encodes");
    let after: f64 = again
        .lines()
        .find_map(|line| line.strip_prefix("process_open_fds "))
        .expect("fds")
        .parse()
        .expect("number");
    assert!(after > before, "{after} > {before}");

    // A thread started now is counted at the next scrape.
    let threads = |text: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix("process_threads "))
            .expect("threads")
            .parse()
            .expect("number")
    };
    let (started, stop) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let before = threads(&again);
    let thread = std::thread::spawn(move || {
        started.0.send(()).expect("test waits");
        let _ = stop.1.recv();
    });
    started.1.recv().expect("thread started");
    let mut third = String::new();
    prometheus_client::encoding::text::encode(&mut third, &registry).expect("encodes");
    assert!(threads(&third) > before, "{third}");
    drop(stop.0);
    thread.join().expect("no panic");
}
