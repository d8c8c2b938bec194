//! Redis Cluster: a real cluster of six private `redis-server`s (3 masters, 3 replicas,
//! `cluster-node-timeout 1000`) made with `redis-cli --cluster create`: limits shared by two
//! limiters, a killed master under load, the health check's `cluster_state`.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Request, StatusCode};
use mainstay_health::{Check, Status};
use mainstay_ratelimit::health::RedisCheck;
use mainstay_ratelimit::{
    Backend, CallerIdentity, LimitRequest, LimitSpec, RateLimitConfig, RateLimiter,
};
use mainstay_resilience::BreakerConfig;
use tower::ServiceExt;

use crate::support::{RedisServer, free_port, huge, limits, redis_config, until_on_redis};

/// Six nodes in a cluster: three masters with a replica each.
struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    /// The master's id, for a replica.
    master_id: Option<String>,
}

impl RedisCluster {
    fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                RedisServer::start_with(|_| {
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-config-file",
                        "nodes.conf",
                        // Replicas sync at once (the default waits 5 s for more replicas) and
                        // may always take over (the test kills masters seconds after the start).
                        "--repl-diskless-sync-delay",
                        "0",
                        "--cluster-replica-validity-factor",
                        "0",
                        "--cluster-port",
                        &free_port().to_string(),
                    ]
                    .map(str::to_owned)
                    .to_vec()
                })
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new("/usr/bin/redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = |node: &RedisServer| {
            let replication = node.command("INFO replication").unwrap_or_default();
            state(node) == "ok"
                && (replication.contains("role:master")
                    || replication.contains("master_link_status:up"))
        };
        // And node 0, whose view the tests read, knows a replica of each of the three masters
        // (the replicas' links are up before every node has heard of them through gossip).
        let paired = |cluster: &Self| {
            let topology = cluster.topology(0);
            let masters: Vec<&NodeLine> = topology.iter().filter(|node| node.master).collect();
            masters.len() == 3
                && masters.iter().all(|master| {
                    topology
                        .iter()
                        .any(|node| node.master_id.as_deref() == Some(master.id.as_str()))
                })
        };
        while !cluster.nodes.iter().all(ready) || !paired(&cluster) {
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            // Polling for the cluster to form, not waiting for a rule.
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `redis://127.0.0.1:PORT` of node `index`.
    fn url(&self, index: usize) -> String {
        self.nodes[index].url()
    }

    /// `CLUSTER NODES` as node `index` sees it.
    fn topology(&self, index: usize) -> Vec<NodeLine> {
        let reply = self.nodes[index]
            .command("CLUSTER NODES")
            .unwrap_or_default();
        reply
            .lines()
            .filter(|line| line.split(' ').count() >= 8)
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let address = fields[1].split('@').next().unwrap();
                let flags = fields[2];
                NodeLine {
                    id: fields[0].to_owned(),
                    port: address.rsplit(':').next().unwrap().parse().unwrap(),
                    master: flags.contains("master"),
                    failed: flags.contains("fail") && !flags.contains("fail?"),
                    master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                }
            })
            .collect()
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| node.port() == port)
            .unwrap()
    }
}

