//! A circuit breaker and a retry budget around an HTTP client call.
//!
//! A tiny HTTP server runs in the process on `127.0.0.1` and answers its first requests with
//! `503 Service Unavailable`, then `200 OK`. The client calls it through a [`Policy`]: a retry
//! (three attempts, short backoff) under a retry budget shared by the client, and a circuit breaker
//! that opens after four consecutive failures. The first call spends its retries; the second finds
//! the budget spent and fails fast, and its failure opens the breaker; the third is rejected
//! without reaching the server; after the open duration a trial call succeeds and closes the
//! breaker.
//!
//! Run with `cargo run -p mainstay-resilience --example http_client`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mainstay_resilience::{
    BreakerConfig, BreakerState, CallError, CircuitBreaker, ErrorClass, Policy, PolicyError, Retry,
    RetryBudget, RetryBudgetConfig, RetryConfig, RetryError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests the server fails before it answers.
const FAILING_REQUESTS: u32 = 4;

/// Why one HTTP request failed.
#[derive(Debug)]
enum HttpError {
    /// The server answered with a status other than 2xx.
    Status(u16),
    /// The request could not be sent or the answer not read.
    Io(std::io::Error),
    /// The answer is not HTTP/1.1.
    Malformed,
}

impl fmt::Display for HttpError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(formatter, "http status {status}"),
            Self::Io(error) => write!(formatter, "i/o error: {error}"),
            Self::Malformed => formatter.write_str("malformed http answer"),
        }
    }
}

/// The server: answers 503 to the first [`FAILING_REQUESTS`] requests, 200 to the others, and
/// counts the requests it received.
async fn serve(listener: TcpListener, received: Arc<AtomicU32>) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            // Reads the request head; the client sends no body.
            let mut head = Vec::new();
            let mut buffer = [0_u8; 1024];
            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => head.extend_from_slice(&buffer[..read]),
                }
            }
            let number = received.fetch_add(1, Ordering::SeqCst) + 1;
            let (status, body) = if number <= FAILING_REQUESTS {
                ("503 Service Unavailable", "try again later")
            } else {
                ("200 OK", "42 in stock")
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        });
    }
}

/// One `GET /stock` over a new connection: the body of a 2xx answer, or why there is none.
async fn get_stock(address: SocketAddr) -> Result<String, HttpError> {
    let mut stream = TcpStream::connect(address).await.map_err(HttpError::Io)?;
    let request = format!("GET /stock HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(HttpError::Io)?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .map_err(HttpError::Io)?;
    let status: u16 = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or(HttpError::Malformed)?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Status(status));
    }
    let (_, body) = answer.split_once("\r\n\r\n").ok_or(HttpError::Malformed)?;
    Ok(body.to_owned())
}

/// A 5xx, a 429 or a lost connection may pass on a later attempt; any other 4xx is the caller's
/// fault (the breaker counts it as a success); a malformed answer is a failure not worth retrying.
fn classify(error: &HttpError) -> ErrorClass {
    match error {
        HttpError::Status(429 | 500..=599) | HttpError::Io(_) => ErrorClass::TRANSIENT,
        HttpError::Status(_) => ErrorClass::Ignored,
        HttpError::Malformed => ErrorClass::Failure,
    }
}

/// One line about a call's outcome.
fn describe(outcome: &Result<String, PolicyError<HttpError>>) -> String {
    match outcome {
        Ok(body) => format!("answered {body:?}"),
        Err(PolicyError::Call(RetryError::Failed {
            attempts,
            last: CallError::Rejected(_),
        })) => format!("rejected by the open breaker after {attempts} attempt(s), nothing sent"),
        Err(PolicyError::Call(RetryError::BudgetExhausted { attempts, last })) => {
            format!("retry budget spent after {attempts} attempt(s), last error: {last}")
        }
        Err(error) => format!("failed: {error}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let received = Arc::new(AtomicU32::new(0));
    tokio::spawn(serve(listener, Arc::clone(&received)));
    println!("server on http://{address}, failing its first {FAILING_REQUESTS} requests");

    // Four consecutive failures open the breaker for 300 ms; one successful trial closes it.
    let breaker = CircuitBreaker::new(
        "stock-service",
        BreakerConfig {
            consecutive_failures: 4,
            open_duration: Duration::from_millis(300),
            open_duration_jitter: 0.0,
            half_open_max_calls: 1,
            half_open_successes: 1,
            ..BreakerConfig::critical_dependency()
        },
    )?;
    // Retries of every call of this client share one budget: 10% of the requests plus two in
    // reserve (one per second over two seconds), so a failing server is not hammered.
    let budget = RetryBudget::new(RetryBudgetConfig {
        ratio: 0.1,
        min_retries_per_second: 1,
        ttl: Duration::from_secs(2),
    })?;
    let retry = Retry::builder(
        "get-stock",
        RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            ..RetryConfig::default()
        },
    )
    .budget(budget)
    .build()?;
    let policy = Policy::new()
        .with_retry(retry)
        .with_breaker(breaker.clone())
        .with_timeout(Duration::from_secs(2));

    let mut outcomes = Vec::new();
    for call in 1..=4 {
        if call == 4 {
            println!("waiting for the open duration to pass");
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let outcome = policy.run(&classify, || get_stock(address)).await;
        println!(
            "call {call}: {}; breaker {:?}, server received {} request(s)",
            describe(&outcome),
            breaker.state(),
            received.load(Ordering::SeqCst)
        );
        outcomes.push(outcome);
    }

    // What the story above promises, checked.
    assert!(matches!(
        outcomes[0],
        Err(PolicyError::Call(RetryError::Failed { attempts: 3, .. }))
    ));
    assert!(matches!(
        outcomes[1],
        Err(PolicyError::Call(RetryError::BudgetExhausted { .. }))
    ));
    assert!(matches!(
        outcomes[2],
        Err(PolicyError::Call(RetryError::Failed {
            last: CallError::Rejected(_),
            ..
        }))
    ));
    assert_eq!(outcomes[3].as_deref().ok(), Some("42 in stock"));
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(received.load(Ordering::SeqCst), FAILING_REQUESTS + 1);
    Ok(())
}
