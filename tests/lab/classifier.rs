//! What a censor's classifiers compute from the first bytes a client sends: the "fully
//! encrypted" heuristic of the Great Firewall (T5), the protocol allowlist of Iran's 2020 filter
//! (T6), and a parse of the TLS ClientHello with its JA4 fingerprint (T8). The censor proxy uses
//! them on live flows; the capture audit (T17) on recorded ones.

use sha2::{Digest, Sha256};

/// Whether a byte is printable ASCII, [0x20, 0x7e], as Wu et al. define it.
pub fn printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b)
}

/// The verdict of the fully-encrypted-traffic heuristic on a first payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Fet {
    /// The first exemption that applies (`Ex1` .. `Ex5`), or None: the flow is blocked.
    pub exempt_by: Option<&'static str>,
    /// Set bits per byte.
    pub popcount_per_byte: f64,
}

impl Fet {
    /// Whether the censor blocks the flow.
    pub fn blocked(&self) -> bool {
        self.exempt_by.is_none()
    }
}

/// The GFW's rule for fully encrypted traffic (Wu et al., "How the Great Firewall of China Detects
/// and Blocks Fully Encrypted Traffic", USENIX Security 2023, as restated by the threat model and
/// nDPI), applied to the first data packet a client sends. A flow is exempt, and passes, if any
/// of these holds; otherwise it is blocked:
///
/// - Ex1: popcount/len <= 3.4 or >= 4.6 (set bits per byte far from the 4 of random data);
/// - Ex2: the first six bytes are printable ASCII;
/// - Ex3: more than 50 % of the bytes are printable;
/// - Ex4: more than 20 contiguous bytes are printable;
/// - Ex5: the first bytes match TLS (`[\x16-\x17]\x03[\x00-\x09]`) or HTTP (`GET `, `PUT `,
///   `POST`, `HEAD`).
///
/// The real GFW blocked only a fraction (about a quarter) of the flows it classified, and only
/// toward some address ranges; the lab's censor blocks every one, which is stricter.
pub fn fet(payload: &[u8]) -> Fet {
    let len = payload.len().max(1) as f64;
    let ones: u32 = payload.iter().map(|b| b.count_ones()).sum();
    let per_byte = f64::from(ones) / len;
    let exempt_by = if per_byte <= 3.4 || per_byte >= 4.6 {
        Some("Ex1")
    } else if payload.len() >= 6 && payload[..6].iter().all(|&b| printable(b)) {
        Some("Ex2")
    } else if payload.iter().filter(|&&b| printable(b)).count() * 2 > payload.len() {
        Some("Ex3")
    } else if longest_printable_run(payload) > 20 {
        Some("Ex4")
    } else if looks_like_tls_record(payload) || starts_like_http_for_fet(payload) {
        Some("Ex5")
    } else {
        None
    };
    Fet { exempt_by, popcount_per_byte: (per_byte * 100.0).round() / 100.0 }
}

fn longest_printable_run(payload: &[u8]) -> usize {
    let (mut best, mut run) = (0, 0);
    for &b in payload {
        run = if printable(b) { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// Ex5's TLS shape: `[\x16-\x17]\x03[\x00-\x09]`.
fn looks_like_tls_record(p: &[u8]) -> bool {
    p.len() >= 3 && (0x16..=0x17).contains(&p[0]) && p[1] == 0x03 && p[2] <= 0x09
}

/// Ex5's HTTP shape.
fn starts_like_http_for_fet(p: &[u8]) -> bool {
    [&b"GET "[..], b"PUT ", b"POST", b"HEAD"].iter().any(|m| p.starts_with(m))
}

/// Which allowed protocol a first payload is, for a protocol allowlist that admits only DNS,
/// HTTP and TLS (Iran, February 2020; Bock et al., FOCI 2020): `tls`, `http` or `dns`, or None.
pub fn allowed_protocol(p: &[u8]) -> Option<&'static str> {
    // A TLS handshake record carrying a ClientHello.
    if p.len() >= 6 && p[0] == 0x16 && p[1] == 0x03 && (1..=4).contains(&p[2]) && p[5] == 0x01 {
        return Some("tls");
    }
    // An HTTP request line: a method, a space, a target.
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
        b"TRACE ",
    ];
    if METHODS.iter().any(|m| p.starts_with(m)) {
        return Some("http");
    }
    // DNS over TCP: a length prefix that matches, and a header of a standard query with 1 to 16
    // questions.
    if p.len() >= 14 {
        let len = usize::from(u16::from_be_bytes([p[0], p[1]]));
        let flags = u16::from_be_bytes([p[4], p[5]]);
        let questions = u16::from_be_bytes([p[6], p[7]]);
        if len + 2 == p.len() && flags & 0xf800 == 0 && (1..=16).contains(&questions) {
            return Some("dns");
        }
    }
    None
}

/// The fields of a TLS ClientHello that fingerprints are made of.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientHello {
    pub legacy_version: u16,
    pub ciphers: Vec<u16>,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
    pub signature_algorithms: Vec<u16>,
    pub supported_versions: Vec<u16>,
}