/// `cluster_state` of one node (`ok`, `fail`, or empty when it does not answer).
fn state(node: &RedisServer) -> String {
    node.command("CLUSTER INFO")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("cluster_state:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn on_cluster(config: RateLimitConfig, cluster: &RedisCluster, seed: usize) -> RateLimiter {
    RateLimiter::builder(config)
        .redis_url(cluster.url(seed))
        .redis_cluster([cluster.url((seed + 2) % 6), cluster.url((seed + 4) % 6)])
        .build()
        .unwrap()
}

fn client(index: usize) -> IpAddr {
    IpAddr::from([198, 51, 100, u8::try_from(index).unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_limiters_share_every_limit_on_a_cluster_and_the_check_reports_its_state() {
    let cluster = RedisCluster::start();
    let config = || {
        limits(
            redis_config(),
            LimitSpec::per_minute(20),
            huge(),
            LimitSpec::per_hour(100),
        )
    };
    let first = on_cluster(config(), &cluster, 0);
    let second = on_cluster(config(), &cluster, 1);
    until_on_redis(&first).await;
    until_on_redis(&second).await;

    // Anonymous callers (one key each, spread over the slots) and organisations (three keys each:
    // tier, route class and quota, which must share one slot or the script is refused).
    let organisations: Vec<CallerIdentity> = (0..8)
        .map(|index| CallerIdentity::new(format!("org-{index}"), "api-key", "free", "someone"))
        .collect();
    let mut tasks = Vec::new();
    for index in 0..16 {
        for limiter in [&first, &second] {
            let limiter = limiter.clone();
            let caller = organisations.get(index % 8).cloned().filter(|_| index < 8);
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..15 {
                    let decision = limiter
                        .check(&LimitRequest {
                            caller: caller.as_ref(),
                            client: Some(client(index)),
                            route: None,
                        })
                        .await;
                    outcomes.push((decision.backend, decision.allowed));
                }
                (index, outcomes)
            }));
        }
    }
    let mut allowed = [0u32; 16];
    for task in tasks {
        let (index, outcomes) = task.await.unwrap();
        for (backend, was_allowed) in outcomes {
            assert_eq!(backend, Backend::Redis, "caller {index}");
            allowed[index] += u32::from(was_allowed);
        }
    }
    // 30 requests per caller through two instances against a limit of 20: max(1%, 2) of slack.
    for (index, count) in allowed.iter().enumerate() {
        assert!((18..=22).contains(count), "caller {index}: {count} allowed");
    }
    // The keys are spread over the masters (so MOVED routing is exercised), each decision's keys
    // in one slot.
    let masters: Vec<NodeLine> = cluster
        .topology(0)
        .into_iter()
        .filter(|node| node.master)
        .collect();
    let holding = masters
        .iter()
        .filter(|master| {
            let size = cluster.nodes[cluster.index_of(master.port)]
                .command("DBSIZE")
                .unwrap_or_default();
            size.trim().trim_start_matches(':') != "0"
        })
        .count();
    assert!(holding >= 2, "keys on {holding} of 3 masters");

    // The heartbeat's sorted set works on a cluster: both instances count each other.
    let deadline = Instant::now() + Duration::from_secs(6);
    while first.live_instances() != Some(2) || second.live_instances() != Some(2) {
        assert!(
            Instant::now() < deadline,
            "live instances: {:?} and {:?}",
            first.live_instances(),
            second.live_instances()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let outcome = RedisCheck::new(first.clone()).check().await;
    assert_eq!(outcome.status, Status::Healthy, "{outcome:?}");
    assert_eq!(outcome.details["cluster_state"], "ok", "{outcome:?}");
    assert!(first.uses_redis_cluster());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_under_load_answers_no_5xx_and_decisions_return_to_redis_after_failover() {
    let mut cluster = RedisCluster::start();
    let mut config = limits(redis_config(), LimitSpec::per_minute(1_000), huge(), huge());
    config.breaker = BreakerConfig {
        half_open_max_calls: 1,
        half_open_successes: 1,
        ..BreakerConfig::consecutive(3, Duration::from_millis(300))
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = mainstay_ratelimit::RateLimitMetrics::register(&mut registry);
    let limiter = RateLimiter::builder(config)
        .redis_url(cluster.url(0))
        .redis_cluster([cluster.url(2), cluster.url(4)])
        .metrics(metrics.clone())
        .build()
        .unwrap();
    until_on_redis(&limiter).await;
    let app = crate::http::app(limiter.clone());

    // Load: anonymous callers from 48 addresses, through the tower layer, until told to stop.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let load = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut index = 0usize;
            while !*stopped.borrow() {
                let request = Request::get("/v1/whoami")
                    .header("x-test-peer", format!("{}:40000", client(index % 48)))
                    .body(Body::empty())
                    .unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                statuses.push(response.status());
                index += 1;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kill a master (SIGKILL); its replica takes over after the node timeout.
    let topology = cluster.topology(0);
    let victim = topology.iter().find(|node| node.master).unwrap();
    let replica = topology
        .iter()
        .find(|node| node.master_id.as_deref() == Some(victim.id.as_str()))
        .expect("the master's replica");
    let victim_index = cluster.index_of(victim.port);
    let live: Vec<usize> = (0..6).filter(|index| *index != victim_index).collect();
    cluster.nodes[victim_index].kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(20);
    // Before the failover the killed master's callers are decided by the fallback. The failover
    // is over when every live node says `cluster_state:ok` and knows the replica as a master: a
    // node that lags still answers CLUSTERDOWN or MOVED to the dead master, which no client can
    // help.
    let mut fell_back = 0;
    let failed_over = loop {
        fell_back += round(&limiter).await.len();
        if failover_seen_by_all(&cluster, &live, replica.port) {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "no failover within 20 s: {}",
            cluster_view(&cluster, &live)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Within 5 s of the failover every caller (a third of them on the killed master's slots) is
    // decided on Redis again. Should the cluster leave `ok` meanwhile (on a starved machine a node
    // may miss the 1 s node timeout and be failed over in turn), the 5 s count from its return.
    assert!(
        fell_back > 0,
        "the killed master made no decision fall back"
    );
    let mut settled = failed_over;
    let back = loop {
        let off_redis = round(&limiter).await;
        if off_redis.is_empty() {
            break settled.elapsed();
        }
        if !failover_seen_by_all(&cluster, &live, replica.port) {
            settled = Instant::now();
        }
        assert!(
            settled.elapsed() < Duration::from_secs(5)
                && Instant::now() < deadline + Duration::from_secs(10),
            "decisions not back on redis 5 s after the failover: {} of 48 callers off redis ({:?}), \
             breaker {:?}; cluster: {}; metrics: {}",
            off_redis.len(),
            off_redis.iter().take(6).collect::<Vec<_>>(),
            limiter.breaker().state(),
            cluster_view(&cluster, &live),
            backend_metrics(&registry)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.send(true).unwrap();
    let statuses = load.await.unwrap();
    // Every answer is a decision: 200, or 429 once a fast caller spends its limit (the fallback
    // answers quickly, so the load can); never a 5xx.
    let count = |wanted: StatusCode| statuses.iter().filter(|status| **status == wanted).count();
    let (ok, limited) = (count(StatusCode::OK), count(StatusCode::TOO_MANY_REQUESTS));
    assert!(ok > 48, "{ok} answered 200 of {}", statuses.len());
    assert_eq!(
        ok + limited,
        statuses.len(),
        "other statuses: {:?}",
        statuses
            .iter()
            .filter(|status| !matches!(**status, StatusCode::OK | StatusCode::TOO_MANY_REQUESTS))
            .take(10)
            .collect::<Vec<_>>()
    );
    let outcome = RedisCheck::new(limiter.clone()).check().await;
    assert_eq!(outcome.details["cluster_state"], "ok", "{outcome:?}");
    eprintln!(
        "failover {:?} after the kill, decisions on redis {back:?} after the failover",
        failed_over - killed
    );
}

/// One decision for each of the 48 callers; returns the callers (and backends) not decided on
/// Redis.
async fn round(limiter: &RateLimiter) -> Vec<(usize, Backend)> {
    let mut off = Vec::new();
    for index in 0..48 {
        let decision = limiter
            .check(&LimitRequest {
                caller: None,
                client: Some(client(index)),
                route: None,
            })
            .await;
        if decision.backend != Backend::Redis {
            off.push((index, decision.backend));
        }
    }
    off
}

/// Whether every node of `live` says `cluster_state:ok` and sees the node on `port` as a master.
fn failover_seen_by_all(cluster: &RedisCluster, live: &[usize], port: u16) -> bool {
    live.iter().all(|index| {
        state(&cluster.nodes[*index]) == "ok"
            && cluster
                .topology(*index)
                .iter()
                .any(|node| node.port == port && node.master && !node.failed)
    })
}

/// Each live node's `cluster_state` and the masters it sees, for a failure message.
fn cluster_view(cluster: &RedisCluster, live: &[usize]) -> String {
    live.iter()
        .map(|index| {
            let masters: Vec<String> = cluster
                .topology(*index)
                .iter()
                .filter(|node| node.master)
                .map(|node| format!("{}{}", node.port, if node.failed { "(fail)" } else { "" }))
                .collect();
            format!(
                "node {index}: {} masters {}",
                state(&cluster.nodes[*index]),
                masters.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The backend error and fallback switch counters, for a failure message.
fn backend_metrics(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|line| {
            !line.starts_with('#')
                && (line.contains("backend_errors") || line.contains("fallback_switches"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_is_unhealthy_with_cluster_state_fail_when_slots_have_no_master() {
    let mut cluster = RedisCluster::start();
    let limiter = on_cluster(redis_config(), &cluster, 0);
    let outcome = RedisCheck::new(limiter.clone()).check().await;
    assert_eq!(outcome.status, Status::Healthy, "{outcome:?}");

    // A master and its replica both gone: their slots have no master, the cluster is `fail`.
    let topology = cluster.topology(0);
    let victim = topology
        .iter()
        .find(|node| node.master && node.port != cluster.nodes[0].port())
        .unwrap();
    let replica = topology
        .iter()
        .find(|node| node.master_id.as_deref() == Some(victim.id.as_str()))
        .unwrap();
    let (victim, replica) = (
        cluster.index_of(victim.port),
        cluster.index_of(replica.port),
    );
    cluster.nodes[replica].kill();
    cluster.nodes[victim].kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outcome = RedisCheck::new(limiter.clone()).check().await;
        if outcome
            .details
            .get("cluster_state")
            .and_then(|state| state.as_str())
            == Some("fail")
        {
            assert_eq!(outcome.status, Status::Unhealthy, "{outcome:?}");
            assert!(
                outcome
                    .message
                    .as_deref()
                    .is_some_and(|message| message.contains("cluster state is fail")),
                "{outcome:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{outcome:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
