//! nftables (JSON) masquerade and anti-spoofing rules
