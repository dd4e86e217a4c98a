//! The lab's network, built from network namespaces and veth pairs (threat model, section 4.1):
//!
//! ```text
//!  alice bob cx agent w1.. i1.. n1.. tester        dom (domestic relay, 10.2.0.10)
//!    \   |   |   ...                                 |
//!     [lan: bridge, 10.1.0.0/24] ---- tspu (the censor: router, nftables, tc) ---- wan (router)
//!                                     10.1.0.1 | 10.2.0.1 | 198.51.100.1/30        |  bridge
//!          relay 203.0.113.10, boot .11, crelay .50, decoy .80  (foreign hosting) --+
//!          dave 198.51.100.130, bridge .140, cz .150            (foreign residential)
//! ```
//!
//! The users' LAN is a bridge in a namespace of its own (a home network), so LAN traffic such as
//! mDNS never passes the censor; `tspu` routes the LAN and the domestic hosting segment to the
//! border, masquerading the LAN (users are behind NAT, as most are) and refusing connections into
//! it. The domestic range 10.2.0.0/24 stands for public domestic addresses: the foreign side
//! routes to it. Nothing here uses 192.0.2.0/24 (the host's own range on this machine), and no
//! link touches the host's namespace: every veth is created inside lab namespaces.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

use crate::registry;

/// Which segment a host sits on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// The censored users' LAN, behind the censor and NATed by it.
    Lan,
    /// Domestic hosting: inside the country, on the censor's other leg.
    Domestic,
    /// Abroad, behind the `wan` router.
    Foreign,
}

/// One host of the plan: a namespace of its own with one address.
pub struct HostSpec {
    /// The host's name, also the suffix of its namespace; at most 6 bytes, so that its veth name
    /// (prefix, dash, name, digit) fits the kernel's 15.
    pub name: &'static str,
    pub side: Side,
    pub ip: [u8; 4],
}

/// Every host of the lab. Scenarios start daemons on the hosts they need; the others stay idle.
pub const HOSTS: &[HostSpec] = &[
    // The censored LAN.
    HostSpec { name: "alice", side: Side::Lan, ip: [10, 1, 0, 11] },
    HostSpec { name: "bob", side: Side::Lan, ip: [10, 1, 0, 12] },
    HostSpec { name: "cx", side: Side::Lan, ip: [10, 1, 0, 21] },
    HostSpec { name: "w1", side: Side::Lan, ip: [10, 1, 0, 31] },
    HostSpec { name: "w2", side: Side::Lan, ip: [10, 1, 0, 32] },
    HostSpec { name: "i1", side: Side::Lan, ip: [10, 1, 0, 41] },
    HostSpec { name: "i2", side: Side::Lan, ip: [10, 1, 0, 42] },
    HostSpec { name: "n1", side: Side::Lan, ip: [10, 1, 0, 51] },
    HostSpec { name: "n2", side: Side::Lan, ip: [10, 1, 0, 52] },
    HostSpec { name: "agent", side: Side::Lan, ip: [10, 1, 0, 66] },
    HostSpec { name: "tester", side: Side::Lan, ip: [10, 1, 0, 99] },
    // Domestic hosting.
    HostSpec { name: "dom", side: Side::Domestic, ip: [10, 2, 0, 10] },
    // Foreign hosting.
    HostSpec { name: "relay", side: Side::Foreign, ip: [203, 0, 113, 10] },
    HostSpec { name: "boot", side: Side::Foreign, ip: [203, 0, 113, 11] },
    HostSpec { name: "crelay", side: Side::Foreign, ip: [203, 0, 113, 50] },
    HostSpec { name: "decoy", side: Side::Foreign, ip: [203, 0, 113, 80] },
    // Foreign residential.
    HostSpec { name: "dave", side: Side::Foreign, ip: [198, 51, 100, 130] },
    HostSpec { name: "bridge", side: Side::Foreign, ip: [198, 51, 100, 140] },
    HostSpec { name: "cz", side: Side::Foreign, ip: [198, 51, 100, 150] },
];

/// The LAN's prefix and the censor's address on it.
pub const LAN_NET: &str = "10.1.0.0/24";
pub const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The domestic hosting segment.
pub const DOMESTIC_NET: &str = "10.2.0.0/24";
pub const DOMESTIC_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// Everything inside the censored country.
pub const COUNTRY_NET: &str = "10.0.0.0/8";
/// The censor's uplink address (what LAN users look like abroad) and the wan router's.
pub const BORDER_CENSOR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const BORDER_WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// Foreign hosting, the range a censor treats as "datacenters" (T5, T10).
pub const HOSTING_NET: &str = "203.0.113.0/24";

