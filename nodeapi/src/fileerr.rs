//! Errors about configuration files that name the file, the line and what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub struct FileError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.path.display(), l, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// Maps byte offsets of one file's text to 1-based line numbers.
#[derive(Debug)]
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    /// An error at the byte span of a value (from `toml::Spanned`).
    pub fn error_at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> FileError {
        FileError { path: self.path.to_path_buf(), line: Some(self.line_of(span.start)), message: message.into() }
    }

    /// Attaches the location of `value` to a validation result.
    pub fn at<T>(&self, value: &toml::Spanned<String>, r: Result<T, String>) -> Result<T, FileError> {
        r.map_err(|m| self.error_at(value.span(), m))
    }

    pub fn error(&self, message: impl Into<String>) -> FileError {
        FileError { path: self.path.to_path_buf(), line: None, message: message.into() }
    }

    /// Parses TOML, turning syntax and type errors into a file:line error.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, FileError> {
        toml::from_str(self.text).map_err(|e| {
            let line = e.span().map(|s| self.line_of(s.start));
            FileError { path: self.path.to_path_buf(), line, message: suggest_field(e.message().trim()) }
        })
    }
}

/// serde's "unknown field `peerIp`, expected one of `node`, `peerIP`, …" with the closest of
/// the expected names offered, as clap offers a subcommand: a mistyped field name differs by
/// case or a letter more often than not. Other messages come back as they are.
pub fn suggest_field(message: &str) -> String {
    let Some(rest) = message.split_once("unknown field `").map(|(_, r)| r) else { return message.to_string() };
    let (Some(name), Some((_, expected))) = (rest.split('`').next(), rest.split_once("expected ")) else {
        return message.to_string();
    };
    let name = name.to_ascii_lowercase();
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|c| (strsim::jaro_winkler(&name, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, c)) => format!("{message} (did you mean `{c}`?)"),
        None => message.to_string(),
    }
}

/// Reads a file, with an error that says which file could not be read.
pub fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    })
}

/// Parses `"a.b.c.d/len"` as given (host bits kept), with a useful message.
pub fn parse_net(s: &str, what: &str) -> Result<ipnet::Ipv4Net, String> {
    s.parse().map_err(|_| format!("{what} {s:?} is not an IPv4 address with prefix length (like 10.0.0.1/24)"))
}

pub fn parse_net6(s: &str, what: &str) -> Result<ipnet::Ipv6Net, String> {
    s.parse().map_err(|_| format!("{what} {s:?} is not an IPv6 address with prefix length (like fd00:10:244::/48)"))
}

pub fn parse_addr6(s: &str, what: &str) -> Result<std::net::Ipv6Addr, String> {
    s.parse().map_err(|_| format!("{what} {s:?} is not an IPv6 address"))
}

/// A network of either family, as written: host bits are refused (a route's prefix or a
/// range to announce names a network, not an address in one).
pub fn parse_cidr(s: &str, what: &str) -> Result<ipnet::IpNet, String> {
    let net: ipnet::IpNet = s.parse().map_err(|_| format!("{what} {s:?} is not a CIDR (like 10.96.0.0/12)"))?;
    if net.trunc() != net {
        return Err(format!("{what} {net} has host bits set; did you mean {}?", net.trunc()));
    }
    Ok(net)
}

pub fn parse_ip(s: &str, what: &str) -> Result<std::net::IpAddr, String> {
    s.parse().map_err(|_| format!("{what} {s:?} is not an IPv4 or IPv6 address"))
}

pub fn parse_addr(s: &str, what: &str) -> Result<std::net::Ipv4Addr, String> {
    s.parse().map_err(|_| format!("{what} {s:?} is not an IPv4 address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cluster {
        block_size: Option<u8>,
        as_number: Option<u32>,
    }

    fn error(text: &str) -> FileError {
        let src = Source { path: Path::new("t.toml"), text };
        src.parse::<Cluster>().expect_err("refused")
    }

    #[test]
    fn a_mistyped_field_is_shown_the_one_it_resembles() {
        let e = error("as_number = 1\nblok_size = 26\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.ends_with("(did you mean `block_size`?)"), "{e}");
        let e = error("Block_Size = 26\n");
        assert!(e.message.ends_with("(did you mean `block_size`?)"), "{e}");
        let e = error("colour = 1\n");
        assert!(e.message.starts_with("unknown field `colour`") && !e.message.contains("did you mean"), "{e}");
        assert_eq!(suggest_field("invalid type: string"), "invalid type: string");
    }
}
