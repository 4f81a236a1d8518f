//! What every outbound client shares, against loopback servers.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// A plain-HTTP server on loopback that answers every request with `answer` and hands the
/// request heads it read to the returned channel.
async fn recording_server(
    answer: &'static str,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&head).to_ascii_lowercase());
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn sends_the_user_agent_and_follows_no_redirect() {
    let (addr, mut heads) = recording_server(
        "HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    let client = Builder::new(Duration::from_secs(5)).build().unwrap();
    let resp = client
        .get(format!("http://{addr}/first"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302, "the redirect is the answer");
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("get /first "), "{head}");
    assert!(
        head.contains(&format!("user-agent: {}\r\n", user_agent())),
        "{head}"
    );
    assert!(user_agent().starts_with("promlink/"));
    assert!(heads.try_recv().is_err(), "no second request");
}

#[tokio::test]
async fn a_pinned_client_connects_to_the_address_for_the_name() {
    let (addr, mut heads) = recording_server(
        "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    let client = Builder::new(Duration::from_secs(5))
        .pin("promlink-test.invalid", addr)
        .no_idle_connections()
        .build()
        .unwrap();
    let url = format!("http://promlink-test.invalid:{}/", addr.port());
    assert_eq!(client.get(url).send().await.unwrap().status(), 204);
    let head = heads.recv().await.unwrap();
    assert!(head.contains("host: promlink-test.invalid:"), "{head}");
}

#[test]
fn an_unusable_ca_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = Builder::new(Duration::from_secs(1))
        .ca_file(Some(&missing))
        .build()
        .unwrap_err();
    assert!(matches!(err, ClientError::CaRead { .. }), "{err:?}");
    let chain = error_chain(&err);
    assert!(chain.starts_with("reading the CA file "), "{chain}");
    assert!(chain.contains("missing.pem"), "{chain}");

    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let err = load_ca_bundle(&garbage).unwrap_err();
    assert!(matches!(err, ClientError::CaPem { .. }), "{err:?}");
}

#[derive(Debug)]
struct Layer(&'static str, Option<Box<Layer>>);

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Layer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|l| l as _)
    }
}

#[test]
fn error_chains_are_one_line_without_repeats() {
    let e = Layer(
        "token request failed",
        Some(Box::new(Layer(
            "AADSTS7000215: Invalid client secret provided.\nTo troubleshoot, visit https://aka.ms/x",
            Some(Box::new(Layer("AADSTS7000215: Invalid client secret provided", None))),
        ))),
    );
    assert_eq!(
        error_chain(&e),
        "token request failed: AADSTS7000215: Invalid client secret provided"
    );
    let e = Layer(
        "error sending request",
        Some(Box::new(Layer(
            "client error (Connect)",
            Some(Box::new(Layer("Connection refused (os error 111)", None))),
        ))),
    );
    assert_eq!(
        error_chain(&e),
        "error sending request: client error (Connect): Connection refused (os error 111)"
    );
}
