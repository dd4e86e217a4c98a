//! Packet captures on the censor's interfaces (tcpdump), and a reader for them: what a censor
//! sees on the wire, for the string search (T17), the size analysis (T16) and the dial-rate
//! count (T15).
//!
//! The reader understands what tcpdump writes on a veth: classic pcap, Ethernet, IPv4, TCP and
//! UDP. TCP payloads are put back in stream order per direction (by sequence number, dropping
//! retransmitted bytes), which is what a censor that reassembles streams sees.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::registry;

/// The most packets the reader keeps from one capture file.
pub const MAX_PACKETS: usize = 2_000_000;

/// The most bytes of one direction of one TCP stream the reader reassembles.
pub const MAX_STREAM: usize = 64 * 1024 * 1024;

/// A running tcpdump.
pub struct Capture {
    pub file: PathBuf,
    child: Option<Child>,
}

impl Capture {
    /// Starts tcpdump on `interface` in namespace `ns`, writing every TCP and UDP packet whole
    /// to `file`, and waits until it listens.
    pub fn start(ns: &str, interface: &str, file: PathBuf) -> anyhow::Result<Self> {
        let log = file.with_extension("tcpdump.log");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", interface, "-U", "-s", "0", "-w"])
            .arg(&file)
            .args(["tcp", "or", "udp"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start tcpdump (apt-get install tcpdump)")?;
        registry::add_pid(child.id());
        // tcpdump says "listening on ..." once it captures.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if std::fs::read_to_string(&log).unwrap_or_default().contains("listening on") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "tcpdump stopped ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "tcpdump did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(crate::clock::POLL);
        }
        Ok(Self { file, child: Some(child) })
    }

    /// Stops tcpdump, which flushes the file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            registry::stop_pid(child.id());
            let _ = child.wait();
            registry::remove_pid(child.id());
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One packet of a capture.
#[derive(Clone, Debug)]
pub struct Packet {
    /// Capture time, microseconds since the Unix epoch.
    pub ts_us: u64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub tcp: bool,
    /// TCP flags (SYN 0x02, ACK 0x10, RST 0x04, FIN 0x01); 0 for UDP.
    pub flags: u8,
    pub seq: u32,
    pub payload: Vec<u8>,
}

impl Packet {
    pub fn syn_only(&self) -> bool {
        self.tcp && self.flags & 0x12 == 0x02
    }
}

/// Reads every IPv4 TCP and UDP packet of a pcap file.
pub fn read_pcap(path: &Path) -> anyhow::Result<Vec<Packet>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() < 24 {
        return Ok(Vec::new());
    }
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (le, nanos) = match magic {
        0xa1b2c3d4 => (true, false),
        0xa1b23c4d => (true, true),
        0xd4c3b2a1 => (false, false),
        0x4d3cb2a1 => (false, true),
        _ => bail!("{} is not a pcap file", path.display()),
    };
    let u32_at = |b: &[u8], i: usize| {
        let x = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le { u32::from_le_bytes(x) } else { u32::from_be_bytes(x) }
    };
    let linktype = u32_at(&data, 20);
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() && packets.len() < MAX_PACKETS {
        let secs = u64::from(u32_at(&data, at));
        let frac = u64::from(u32_at(&data, at + 4));
        let caplen = u32_at(&data, at + 8) as usize;
        at += 16;
        if at + caplen > data.len() {
            break;
        }
        let frame = &data[at..at + caplen];
        at += caplen;
        let ts_us = secs * 1_000_000 + if nanos { frac / 1000 } else { frac };
        let ip = match linktype {
            1 if frame.len() >= 14 && frame[12..14] == [0x08, 0x00] => &frame[14..],
            113 if frame.len() >= 16 && frame[14..16] == [0x08, 0x00] => &frame[16..],
            _ => continue,
        };
        if let Some(p) = parse_ipv4(ip, ts_us) {
            packets.push(p);
        }
    }
    Ok(packets)
}

fn parse_ipv4(ip: &[u8], ts_us: u64) -> Option<Packet> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if total < ihl {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[ihl..total];
    match ip[9] {
        6 if l4.len() >= 20 => {
            let off = usize::from(l4[12] >> 4) * 4;
            Some(Packet {
                ts_us,
                src,
                dst,
                sport: u16::from_be_bytes([l4[0], l4[1]]),
                dport: u16::from_be_bytes([l4[2], l4[3]]),
                tcp: true,
                flags: l4[13],
                seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                payload: l4.get(off..).unwrap_or_default().to_vec(),
            })
        }
        17 if l4.len() >= 8 => Some(Packet {
            ts_us,
            src,
            dst,
            sport: u16::from_be_bytes([l4[0], l4[1]]),
            dport: u16::from_be_bytes([l4[2], l4[3]]),
            tcp: false,
            flags: 0,
            seq: 0,
            payload: l4[8..].to_vec(),
        }),
        _ => None,
    }
}

/// One TCP connection (or UDP flow) of a capture, with its two directions reassembled.
#[derive(Clone, Debug)]
pub struct Flow {
    pub client: (Ipv4Addr, u16),
    pub server: (Ipv4Addr, u16),
    pub tcp: bool,
    /// Client to server, and server to client, in stream order.
    pub up: Vec<u8>,
    pub down: Vec<u8>,
    /// The payload sizes of the packets, with their time and direction (true: client to server).
    pub segments: Vec<(u64, bool, usize)>,
    /// The first packet payload the client sent.
    pub first_client_payload: Vec<u8>,
}

/// Groups packets into flows and reassembles each direction.
pub fn flows(packets: &[Packet]) -> Vec<Flow> {
    type Key = (Ipv4Addr, u16, Ipv4Addr, u16, bool);
    let mut by_key: BTreeMap<Key, Vec<&Packet>> = BTreeMap::new();
    for p in packets {
        // The key is the same both ways: the lower (address, port) first.
        let a = (p.src, p.sport);
        let b = (p.dst, p.dport);
        let key = if a <= b { (a.0, a.1, b.0, b.1, p.tcp) } else { (b.0, b.1, a.0, a.1, p.tcp) };
        by_key.entry(key).or_default().push(p);
    }
    let mut out = Vec::new();
    for ((a_ip, a_port, b_ip, b_port, tcp), list) in by_key {
        // The client: whoever sent a SYN without ACK; else whoever sent the first packet to
        // the lower port (servers listen on low ports far more often than clients dial from them).
        let syn = list.iter().find(|p| p.syn_only());
        let client = match syn {
            Some(p) => (p.src, p.sport),
            None => {
                if a_port < b_port {
                    (b_ip, b_port)
                } else {
                    (a_ip, a_port)
                }
            }
        };
        let server = if client == (a_ip, a_port) { (b_ip, b_port) } else { (a_ip, a_port) };
        let mut flow = Flow {
            client,
            server,
            tcp,
            up: Vec::new(),
            down: Vec::new(),
            segments: Vec::new(),
            first_client_payload: Vec::new(),
        };
        for p in &list {
            if !p.payload.is_empty() {
                let up = (p.src, p.sport) == client;
                flow.segments.push((p.ts_us, up, p.payload.len()));
                if up && flow.first_client_payload.is_empty() {
                    flow.first_client_payload = p.payload.clone();
                }
            }
        }
        if tcp {
            flow.up = reassemble(list.iter().filter(|p| (p.src, p.sport) == client).copied());
            flow.down = reassemble(list.iter().filter(|p| (p.src, p.sport) != client).copied());
        } else {
            for p in &list {
                let target = if (p.src, p.sport) == client { &mut flow.up } else { &mut flow.down };
                if target.len() + p.payload.len() <= MAX_STREAM {
                    target.extend_from_slice(&p.payload);
                }
            }
        }
        out.push(flow);
    }
    out
}

/// Puts one direction's payloads in sequence order, without the bytes seen twice.
fn reassemble<'a>(packets: impl Iterator<Item = &'a Packet>) -> Vec<u8> {
    let list: Vec<&Packet> = packets.collect();
    let Some(base) = list
        .iter()
        .find(|p| p.flags & 0x02 != 0)
        .map(|p| p.seq.wrapping_add(1))
        .or_else(|| list.iter().filter(|p| !p.payload.is_empty()).map(|p| p.seq).next())
    else {
        return Vec::new();
    };
    let mut pieces: Vec<(u64, &[u8])> = list
        .iter()
        .filter(|p| !p.payload.is_empty())
        .map(|p| (u64::from(p.seq.wrapping_sub(base)), p.payload.as_slice()))
        // Offsets beyond 2 GiB are wrapped sequence numbers from before the base: drop them.
        .filter(|(off, _)| *off < 1 << 31)
        .collect();
    pieces.sort_by_key(|(off, _)| *off);
    let mut stream = Vec::new();
    for (off, bytes) in pieces {
        let off = off as usize;
        let end = off + bytes.len();
        if end <= stream.len() {
            continue;
        }
        if off > stream.len() {
            // A gap (a packet the capture missed): keep what follows, as a censor would.
            if off - stream.len() > 1 << 20 {
                break;
            }
            stream.resize(off, 0);
        }
        let skip = stream.len() - off;
        if stream.len() + bytes.len() - skip > MAX_STREAM {
            break;
        }
        stream.extend_from_slice(&bytes[skip..]);
    }
    stream
}

