//! The panels of each area dashboard, by row: what each plots, in which unit, and why. The
//! expressions name no `job` or `instance`: `super::generate` adds the filter to every selector.

use super::Kind;
use crate::alerts::Area;

/// One panel of an area dashboard, as declared in the table: its expressions name no `job` or
/// `instance`; `super::generate` adds the filter to every selector.
pub(super) struct Spec {
    pub(super) kind: Kind,
    pub(super) title: &'static str,
    pub(super) unit: &'static str,
    pub(super) description: &'static str,
    /// (expression, legend).
    pub(super) queries: &'static [(&'static str, &'static str)],
}

const fn graph(
    title: &'static str,
    unit: &'static str,
    description: &'static str,
    queries: &'static [(&'static str, &'static str)],
) -> Spec {
    Spec {
        kind: Kind::Timeseries,
        title,
        unit,
        description,
        queries,
    }
}

const fn stat(
    title: &'static str,
    unit: &'static str,
    description: &'static str,
    queries: &'static [(&'static str, &'static str)],
) -> Spec {
    Spec {
        kind: Kind::Stat,
        title,
        unit,
        description,
        queries,
    }
}

/// An area dashboard: title, description, rows of (title, panel width, panels).
pub(super) type Layout = (
    &'static str,
    &'static str,
    &'static [(&'static str, u64, &'static [Spec])],
);

const OVERVIEW: Layout = (
    "mainstay-api overview",
    "Is the service up and answering: the headline RED numbers, each health check, and the process's CPU, memory, file descriptors, threads and disk.",
    &[
        (
            "requests (RED)",
            6,
            &[
                stat(
                    "request rate",
                    "reqps",
                    "HTTP requests answered per second, all routes and instances.",
                    &[(
                        "sum(rate(http_requests_total[$__rate_interval]))",
                        "requests/s",
                    )],
                ),
                stat(
                    "5xx ratio",
                    "percentunit",
                    "Share of answered requests with a 5xx status, all routes.",
                    &[(
                        "sum(rate(http_requests_total{status_code=~\"5..\"}[$__rate_interval])) / sum(rate(http_requests_total[$__rate_interval]))",
                        "5xx",
                    )],
                ),
                stat(
                    "p99 latency",
                    "s",
                    "99th percentile of the time to response headers, all routes (histogram estimate).",
                    &[(
                        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
                        "p99",
                    )],
                ),
                stat(
                    "errors/s",
                    "ops",
                    "Requests answered with an error per second (http_errors_total), all types.",
                    &[("sum(rate(http_errors_total[$__rate_interval]))", "errors/s")],
                ),
            ],
        ),
        (
            "health checks",
            12,
            &[
                graph(
                    "dependency health by check",
                    "none",
                    "Worst result of each dependency check across the selected instances: 1 healthy, 0.5 degraded, 0 unhealthy.",
                    &[("min by (dependency) (dependency_health)", "{{dependency}}")],
                ),
                graph(
                    "ready",
                    "none",
                    "1 while an instance's readiness probe answers 200 (started, not shutting down, no critical check unhealthy).",
                    &[("max by (instance) (health_ready)", "{{instance}}")],
                ),
                graph(
                    "check duration p95 by check",
                    "s",
                    "95th percentile of each dependency check's run time.",
                    &[(
                        "histogram_quantile(0.95, sum by (dependency, le) (rate(health_check_duration_seconds_bucket[$__rate_interval])))",
                        "{{dependency}}",
                    )],
                ),
                graph(
                    "check failures by check",
                    "ops",
                    "Check runs per second that ended unhealthy, timeouts and panics included.",
                    &[(
                        "sum by (dependency) (rate(health_check_failures_total[$__rate_interval]))",
                        "{{dependency}}",
                    )],
                ),
            ],
        ),
        (
            "process",
            8,
            &[
                graph(
                    "CPU",
                    "percentunit",
                    "CPU time used per second of wall time (rate of process_cpu_seconds_total): 100% is one core busy.",
                    &[(
                        "sum by (instance) (rate(process_cpu_seconds_total[$__rate_interval]))",
                        "{{instance}}",
                    )],
                ),
                graph(
                    "resident memory",
                    "bytes",
                    "Resident set size of each process.",
                    &[(
                        "max by (instance) (process_resident_memory_bytes)",
                        "{{instance}}",
                    )],
                ),
                graph(
                    "memory used ratio",
                    "percentunit",
                    "Memory in use over the memory check's limit: scope system is system memory over its total, process the resident memory over its limit.",
                    &[(
                        "max by (instance, scope) (health_memory_used_ratio)",
                        "{{instance}} {{scope}}",
                    )],
                ),
                graph(
                    "file descriptors used (open / max)",
                    "percentunit",
                    "Open file descriptors over the process's limit.",
                    &[(
                        "max by (instance) (process_open_fds / process_max_fds)",
                        "{{instance}}",
                    )],
                ),
                graph(
                    "open file descriptors",
                    "none",
                    "Open file descriptors and the process's limit.",
                    &[
                        ("max by (instance) (process_open_fds)", "{{instance}} open"),
                        ("max by (instance) (process_max_fds)", "{{instance}} max"),
                    ],
                ),
                graph(
                    "threads",
                    "none",
                    "OS threads of each process.",
                    &[("max by (instance) (process_threads)", "{{instance}}")],
                ),
                graph(
                    "disk free ratio",
                    "percentunit",
                    "Free space of the disk check's file system available to unprivileged users, over its size.",
                    &[("min by (instance) (health_disk_free_ratio)", "{{instance}}")],
                ),
                graph(
                    "uptime",
                    "s",
                    "Time since each process started.",
                    &[(
                        "time() - max by (instance) (process_start_time_seconds)",
                        "{{instance}}",
                    )],
                ),
            ],
        ),
    ],
);

