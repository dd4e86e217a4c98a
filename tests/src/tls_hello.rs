//! A TLS ClientHello parser and the JA3 and JA4 fingerprints censors key on (threat model T8),
//! for measuring what Kolokol's stealth dialer looks like next to browsers.
//!
//! JA3 (Salesforce, 2017): `version,ciphers,extensions,groups,point formats` in decimal, in
//! the order sent, GREASE values left out, MD5 of that string. JA4 (FoxIO, 2023), TCP form:
//! `t<version><d|i><ciphers:2><extensions:2><alpn first+last char>_<sha256 of sorted ciphers,
//! 12 hex>_<sha256 of sorted extensions without SNI and ALPN, "_", signature algorithms in
//! order, 12 hex>`, GREASE values left out of every list (Chromium greases its signature
//! algorithms too).

use sha2::Digest as _;

/// What a ClientHello offers, in the order it offers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version`.
    pub version: u16,
    /// Cipher suites.
    pub ciphers: Vec<u16>,
    /// Extension types.
    pub extensions: Vec<u16>,
    /// `supported_groups`.
    pub groups: Vec<u16>,
    /// `ec_point_formats`.
    pub point_formats: Vec<u8>,
    /// `signature_algorithms` (GREASE left out of JA4, as of every other list).
    pub signature_algorithms: Vec<u16>,
    /// ALPN protocol names.
    pub alpn: Vec<Vec<u8>>,
    /// `supported_versions`.
    pub supported_versions: Vec<u16>,
    /// The server name, if one was sent.
    pub sni: Option<String>,
}

/// Whether a value is one of RFC 8701's GREASE values (0x0a0a, 0x1a1a, ... 0xfafa).
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// A cursor over bytes that fails instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u8()?);
        self.take(n).map(Reader)
    }
    fn vec16(&mut self) -> Option<Reader<'a>> {
        let n = usize::from(self.u16()?);
        self.take(n).map(Reader)
    }
    fn u16s(mut self) -> Option<Vec<u16>> {
        let mut out = Vec::new();
        while !self.0.is_empty() {
            out.push(self.u16()?);
        }
        Some(out)
    }
}

impl ClientHello {
    /// Parses the first handshake message of a client's byte stream (TLS records, possibly
    /// several); `None` if it is not a complete ClientHello.
    pub fn parse(stream: &[u8]) -> Option<Self> {
        // Join the handshake records' payloads.
        let mut records = Reader(stream);
        let mut handshake = Vec::new();
        while let Some(content_type) = records.u8() {
            let _version = records.u16()?;
            let fragment = records.vec16()?;
            if content_type != 22 {
                break;
            }
            handshake.extend_from_slice(fragment.0);
            if handshake.len() >= 4 {
                let len = usize::from(handshake[1]) << 16
                    | usize::from(handshake[2]) << 8
                    | usize::from(handshake[3]);
                if handshake.len() >= len + 4 {
                    break;
                }
            }
        }
        let mut h = Reader(&handshake);
        if h.u8()? != 1 {
            return None;
        }
        let len = h.u24()?;
        let mut body = Reader(h.take(len)?);
        let mut hello = ClientHello { version: body.u16()?, ..Default::default() };
        body.take(32)?;
        body.vec8()?;
        hello.ciphers = body.vec16()?.u16s()?;
        body.vec8()?;
        if body.0.is_empty() {
            return Some(hello);
        }
        let mut extensions = body.vec16()?;
        while !extensions.0.is_empty() {
            let kind = extensions.u16()?;
            let mut data = extensions.vec16()?;
            hello.extensions.push(kind);
            match kind {
                0 => {
                    let mut list = data.vec16()?;
                    let _name_type = list.u8()?;
                    let name = list.vec16()?;
                    hello.sni = Some(String::from_utf8_lossy(name.0).into_owned());
                }
                10 => hello.groups = data.vec16()?.u16s()?,
                11 => hello.point_formats = data.vec8()?.0.to_vec(),
                13 => hello.signature_algorithms = data.vec16()?.u16s()?,
                16 => {
                    let mut list = data.vec16()?;
                    while !list.0.is_empty() {
                        hello.alpn.push(list.vec8()?.0.to_vec());
                    }
                }
                43 => hello.supported_versions = data.vec8()?.u16s()?,
                _ => {}
            }
        }
        Some(hello)
    }

    /// The JA3 string.
    pub fn ja3_string(&self) -> String {
        let join = |values: &mut dyn Iterator<Item = u16>| {
            values.filter(|v| !is_grease(*v)).map(|v| v.to_string()).collect::<Vec<_>>().join("-")
        };
        format!(
            "{},{},{},{},{}",
            self.version,
            join(&mut self.ciphers.iter().copied()),
            join(&mut self.extensions.iter().copied()),
            join(&mut self.groups.iter().copied()),
            self.point_formats.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("-"),
        )
    }

