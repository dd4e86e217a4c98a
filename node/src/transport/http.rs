//! The HTTP/1.1 upgrade that opens a stealth tunnel, as the WebTunnel model has it: the client
//! asks for a WebSocket upgrade of the secret path; the listener answers `101 Switching
//! Protocols`; from then on the connection carries libp2p's bytes as they are (no WebSocket
//! framing, as in Tor's WebTunnel), which any reverse proxy that passes WebSocket upgrades
//! through (nginx, caddy, haproxy) carries unchanged.

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Largest request or response head read, in bytes: as much as nginx reads by default for a
/// request's headers before it answers 400.
pub const MAX_HEAD: usize = 8 * 1024;

/// The GUID RFC 6455 hashes with the client's key.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The request line that opens the tunnel at `path`.
pub fn request_line(path: &str) -> Vec<u8> {
    format!("GET /{path} HTTP/1.1\r\n").into_bytes()
}

/// What the first bytes a client sent say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Still a prefix of some tunnel request line: wait for more.
    Undecided,
    /// The whole request line of the secret with this index: a tunnel.
    Tunnel(usize),
    /// Not a tunnel request: everything goes to the cover server.
    Cover,
}

/// Judges the bytes received so far against the request lines of the accepted secrets.
pub fn classify(received: &[u8], lines: &[Vec<u8>]) -> Verdict {
    let mut undecided = false;
    for (i, line) in lines.iter().enumerate() {
        if received.starts_with(line) {
            return Verdict::Tunnel(i);
        }
        if line.starts_with(received) {
            undecided = true;
        }
    }
    if undecided { Verdict::Undecided } else { Verdict::Cover }
}

/// The position just past the blank line that ends a head in `bytes`, if it is there.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The value of header `name` (case-insensitive) in a head.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(WEBSOCKET_GUID.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The listener's answer to a tunnel request whose head is `head`.
pub fn switching_protocols(head: &[u8]) -> Vec<u8> {
    let mut response = switching_protocols_open(head);
    response.extend_from_slice(b"\r\n");
    response
}

/// [`switching_protocols`] without the blank line that ends it, for a header to follow.
pub fn switching_protocols_open(head: &[u8]) -> Vec<u8> {
    let mut response =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            .to_vec();
    if let Some(key) = header(head, "sec-websocket-key") {
        response
            .extend_from_slice(format!("Sec-WebSocket-Accept: {}\r\n", accept_key(key)).as_bytes());
    }
    response
}

/// The client's upgrade request for `path` on `host`, with a fresh key; returns it with the
/// `Sec-WebSocket-Accept` the listener must answer. The headers are those a browser sends for
/// a WebSocket, so a reverse proxy in front of the listener logs an ordinary request.
pub fn upgrade_request(host: &str, path: &str, subprotocol: Option<&str>) -> (Vec<u8>, String) {
    let mut nonce = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    // A browser names the subprotocols a page asks for right before the key, too.
    let subprotocol =
        subprotocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /{path} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
         Upgrade: websocket\r\n\
         Origin: https://{host}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         {subprotocol}\
         Sec-WebSocket-Key: {key}\r\n\r\n"
    );
    let accept = accept_key(&key);
    (request.into_bytes(), accept)
}

/// Reads a head, one byte at a time so nothing past its blank line is consumed, up to
/// [`MAX_HEAD`] bytes.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    loop {
        let byte = stream.read_u8().await?;
        head.push(byte);
        if head.ends_with(b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the stealth listener's answer is too long",
            ));
        }
    }
}

/// The client side of the upgrade: sends the request (offering `subprotocol`, if any) and
/// checks the answer; returns the answer's head.
pub async fn client_upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
    subprotocol: Option<&str>,
) -> std::io::Result<Vec<u8>> {
    let (request, accept) = upgrade_request(host, path, subprotocol);
    stream.write_all(&request).await?;
    stream.flush().await?;
    let head = read_head(stream).await?;
    let refused = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "the stealth listener {what} (wrong secret in the address, or not a Kolokol relay)"
            ),
        )
    };
    if !head.starts_with(b"HTTP/1.1 101 ") {
        let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
        return Err(refused(&format!("answered {:?}", String::from_utf8_lossy(line))));
    }
    if header(&head, "sec-websocket-accept") != Some(accept.as_str()) {
        return Err(refused("answered the upgrade with a wrong Sec-WebSocket-Accept"));
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_example_accept_key() {
        // RFC 6455 section 1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn classify_by_prefix() {
        let lines =
            vec![request_line("0123456789abcdefghij"), request_line("zyxwvutsrqponmlkjihg")];
        assert_eq!(classify(b"", &lines), Verdict::Undecided);
        assert_eq!(classify(b"GET /0123", &lines), Verdict::Undecided);
        assert_eq!(classify(b"GET /z", &lines), Verdict::Undecided);
        assert_eq!(classify(b"GET /x", &lines), Verdict::Cover);
        assert_eq!(classify(b"POST /0123456789abcdefghij HTTP/1.1\r\n", &lines), Verdict::Cover);
        assert_eq!(classify(b"\x13/multistream/1.0.0\n", &lines), Verdict::Cover);
        assert_eq!(classify(b"GET /0123456789abcdefghij HTTP/1.1\r", &lines), Verdict::Undecided);
        assert_eq!(
            classify(b"GET /0123456789abcdefghij HTTP/1.1\r\nHost", &lines),
            Verdict::Tunnel(0)
        );
        assert_eq!(classify(b"GET /zyxwvutsrqponmlkjihg HTTP/1.1\r\n", &lines), Verdict::Tunnel(1));
        // A longer path that starts with the secret is another path.
        assert_eq!(classify(b"GET /0123456789abcdefghijk HTTP/1.1\r\n", &lines), Verdict::Cover);
    }

    #[test]
    fn upgrade_answer_carries_the_accept_key() {
        let (request, accept) = upgrade_request("example.org", "0123456789abcdefghij", None);
        let answer = switching_protocols(&request);
        assert!(answer.starts_with(b"HTTP/1.1 101 "));
        assert_eq!(header(&answer, "Sec-WebSocket-Accept"), Some(accept.as_str()));
        assert_eq!(head_end(&answer), Some(answer.len()));
    }
}