const HTTP: Layout = (
    "mainstay-api HTTP",
    "RED per route template (`endpoint`): traffic, latency percentiles and errors by type, and requests in flight.",
    &[
        (
            "traffic",
            8,
            &[
                graph(
                    "requests by route",
                    "reqps",
                    "Answered requests per second by route template.",
                    &[(
                        "sum by (endpoint) (rate(http_requests_total[$__rate_interval]))",
                        "{{endpoint}}",
                    )],
                ),
                graph(
                    "requests by status code",
                    "reqps",
                    "Answered requests per second by status code, all routes.",
                    &[(
                        "sum by (status_code) (rate(http_requests_total[$__rate_interval]))",
                        "{{status_code}}",
                    )],
                ),
                graph(
                    "in flight",
                    "none",
                    "Requests being handled now, per instance.",
                    &[(
                        "max by (instance) (http_requests_in_flight)",
                        "{{instance}}",
                    )],
                ),
            ],
        ),
        (
            "latency",
            12,
            &[
                graph(
                    "p50, p95, p99: all routes",
                    "s",
                    "Percentiles of the time to response headers over all routes (histogram estimates; bucket edges at 0.01, 0.1, 0.15 and 0.5 s among others).",
                    &[
                        (
                            "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
                            "p50",
                        ),
                        (
                            "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
                            "p95",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
                            "p99",
                        ),
                    ],
                ),
                graph(
                    "p99 by route",
                    "s",
                    "99th percentile of the time to response headers per route template.",
                    &[(
                        "histogram_quantile(0.99, sum by (endpoint, le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
                        "{{endpoint}}",
                    )],
                ),
                graph(
                    "p95 by route",
                    "s",
                    "95th percentile of the time to response headers per route template.",
                    &[(
                        "histogram_quantile(0.95, sum by (endpoint, le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
                        "{{endpoint}}",
                    )],
                ),
                graph(
                    "p50 by route",
                    "s",
                    "Median time to response headers per route template.",
                    &[(
                        "histogram_quantile(0.5, sum by (endpoint, le) (rate(http_request_duration_seconds_bucket[$__rate_interval])))",
                        "{{endpoint}}",
                    )],
                ),
            ],
        ),
        (
            "errors",
            8,
            &[
                graph(
                    "errors by route and type",
                    "ops",
                    "Requests answered with an error per second, by route template and error type.",
                    &[(
                        "sum by (endpoint, error_type) (rate(http_errors_total[$__rate_interval]))",
                        "{{endpoint}} {{error_type}}",
                    )],
                ),
                graph(
                    "error ratio by route",
                    "percentunit",
                    "Share of a route's answered requests counted in http_errors_total.",
                    &[(
                        "sum by (endpoint) (rate(http_errors_total[$__rate_interval])) / sum by (endpoint) (rate(http_requests_total[$__rate_interval]))",
                        "{{endpoint}}",
                    )],
                ),
                graph(
                    "5xx ratio by route",
                    "percentunit",
                    "Share of a route's answered requests with a 5xx status.",
                    &[(
                        "sum by (endpoint) (rate(http_requests_total{status_code=~\"5..\"}[$__rate_interval])) / sum by (endpoint) (rate(http_requests_total[$__rate_interval]))",
                        "{{endpoint}}",
                    )],
                ),
            ],
        ),
    ],
);

