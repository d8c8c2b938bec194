//! Prometheus metric families of the keyring, registered once per registry and labelled per
//! keyring.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    keyring: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    keyring: String,
    outcome: &'static str,
}

/// The operations and the outcomes each can have, as the labels name them.
const OPERATIONS: [(&str, &[&str]); 4] = [
    ("seal", &["ok", "erased", "unavailable", "damaged"]),
    ("open", &["ok", "plain", "erased", "damaged", "unavailable"]),
    ("destroy", &["ok", "unavailable"]),
    ("reinstate", &["ok", "unavailable"]),
];

/// Outcomes of a data key lookup.
const LOOKUPS: [&str; 4] = ["hit", "fetched", "created", "missing"];

/// The keyring's metric families. Register once per registry with [`KeyringMetrics::register`]
/// and give clones to every keyring; each labels its series with its name (`keyring="storage"`).
///
/// | family | labels | meaning |
/// |---|---|---|
/// | `keyring_operations_total` | `keyring`, `operation`, `outcome` | `seal`: `ok`, `erased`, `unavailable`, `damaged` (the key object does not unwrap); `open`: `ok`, `plain` (a value written before encryption), `erased`, `damaged` (the value does not authenticate), `unavailable`; `destroy`, `reinstate`: `ok`, `unavailable` |
/// | `keyring_key_lookups_total` | `keyring`, `outcome` | `hit` (in the cache), `fetched` (read and unwrapped), `created` (a new data key stored), `missing` (no key: erased or never created) |
#[derive(Debug, Clone, Default)]
pub struct KeyringMetrics {
    operations: Family<OperationLabels, Counter>,
    lookups: Family<LookupLabels, Counter>,
}

impl KeyringMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "keyring_operations",
            "Keyring seal, open, destroy and reinstate calls by outcome",
            metrics.operations.clone(),
        );
        registry.register(
            "keyring_key_lookups",
            "Data key lookups by outcome",
            metrics.lookups.clone(),
        );
        metrics
    }

    /// Families registered nowhere (the default of a keyring built without metrics).
    #[must_use]
    pub fn unregistered() -> Self {
        Self::default()
    }

    /// Creates every series of a keyring labelled `keyring` at zero, so that a scrape shows them
    /// before its first call, or while the application runs without one (decision 0097). A
    /// keyring opened with these metrics does the same.
    pub fn start_up_series(&self, keyring: &str) {
        let _instruments = self.instruments(keyring);
    }

    /// Creates every series of the keyring `name`, at zero, and keeps their handles so that
    /// counting allocates nothing.
    pub(crate) fn instruments(&self, name: &str) -> Instruments {
        let mut operations = Vec::new();
        for (operation, outcomes) in OPERATIONS {
            for outcome in outcomes {
                let counter = self
                    .operations
                    .get_or_create(&OperationLabels {
                        keyring: name.to_owned(),
                        operation,
                        outcome,
                    })
                    .clone();
                operations.push(((operation, *outcome), counter));
            }
        }
        let lookups = LOOKUPS
            .iter()
            .map(|outcome| {
                let counter = self
                    .lookups
                    .get_or_create(&LookupLabels {
                        keyring: name.to_owned(),
                        outcome,
                    })
                    .clone();
                (*outcome, counter)
            })
            .collect();
        Instruments {
            operations,
            lookups,
        }
    }
}

/// One keyring's series.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    operations: Vec<((&'static str, &'static str), Counter)>,
    lookups: Vec<(&'static str, Counter)>,
}

impl Instruments {
    pub(crate) fn operation(&self, operation: &'static str, outcome: &'static str) {
        if let Some((_, counter)) = self
            .operations
            .iter()
            .find(|(labels, _)| *labels == (operation, outcome))
        {
            counter.inc();
        }
    }

    pub(crate) fn lookup(&self, outcome: &'static str) {
        if let Some((_, counter)) = self.lookups.iter().find(|(name, _)| *name == outcome) {
            counter.inc();
        }
    }
}
