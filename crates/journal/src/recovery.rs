//! One summary of what opening a store recovered, in the same terms for every mainstay store (the
//! DLQ's journal and the record store's write-ahead log report it alike; CONTRIBUTING.md, "Public
//! surface").

use std::path::{Path, PathBuf};

use crate::replay::Corruption;

/// What a store's recovery did, in the terms every mainstay store reports it.
///
/// Each store's own report (`mainstay_dlq::DlqRecovery`, `mainstay_storage_tiering::StoreRecovery`)
/// says more; its `summary()` gives this, and the store logs it once at open
/// ([`RecoverySummary::log`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoverySummary {
    /// Records read back from the log (and, where the store keeps one, its snapshot).
    pub recovered_records: u64,
    /// Records lost to damage that recovery skipped (`skip_corrupt`): acknowledged writes that
    /// are gone. Always 0 under `refuse`, which fails the open instead.
    pub lost_records: u64,
    /// Bytes of an incomplete last write cut from the end of the log. Such a write was never
    /// acknowledged, so nothing a caller was told is durable is lost.
    pub truncated_bytes: u64,
    /// Copies of damaged files kept for inspection, in the order recovery found them.
    pub preserved: Vec<PathBuf>,
}

/// How a recovery ended, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryOutcome {
    /// Every byte read back as it was written.
    Clean,
    /// An incomplete last write was cut; nothing acknowledged is lost.
    TornTailTruncated,
    /// Damage was skipped and acknowledged records may be lost (see
    /// [`RecoverySummary::lost_records`] and [`RecoverySummary::preserved`]).
    DataLost,
}

impl RecoveryOutcome {
    /// The snake_case name used in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Clean => "clean",
            Self::TornTailTruncated => "torn_tail_truncated",
            Self::DataLost => "data_lost",
        }
    }
}

impl RecoverySummary {
    /// How the recovery ended: data lost when damage was skipped (records lost, or a damaged
    /// file preserved), a torn tail when only an incomplete write was cut, clean otherwise.
    #[must_use]
    pub fn outcome(&self) -> RecoveryOutcome {
        if self.lost_records > 0 || !self.preserved.is_empty() {
            RecoveryOutcome::DataLost
        } else if self.truncated_bytes > 0 {
            RecoveryOutcome::TornTailTruncated
        } else {
            RecoveryOutcome::Clean
        }
    }

    /// Logs the summary as one event, the same for every store: `component` names the store
    /// (`"dlq"`, `"storage"`), `dir` its directory. The event is at INFO when clean or a torn
    /// tail was cut, at ERROR when data was lost.
    pub fn log(&self, component: &str, dir: &Path) {
        let outcome = self.outcome();
        let preserved = self
            .preserved
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // One field list for both levels (tracing takes the level as a constant per call site).
        macro_rules! event {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    component,
                    dir = %dir.display(),
                    outcome = outcome.as_str(),
                    recovered_records = self.recovered_records,
                    lost_records = self.lost_records,
                    truncated_bytes = self.truncated_bytes,
                    preserved,
                    $message
                )
            };
        }
        if outcome == RecoveryOutcome::DataLost {
            event!(
                error,
                "recovered with data lost; the damaged files are preserved"
            );
        } else {
            event!(info, "recovered");
        }
    }
}

impl Corruption {
    /// How many entries the damage may have held: the LSNs between the last valid frame before
    /// it and the first after it (0 when they are consecutive or no valid frame follows).
    #[must_use]
    pub fn lost_entries(&self) -> u64 {
        self.lost_lsns
            .as_ref()
            .map_or(0, |lost| lost.end().get() - lost.start().get() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_follows_loss_then_truncation() {
        let mut summary = RecoverySummary::default();
        assert_eq!(summary.outcome(), RecoveryOutcome::Clean);
        summary.truncated_bytes = 12;
        assert_eq!(summary.outcome(), RecoveryOutcome::TornTailTruncated);
        summary.preserved.push(PathBuf::from("corrupt/x"));
        assert_eq!(summary.outcome(), RecoveryOutcome::DataLost);
        summary.preserved.clear();
        summary.lost_records = 1;
        assert_eq!(summary.outcome(), RecoveryOutcome::DataLost);
    }
}
