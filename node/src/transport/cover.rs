//! The cover: what everyone without the secret talks to. Either the operator's own web server
//! (a backend address the listener connects to and splices the decrypted stream into, as a
//! reverse proxy does), or a small built-in static web server that serves a directory the
//! operator chooses, or a 404 for everything when none is given.
//!
//! Either way it is reached through the same splice, so that every probe of a stealth
//! listener sees the cover server's own answers and its own close behaviour.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::transport::http::{MAX_HEAD, head_end};

/// How long the built-in server waits for a request head (the next one on a kept-alive
/// connection included), as nginx's `client_header_timeout` and `keepalive_timeout` do.
pub const SITE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Requests the built-in server answers on one connection before it closes it (nginx's
/// `keepalive_requests` default is 1000).
pub const SITE_MAX_REQUESTS: usize = 1000;

/// Buffer of the in-process pipe between the listener and the built-in server.
const PIPE_BUFFER: usize = 64 * 1024;

/// Anything that reads and writes bytes, boxed: a TCP connection to a backend, or one end of
/// the pipe to the built-in server.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Where connections without the secret go.
#[derive(Clone, Debug)]
pub enum Cover {
    /// The operator's web server, over plain TCP.
    Backend(SocketAddr),
    /// The built-in static server.
    Site(Arc<Site>),
}

impl Cover {
    /// Opens a connection to the cover server.
    pub async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        match self {
            Cover::Backend(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Cover::Site(site) => {
                let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
                let site = site.clone();
                tokio::spawn(async move { site.serve(theirs).await });
                Ok(Box::new(ours))
            }
        }
    }
}

/// The built-in static web server.
#[derive(Clone, Debug, Default)]
pub struct Site {
    /// The directory served; `None` answers 404 to everything.
    pub root: Option<PathBuf>,
}

/// One parsed request.
struct Request {
    method: String,
    target: String,
    /// Whether the connection may serve another request after this one.
    keep_alive: bool,
}

impl Site {
    /// Serves one connection: requests one after another until the client closes, a request
    /// is malformed, it goes idle, or [`SITE_MAX_REQUESTS`] were answered.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S) {
        let mut buffer: Vec<u8> = Vec::new();
        for _ in 0..SITE_MAX_REQUESTS {
            let head =
                match tokio::time::timeout(SITE_IDLE_TIMEOUT, next_head(&mut stream, &mut buffer))
                    .await
                {
                    Ok(Ok(Some(head))) => head,
                    Ok(Ok(None)) | Err(_) => break,
                    Ok(Err(HeadError::Io)) => return,
                    Ok(Err(HeadError::Malformed)) => {
                        let _ = stream.write_all(&simple(400, "Bad Request", false, true)).await;
                        break;
                    }
                };
            let Some(request) = parse(&head) else {
                let _ = stream.write_all(&simple(400, "Bad Request", false, true)).await;
                break;
            };
            let keep_alive = request.keep_alive && !has_body(&head);
            if self.answer(&mut stream, &request, keep_alive).await.is_err() || !keep_alive {
                break;
            }
        }
        let _ = stream.shutdown().await;
    }

    async fn answer<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        request: &Request,
        keep_alive: bool,
    ) -> std::io::Result<()> {
        let head_only = request.method == "HEAD";
        if request.method != "GET" && !head_only {
            let mut r = simple(405, "Not Allowed", head_only, !keep_alive);
            // Insert the Allow header before the blank line ending the head.
            if let Some(end) = head_end(&r) {
                r.splice(end - 2..end - 2, b"Allow: GET, HEAD\r\n".iter().copied());
            }
            return stream.write_all(&r).await;
        }
        let Some(path) = self.file_for(&request.target).await else {
            return stream.write_all(&simple(404, "Not Found", head_only, !keep_alive)).await;
        };
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return stream.write_all(&simple(404, "Not Found", head_only, !keep_alive)).await;
        };
        let len = file.metadata().await?.len();
        let head = format!(
            "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {len}\r\nConnection: {}\r\n\r\n",
            http_date(SystemTime::now()),
            content_type(&path),
            if keep_alive { "keep-alive" } else { "close" },
        );
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            let copied = tokio::io::copy(&mut (&mut file).take(len), stream).await?;
            if copied != len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        stream.flush().await
    }

    /// The file a request target names, if the directory has it: `index.html` for a
    /// directory; never anything outside the root.
    async fn file_for(&self, target: &str) -> Option<PathBuf> {
        let root = self.root.as_ref()?;
        let path = target.split(['?', '#']).next()?;
        let path = percent_decode(path.strip_prefix('/')?)?;
        let relative = Path::new(&path);
        if relative.components().any(|c| !matches!(c, Component::Normal(_))) {
            return None;
        }
        let mut full = root.join(relative);
        if tokio::fs::metadata(&full).await.ok()?.is_dir() {
            full.push("index.html");
        }
        tokio::fs::metadata(&full).await.ok()?.is_file().then_some(full)
    }
}