/// How a first flight stands as a TLS ClientHello.
#[derive(Debug, PartialEq)]
pub enum HelloParse {
    /// A whole ClientHello.
    Hello(ClientHello),
    /// The start of one: this many bytes in total are needed.
    NeedBytes(usize),
    /// Not a ClientHello at all.
    NotTls(&'static str),
}

/// The largest ClientHello the lab reassembles (a handshake message of 16 KiB spans at most two
/// records).
pub const MAX_HELLO: usize = 16 * 1024 + 512;

/// Reads a ClientHello from the start of a client's byte stream, which may span several TLS
/// records.
pub fn parse_client_hello(buf: &[u8]) -> HelloParse {
    // Gather the handshake bytes of the leading handshake records.
    let mut handshake = Vec::new();
    let mut at = 0;
    loop {
        if buf.len() < at + 5 {
            return if at == 0 && !buf.is_empty() && buf[0] != 0x16 {
                HelloParse::NotTls("not a TLS handshake record")
            } else {
                HelloParse::NeedBytes(at + 5)
            };
        }
        if buf[at] != 0x16 || buf[at + 1] != 0x03 {
            return HelloParse::NotTls("not a TLS handshake record");
        }
        let len = usize::from(u16::from_be_bytes([buf[at + 3], buf[at + 4]]));
        if len == 0 || len > 16_384 + 256 {
            return HelloParse::NotTls("TLS record length out of range");
        }
        if buf.len() < at + 5 + len {
            return HelloParse::NeedBytes(at + 5 + len);
        }
        handshake.extend_from_slice(&buf[at + 5..at + 5 + len]);
        at += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 0x01 {
                return HelloParse::NotTls("first handshake message is not a ClientHello");
            }
            let need = 4
                + (usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]));
            if need > MAX_HELLO {
                return HelloParse::NotTls("ClientHello too long");
            }
            if handshake.len() >= need {
                return match hello_body(&handshake[4..need]) {
                    Some(h) => HelloParse::Hello(h),
                    None => HelloParse::NotTls("malformed ClientHello"),
                };
            }
        }
        if at >= MAX_HELLO {
            return HelloParse::NotTls("ClientHello too long");
        }
    }
}

/// A cursor over big-endian fields that fails (None) instead of panicking on short input.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
}

