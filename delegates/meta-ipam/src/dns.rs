//! resolv.conf parsing, as the reference host-local's `parseResolvConf`.

use cni_core::{Dns, Error, Result};
use std::path::Path;

/// Reads a resolv.conf into the result's DNS settings: `nameserver` (first argument),
/// `domain`, `search` and `options`; comments (`#`, `;`) and short lines are skipped.
/// A file that cannot be read is a configuration error (code 7) naming
/// `ipam.resolvConf` and the path.
pub fn parse_resolv_conf(path: &Path) -> Result<Dns> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(format!(
            "ipam.resolvConf: cannot read {}: {e}",
            path.display()
        ))
    })?;
    Ok(parse_resolv_conf_str(&text))
}

/// Parses resolv.conf text (see [`parse_resolv_conf`]).
pub fn parse_resolv_conf_str(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, first, rest @ ..] = fields.as_slice() else {
            continue;
        };
        match *key {
            "nameserver" => dns.nameservers.push((*first).to_string()),
            "domain" => dns.domain = (*first).to_string(),
            "search" => {
                dns.search.push((*first).to_string());
                dns.search.extend(rest.iter().map(|s| s.to_string()));
            }
            "options" => {
                dns.options.push((*first).to_string());
                dns.options.extend(rest.iter().map(|s| s.to_string()));
            }
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let d = parse_resolv_conf_str(
            "# c\n; c\nnameserver 10.0.0.53\nnameserver fd::53 extra\ndomain example.com\n\
             search a.example b.example\noptions ndots:5 rotate\nnameserver\nsortlist x\n",
        );
        assert_eq!(d.nameservers, ["10.0.0.53", "fd::53"]);
        assert_eq!(d.domain, "example.com");
        assert_eq!(d.search, ["a.example", "b.example"]);
        assert_eq!(d.options, ["ndots:5", "rotate"]);
        let e = parse_resolv_conf(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("resolvConf") && e.msg.contains("/nonexistent"));
    }
}