const RESILIENCE: Layout = (
    "mainstay-api resilience",
    "Circuit breakers (states, transitions, calls by outcome), retries and their budget, bulkhead saturation.",
    &[
        (
            "circuit breakers",
            8,
            &[
                graph(
                    "instances per breaker state",
                    "none",
                    "How many selected instances have each breaker in each state (circuit_breaker_state_active is 1 for the current state).",
                    &[(
                        "sum by (breaker, state) (circuit_breaker_state_active) > 0",
                        "{{breaker}} {{state}}",
                    )],
                ),
                graph(
                    "transitions",
                    "ops",
                    "Breaker state transitions per second, by breaker and from/to state.",
                    &[(
                        "sum by (breaker, from, to) (rate(circuit_breaker_transitions_total[$__rate_interval]))",
                        "{{breaker}} {{from}} → {{to}}",
                    )],
                ),
                graph(
                    "calls by outcome",
                    "ops",
                    "Calls through each breaker per second, by outcome.",
                    &[(
                        "sum by (breaker, outcome) (rate(circuit_breaker_calls_total[$__rate_interval]))",
                        "{{breaker}} {{outcome}}",
                    )],
                ),
            ],
        ),
        (
            "retries",
            12,
            &[
                graph(
                    "retry attempts by outcome",
                    "ops",
                    "Attempts of each retrying operation per second, by outcome.",
                    &[(
                        "sum by (operation, outcome) (rate(retry_attempts_total[$__rate_interval]))",
                        "{{operation}} {{outcome}}",
                    )],
                ),
                graph(
                    "retry budget exhausted",
                    "ops",
                    "Retries refused per second because the retry budget was spent.",
                    &[(
                        "sum by (operation) (rate(retry_budget_exhausted_total[$__rate_interval]))",
                        "{{operation}}",
                    )],
                ),
            ],
        ),
        (
            "bulkheads",
            6,
            &[
                graph(
                    "saturation (in flight / max concurrent)",
                    "percentunit",
                    "Slots in use over slots, the fullest instance per bulkhead: at 100% new callers wait or are rejected.",
                    &[(
                        "max by (bulkhead) (bulkhead_in_flight / bulkhead_max_concurrent)",
                        "{{bulkhead}}",
                    )],
                ),
                graph(
                    "waiting",
                    "none",
                    "Callers waiting for a slot, per bulkhead.",
                    &[("sum by (bulkhead) (bulkhead_waiting)", "{{bulkhead}}")],
                ),
                graph(
                    "rejections",
                    "ops",
                    "Calls rejected per second by a full bulkhead.",
                    &[(
                        "sum by (bulkhead) (rate(bulkhead_rejections_total[$__rate_interval]))",
                        "{{bulkhead}}",
                    )],
                ),
                graph(
                    "wait time p99",
                    "s",
                    "99th percentile of the time a caller waited for a slot, until it got one or gave up.",
                    &[(
                        "histogram_quantile(0.99, sum by (bulkhead, le) (rate(bulkhead_wait_seconds_bucket[$__rate_interval])))",
                        "{{bulkhead}}",
                    )],
                ),
            ],
        ),
    ],
);

