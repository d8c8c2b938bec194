//! `mainstay-api backup create --addr HOST:PORT`: asks a running instance for an online backup
//! (`POST /admin/backups`), so that a CronJob or the compose scheduler needs no shell and no curl
//! (decision 0115). The admin token comes from the configuration (`admin.token`, usually
//! `MAINSTAY_ADMIN__TOKEN`); the answer's JSON is returned as it is.

use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

/// The path asked.
pub const PATH: &str = "/admin/backups";

/// Why a backup request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `--addr` is not `HOST:PORT`, or the host does not resolve.
    #[error("`{addr}`: {reason}")]
    Address {
        /// What was given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No admin token is configured to ask with.
    #[error(
        "no admin token: set `admin.token` (or MAINSTAY_ADMIN__TOKEN) to the running instance's token"
    )]
    NoToken,
    /// No TCP connection, or the exchange failed.
    #[error("POST http://{addr}{PATH}: {reason}")]
    Exchange {
        /// The address asked.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// No answer within the time limit.
    #[error("POST http://{addr}{PATH}: no answer within {}", humantime::format_duration(*timeout))]
    Timeout {
        /// The address asked.
        addr: String,
        /// The limit that ran out.
        timeout: Duration,
    },
    /// The instance refused: its problem+json, on one line.
    #[error("POST http://{addr}{PATH}: {status}: {body}")]
    Refused {
        /// The address asked.
        addr: String,
        /// The answer's status.
        status: http::StatusCode,
        /// The answer's body.
        body: String,
    },
}

/// Asks the instance at `addr` for a backup to `to` (its `backup.url` when `None`) and returns
/// the 201 answer's JSON.
///
/// # Errors
///
/// [`ClientError`] when the address is wrong, no token is set, the exchange fails or times out,
/// or the instance answers anything but 201.
pub async fn request_backup(
    addr: &str,
    token: Option<&str>,
    to: Option<&str>,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let token = token.ok_or(ClientError::NoToken)?;
    match tokio::time::timeout(timeout, exchange(addr, token, to)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ClientError::Timeout {
            addr: addr.to_owned(),
            timeout,
        }),
    }
}

async fn exchange(
    addr: &str,
    token: &str,
    to: Option<&str>,
) -> Result<serde_json::Value, ClientError> {
    let failed = |reason: String| ClientError::Exchange {
        addr: addr.to_owned(),
        reason,
    };
    let target = tokio::net::lookup_host(addr)
        .await
        .map_err(|error| ClientError::Address {
            addr: addr.to_owned(),
            reason: format!("use HOST:PORT ({error})"),
        })?
        .next()
        .ok_or_else(|| ClientError::Address {
            addr: addr.to_owned(),
            reason: "the host has no address".to_owned(),
        })?;
    let stream = tokio::net::TcpStream::connect(target)
        .await
        .map_err(|error| failed(format!("could not connect: {error}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| failed(error.to_string()))?;
    tokio::spawn(connection);
    let body = match to {
        Some(to) => serde_json::json!({ "to": to }),
        None => serde_json::json!({}),
    };
    let request = http::Request::post(PATH)
        .header(http::header::HOST, addr)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "mainstay-api-backup")
        .header(http::header::CONNECTION, "close")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .map_err(|error| failed(error.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| failed(error.to_string()))?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|error| failed(error.to_string()))?
        .to_bytes();
    if status != http::StatusCode::CREATED {
        let text = String::from_utf8_lossy(&bytes);
        return Err(ClientError::Refused {
            addr: addr.to_owned(),
            status,
            body: text.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    serde_json::from_slice(&bytes)
        .map_err(|error| failed(format!("the 201 answer is not JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("localhost:{}", addr.port())
    }

    #[tokio::test]
    async fn sends_the_token_and_destination_and_returns_the_answer_or_the_refusal() {
        let router = axum::Router::new().route(
            PATH,
            post(
                |headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
                    if headers["authorization"] != "Bearer right-token-0123456789" {
                        return (
                            StatusCode::UNAUTHORIZED,
                            Json(serde_json::json!({"title": "no"})),
                        );
                    }
                    (
                        StatusCode::CREATED,
                        Json(serde_json::json!({ "id": "b1", "to": body["to"] })),
                    )
                },
            ),
        );
        let addr = serve(router).await;
        let limit = Duration::from_secs(5);

        let answer = request_backup(&addr, Some("right-token-0123456789"), Some("/b"), limit)
            .await
            .unwrap();
        assert_eq!(answer, serde_json::json!({"id": "b1", "to": "/b"}));
        let answer = request_backup(&addr, Some("right-token-0123456789"), None, limit)
            .await
            .unwrap();
        assert_eq!(answer["to"], serde_json::Value::Null);

        let refused = request_backup(&addr, Some("wrong"), None, limit).await;
        assert!(
            matches!(&refused, Err(ClientError::Refused { status, body, .. })
                if *status == StatusCode::UNAUTHORIZED && body.contains("no")),
            "{refused:?}"
        );
        assert!(matches!(
            request_backup(&addr, None, None, limit).await,
            Err(ClientError::NoToken)
        ));
        assert!(matches!(
            request_backup("no-port-here", Some("t"), None, limit).await,
            Err(ClientError::Address { .. })
        ));
    }
}