/// A built lab network. Dropping it deletes its namespaces (and so every veth in them).
pub struct Topology {
    pub prefix: String,
    namespaces: Vec<String>,
}

impl Topology {
    /// Builds the whole plan under `prefix`.
    pub fn build(prefix: &str) -> anyhow::Result<Self> {
        let mut topo = Self { prefix: prefix.to_owned(), namespaces: Vec::new() };
        topo.build_inner().context("building the lab network")?;
        Ok(topo)
    }

    fn build_inner(&mut self) -> anyhow::Result<()> {
        let p = self.prefix.clone();
        for ns in ["lan", "tspu", "wan"] {
            self.add_namespace(ns)?;
        }
        for host in HOSTS {
            self.add_namespace(host.name)?;
        }
        let lan = self.ns("lan");
        let tspu = self.ns("tspu");
        let wan = self.ns("wan");
        let br = format!("{p}-br");

        // The two bridges: the users' LAN, and the foreign internet behind the wan router. A
        // bridge's traffic must not go through netfilter (section 4.4): nothing filters there.
        for ns in [&lan, &wan] {
            ip(&["-n", ns, "link", "add", &br, "type", "bridge"])?;
            ip(&["-n", ns, "link", "set", &br, "up"])?;
            sysctl(ns, "net.bridge.bridge-nf-call-iptables", "0")?;
        }
        ip(&["-n", &wan, "addr", "add", "203.0.113.1/24", "dev", &br])?;
        ip(&["-n", &wan, "addr", "add", "198.51.100.129/25", "dev", &br])?;

        // The censor's three legs.
        let tspu_lan = self.lan_if();
        veth(&tspu, &tspu_lan, &lan, &format!("{p}-tspu1"))?;
        ip(&["-n", &lan, "link", "set", &format!("{p}-tspu1"), "master", &br, "up"])?;
        addr_up(&tspu, &tspu_lan, &format!("{LAN_GATEWAY}/24"))?;
        let up = self.uplink_if();
        veth(&tspu, &up, &wan, &format!("{p}-up1"))?;
        addr_up(&tspu, &up, &format!("{BORDER_CENSOR}/30"))?;
        addr_up(&wan, &format!("{p}-up1"), &format!("{BORDER_WAN}/30"))?;
        ip(&["-n", &tspu, "route", "add", "default", "via", &BORDER_WAN.to_string()])?;
        ip(&["-n", &wan, "route", "add", DOMESTIC_NET, "via", &BORDER_CENSOR.to_string()])?;
        sysctl(&tspu, "net.ipv4.ip_forward", "1")?;
        sysctl(&wan, "net.ipv4.ip_forward", "1")?;
        sysctl(&tspu, "net.bridge.bridge-nf-call-iptables", "0")?;
        // T10's volume rule reads per-connection byte counters.
        sysctl(&tspu, "net.netfilter.nf_conntrack_acct", "1")?;

        for host in HOSTS {
            let ns = self.ns(host.name);
            let inside = format!("{p}-{}0", host.name);
            let outside = format!("{p}-{}1", host.name);
            let address = Ipv4Addr::from(host.ip);
            match host.side {
                Side::Lan => {
                    veth(&ns, &inside, &lan, &outside)?;
                    ip(&["-n", &lan, "link", "set", &outside, "master", &br, "up"])?;
                    addr_up(&ns, &inside, &format!("{address}/24"))?;
                    // mDNS needs multicast on the LAN.
                    ip(&["-n", &ns, "link", "set", &inside, "multicast", "on"])?;
                    ip(&["-n", &ns, "route", "add", "default", "via", &LAN_GATEWAY.to_string()])?;
                }
                Side::Domestic => {
                    veth(&ns, &inside, &tspu, &outside)?;
                    addr_up(&ns, &inside, &format!("{address}/24"))?;
                    addr_up(&tspu, &outside, &format!("{DOMESTIC_GATEWAY}/24"))?;
                    ip(&[
                        "-n",
                        &ns,
                        "route",
                        "add",
                        "default",
                        "via",
                        &DOMESTIC_GATEWAY.to_string(),
                    ])?;
                }
                Side::Foreign => {
                    veth(&ns, &inside, &wan, &outside)?;
                    ip(&["-n", &wan, "link", "set", &outside, "master", &br, "up"])?;
                    let (len, gateway) = if host.ip[0] == 203 {
                        (24, "203.0.113.1")
                    } else {
                        (25, "198.51.100.129")
                    };
                    addr_up(&ns, &inside, &format!("{address}/{len}"))?;
                    ip(&["-n", &ns, "route", "add", "default", "via", gateway])?;
                }
            }
        }

        // The ISP's NAT in front of the LAN (not the censor: its rules live in their own
        // table so that the censor's counters count only the censor): LAN users leave with the
        // censor's uplink address, and nobody outside can open a connection to them.
        let nat = format!(
            "table ip isp {{
               chain forward {{ type filter hook forward priority -10; policy accept;
                 oifname \"{lan_if}\" ct state new counter drop comment \"nobody dials into the NATed LAN\"
               }}
               chain post {{ type nat hook postrouting priority srcnat; policy accept;
                 oifname \"{up}\" ip saddr {LAN_NET} masquerade
               }}
             }}",
            lan_if = tspu_lan,
        );
        nft(&tspu, &nat)?;
        // The censor's own table, empty until a scenario adds its rules. `filter_pre` sees every
        // packet before any redirect; `nat_pre` sends flows to the censor proxy; `forward` is
        // where most rules go.
        nft(
            &tspu,
            "table inet censor {
               set blocked4 { type ipv4_addr; flags interval; }
               set penalty { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 180s; }
               set penalty3 { type ipv4_addr . ipv4_addr . inet_service; flags dynamic,timeout; timeout 60s; }
               chain filter_pre { type filter hook prerouting priority -150; policy accept; }
               chain nat_pre { type nat hook prerouting priority dstnat; policy accept; }
               chain forward { type filter hook forward priority filter; policy accept; }
             }",
        )?;
        Ok(())
    }

    fn add_namespace(&mut self, name: &str) -> anyhow::Result<()> {
        let ns = self.ns(name);
        registry::add_namespace(&ns);
        self.namespaces.push(ns.clone());
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The namespace name of host (or router) `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// The censor's interface toward the users' LAN.
    pub fn lan_if(&self) -> String {
        format!("{}-tspu0", self.prefix)
    }

    /// The censor's interface toward the border (the rest of the world).
    pub fn uplink_if(&self) -> String {
        format!("{}-up0", self.prefix)
    }

    /// The address of host `name`.
    pub fn ip(name: &str) -> Ipv4Addr {
        HOSTS
            .iter()
            .find(|h| h.name == name)
            .map(|h| Ipv4Addr::from(h.ip))
            .unwrap_or_else(|| panic!("no host {name} in the lab plan"))
    }

    /// Runs `nft -f -` with `script` in the censor's namespace.
    pub fn censor_nft(&self, script: &str) -> anyhow::Result<()> {
        nft(&self.ns("tspu"), script)
    }

    /// Runs a command in namespace `ns` and returns its output (whatever its exit status).
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let ns = self.ns(host);
        Command::new("ip")
            .args(["netns", "exec", &ns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} in {ns}"))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        registry::delete_namespaces(&self.namespaces);
    }
}

/// Runs `ip ARGS`, failing with its error output.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

/// Runs a program, failing with its error output.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates a veth pair `a_if` in `a` and `b_if` in `b`, both up. Made inside `a`, so the pair
/// never exists in the host's namespace.
fn veth(a: &str, a_if: &str, b: &str, b_if: &str) -> anyhow::Result<()> {
    ip(&["-n", a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b])?;
    ip(&["-n", a, "link", "set", a_if, "up"])?;
    ip(&["-n", b, "link", "set", b_if, "up"])?;
    Ok(())
}

fn addr_up(ns: &str, link: &str, cidr: &str) -> anyhow::Result<()> {
    ip(&["-n", ns, "addr", "add", cidr, "dev", link])?;
    ip(&["-n", ns, "link", "set", link, "up"])
}

fn sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", &format!("{key}={value}")])
}

/// Feeds `script` to `nft -f -` in namespace `ns`.
pub fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft rejected the rules: {}\n{script}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
