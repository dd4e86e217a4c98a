//! Measures TLS ClientHello fingerprints (JA3, JA4) of Kolokol's stealth dialer, of rustls's
//! default client, and of the browsers installed here (Chromium, Firefox), each captured by a
//! TCP listener on 127.0.0.1 that reads the first flight and hangs up.
//!
//! Run: `cargo run -p kolokol-tests --bin tls-fingerprint`. Browsers are started headless
//! with a throw-away profile and only ever pointed at 127.0.0.1; a browser that is not
//! installed is reported as such.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kolokol_node::transport::tls;
use kolokol_tests::tls_hello::ClientHello;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};

/// How long a browser may take to send its ClientHello.
const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// The name browsers and clients are told to connect to (mapped to 127.0.0.1), so that they
/// send an SNI as they would for a real site.
const NAME: &str = "www.example.org";

/// Accepts one connection on `listener` and returns the first complete TLS record it sends.
async fn first_flight(listener: &TcpListener) -> std::io::Result<Vec<u8>> {
    let (mut s, _) = listener.accept().await?;
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hello.extend_from_slice(&buf[..n]);
        if hello.len() >= 5
            && hello.len() >= 5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]))
        {
            return Ok(hello);
        }
    }
}

/// The hello a rustls client with `config` sends for `name`.
async fn rustls_hello(config: Arc<rustls::ClientConfig>, name: &str) -> std::io::Result<Vec<u8>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let name = tls::server_name(Some(name), "127.0.0.1")?;
    let client = tokio::spawn(async move {
        if let Ok(tcp) = TcpStream::connect(addr).await {
            let _ = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await;
        }
    });
    let hello = first_flight(&listener).await;
    client.abort();
    hello
}

/// The hello of a browser started headless against `https://NAME:<port>/`, or opening a
/// WebSocket to `wss://NAME:<port>/` from a page, or why there is none. The WebSocket is the
/// connection the stealth dialer's hello should resemble: a browser offers only `http/1.1`
/// for it.
async fn browser_hello(program: &str, args: &[&str], websocket: bool) -> Result<Vec<u8>, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = if websocket {
        format!("data:text/html,<script>new WebSocket(\"wss://{NAME}:{port}/\")</script>")
    } else {
        format!("https://{NAME}:{port}/")
    };
    let mut command = Command::new(program);
    for a in args {
        command.arg(
            a.replace("{profile}", &profile.path().display().to_string())
                .replace("{port}", &port.to_string()),
        );
    }
    let mut child = command
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{program} is not installed ({e})"))?;
    let hello = tokio::time::timeout(BROWSER_WAIT, first_flight(&listener)).await;
    let _ = child.kill();
    let _ = child.wait();
    match hello {
        Ok(Ok(h)) => Ok(h),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Err(_) => Err(format!("{program} sent no ClientHello in {BROWSER_WAIT:?}")),
    }
}

fn report(name: &str, hello: &[u8]) -> Option<String> {
    let Some(h) = ClientHello::parse(hello) else {
        println!("{name}: not a ClientHello ({} bytes)", hello.len());
        return None;
    };
    println!("{name}");
    println!("  JA4:        {}", h.ja4());
    println!("  JA3:        {}", h.ja3());
    println!("  JA3 string: {}", h.ja3_string());
    println!(
        "  ALPN: {:?}  SNI: {:?}  versions: {:04x?}  groups: {:04x?}",
        h.alpn.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
        h.sni,
        h.supported_versions,
        h.groups
    );
    println!("  record length {} bytes", hello.len());
    Some(h.ja4())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut ja4s: Vec<(String, String)> = Vec::new();
    let ours = rustls_hello(tls::client_config(Some([0; 32])), NAME).await?;
    if let Some(j) = report("kolokol stealth dialer (rustls 0.23, aws-lc-rs, ALPN http/1.1)", &ours)
    {
        ja4s.push(("kolokol".into(), j));
    }
    let default = {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        Arc::new(
            rustls::ClientConfig::builder_with_provider(tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    if let Some(j) =
        report("rustls default client (aws-lc-rs, no ALPN)", &rustls_hello(default, NAME).await?)
    {
        ja4s.push(("rustls default".into(), j));
    }
    let chromium_args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--user-data-dir={profile}",
        "--host-resolver-rules=MAP www.example.org 127.0.0.1",
    ];
    let firefox_args = ["--headless", "--no-remote", "--profile", "{profile}"];
    for (name, program, args, websocket) in [
        ("chromium (headless), a page", "chromium", &chromium_args[..], false),
        ("chromium (headless), a WebSocket", "chromium", &chromium_args[..], true),
        ("firefox-esr (headless), a page", "firefox-esr", &firefox_args[..], false),
    ] {
        match browser_hello(program, args, websocket).await {
            Ok(hello) => {
                if let Some(j) = report(name, &hello) {
                    ja4s.push((name.into(), j));
                }
            }
            Err(why) => println!("{name}: not measured: {why}"),
        }
    }
    let kolokol = ja4s.first().map(|(_, j)| j.clone()).unwrap_or_default();
    let same: Vec<&str> =
        ja4s.iter().skip(1).filter(|(_, j)| *j == kolokol).map(|(n, _)| n.as_str()).collect();
    println!();
    if same.is_empty() {
        println!("verdict: Kolokol's JA4 {kolokol} matches none of the others measured");
    } else {
        println!("verdict: Kolokol's JA4 {kolokol} is shared with: {}", same.join(", "));
    }
    Ok(())
}
