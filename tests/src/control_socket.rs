//! The control socket as a plain JSON-RPC client sees it: answers, errors for bad input, the
//! line limit, and event notifications, with the daemon still serving after each mistake.

use std::time::Duration;

use kolokol_protocol::control::{MAX_LINE_LEN, code};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::support::{Net, TIMEOUT, control_socket};

struct Conn {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Conn {
    async fn open(net: &Net, name: &str) -> Self {
        let stream =
            UnixStream::connect(control_socket(&net.data_dir(name))).await.expect("connect");
        let (r, w) = stream.into_split();
        Self { reader: BufReader::new(r), writer: w }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    async fn line(&mut self) -> Option<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("an answer in time")
            .expect("read");
        (n > 0).then(|| serde_json::from_str(&line).expect("every line the daemon sends is JSON"))
    }

    async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(format!("{request}\n").as_bytes()).await;
        loop {
            let v = self.line().await.expect("a response");
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
        }
    }
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected an error, got {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_the_daemon_keeps_serving() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", &[relay_addr]).await;
    let mut c = Conn::open(&net, "alice").await;

    c.send_raw(b"this is not json\n").await;
    assert_eq!(error_code(&c.line().await.expect("answer")), code::PARSE_ERROR);
    c.send_raw(b"{\"hello\": 1}\n").await;
    assert_eq!(error_code(&c.line().await.expect("answer")), code::INVALID_REQUEST);
    c.send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":7,\"method\":\"id\"}\n").await;
    assert_eq!(error_code(&c.line().await.expect("answer")), code::INVALID_REQUEST);
    assert_eq!(error_code(&c.call(1, "no.such.method", json!({})).await), code::METHOD_NOT_FOUND);
    assert_eq!(error_code(&c.call(2, "send", json!({"to": 5})).await), code::INVALID_PARAMS);
    let v = c.call(3, "send", json!({"to": "nobody", "text": "hi"})).await;
    assert_eq!(error_code(&v), code::UNKNOWN_CONTACT);
    let v = c.call(4, "contacts.add", json!({"name": "x", "invite": "kolokol1zzz"})).await;
    assert_eq!(error_code(&v), code::BAD_INVITE);
    assert!(v["error"]["message"].as_str().expect("message").contains("invite"));
    // A bundle cut short is a bad bundle, in words a user understands.
    let export = c.call(40, "peers.export", json!({})).await;
    let bundle = export["result"]["bundle"].as_str().expect("a bundle").to_owned();
    let v = c.call(41, "peers.import", json!({"bundle": &bundle[..bundle.len() - 10]})).await;
    assert_eq!(error_code(&v), code::BAD_BUNDLE);
    assert_eq!(v["error"]["message"], "bootstrap bundle is corrupted or cut short");
    let v = c.call(42, "peers.import", json!({"bundle": "kolokolpeers1zzz"})).await;
    assert_eq!(error_code(&v), code::BAD_BUNDLE, "{v}");

    let id = c.call(5, "id", Value::Null).await;
    assert_eq!(id["result"]["peer_id"], json!(alice.node().peer_id().to_string()));

    // An oversized line is answered and the connection closed; new connections still work.
    let mut big = vec![b'x'; MAX_LINE_LEN + 10];
    big.push(b'\n');
    c.send_raw(&big).await;
    assert_eq!(error_code(&c.line().await.expect("answer")), code::INVALID_REQUEST);
    assert!(c.line().await.is_none(), "the connection is closed after an oversized line");
    let mut c = Conn::open(&net, "alice").await;
    let status = c.call(6, "status", json!({})).await;
    assert_eq!(status["result"]["role"], json!("node"));
    assert_eq!(status["result"]["relay_reservations"].as_array().expect("list").len(), 1);

    alice.shutdown().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_hears_messages_and_state_changes() {
    let net = Net::new();
    let (relay, _, alice, bob) = net.pair().await;

    let mut bob_conn = Conn::open(&net, "bob").await;
    assert_eq!(bob_conn.call(1, "subscribe", json!({})).await["result"], json!(true));
    let mut alice_conn = Conn::open(&net, "alice").await;
    let sent = alice_conn.call(1, "send", json!({"to": "bob", "text": "ping"})).await;
    let id = sent["result"]["id"].as_str().expect("id").to_owned();

    let event = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let v = bob_conn.line().await.expect("a notification");
            if v["method"] == json!("event") && v["params"]["type"] == json!("message") {
                return v;
            }
        }
    })
    .await
    .expect("the message event arrived");
    assert_eq!(event["params"]["id"], json!(id));
    assert_eq!(event["params"]["text"], json!("ping"));
    assert_eq!(event["params"]["from"], json!("alice"));

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