/// Where `needle` occurs in `hay`, if it does.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(seq: u32, flags: u8, up: bool, payload: &[u8]) -> Packet {
        let (c, s) = ((Ipv4Addr::new(10, 1, 0, 11), 40000), (Ipv4Addr::new(203, 0, 113, 10), 4001));
        let ((src, sport), (dst, dport)) = if up { (c, s) } else { (s, c) };
        Packet {
            ts_us: u64::from(seq),
            src,
            dst,
            sport,
            dport,
            tcp: true,
            flags,
            seq,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn streams_are_reassembled_in_order_without_retransmissions() {
        let packets = vec![
            tcp(100, 0x02, true, b""),
            tcp(500, 0x12, false, b""),
            tcp(107, 0x18, true, b"world"),
            tcp(101, 0x18, true, b"hello "),
            tcp(101, 0x18, true, b"hello "),
            tcp(501, 0x18, false, b"ok"),
        ];
        let f = flows(&packets);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].client.1, 40000);
        assert_eq!(f[0].up, b"hello world");
        assert_eq!(f[0].down, b"ok");
        assert_eq!(f[0].first_client_payload, b"world");
        assert_eq!(find(&f[0].up, b"o w"), Some(4));
    }

    #[test]
    fn a_pcap_file_is_read() {
        // One Ethernet frame carrying IPv4/TCP with a 3-byte payload.
        let mut file = vec![];
        file.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        file.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 43, 0, 0, 0, 0, 64, 6, 0, 0, 10, 1, 0, 11, 203, 0, 113, 10];
        let mut tcp =
            vec![0x9c, 0x40, 0x0f, 0xa1, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0, 0, 0, 0, 0, 0];
        tcp.extend_from_slice(b"abc");
        ip.extend_from_slice(&tcp);
        frame.extend_from_slice(&ip);
        file.extend_from_slice(&7u32.to_le_bytes());
        file.extend_from_slice(&9u32.to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&frame);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pcap");
        std::fs::write(&path, &file).expect("write");
        let packets = read_pcap(&path).expect("read");
        assert_eq!(packets.len(), 1);
        assert_eq!(
            (packets[0].sport, packets[0].dport, packets[0].ts_us),
            (40000, 4001, 7_000_009)
        );
        assert_eq!(packets[0].payload, b"abc");
    }
}
