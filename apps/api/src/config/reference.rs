//! The reference table: the type and description of every key ([`KEY_DOCS`]), from which
//! `cargo xtask codegen` writes `docs/configuration.md`.

use super::load::ENV_PREFIX;
use super::print::{flatten, render};
use super::types::Config;

/// The documentation of every key: type and description. A test checks that it names exactly the
/// keys the configuration types have, so a new key cannot ship undocumented.
pub const KEY_DOCS: &[(&str, &str, &str)] = &[
    (
        "admin.token",
        "string (secret)",
        "Bearer token of the admin API; at least 16 characters. Without it the `/admin` routes do not exist.",
    ),
    (
        "auth.allow_anonymous",
        "bool",
        "Let callers without an API key in, as anonymous members of the `public` organisation.",
    ),
    (
        "auth.api_keys",
        "array of tables (file only)",
        "API keys: `{ key_sha256, organisation, tier = \"api-key\"|\"premium\"|\"admin\", plan = \"free\"|\"pro\"|\"enterprise\" }`.",
    ),
    (
        "auth.failure_limit",
        "table `{ requests, period, burst }`",
        "Failed authentications (unknown or malformed API keys) allowed per client network (`ratelimit.ipv4_prefix_len`/`ipv6_prefix_len`, after `ratelimit.trusted_proxies`) before such requests are answered 429 with `Retry-After`; counted on Redis when `redis.url` is set, in process otherwise and during a Redis outage. A valid key always passes. Default 10 per minute.",
    ),
    (
        "backup.status_interval",
        "duration",
        "How often the service reads the backup root's verification record and newest backup for the `backup_*` metrics.",
    ),
    (
        "backup.url",
        "URL or unset",
        "The backup root (a directory, `file:///dir` or `s3://bucket/prefix`): the default destination of `POST /admin/backups` and `backup create`, and the root whose verification the `backup_*` metrics report; it also keeps a copy of the erasure ledger (`_erasure/ledger/`), which `backup restore` reads. Unset: no default, no `backup_*` series.",
    ),
    (
        "dlq.cleanup_interval",
        "duration",
        "How often expired entries are archived and removed.",
    ),
    (
        "dlq.compact_after_bytes",
        "integer (bytes)",
        "The journal is compacted into a snapshot past this size (and at shutdown).",
    ),
    (
        "dlq.defaults.archive",
        "bool",
        "Evicted and expired entries of a queue are appended to its archive file.",
    ),
    (
        "dlq.defaults.capacity",
        "integer",
        "Entries a queue holds before its overflow policy applies.",
    ),
    (
        "dlq.defaults.overflow",
        "`evict` | `reject`",
        "At capacity: evict the oldest entry (archived, counted) or refuse the push with a typed error.",
    ),
    (
        "dlq.defaults.ttl",
        "duration or unset",
        "Age after which an entry expires (archived); unset keeps entries until redriven or deleted.",
    ),
    (
        "dlq.journal_recovery",
        "`skip_corrupt` | `refuse`",
        "A damaged DLQ journal record followed by valid ones: recover around it (a copy kept in `dlq/log/corrupt/`, the loss logged and reported) or refuse to start (exit 4). A torn tail is always truncated.",
    ),
    (
        "dlq.max_payload_bytes",
        "integer (bytes)",
        "Largest inline payload; larger is refused whole, never truncated.",
    ),
    (
        "dlq.max_total_payload_bytes",
        "integer (bytes)",
        "Bound on the inline payload bytes of all queues together.",
    ),
    (
        "dlq.queues",
        "table of queue settings by name",
        "Per-queue overrides of `dlq.defaults`, e.g. `[dlq.queues.uploads] overflow = \"reject\"`.",
    ),
    (
        "dlq.redrive_rate_per_second",
        "integer",
        "Entries redriven per second at most (0 = unlimited).",
    ),
    (
        "dlq.sync_mode",
        "`grouped` | `per_push`",
        "Concurrent pushes share one fsync (grouped), or each push has its own.",
    ),
    (
        "dlq.total_capacity",
        "integer",
        "Entries of all queues together.",
    ),
    (
        "erasure.deadline",
        "duration",
        "Time from `DELETE /admin/organisations/{org}` to the physical completion of the erasure in every tier (WAL, local segments, object store, DLQ); the background task retries until then and logs an error past it. Default `24h`.",
    ),
    (
        "erasure.retry_interval",
        "duration",
        "Time between two attempts of the background task at an unfinished erasure; shorter than `erasure.deadline`. Default `1m`.",
    ),
    (
        "health.background_refresh",
        "bool",
        "Refresh the checks in the background every `cache_interval`, so probes never wait for a check.",
    ),
    (
        "health.cache_interval",
        "duration",
        "How long one run of the checks answers probes; a burst of probes makes at most one call per dependency per interval.",
    ),
    (
        "health.checks",
        "table of `{ timeout, critical }` by check name",
        "Per-check overrides, e.g. `[health.checks.redis] critical = true`. Checks: `circuit-breakers`, `disk`, `dlq`, `dlq-journal`, `memory`, `object-store`, `storage-wal`, `storage-writer`, and `redis` when `redis.url` is set; another name is refused (exit 2). With `storage.enabled = false` the store's checks (`dlq`, `dlq-journal`, `object-store`, `storage-wal`, `storage-writer`) are not registered and their overrides are ignored.",
    ),
    (
        "health.default_timeout",
        "duration",
        "Timeout of a check that sets none; a check past it is reported unhealthy.",
    ),
    (
        "health.disk.degraded_below_free_percent",
        "float in 0..=100",
        "The `disk` check is degraded below this much free space.",
    ),
    ("health.disk.enabled", "bool", "Register the `disk` check."),
    (
        "health.disk.path",
        "path",
        "A path on the file system the `disk` check watches; `.` (the default) means `storage.data_dir`, where the WAL is (with `storage.enabled = false`, the working directory).",
    ),
    (
        "health.disk.unhealthy_below_free_percent",
        "float in 0..=100",
        "The `disk` check is unhealthy below this much free space.",
    ),
    (
        "health.memory.degraded_above_used_percent",
        "float in 0..=100",
        "The `memory` check is degraded above this much memory in use.",
    ),
    (
        "health.memory.enabled",
        "bool",
        "Register the `memory` check.",
    ),
    (
        "health.memory.unhealthy_above_used_percent",
        "float in 0..=100",
        "The `memory` check is unhealthy above this much memory in use.",
    ),
    (
        "ratelimit.anonymous_plan",
        "string",
        "Plan of callers without a key (a key of `ratelimit.plans`).",
    ),
    (
        "ratelimit.anonymous_tier",
        "string",
        "Tier of callers without a key (a key of `ratelimit.tiers`).",
    ),
    (
        "ratelimit.breaker",
        "table (breaker config)",
        "Circuit breaker around Redis (`trip`, `consecutive_failures`, `open_duration`, `half_open_max_calls`, ...); listed as `ratelimit-redis` on the admin API.",
    ),
    (
        "ratelimit.default_class",
        "string",
        "Route class of routes not in `ratelimit.routes`.",
    ),
    ("ratelimit.enabled", "bool", "Limit `/v1` requests at all."),
    (
        "ratelimit.fallback",
        "`local` | `allow` | `deny`",
        "While Redis is unavailable: in-process limits divided by the live instance count (`instance_count` before one was read), let everything through, or refuse everything (then the `redis` check is critical).",
    ),
    (
        "ratelimit.heartbeat_interval",
        "duration",
        "How often each instance announces itself in Redis and reads the live instance count the `local` fallback divides every limit by.",
    ),
    (
        "ratelimit.instance_count",
        "integer",
        "Instances sharing the limits, for the `local` fallback only when no live count was ever read from Redis.",
    ),
    (
        "ratelimit.ipv4_prefix_len",
        "integer",
        "Anonymous callers are counted per IPv4 network of this many bits (1 to 32; 32 is one address).",
    ),
    (
        "ratelimit.ipv6_prefix_len",
        "integer",
        "Anonymous callers are counted per IPv6 network of this many bits (1 to 128; 64 is one subnet).",
    ),
    (
        "ratelimit.key_prefix",
        "string",
        "Prefix of every Redis key.",
    ),
    (
        "ratelimit.max_local_keys",
        "integer",
        "Keys each in-process limit holds; past it a new key evicts the least recently used one, which starts again with a full bucket.",
    ),
    (
        "ratelimit.over_limit_cache",
        "bool",
        "Deny keys Redis denied locally until their retry time, without a round trip.",
    ),
    (
        "ratelimit.over_limit_cache_max_keys",
        "integer",
        "Keys the over-limit cache holds.",
    ),
    (
        "ratelimit.plans",
        "table of `{ requests, period, burst }` by plan",
        "Hourly quota per organisation by plan (free 1,000/h, pro 10,000/h, enterprise 100,000/h).",
    ),
    (
        "ratelimit.redis_connect_timeout",
        "duration",
        "How long making a Redis connection may take; connections are made in the background, never while a decision waits.",
    ),
    (
        "ratelimit.redis_pool_size",
        "integer",
        "Multiplexed connections kept to Redis (1 to 64); calls take them in turn.",
    ),
    (
        "ratelimit.redis_response_timeout",
        "duration",
        "How long a Redis command may stay unanswered before it counts as a failure for the breaker (slower is down, faster is loaded); at least `redis_timeout`.",
    ),
    (
        "ratelimit.redis_timeout",
        "duration",
        "How long a decision waits for Redis before the fallback decides it; the call goes on, and its late answer counts as a success.",
    ),
    (
        "ratelimit.route_classes",
        "table of `{ requests, period, burst }` by class",
        "Per-caller limits by route class (writes 60/min, queries 30/min, default 100/min, burst 20).",
    ),
    (
        "ratelimit.routes",
        "table of class by `\"METHOD /template\"`",
        "Route templates mapped to route classes.",
    ),
    (
        "ratelimit.secret",
        "string (secret), at least 16 bytes",
        "HMAC secret identities are hashed with before they become Redis keys or log fields; required with `redis.url`, random per process otherwise.",
    ),
    (
        "ratelimit.sweep_interval",
        "duration",
        "How often idle in-process keys are reclaimed.",
    ),
    (
        "ratelimit.tiers",
        "table of tier limits by tier",
        "Limits per caller tier (anonymous 100/min, api-key 1000/min, premium 5000/min, admin unlimited).",
    ),
    (
        "ratelimit.trusted_proxies",
        "array of addresses or CIDR blocks",
        "Peers allowed to name the client with `X-Forwarded-For`; from anyone else it is ignored.",
    ),
    (
        "redis.cluster",
        "boolean",
        "`redis.url` is a seed node of a Redis Cluster: decisions use cluster-aware connections that follow `MOVED`/`ASK`, and the `redis` check reports `cluster_state`.",
    ),
    (
        "redis.cluster_seeds",
        "array of URLs",
        "More seed nodes of the cluster besides `redis.url` (with `redis.cluster = true`), with the same scheme.",
    ),
    (
        "redis.tls_ca_file",
        "path",
        "PEM file of the CA that `rediss://` servers are verified against instead of the system's roots.",
    ),
    (
        "redis.url",
        "URL",
        "Redis shared by the instances, `redis://host:port` (`rediss://` for TLS, verified with rustls); unset means in-process rate limits and no `redis` check.",
    ),
    ("server.addr", "socket address", "Address to listen on."),
    (
        "server.body_limit_bytes",
        "integer (bytes)",
        "Largest request body accepted; larger is answered 413.",
    ),
    (
        "server.request_timeout",
        "duration",
        "Time one request may take before it is answered 504 (a write cut short is indeterminate: it may or may not have been applied).",
    ),
    (
        "shutdown.drain_delay",
        "duration",
        "Time the listener keeps accepting after readiness turned 503 on SIGTERM; shorter than `shutdown.timeout` less its flush reserve (a fifth, at most 5 s).",
    ),
    (
        "shutdown.timeout",
        "duration",
        "Budget from SIGTERM/SIGINT to exit: drain (all but a fifth, at most 5 s), then the store, the DLQ and telemetry within what is left; the process exits at most 1 s past it whatever hangs (exit 1).",
    ),
    (
        "storage.block_bytes",
        "integer (bytes)",
        "Target size of a segment block before compression.",
    ),
    (
        "storage.cache_bytes",
        "integer (bytes)",
        "Object-store blocks cached in memory for `s3_only` collections (LRU).",
    ),
    (
        "storage.compaction.collect_orphans",
        "bool",
        "Delete objects no manifest references (left by a crash) once older than `grace_period`: after start-up, every `interval` and after an admin compaction.",
    ),
    (
        "storage.compaction.enabled",
        "bool",
        "Compact collections in the background.",
    ),
    (
        "storage.compaction.grace_period",
        "duration",
        "Replaced objects are deleted this long after the manifest that dropped them; objects no manifest references are collected once this old.",
    ),
    (
        "storage.compaction.interval",
        "duration",
        "How often background compaction looks for work.",
    ),
    (
        "storage.compaction.min_segments",
        "integer",
        "Segments of one size tier that start a compaction.",
    ),
    (
        "storage.compression",
        "`none` | `gzip` | `zstd`",
        "Compression of segment blocks written from now on; segments already written keep theirs.",
    ),
    (
        "storage.flush_interval",
        "duration",
        "A memtable older than this is frozen into a segment, so a quiet collection neither pins the WAL nor keeps its data from the object store.",
    ),
    (
        "storage.limits.default_page_size",
        "integer",
        "Records per listing page when the caller names none.",
    ),
    (
        "storage.limits.max_batch_bytes",
        "integer (bytes)",
        "Largest batch; larger is answered 413.",
    ),
    (
        "storage.limits.max_batch_records",
        "integer",
        "Most records in one batch; more is answered 413.",
    ),
    (
        "storage.limits.max_page_size",
        "integer",
        "Largest listing page a caller may ask for.",
    ),
    (
        "storage.limits.max_value_bytes",
        "integer (bytes)",
        "Largest record value; larger is answered 413.",
    ),
    (
        "storage.max_wal_bytes",
        "integer (bytes)",
        "Past this many bytes of WAL files on disk, the memtables holding the oldest records are frozen so their WAL files can go (segments waiting for upload keep theirs).",
    ),
    (
        "storage.memtable_bytes",
        "integer (bytes)",
        "A collection's memtable is frozen into a segment past this size.",
    ),
    (
        "storage.encryption",
        "boolean",
        "Seal every record value with its organisation's data key (XChaCha20-Poly1305; ids and collection names stay plain). Needs `storage.master_key`. Values written before it was on stay readable (docs/operations/encryption.md).",
    ),
    (
        "storage.master_key",
        "string (secret): 64 hex digits or base64 of 32 bytes",
        "The key that wraps the per-organisation data keys; required with `storage.encryption` (exit 2 without it, or when it is not the key the key store was set up with). Make one with `openssl rand -hex 32`; keep it in a secret, not in the file.",
    ),
    (
        "storage.keys_url",
        "URL",
        "Where the wrapped data keys and the erasure ledger live: `file:///path`, `memory://` or `s3://bucket/prefix`; keep it out of backups. Unset: `_keys` under the object store of `storage.object_store_url`.",
    ),
    (
        "storage.object_store_url",
        "URL",
        "`file:///path`, `memory://` or `s3://bucket/prefix` (endpoint, region and credentials from `AWS_*`); unset means `data_dir/objects` on the local file system.",
    ),
    (
        "storage.upload.attempt_timeout",
        "duration",
        "Timeout of one upload attempt.",
    ),
    (
        "storage.upload.backpressure_retry_after",
        "duration",
        "`Retry-After` of a write refused because the local backlog is full.",
    ),
    (
        "storage.upload.base_delay",
        "duration",
        "First retry delay of an upload (doubling, full jitter).",
    ),
    (
        "storage.upload.batch_bytes",
        "integer (bytes)",
        "Bytes of segments committed to one manifest at most.",
    ),
    (
        "storage.upload.batch_segments",
        "integer",
        "Segments committed to one manifest at most.",
    ),
    (
        "storage.upload.breaker",
        "table (breaker config)",
        "Circuit breaker of the uploads (default: above 50% failures over 60 s opens for 300 s; 10 successes close).",
    ),
    (
        "storage.upload.breaker_poll_interval",
        "duration",
        "How often the worker looks again while the breaker is open.",
    ),
    (
        "storage.upload.dlq_capacity",
        "integer",
        "Segments the `storage-segments` dead-letter queue holds (it rejects past that, never evicts or expires).",
    ),
    (
        "storage.upload.max_attempts",
        "integer",
        "Attempts of one upload before its segment is pinned and dead-lettered.",
    ),
    (
        "storage.upload.max_backlog_bytes",
        "integer (bytes)",
        "Bytes not yet uploaded past which writes are refused with 503 + `Retry-After`.",
    ),
    (
        "storage.upload.max_delay",
        "duration",
        "Longest retry delay of an upload.",
    ),
    (
        "storage.upload.parallelism",
        "integer",
        "Uploads in flight at once.",
    ),
    (
        "storage.upload.retry_budget",
        "table (`ratio`, `min_retries_per_second`, `ttl`)",
        "Retry budget shared by all uploads.",
    ),
    (
        "storage.wal_recovery",
        "`refuse` | `skip_corrupt`",
        "A WAL file damaged in the middle (valid frames after a bad one): `refuse` stops start-up with exit code 4 naming the file, offset and frames that follow; `skip_corrupt` keeps a copy under `data_dir/corrupt/`, recovers every valid frame and reports the loss until acknowledged. A torn tail is always cut quietly.",
    ),
    (
        "storage.wal_segment_bytes",
        "integer (bytes)",
        "A WAL file is rotated past this size.",
    ),
    (
        "storage.data_dir",
        "path",
        "Directory for everything kept on disk (the dead-letter queue under `dlq/`, the admin overrides in `admin-config.toml`). With `storage.enabled = false` it need not exist: only the admin API's runtime configuration is persisted there, when it is writable.",
    ),
    (
        "storage.enabled",
        "bool",
        "Run the record store. `false` is the stateless mode (docs/operations/stateless.md): no WAL, object store, dead-letter queue or records API (`/v1/collections...`, `/admin/dlq...`, `/admin/collections/...`, `/admin/store/...` answer 404 of type `.../storage-disabled`), no storage health checks or metrics; the other `storage.*` and `dlq.*` keys are still validated but ignored. Limits, health, telemetry, auth and the admin API stay.",
    ),
    (
        "telemetry.log_filter",
        "string",
        "Log filter directives (`info`, `mainstay_api=debug,info`); `RUST_LOG` overrides it.",
    ),
    (
        "telemetry.log_format",
        "`json` | `pretty`",
        "One bunyan JSON object per line, or human-readable lines.",
    ),
    (
        "telemetry.otlp_ca_file",
        "path",
        "PEM file of CA certificates trusted for an `https://` OTLP endpoint besides the system roots (a private CA or a self-signed collector).",
    ),
    (
        "telemetry.otlp_endpoint",
        "URL",
        "OTLP collector endpoint (`http://` or `https://`, verified against the system roots and `telemetry.otlp_ca_file`); unset means no trace export. For `http/protobuf` an endpoint without a path gets `/v1/traces`.",
    ),
    (
        "telemetry.otlp_headers",
        "table of strings (secret)",
        "Headers (gRPC metadata) sent with every export, e.g. `{ authorization = \"Bearer ...\" }`; lower-case names. Values are masked in `config print` and `GET /admin/config`; they win over the same names in `OTEL_EXPORTER_OTLP_HEADERS`.",
    ),
    (
        "telemetry.otlp_protocol",
        "`http/protobuf` | `grpc`",
        "OTLP transport.",
    ),
    (
        "telemetry.redact_fields",
        "array of strings",
        "More field-name patterns whose values are written as `[REDACTED]` in logs and spans, added to the built-in ones (`*token*`, `*secret*`, `*password*`, `*passwd*`, `*api_key*`, `*apikey*`, `authorization`, `cookie`, `set-cookie`); compared in lower case with `-` as `_`, `*` matches any run.",
    ),
    (
        "telemetry.resource_attributes",
        "table of strings",
        "More resource attributes of exported spans, e.g. `{ \"deployment.environment.name\" = \"prod\" }`; not `service.name`, `service.version` or `service.instance.id` (their own keys).",
    ),
    (
        "telemetry.sampling_ratio",
        "float in 0..=1",
        "Parent-based trace-id-ratio sampling of new traces.",
    ),
    (
        "telemetry.service_instance_id",
        "string",
        "`service.instance.id` resource attribute; unset means a random id per process.",
    ),
    (
        "telemetry.service_name",
        "string",
        "`service.name` resource attribute and the `name` of log lines.",
    ),
    (
        "telemetry.service_version",
        "string",
        "`service.version` resource attribute; defaults to the binary's version.",
    ),
];