const RATELIMIT: Layout = (
    "mainstay-api rate limits",
    "Rate-limit decisions, the Redis backend (latency, errors) and its in-process fallback, the local over-limit cache, and failed authentications.",
    &[
        (
            "decisions",
            8,
            &[
                graph(
                    "decisions by policy and decision",
                    "ops",
                    "Rate-limit decisions per second, by the policy that decided and the decision.",
                    &[(
                        "sum by (policy, decision) (rate(ratelimit_decisions_total[$__rate_interval]))",
                        "{{policy}} {{decision}}",
                    )],
                ),
                graph(
                    "decisions by backend",
                    "ops",
                    "Rate-limit decisions per second, by the backend that made them.",
                    &[(
                        "sum by (backend) (rate(ratelimit_decisions_total[$__rate_interval]))",
                        "{{backend}}",
                    )],
                ),
                graph(
                    "local cache hits",
                    "ops",
                    "Requests denied per second by the local over-limit cache, without a Redis round trip.",
                    &[(
                        "sum by (instance) (rate(ratelimit_local_cache_hits_total[$__rate_interval]))",
                        "{{instance}}",
                    )],
                ),
                graph(
                    "local keys",
                    "none",
                    "Keys held by the in-process limit stores.",
                    &[("max by (instance) (ratelimit_local_keys)", "{{instance}}")],
                ),
            ],
        ),
        (
            "Redis and fallback",
            6,
            &[
                graph(
                    "fallback active",
                    "none",
                    "1 while an instance decides rate limits without Redis (its circuit breaker is not closed).",
                    &[(
                        "max by (instance) (ratelimit_fallback_active)",
                        "{{instance}}",
                    )],
                ),
                graph(
                    "fallback switches",
                    "ops",
                    "Switches between Redis and the fallback per second, by the side switched to.",
                    &[(
                        "sum by (to) (rate(ratelimit_fallback_switches_total[$__rate_interval]))",
                        "to {{to}}",
                    )],
                ),
                graph(
                    "Redis latency",
                    "s",
                    "Percentiles of the duration of a Redis decision, pool checkout included.",
                    &[
                        (
                            "histogram_quantile(0.5, sum by (le) (rate(ratelimit_redis_duration_seconds_bucket[$__rate_interval])))",
                            "p50",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (le) (rate(ratelimit_redis_duration_seconds_bucket[$__rate_interval])))",
                            "p99",
                        ),
                    ],
                ),
                graph(
                    "backend errors by type",
                    "ops",
                    "Failed Redis calls of the rate limiter per second, by error type.",
                    &[(
                        "sum by (error_type) (rate(ratelimit_backend_errors_total[$__rate_interval]))",
                        "{{error_type}}",
                    )],
                ),
            ],
        ),
        (
            "authentication",
            12,
            &[graph(
                "auth failures by reason and outcome",
                "ops",
                "Failed authentications of /v1 callers per second, by reason and outcome (rejected: 401, throttled: 429).",
                &[(
                    "sum by (reason, outcome) (rate(auth_failures_total[$__rate_interval]))",
                    "{{reason}} {{outcome}}",
                )],
            )],
        ),
    ],
);

