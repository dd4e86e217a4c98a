//! Tests of the network's identity, from routing tables as the kernel writes them.

use std::collections::BTreeSet;

use super::{NetworkId, describe_routes, is_lan};

const ROUTE: &str =
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

const ROUTE6: &str = "\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo
";

#[test]
fn the_routes_name_the_gateways_and_the_prefixes_behind_them() {
    assert_eq!(
        describe_routes(ROUTE, ROUTE6),
        [
            "default4 192.168.1.1 eth0",
            "default6 fd00::1 eth0",
            "net4 192.168.1.0/24 eth0",
            "net6 fd00::/64 eth0",
        ],
        "the bridge of another interface (docker0), link-local and loopback routes say nothing"
    );
    assert!(describe_routes("", "").is_empty());
    assert!(describe_routes("garbage\nmore garbage here\n", "not a route").is_empty());
}

#[test]
fn another_gateway_is_another_network_and_the_id_reads_back() {
    let home = NetworkId::of(&describe_routes(ROUTE, ""), &BTreeSet::new());
    let cafe = NetworkId::of(
        &describe_routes(&ROUTE.replace("0101A8C0", "FE01A8C0"), ""),
        &BTreeSet::new(),
    );
    assert_ne!(home, cafe);
    assert_eq!(home, NetworkId::of(&describe_routes(ROUTE, ""), &BTreeSet::new()));
    assert_eq!(NetworkId::from_hex(&home.to_hex()), Some(home));
    assert_eq!(home.to_hex().len(), 16);
    assert_eq!(NetworkId::from_hex("not hex at all!!"), None);
    assert_eq!(NetworkId::from_hex("00"), None);

    // Without a routing table, the interfaces' prefixes identify the network.
    let lan: BTreeSet<if_watch::IpNet> =
        ["10.1.0.7/24".parse().expect("a prefix"), "127.0.0.1/8".parse().expect("a prefix")]
            .into_iter()
            .collect();
    let same_lan: BTreeSet<if_watch::IpNet> =
        ["10.1.0.9/24".parse().expect("a prefix")].into_iter().collect();
    assert_eq!(NetworkId::of(&[], &lan), NetworkId::of(&[], &same_lan));
    assert_ne!(NetworkId::of(&[], &lan), home);
}

#[test]
fn lan_addresses_are_the_private_ranges() {
    for ip in ["10.1.0.2", "172.16.5.4", "192.168.1.20"] {
        assert!(is_lan(&ip.parse().expect("an address")), "{ip}");
    }
    for ip in ["100.64.0.1", "198.51.100.7", "127.0.0.1", "169.254.1.1"] {
        assert!(!is_lan(&ip.parse().expect("an address")), "{ip}");
    }
}