/// Why no head could be read.
enum HeadError {
    /// The connection failed.
    Io,
    /// Too long, or not text.
    Malformed,
}

/// Reads the next request head, keeping what follows it in `buffer`; `None` when the client
/// closed before sending one.
async fn next_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> Result<Option<Vec<u8>>, HeadError> {
    loop {
        if let Some(end) = head_end(buffer) {
            let head: Vec<u8> = buffer.drain(..end).collect();
            return Ok(Some(head));
        }
        if buffer.len() >= MAX_HEAD {
            return Err(HeadError::Malformed);
        }
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return if buffer.is_empty() { Ok(None) } else { Err(HeadError::Malformed) };
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Parses a request head's first line and its `Connection` header.
fn parse(head: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.split("\r\n").next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !target.starts_with('/')
        || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
    {
        return None;
    }
    let connection = crate::transport::http::header(head, "connection").unwrap_or_default();
    let keep_alive = if version == "HTTP/1.1" {
        !connection.eq_ignore_ascii_case("close")
    } else {
        connection.eq_ignore_ascii_case("keep-alive")
    };
    Some(Request { method: method.to_owned(), target: target.to_owned(), keep_alive })
}

/// Whether the request has a body, which the built-in server does not read: it answers and
/// closes instead.
fn has_body(head: &[u8]) -> bool {
    use crate::transport::http::header;
    header(head, "transfer-encoding").is_some()
        || header(head, "content-length").is_some_and(|v| v.trim() != "0")
}

/// A short HTML answer with the given status.
fn simple(code: u16, reason: &str, head_only: bool, close: bool) -> Vec<u8> {
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
    );
    let mut r = format!(
        "HTTP/1.1 {code} {reason}\r\nDate: {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        http_date(SystemTime::now()),
        body.len(),
        if close { "close" } else { "keep-alive" },
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body.as_bytes());
    }
    r
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The media type for a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "application/javascript",
        "json" => "application/json",
        "txt" => "text/plain",
        "xml" => "text/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// An HTTP date (IMF-fixdate), such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (y, m, d) = crate::transport::civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let rem = secs % 86_400;
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days.rem_euclid(7)) as usize],
        MONTHS[usize::from(m - 1)],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn requests_parse() {
        let r = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n").expect("parses");
        assert!(r.keep_alive && r.method == "GET" && r.target == "/a?b");
        assert!(!parse(b"GET /a HTTP/1.0\r\n\r\n").expect("parses").keep_alive);
        assert!(parse(b"\x13/multistream/1.0.0\n\r\n\r\n").is_none());
        assert!(parse(b"GET a HTTP/1.1\r\n\r\n").is_none());
    }

    #[tokio::test]
    async fn site_serves_its_directory_and_nothing_outside() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("index.html"), "<p>hello</p>").expect("write");
        let site = Site { root: Some(dir.path().join("")) };
        assert_eq!(site.file_for("/").await, Some(dir.path().join("index.html")));
        assert_eq!(site.file_for("/index.html?x=1").await, Some(dir.path().join("index.html")));
        assert_eq!(site.file_for("/../etc/passwd").await, None);
        assert_eq!(site.file_for("/%2e%2e/etc/passwd").await, None);
        assert_eq!(site.file_for("/missing").await, None);

        let (mut client, server) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move { site.serve(server).await });
        client
            .write_all(
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("write");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read");
        task.await.expect("served");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("<p>hello</p>HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.ends_with("</html>\r\n"), "{text}");
    }
}