const STORAGE: Layout = (
    "mainstay-api storage",
    "The tiered record store per `store`: writes and the WAL, uploads and their backlog, the object store, compaction, the block cache, orphan collection, and the states that refuse writes.",
    &[
        (
            "writes and WAL",
            8,
            &[
                graph(
                    "inserts",
                    "ops",
                    "Records acknowledged per second.",
                    &[(
                        "sum by (store) (rate(storage_inserts_total[$__rate_interval]))",
                        "{{store}}",
                    )],
                ),
                graph(
                    "insert latency",
                    "s",
                    "Percentiles of the write latency up to acknowledgement.",
                    &[
                        (
                            "histogram_quantile(0.5, sum by (store, le) (rate(storage_insert_duration_seconds_bucket[$__rate_interval])))",
                            "{{store}} p50",
                        ),
                        (
                            "histogram_quantile(0.95, sum by (store, le) (rate(storage_insert_duration_seconds_bucket[$__rate_interval])))",
                            "{{store}} p95",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (store, le) (rate(storage_insert_duration_seconds_bucket[$__rate_interval])))",
                            "{{store}} p99",
                        ),
                    ],
                ),
                graph(
                    "WAL bytes written",
                    "Bps",
                    "Bytes written to the WAL per second.",
                    &[(
                        "sum by (store) (rate(storage_wal_bytes_total[$__rate_interval]))",
                        "{{store}}",
                    )],
                ),
                graph(
                    "WAL fsyncs",
                    "ops",
                    "WAL fsyncs per second.",
                    &[(
                        "sum by (store) (rate(storage_wal_fsyncs_total[$__rate_interval]))",
                        "{{store}}",
                    )],
                ),
                graph(
                    "WAL and memtables in bytes",
                    "bytes",
                    "Bytes of WAL files on disk and bytes held in memtables.",
                    &[
                        (
                            "sum by (store) (storage_wal_disk_bytes)",
                            "{{store}} WAL on disk",
                        ),
                        (
                            "sum by (store) (storage_memtable_bytes)",
                            "{{store}} memtables",
                        ),
                    ],
                ),
                graph(
                    "WAL files",
                    "none",
                    "WAL files on disk.",
                    &[("sum by (store) (storage_wal_files)", "{{store}}")],
                ),
            ],
        ),
        (
            "uploads and object store",
            8,
            &[
                graph(
                    "upload queue",
                    "none",
                    "Segments waiting for upload.",
                    &[("sum by (store) (storage_upload_queue_depth)", "{{store}}")],
                ),
                graph(
                    "backlog and its limit",
                    "bytes",
                    "Bytes not yet uploaded per instance, and the bound past which writes to object-store collections are refused.",
                    &[
                        (
                            "max by (instance, store) (storage_backlog_bytes)",
                            "{{instance}} {{store}} backlog",
                        ),
                        (
                            "max by (instance, store) (storage_backlog_limit_bytes)",
                            "{{instance}} {{store}} limit",
                        ),
                    ],
                ),
                graph(
                    "backlog over its limit",
                    "percentunit",
                    "Backlog bytes over the limit, the fullest instance per store: at 100% writes are refused.",
                    &[(
                        "max by (store) (storage_backlog_bytes / storage_backlog_limit_bytes)",
                        "{{store}}",
                    )],
                ),
                graph(
                    "upload attempts by outcome",
                    "ops",
                    "Segment upload attempts per second, by outcome.",
                    &[(
                        "sum by (store, outcome) (rate(storage_upload_attempts_total[$__rate_interval]))",
                        "{{store}} {{outcome}}",
                    )],
                ),
                graph(
                    "upload latency",
                    "s",
                    "Percentiles of the segment upload latency.",
                    &[
                        (
                            "histogram_quantile(0.5, sum by (store, le) (rate(storage_upload_duration_seconds_bucket[$__rate_interval])))",
                            "{{store}} p50",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (store, le) (rate(storage_upload_duration_seconds_bucket[$__rate_interval])))",
                            "{{store}} p99",
                        ),
                    ],
                ),
                graph(
                    "upload throughput",
                    "Bps",
                    "Bytes uploaded per second.",
                    &[(
                        "sum by (store) (rate(storage_upload_bytes_total[$__rate_interval]))",
                        "{{store}}",
                    )],
                ),
                graph(
                    "object-store errors by class",
                    "ops",
                    "Object store errors per second, by error class.",
                    &[(
                        "sum by (store, error_type) (rate(storage_object_store_errors_total[$__rate_interval]))",
                        "{{store}} {{error_type}}",
                    )],
                ),
                graph(
                    "dead-lettered segments",
                    "ops",
                    "Segments sent to the dead-letter queue per second.",
                    &[(
                        "sum by (store) (rate(storage_dead_lettered_segments_total[$__rate_interval]))",
                        "{{store}}",
                    )],
                ),
            ],
        ),
        (
            "compaction, cache and orphans",
            6,
            &[
                graph(
                    "compactions by outcome",
                    "ops",
                    "Compactions per second, by outcome.",
                    &[(
                        "sum by (store, outcome) (rate(storage_compactions_total[$__rate_interval]))",
                        "{{store}} {{outcome}}",
                    )],
                ),
                graph(
                    "cache hit ratio",
                    "percentunit",
                    "Block cache hits over lookups (hits and misses).",
                    &[(
                        "sum by (store) (rate(storage_cache_hits_total[$__rate_interval])) / (sum by (store) (rate(storage_cache_hits_total[$__rate_interval])) + sum by (store) (rate(storage_cache_misses_total[$__rate_interval])))",
                        "{{store}}",
                    )],
                ),
                graph(
                    "orphan collection passes",
                    "ops",
                    "Orphan collection passes per second, by outcome.",
                    &[(
                        "sum by (store, outcome) (rate(storage_orphan_collections_total[$__rate_interval]))",
                        "{{store}} {{outcome}}",
                    )],
                ),
                graph(
                    "orphans deleted",
                    "Bps",
                    "Bytes of unreferenced objects deleted by orphan collection per second.",
                    &[(
                        "sum by (store) (rate(storage_orphan_deleted_bytes_total[$__rate_interval]))",
                        "{{store}}",
                    )],
                ),
                graph(
                    "orphan objects deleted",
                    "ops",
                    "Unreferenced objects deleted by orphan collection per second.",
                    &[(
                        "sum by (store) (rate(storage_orphan_objects_deleted_total[$__rate_interval]))",
                        "{{store}}",
                    )],
                ),
            ],
        ),
        (
            "states that refuse writes",
            8,
            &[
                graph(
                    "WAL failed",
                    "none",
                    "1 when the WAL refuses writes after a failed write or fsync.",
                    &[(
                        "max by (instance, store) (storage_wal_failed)",
                        "{{instance}} {{store}}",
                    )],
                ),
                graph(
                    "fenced",
                    "none",
                    "1 when another writer claimed the object-store prefix and writes are refused.",
                    &[(
                        "max by (instance, store) (storage_fenced)",
                        "{{instance}} {{store}}",
                    )],
                ),
                graph(
                    "WAL damage",
                    "none",
                    "Damaged WAL stretches skipped at open and not yet acknowledged.",
                    &[(
                        "max by (instance, store) (storage_wal_damage)",
                        "{{instance}} {{store}}",
                    )],
                ),
            ],
        ),
    ],
);