fn hello_body(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader { b: body };
    let mut hello = ClientHello { legacy_version: r.u16()?, ..Default::default() };
    r.take(32)?;
    r.vec8()?;
    hello.ciphers = u16s(r.vec16()?);
    r.vec8()?;
    if r.b.is_empty() {
        return Some(hello);
    }
    let mut ext = Reader { b: r.vec16()? };
    while !ext.b.is_empty() {
        let kind = ext.u16()?;
        let data = ext.vec16()?;
        hello.extensions.push(kind);
        let mut d = Reader { b: data };
        match kind {
            0x0000 => {
                let mut list = Reader { b: d.vec16()? };
                while !list.b.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        hello.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            0x0010 => {
                let mut list = Reader { b: d.vec16()? };
                while !list.b.is_empty() {
                    hello.alpn.push(list.vec8()?.to_vec());
                }
            }
            0x000d => hello.signature_algorithms = u16s(d.vec16()?),
            0x002b => hello.supported_versions = u16s(d.vec8()?),
            _ => {}
        }
    }
    Some(hello)
}

/// GREASE values (RFC 8701), which JA4 ignores.
fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

fn sha12(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The JA4 fingerprint of a ClientHello over TCP (FoxIO's JA4 specification):
/// `t<version><d|i><ciphers><extensions><alpn>_<hash of sorted ciphers>_<hash of sorted
/// extensions without SNI and ALPN, then the signature algorithms in order>`.
pub fn ja4(h: &ClientHello) -> String {
    let versions: Vec<u16> = h.supported_versions.iter().copied().filter(|v| !grease(*v)).collect();
    let version = versions.iter().copied().max().unwrap_or(h.legacy_version);
    let version = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0200 => "s2",
        _ => "00",
    };
    let ciphers: Vec<u16> = h.ciphers.iter().copied().filter(|c| !grease(*c)).collect();
    let extensions: Vec<u16> = h.extensions.iter().copied().filter(|e| !grease(*e)).collect();
    let alpn = match h.alpn.first() {
        None => "00".to_owned(),
        Some(first) if first.is_empty() => "00".to_owned(),
        Some(first) => {
            let (a, z) = (first[0], first[first.len() - 1]);
            if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() {
                format!("{}{}", a as char, z as char)
            } else {
                let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
                format!("{}{}", &hex[..1], &hex[hex.len() - 1..])
            }
        }
    };
    let a = format!(
        "t{version}{}{:02}{:02}{alpn}",
        if h.sni.is_some() { "d" } else { "i" },
        ciphers.len().min(99),
        extensions.len().min(99)
    );
    let hex_list = |v: &[u16]| v.iter().map(|x| format!("{x:04x}")).collect::<Vec<_>>().join(",");
    let mut sorted_ciphers = ciphers.clone();
    sorted_ciphers.sort_unstable();
    let b = if sorted_ciphers.is_empty() {
        "000000000000".to_owned()
    } else {
        sha12(&hex_list(&sorted_ciphers))
    };
    let mut sorted_ext: Vec<u16> =
        extensions.iter().copied().filter(|e| *e != 0x0000 && *e != 0x0010).collect();
    sorted_ext.sort_unstable();
    let sigs: Vec<u16> = h.signature_algorithms.iter().copied().filter(|s| !grease(*s)).collect();
    let c = if sorted_ext.is_empty() {
        "000000000000".to_owned()
    } else if sigs.is_empty() {
        sha12(&hex_list(&sorted_ext))
    } else {
        sha12(&format!("{}_{}", hex_list(&sorted_ext), hex_list(&sigs)))
    };
    format!("{a}_{b}_{c}")
}

/// JA4 fingerprints of mainstream browsers as published by fingerprint databases and bot-defence
/// vendors (Chromium-family TLS 1.3 with SNI and h2). A client whose fingerprint is among these
/// cannot be blocked by fingerprint without blocking those browsers; one that is not can.
pub const BROWSER_JA4: &[(&str, &str)] = &[
    ("Chrome (with X25519MLKEM768)", "t13d1516h2_8daaf6152771_d8a2da3f94cd"),
    ("Chrome 120-130", "t13d1516h2_8daaf6152771_e5627efa2ab1"),
    ("Chrome (other builds)", "t13d1516h2_8daaf6152771_b186095e22b6"),
];

/// Builds a TLS 1.3 ClientHello record for `sni` with the given random bytes (32) and key share
/// (32): enough of a handshake that any TLS server answers it, as the active prober needs.
pub fn build_client_hello(sni: &str, random: &[u8; 32], key_share: &[u8; 32]) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut exts = Vec::new();
    let name = sni.as_bytes();
    let mut sni_data = Vec::new();
    sni_data.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_data.push(0);
    sni_data.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_data.extend_from_slice(name);
    ext(&mut exts, 0x0000, &sni_data);
    ext(&mut exts, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups: x25519, secp256r1
    ext(&mut exts, 0x000d, &[0, 8, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x08, 0x07]);
    ext(
        &mut exts,
        0x0010,
        &[0, 12, 2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1'],
    );
    ext(&mut exts, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]);
    ext(&mut exts, 0x002d, &[1, 1]);
    let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
    share.extend_from_slice(key_share);
    ext(&mut exts, 0x0033, &share);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(random);
    body.push(32);
    body.extend_from_slice(&random[..]);
    let ciphers = [0x1301u16, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030];
    body.extend_from_slice(&((ciphers.len() * 2) as u16).to_be_bytes());
    for c in ciphers {
        body.extend_from_slice(&c.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Whether `stream` (one direction of a TCP connection, from its first byte) is a sequence of
/// TLS records, and how many bytes of it parse that way.
pub fn tls_records_prefix(stream: &[u8]) -> usize {
    let mut at = 0;
    while stream.len() >= at + 5 {
        let (kind, major, minor) = (stream[at], stream[at + 1], stream[at + 2]);
        let len = usize::from(u16::from_be_bytes([stream[at + 3], stream[at + 4]]));
        if !(0x14..=0x17).contains(&kind) || major != 3 || minor > 4 || len > 16_384 + 2048 {
            return at;
        }
        at += 5 + len;
    }
    at.min(stream.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fet_exemption_fires_on_its_own_input() {
        // Ex1: all zero bytes have no bits set.
        assert_eq!(fet(&[0u8; 64]).exempt_by, Some("Ex1"));
        // Ex2: six printable bytes, then bytes with ~4 bits set that are not printable.
        let mut ex2 = b"abcdef".to_vec();
        ex2.extend(std::iter::repeat_n(0x87u8, 60)); // 4 bits, not printable
        assert_eq!(fet(&ex2).exempt_by, Some("Ex2"));
        // Ex3: more than half printable, but not at the start.
        let mut ex3 = vec![0x87u8, 0x87];
        ex3.extend(std::iter::repeat_n(b'5', 10)); // '5' = 0x35, 4 bits
        ex3.extend(std::iter::repeat_n(0x87u8, 6));
        ex3.extend(std::iter::repeat_n(b'5', 4));
        assert_eq!(fet(&ex3).exempt_by, Some("Ex3"));
        // Ex4: a run of 21 printable bytes in mostly unprintable data.
        let mut ex4 = vec![0x87u8; 30];
        ex4.extend(std::iter::repeat_n(b'5', 21));
        assert_eq!(fet(&ex4).exempt_by, Some("Ex4"));
        let mut not_ex4 = vec![0x87u8; 30];
        not_ex4.extend(std::iter::repeat_n(b'5', 20));
        assert_eq!(fet(&not_ex4).exempt_by, None);
        // Ex5: a TLS record header in front of unprintable data.
        let mut ex5 = vec![0x16, 0x03, 0x01];
        ex5.extend(std::iter::repeat_n(0x87u8, 60));
        assert_eq!(fet(&ex5).exempt_by, Some("Ex5"));
        let mut ex5_bad = vec![0x16, 0x03, 0x0a];
        ex5_bad.extend(std::iter::repeat_n(0x87u8, 60));
        assert_eq!(fet(&ex5_bad).exempt_by, None);
    }

    #[test]
    fn the_multistream_header_is_exempt_and_random_bytes_are_not() {
        let header = b"\x13/multistream/1.0.0\n\x07/noise\n";
        assert!(!fet(header).blocked());
        // Bytes with exactly four bits set and none printable: the GFW's target.
        let random_like: Vec<u8> =
            (0..200).map(|i| [0x87u8, 0x96, 0xa5, 0xc3, 0xe1][i % 5]).collect();
        assert!(fet(&random_like).blocked());
    }

    #[test]
    fn allowlist_admits_tls_http_and_dns_only() {
        let hello = build_client_hello("cover.example", &[7; 32], &[9; 32]);
        assert_eq!(allowed_protocol(&hello), Some("tls"));
        assert_eq!(allowed_protocol(b"GET / HTTP/1.1\r\n"), Some("http"));
        let mut dns = vec![0, 17, 0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        dns.extend_from_slice(&[1, b'a', 0, 0, 1]);
        assert_eq!(allowed_protocol(&dns), Some("dns"));
        assert_eq!(allowed_protocol(b"\x13/multistream/1.0.0\n"), None);
        assert_eq!(allowed_protocol(&[0x16, 0x03, 0x01, 0, 5, 0x02]), None);
    }

    #[test]
    fn a_built_hello_parses_back_and_fingerprints_per_the_spec() {
        let record = build_client_hello("cover.example", &[7; 32], &[9; 32]);
        let HelloParse::Hello(h) = parse_client_hello(&record) else { panic!("not parsed") };
        assert_eq!(h.sni.as_deref(), Some("cover.example"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(h.supported_versions, vec![0x0304, 0x0303]);
        let fp = ja4(&h);
        // a: TLS 1.3, SNI, 7 ciphers, 7 extensions, ALPN h2.
        assert!(fp.starts_with("t13d0707h2_"), "{fp}");
        // b: the sorted cipher list, hashed.
        assert_eq!(&fp[11..23], sha12("1301,1302,1303,c02b,c02c,c02f,c030"));
        // c: sorted extensions without SNI (0000) and ALPN (0010), then the signature algorithms
        // in their order.
        assert_eq!(&fp[24..], sha12("000a,000d,002b,002d,0033_0403,0804,0401,0807"));
        // Split across two records, and cut short.
        let mut split = vec![0x16, 0x03, 0x01, 0, 20];
        split.extend_from_slice(&record[5..25]);
        let rest = &record[25..];
        split.extend_from_slice(&[0x16, 0x03, 0x01]);
        split.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        split.extend_from_slice(rest);
        assert_eq!(parse_client_hello(&split), HelloParse::Hello(h));
        assert!(matches!(parse_client_hello(&record[..30]), HelloParse::NeedBytes(_)));
        assert!(matches!(parse_client_hello(b"\x13/multistream"), HelloParse::NotTls(_)));
    }

    #[test]
    fn grease_is_ignored() {
        assert!(grease(0x0a0a) && grease(0xfafa) && !grease(0x0a1a) && !grease(0x1301));
    }

    #[test]
    fn tls_record_prefix_stops_at_the_first_non_record() {
        let mut s = vec![0x16, 0x03, 0x03, 0, 2, 1, 2, 0x17, 0x03, 0x03, 0, 1, 9];
        assert_eq!(tls_records_prefix(&s), s.len());
        s.extend_from_slice(b"/multistream");
        assert_eq!(tls_records_prefix(&s), 13);
        assert_eq!(tls_records_prefix(b"\x13/multistream/1.0.0\n"), 0);
    }
}
