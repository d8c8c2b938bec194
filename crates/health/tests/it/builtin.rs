//! The built-in disk, memory and threshold checks, with injected and real readings.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mainstay_clock::ManualClock;
use mainstay_health::{
    Check, CheckOverride, Criticality, DiskConfig, DiskReader, DiskReading, DiskSpaceCheck,
    HealthConfig, HealthRegistry, MemoryCheck, MemoryConfig, MemoryReader, MemoryReading,
    ProcMemoryReader, Status, StatvfsReader, ThresholdCheck, ThresholdError, Thresholds, View,
};

/// A disk reader with a fixed answer, which also remembers the path it was asked about.
#[derive(Debug)]
struct FixedDisk(Result<DiskReading, io::ErrorKind>);

impl DiskReader for FixedDisk {
    fn read(&self, _path: &Path) -> io::Result<DiskReading> {
        self.0.map_err(io::Error::from)
    }
}

fn disk(total_bytes: u64, available_bytes: u64) -> DiskSpaceCheck {
    let config = DiskConfig {
        path: PathBuf::from("/data"),
        ..DiskConfig::default()
    };
    let reading = DiskReading {
        total_bytes,
        available_bytes,
    };
    DiskSpaceCheck::with_reader(config, Arc::new(FixedDisk(Ok(reading))))
}

#[tokio::test]
async fn disk_thresholds_on_injected_readings() {
    let cases = [
        (1_000, 500, Status::Healthy),
        (1_000, 100, Status::Healthy),
        (1_000, 99, Status::Degraded),
        (1_000, 50, Status::Degraded),
        (1_000, 49, Status::Unhealthy),
        (1_000, 0, Status::Unhealthy),
        (0, 0, Status::Unhealthy),
    ];
    for (total, available, expected) in cases {
        let outcome = disk(total, available).check().await;
        assert_eq!(
            outcome.status, expected,
            "{available} of {total} bytes free"
        );
    }
    let degraded = disk(1_000, 80).check().await;
    assert_eq!(
        degraded.message.as_deref(),
        Some("8% free, below the degraded threshold of 10%")
    );
    assert_eq!(degraded.details["free_percent"], serde_json::json!(8.0));
    assert_eq!(degraded.details["path"], serde_json::json!("/data"));
    let unhealthy = disk(1_000, 10).check().await;
    assert_eq!(
        unhealthy.message.as_deref(),
        Some("1% free, below the unhealthy threshold of 5%")
    );
}

#[tokio::test]
async fn disk_thresholds_follow_config() {
    let config = DiskConfig {
        path: PathBuf::from("/data"),
        degraded_below_free_percent: 50.0,
        unhealthy_below_free_percent: 20.0,
        ..DiskConfig::default()
    };
    let reading = DiskReading {
        total_bytes: 100,
        available_bytes: 30,
    };
    let check = DiskSpaceCheck::with_reader(config, Arc::new(FixedDisk(Ok(reading))));
    assert_eq!(check.check().await.status, Status::Degraded);
}

#[tokio::test]
async fn unreadable_disk_is_unhealthy_and_names_the_path() {
    let config = DiskConfig {
        path: PathBuf::from("/data"),
        ..DiskConfig::default()
    };
    let reader = FixedDisk(Err(io::ErrorKind::PermissionDenied));
    let outcome = DiskSpaceCheck::with_reader(config, Arc::new(reader))
        .check()
        .await;
    assert_eq!(outcome.status, Status::Unhealthy);
    let message = outcome.message.expect("message");
    assert!(
        message.starts_with("cannot read free space of /data: "),
        "{message}"
    );
}

#[tokio::test]
async fn real_statvfs_reads_a_temp_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reading = StatvfsReader.read(dir.path()).expect("statvfs");
    assert!(reading.total_bytes > 0);
    assert!(reading.available_bytes <= reading.total_bytes);

    let config = DiskConfig {
        path: dir.path().to_owned(),
        ..DiskConfig::default()
    };
    let outcome = DiskSpaceCheck::new(config).check().await;
    assert_eq!(
        outcome.details["total_bytes"],
        serde_json::json!(reading.total_bytes)
    );

    let missing = DiskConfig {
        path: dir.path().join("missing"),
        ..DiskConfig::default()
    };
    let outcome = DiskSpaceCheck::new(missing).check().await;
    assert_eq!(outcome.status, Status::Unhealthy);
    assert!(outcome.message.expect("message").contains("missing"));
}

#[derive(Debug)]
struct FixedMemory(MemoryReading);

impl MemoryReader for FixedMemory {
    fn read(&self) -> io::Result<MemoryReading> {
        Ok(self.0)
    }
}

const GIB: u64 = 1 << 30;

fn memory(available: u64, resident: u64, limit: Option<u64>) -> MemoryCheck {
    let reading = MemoryReading {
        system_total_bytes: 100 * GIB,
        system_available_bytes: available,
        process_resident_bytes: resident,
        process_limit_bytes: limit,
    };
    MemoryCheck::with_reader(MemoryConfig::default(), Arc::new(FixedMemory(reading)))
}