const DLQ: Layout = (
    "mainstay-api dead-letter queue",
    "The dead-letter queue per `queue`: size, oldest entry, what enters and leaves it, redrives, and its journal.",
    &[
        (
            "queues",
            8,
            &[
                graph(
                    "size by queue",
                    "none",
                    "Entries held per queue.",
                    &[("sum by (queue) (dlq_size)", "{{queue}}")],
                ),
                graph(
                    "oldest entry age",
                    "s",
                    "Time since the oldest entry of each queue was pushed.",
                    &[("max by (queue) (dlq_oldest_entry_age_seconds)", "{{queue}}")],
                ),
                graph(
                    "pushed by queue and error class",
                    "ops",
                    "Entries pushed per second, by queue and error class.",
                    &[(
                        "sum by (queue, error_type) (rate(dlq_pushed_total[$__rate_interval]))",
                        "{{queue}} {{error_type}}",
                    )],
                ),
                graph(
                    "evicted, rejected, expired",
                    "ops",
                    "Entries evicted (a full queue or dlq), pushes rejected (a full reject queue or dlq) and entries expired by TTL cleanup, per second.",
                    &[
                        (
                            "sum by (queue) (rate(dlq_evictions_total[$__rate_interval]))",
                            "{{queue}} evicted",
                        ),
                        (
                            "sum by (queue) (rate(dlq_rejected_total[$__rate_interval]))",
                            "{{queue}} rejected",
                        ),
                        (
                            "sum by (queue) (rate(dlq_expired_total[$__rate_interval]))",
                            "{{queue}} expired",
                        ),
                    ],
                ),
                graph(
                    "redrive outcomes",
                    "ops",
                    "Redrive attempts per second, by queue and outcome.",
                    &[(
                        "sum by (queue, outcome) (rate(dlq_redriven_total[$__rate_interval]))",
                        "{{queue}} {{outcome}}",
                    )],
                ),
            ],
        ),
        (
            "journal",
            6,
            &[
                graph(
                    "journal size",
                    "bytes",
                    "Size of the journal file.",
                    &[("max by (instance) (dlq_journal_bytes)", "{{instance}}")],
                ),
                graph(
                    "journal fsyncs",
                    "ops",
                    "fdatasync calls on the journal per second.",
                    &[(
                        "sum by (instance) (rate(dlq_journal_fsyncs_total[$__rate_interval]))",
                        "{{instance}}",
                    )],
                ),
                graph(
                    "journal failed",
                    "none",
                    "1 when the journal refuses writes after a failed write or fsync.",
                    &[("max by (instance) (dlq_journal_failed)", "{{instance}}")],
                ),
                graph(
                    "truncations and corrupt records since start",
                    "none",
                    "Torn or corrupt journal tails truncated and records skipped for a failed checksum when the journal was opened.",
                    &[
                        (
                            "max by (instance) (dlq_journal_truncations_total)",
                            "{{instance}} truncations",
                        ),
                        (
                            "max by (instance) (dlq_journal_corrupt_records_total)",
                            "{{instance}} corrupt records",
                        ),
                    ],
                ),
            ],
        ),
    ],
);

pub(super) fn layout(area: Area) -> &'static Layout {
    match area {
        Area::Overview => &OVERVIEW,
        Area::Http => &HTTP,
        Area::Resilience => &RESILIENCE,
        Area::Ratelimit => &RATELIMIT,
        Area::Storage => &STORAGE,
        Area::Dlq => &DLQ,
    }
}
