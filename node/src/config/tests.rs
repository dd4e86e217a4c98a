//! Tests of the config file: what it accepts, and the one-line errors for what it does not.

use crate::config::{FileConfig, LogFormat};

#[track_caller]
fn check_err(text: &str, expected: &str) {
    let err = FileConfig::parse(text).expect_err("the config is refused");
    assert_eq!(err, expected);
}

#[test]
fn every_option_is_read() {
    let text = r#"
listen = ["/ip4/0.0.0.0/tcp/4001"]
bootstrap = ["/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
external_addresses = []
log_format = "json"
metrics = "127.0.0.1:9464"
read_receipts = false
mdns = false
relay_for_contacts = false
"#;
    let config = FileConfig::parse(text).unwrap();
    assert_eq!(config.listen.unwrap()[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
    assert_eq!(config.bootstrap.unwrap().len(), 1);
    assert_eq!(config.external_addresses, Some(Vec::new()));
    assert_eq!(config.log_format, Some(LogFormat::Json));
    assert_eq!(config.metrics.unwrap().to_string(), "127.0.0.1:9464");
    assert_eq!(config.read_receipts, Some(false));
    assert_eq!(config.mdns, Some(false));
    assert_eq!(config.relay_for_contacts, Some(false));
    assert_eq!(FileConfig::parse("# nothing set\n").unwrap(), FileConfig::default());
}

#[test]
fn mistakes_name_the_line_and_the_option() {
    check_err(
        "log_format = \"text\"\n\nbootstrap = \"/ip4/1.2.3.4/tcp/1\"\n",
        "line 3: invalid type: string \"/ip4/1.2.3.4/tcp/1\", expected a list of multiaddr strings for `bootstrap`",
    );
    check_err(
        "listen = [\"/ip4/0.0.0.0/tcp/4001\",\n  \"0.0.0.0:4001\"]\n",
        "line 2: `listen` entry \"0.0.0.0:4001\" is not a multiaddr (invalid multiaddr); write addresses like \"/ip4/203.0.113.7/tcp/4001\"",
    );
    check_err(
        "bootstrap = [\"/ip4/1.2.3.4/tcp/1\"]\n",
        "line 1: bootstrap address /ip4/1.2.3.4/tcp/1 has no /p2p/<peer id> at its end (ask the relay operator for its full address)",
    );
    check_err(
        "bootsrap = []\n",
        "line 1: unknown field `bootsrap`, expected one of `listen`, `bootstrap`, `external_addresses`, `log_format`, `metrics`, `read_receipts`, `mdns`, `transport`, `bridge`, `stealth`, `download_dir`, `max_file_mib`, `relay_for_contacts`",
    );
    check_err("log_format = \"xml\"\n", "line 1: unknown variant `xml`, expected `text` or `json`");
    check_err(
        "metrics = \"9464\"\n",
        "line 1: `metrics` is \"9464\", not an IP address and port such as \"127.0.0.1:9464\"",
    );
    check_err("listen = [\n", "line 1: unclosed array, expected `]`");
}

#[test]
fn the_stealth_options_are_read_and_checked() {
    let text = r#"
transport = "stealth"

[stealth]
cert = "/etc/ssl/fullchain.pem"
key = "/etc/ssl/privkey.pem"
sni = "example.org"
cover_backend = "127.0.0.1:8080"
secret = "k/8f3a2c61d94b7e05a1c2"
secret_grace_days = 3
"#;
    let config = FileConfig::parse(text).unwrap();
    assert_eq!(config.transport, Some(crate::config::Policy::Stealth));
    let s = &config.stealth;
    assert_eq!(s.cert.as_deref(), Some(std::path::Path::new("/etc/ssl/fullchain.pem")));
    assert_eq!(s.sni.as_deref(), Some("example.org"));
    assert_eq!(s.cover_backend.unwrap().to_string(), "127.0.0.1:8080");
    assert_eq!(s.secret.as_deref(), Some("k/8f3a2c61d94b7e05a1c2"));
    assert_eq!(s.secret_grace, Some(std::time::Duration::from_secs(3 * 86_400)));
    check_err(
        "transport = \"tor\"\n",
        "line 1: unknown variant `tor`, expected `any` or `stealth`",
    );
    check_err(
        "[stealth]\ncover_backend = \"localhost\"\n",
        "line 2: `stealth.cover_backend` is \"localhost\", not an IP address and port such as \"127.0.0.1:8080\"",
    );
    let err = FileConfig::parse("[stealth]\nsnii = \"x\"\n").expect_err("refused");
    assert!(err.starts_with("line 2: unknown field `snii`"), "{err}");
}

#[test]
fn the_example_in_usage_md_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/USAGE.md");
    let usage = std::fs::read_to_string(path).unwrap();
    let block: String = usage
        .lines()
        .skip_while(|l| *l != "```toml")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{l}\n"))
        .collect();
    let config = FileConfig::parse(&block).unwrap();
    assert!(config.listen.is_some() && config.bootstrap.is_some(), "{block}");
    assert!(config.external_addresses.is_some() && config.metrics.is_some(), "{block}");
    assert_eq!(config.log_format, Some(LogFormat::Json));
    assert_eq!(config.read_receipts, Some(true));
    assert!(config.mdns.is_some(), "{block}");
}