/// Keys that cannot be set from the environment.
const FILE_ONLY: &[&str] = &["auth.api_keys"];

/// `docs/configuration.md`, generated from the configuration types and [`KEY_DOCS`].
pub fn reference() -> String {
    let defaults = flatten(&Config::default());
    let mut out = String::from(
        "<!-- Generated by `cargo xtask codegen` from apps/api/src/config/reference.rs; do not edit. -->\n\
         # Configuration reference\n\n\
         `mainstay-api` reads, lowest precedence first: the defaults below, then `mainstay.toml` in the\n\
         working directory (or the file given with `--config PATH`), then environment variables named\n\
         `MAINSTAY_` + the key in upper case with `__` between levels, then the settings changed through\n\
         the admin API (`admin-config.toml` in `storage.data_dir`). The standard OpenTelemetry variables\n\
         named in the table (`OTEL_EXPORTER_OTLP_ENDPOINT`, ...) sit just above the defaults: the file\n\
         and `MAINSTAY_` variables win over them. An invalid value stops the\n\
         service with exit code 2 and a message naming the key (or variable), the value and what is allowed.\n\
         `mainstay-api config print` shows the effective value of every key and where it came from.\n\
         `mainstay-api probe live|ready|startup` (the container health check) reads `server.addr` the\n\
         same way and asks a wildcard bind address (`0.0.0.0`, `[::]`) on loopback; `--addr` overrides it.\n\n\
         Two modes (docs/operations/stateless.md): with `storage.enabled = true` (the default) the\n\
         service runs the record store and serves every route; with `storage.enabled = false` it runs\n\
         stateless, without the records API (`/v1/collections...`), the dead-letter queue and the\n\
         store's admin routes, which answer 404 of type `.../storage-disabled`. The other\n\
         `storage.*` keys and the `dlq.*` keys matter only with storage on; stateless, they are\n\
         validated (so that one file serves both modes) and ignored.\n\n\
         | key | type | default | environment | description |\n|---|---|---|---|---|\n",
    );
    for (key, kind, description) in KEY_DOCS {
        let default = defaults.get(*key).map(render).unwrap_or_default();
        let env = if FILE_ONLY.contains(key) {
            "file only".to_string()
        } else {
            format!("`{ENV_PREFIX}{}`", key.to_uppercase().replace('.', "__"))
        };
        let otel = mainstay_telemetry::otel_env::KEYS
            .iter()
            .find(|(_, otel_key)| key.strip_prefix("telemetry.") == Some(*otel_key))
            .map(|(variable, _)| format!(", `{variable}`"))
            .unwrap_or_default();
        let env = format!("{env}{otel}");
        // A `|` inside a cell (`none` | `gzip`) would end it: escape it for the table.
        let cell = |text: &str| text.replace('|', "\\|");
        out.push_str(&format!(
            "| `{key}` | {} | `{}` | {env} | {} |\n",
            cell(kind),
            cell(&default),
            cell(description)
        ));
    }
    out
}
