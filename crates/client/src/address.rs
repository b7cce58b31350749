//! The `HOST:PORT` argument: host names, IPv4, bracketed IPv6, and a default port.

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// The port used when the address names none.
pub const DEFAULT_PORT: u16 = 9000;

/// A server address as the user wrote it, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Address {
    /// Resolves the address; every result is worth a connection attempt.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("'{}' resolves to no address", self.host),
            ));
        }
        Ok(addrs)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be connected to".into()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("'{text}' is not a port number (1-65535)")),
    }
}

impl FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Address, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the server address is empty; write HOST:PORT".into());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("'{s}' lacks the closing ']' of an IPv6 address"))?;
            let port = match after {
                "" => DEFAULT_PORT,
                _ => match after.strip_prefix(':') {
                    Some(p) => parse_port(p)?,
                    None => return Err(format!("expected ':PORT' after ']' in '{s}'")),
                },
            };
            (host, port)
        } else if s.matches(':').count() > 1 {
            // Several colons and no brackets: only a bare IPv6 address makes sense.
            if s.parse::<Ipv6Addr>().is_err() {
                return Err(format!(
                    "'{s}' is ambiguous; write IPv6 addresses in brackets, e.g. [::1]:{DEFAULT_PORT}"
                ));
            }
            (s, DEFAULT_PORT)
        } else if let Some((host, port)) = s.rsplit_once(':') {
            (host, parse_port(port)?)
        } else {
            (s, DEFAULT_PORT)
        };
        if host.is_empty() {
            return Err(format!("'{s}' names no host"));
        }
        Ok(Address {
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Address {
        s.parse().unwrap()
    }

    #[test]
    fn host_names_and_ipv4() {
        assert_eq!(
            parse("localhost:9001"),
            Address {
                host: "localhost".into(),
                port: 9001
            }
        );
        assert_eq!(parse("10.0.0.5:9999").host, "10.0.0.5");
        assert_eq!(parse("10.0.0.5:9999").port, 9999);
    }

    #[test]
    fn missing_port_means_9000() {
        assert_eq!(parse("example.com").port, DEFAULT_PORT);
        assert_eq!(parse("1.2.3.4").port, 9000);
        assert_eq!(parse("[::1]").port, 9000);
        assert_eq!(parse("::1").port, 9000);
        assert_eq!(parse("::1").host, "::1");
    }

    #[test]
    fn ipv6_in_brackets() {
        let a = parse("[::1]:9000");
        assert_eq!(a.host, "::1");
        assert_eq!(a.port, 9000);
        assert_eq!(a.to_string(), "[::1]:9000");
        assert_eq!(parse("[fe80::1:2]:80").host, "fe80::1:2");
    }

    #[test]
    fn display_round_trips() {
        for s in ["localhost:9000", "[::1]:1", "1.2.3.4:65535"] {
            assert_eq!(parse(s).to_string(), s);
        }
    }

    #[test]
    fn bad_addresses_are_explained() {
        for bad in [
            "",
            "host:",
            "host:0",
            "host:70000",
            "host:abc",
            ":9000",
            "[::1",
            "[::1]9000",
            "[]:9000",
            "fe80::zz:1",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?} accepted");
        }
        assert!("host:x"
            .parse::<Address>()
            .unwrap_err()
            .contains("not a port"));
    }

    #[test]
    fn resolves_loopback() {
        let v4 = parse("127.0.0.1:5").resolve().unwrap();
        assert_eq!(v4, ["127.0.0.1:5".parse::<SocketAddr>().unwrap()]);
        let v6 = parse("[::1]:5").resolve().unwrap();
        assert_eq!(v6, ["[::1]:5".parse::<SocketAddr>().unwrap()]);
    }
}