    /// The JA3 hash: MD5 of [`ClientHello::ja3_string`], in hex.
    pub fn ja3(&self) -> String {
        hex(&md5::Md5::digest(self.ja3_string().as_bytes()))
    }

    /// The JA4 fingerprint (TLS over TCP).
    pub fn ja4(&self) -> String {
        let version = self
            .supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
            .unwrap_or(self.version);
        let version = match version {
            0x0304 => "13",
            0x0303 => "12",
            0x0302 => "11",
            0x0301 => "10",
            _ => "00",
        };
        let ciphers: Vec<u16> = self.ciphers.iter().copied().filter(|v| !is_grease(*v)).collect();
        let extensions: Vec<u16> =
            self.extensions.iter().copied().filter(|v| !is_grease(*v)).collect();
        let alpn = match self.alpn.first() {
            Some(first) if !first.is_empty() => {
                let (a, b) = (first[0], first[first.len() - 1]);
                if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() {
                    format!("{}{}", a as char, b as char)
                } else {
                    format!("{:x}{:x}", a >> 4, b & 0xf)
                }
            }
            _ => "00".into(),
        };
        let hex4 = |v: &u16| format!("{v:04x}");
        let mut sorted_ciphers = ciphers.clone();
        sorted_ciphers.sort_unstable();
        let cipher_text = sorted_ciphers.iter().map(hex4).collect::<Vec<_>>().join(",");
        let mut sorted_extensions: Vec<u16> =
            extensions.iter().copied().filter(|e| *e != 0 && *e != 16).collect();
        sorted_extensions.sort_unstable();
        let mut extension_text = sorted_extensions.iter().map(hex4).collect::<Vec<_>>().join(",");
        if !self.signature_algorithms.is_empty() {
            extension_text.push('_');
            extension_text.push_str(
                &self
                    .signature_algorithms
                    .iter()
                    .filter(|v| !is_grease(**v))
                    .map(hex4)
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let short = |text: &str| {
            if text.is_empty() {
                "000000000000".to_owned()
            } else {
                hex(&sha2::Sha256::digest(text.as_bytes()))[..12].to_owned()
            }
        };
        format!(
            "t{version}{}{:02}{:02}{alpn}_{}_{}",
            if self.sni.is_some() { 'd' } else { 'i' },
            ciphers.len().min(99),
            extensions.len().min(99),
            short(&cipher_text),
            short(&extension_text),
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small ClientHello built by hand: TLS 1.2 legacy version, two ciphers and a GREASE
    /// one, SNI, groups, point formats, signature algorithms, ALPN h2 and http/1.1, supported
    /// versions.
    fn sample() -> Vec<u8> {
        let mut ext = Vec::new();
        let mut push = |kind: u16, data: &[u8]| {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        };
        push(0x0a0a, &[]);
        push(
            0,
            &[0, 14, 0, 0, 11, b'e', b'x', b'a', b'm', b'p', b'l', b'e', b'.', b'o', b'r', b'g'],
        );
        push(10, &[0, 4, 0, 0x1d, 0, 0x17]);
        push(11, &[1, 0]);
        push(13, &[0, 6, 0x1a, 0x1a, 0x04, 0x03, 0x08, 0x04]);
        push(16, &[0, 12, 2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1']);
        push(43, &[4, 0x03, 0x04, 0x03, 0x03]);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 6, 0x2a, 0x2a, 0x13, 0x01, 0xc0, 0x2b]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut record = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        record.extend_from_slice(&hs);
        record
    }

    #[test]
    fn ja3_and_ja4_of_a_known_hello() {
        let hello = ClientHello::parse(&sample()).expect("parses");
        assert_eq!(hello.sni.as_deref(), Some("example.org"));
        assert_eq!(hello.ja3_string(), "771,4865-49195,0-10-11-13-16-43,29-23,0");
        assert_eq!(hello.ja3(), hex(&md5::Md5::digest(b"771,4865-49195,0-10-11-13-16-43,29-23,0")));
        let ja4 = hello.ja4();
        assert!(ja4.starts_with("t13d0206h2_"), "{ja4}");
        let ciphers = hex(&sha2::Sha256::digest(b"1301,c02b"))[..12].to_owned();
        let exts = hex(&sha2::Sha256::digest(b"000a,000b,000d,002b_0403,0804"))[..12].to_owned();
        assert_eq!(ja4, format!("t13d0206h2_{ciphers}_{exts}"));
    }

    #[test]
    fn broken_hellos_are_refused_without_panic() {
        let good = sample();
        for n in 0..good.len() {
            let _ = ClientHello::parse(&good[..n]);
        }
        assert!(ClientHello::parse(b"GET / HTTP/1.1\r\n\r\n").is_none());
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a0b));
    }
}