#[tokio::test]
async fn memory_thresholds_on_injected_readings() {
    let cases = [
        // System use is (total - available) / total.
        (memory(50 * GIB, GIB, None), Status::Healthy),
        (memory(15 * GIB, GIB, None), Status::Healthy),
        (memory(14 * GIB, GIB, None), Status::Degraded),
        (memory(5 * GIB, GIB, None), Status::Degraded),
        (memory(4 * GIB, GIB, None), Status::Unhealthy),
        // Process use is resident memory against the cgroup limit.
        (memory(50 * GIB, 8 * GIB, Some(10 * GIB)), Status::Healthy),
        (memory(50 * GIB, 9 * GIB, Some(10 * GIB)), Status::Degraded),
        (
            memory(50 * GIB, 96 * GIB / 10, Some(10 * GIB)),
            Status::Unhealthy,
        ),
        // A limit above the system total counts as the total.
        (
            memory(50 * GIB, 90 * GIB, Some(1_000 * GIB)),
            Status::Degraded,
        ),
        // A limit of 0 is no limit.
        (memory(50 * GIB, GIB, Some(0)), Status::Healthy),
    ];
    for (check, expected) in cases {
        let outcome = check.check().await;
        assert_eq!(outcome.status, expected, "{:?}", outcome.details);
    }
    let both = memory(10 * GIB, 99 * GIB / 10, Some(10 * GIB))
        .check()
        .await;
    assert_eq!(both.status, Status::Unhealthy);
    assert_eq!(
        both.message.as_deref(),
        Some(
            "system memory 90% used, above the degraded threshold of 85%; \
             process memory 99% used, above the unhealthy threshold of 95%"
        )
    );
    assert_eq!(
        both.details["process_limit_bytes"],
        serde_json::json!(10 * GIB)
    );
}

#[tokio::test]
async fn real_proc_memory_readings_are_sane() {
    let reading = ProcMemoryReader.read().expect("/proc readable");
    assert!(reading.system_total_bytes > 0);
    assert!(reading.system_available_bytes <= reading.system_total_bytes);
    assert!(reading.process_resident_bytes > 0);
    let outcome = MemoryCheck::new(MemoryConfig::default()).check().await;
    assert!(outcome.details.contains_key("system_used_percent"));
}

#[tokio::test]
async fn threshold_check_follows_its_feed() {
    let dlq = ThresholdCheck::new(
        "dlq",
        Criticality::NonCritical,
        Thresholds {
            degraded_at: Some(100.0),
            unhealthy_at: Some(1_000.0),
        },
    )
    .expect("valid thresholds");
    let feed = dlq.clone();
    let cases = [
        (0.0, Status::Healthy),
        (99.0, Status::Healthy),
        (100.0, Status::Degraded),
        (999.0, Status::Degraded),
        (1_000.0, Status::Unhealthy),
        (f64::NAN, Status::Unhealthy), // ignored: the previous value stays
        (5.0, Status::Healthy),
    ];
    for (value, expected) in cases {
        feed.set(value);
        assert_eq!(dlq.check().await.status, expected, "value {value}");
    }
    feed.set(250.0);
    let outcome = dlq.check().await;
    assert_eq!(
        outcome.message.as_deref(),
        Some("value 250 is at or above the degraded threshold 100")
    );
    assert_eq!(outcome.details["value"], serde_json::json!(250.0));
    assert_eq!(dlq.criticality(), Criticality::NonCritical);
}

#[tokio::test]
async fn breaker_flag_as_threshold() {
    let breaker = ThresholdCheck::new(
        "breaker.redis",
        Criticality::NonCritical,
        Thresholds {
            degraded_at: Some(1.0),
            unhealthy_at: None,
        },
    )
    .expect("valid thresholds");
    assert_eq!(breaker.check().await.status, Status::Healthy);
    breaker.set(1.0);
    assert_eq!(breaker.check().await.status, Status::Degraded);
    breaker.set(1e9);
    assert_eq!(breaker.check().await.status, Status::Degraded);
}

#[test]
fn threshold_check_rejects_bad_thresholds() {
    let new = |degraded_at, unhealthy_at| {
        ThresholdCheck::new(
            "q",
            Criticality::Critical,
            Thresholds {
                degraded_at,
                unhealthy_at,
            },
        )
        .map(|_| ())
    };
    assert_eq!(
        new(Some(10.0), Some(5.0)),
        Err(ThresholdError::Order {
            degraded_at: 10.0,
            unhealthy_at: 5.0
        })
    );
    assert_eq!(
        new(Some(f64::NAN), None),
        Err(ThresholdError::NotANumber {
            which: "degraded_at"
        })
    );
    assert_eq!(
        new(None, Some(f64::NAN)),
        Err(ThresholdError::NotANumber {
            which: "unhealthy_at"
        })
    );
    assert_eq!(new(Some(5.0), Some(5.0)), Ok(()));
    assert_eq!(new(None, None), Ok(()));
}

#[tokio::test]
async fn builder_registers_enabled_builtins_as_non_critical() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new();
    let mut config = HealthConfig::default();
    config.disk.path = dir.path().to_owned();
    config.checks.insert(
        "disk".to_owned(),
        CheckOverride {
            timeout: None,
            critical: Some(true),
        },
    );
    let registry = HealthRegistry::builder(config, "1.2.3")
        .clock(Arc::new(clock))
        .build()
        .expect("valid config");
    assert_eq!(registry.check_names(), ["disk", "memory"]);
    let deps = registry.deps(View::Admin).await;
    assert!(
        deps.report.checks["disk"].critical,
        "overridden by checks.disk.critical"
    );
    assert!(!deps.report.checks["memory"].critical);

    let mut disabled = HealthConfig::default();
    disabled.disk.enabled = false;
    disabled.memory.enabled = false;
    let registry = HealthRegistry::builder(disabled, "1.2.3")
        .build()
        .expect("valid config");
    assert!(registry.check_names().is_empty());
}
