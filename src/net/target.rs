//! Where a request goes: [`Target`] (an http(s) URL without credentials,
//! parsed once, shown without its query), how a redirect's `Location` is
//! resolved against it, and [`TargetPattern`], the URL patterns a `/probe`
//! module's `allowed_targets` are made of (the client checks every
//! redirect hop against them).

use std::fmt::Write as _;

use hyper::Uri;
use regex::Regex;
use url::Url;

use super::error::NetError;

/// Where a request goes. Never holds credentials: userinfo in a URL is
/// refused at load time (it would leak into logs); `basic_auth` holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// The port `auth` names, `default` where it names none. One that is not a
/// port (0, above 65,535, not a number) is an error: `http::Uri` reads it
/// as no port at all, and a typo (`:80800`) would probe the default port,
/// maybe another service.
pub fn port_of(auth: &hyper::http::uri::Authority, default: u16) -> Result<u16, NetError> {
    let hostport = auth
        .as_str()
        .rsplit_once('@')
        .map_or(auth.as_str(), |(_, h)| h);
    // After an IPv6 literal's `]`, or after the host.
    let after = hostport.rsplit_once(']').map_or(hostport, |(_, rest)| rest);
    match after.rsplit_once(':') {
        None | Some((_, "")) => Ok(default),
        Some((_, p)) => match p.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(NetError::Port(p.to_string())),
        },
    }
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, NetError> {
        let uri: Uri = match s.parse() {
            Ok(uri) => uri,
            // A host in another script (`bücher.example`) or a path with
            // letters or spaces a URI cannot carry: as a browser sends it
            // (the host in punycode, the path percent-encoded).
            Err(_) if !s.is_ascii() => Url::parse(s)
                .ok()
                .and_then(|u| u.as_str().parse().ok())
                .ok_or_else(|| NetError::NotAUrl("invalid uri character".into()))?,
            // The text is not echoed: it may hold credentials.
            Err(e) => return Err(NetError::NotAUrl(e.to_string())),
        };
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(NetError::Scheme(other.to_string())),
            None => return Err(NetError::NoScheme),
        };
        let auth = uri.authority().ok_or(NetError::NoHost)?;
        if auth.as_str().contains('@') {
            return Err(NetError::Credentials);
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(NetError::NoHost);
        }
        let port = port_of(auth, if https { 443 } else { 80 })?;
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        Ok(Target {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    fn default_port(&self) -> bool {
        self.port == if self.https { 443 } else { 80 }
    }

    /// `host[:port]` as the Host header writes it.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The URL without its query (queries often carry API keys): safe for
    /// messages and health details.
    pub fn redacted(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme(),
            self.authority(),
            redact_query(&self.path)
        )
    }

    /// The whole URL, query included (the request line to a proxy).
    pub(crate) fn absolute(&self) -> String {
        format!("{}://{}{}", self.scheme(), self.authority(), self.path)
    }

    pub(crate) fn same_origin(&self, o: &Target) -> bool {
        self.https == o.https && self.host == o.host && self.port == o.port
    }

    /// Resolves a `Location` header against this URL (RFC 3986 section 5:
    /// relative paths, `.` and `..` segments, `//host` references, a query
    /// alone). Only http and https are followed: any other scheme (`file:`,
    /// `gopher:`, ...) is refused rather than read as a relative path.
    pub(crate) fn join(&self, loc: &str) -> Result<Target, Refused> {
        if let Some((scheme, rest)) = split_scheme(loc) {
            match scheme.to_ascii_lowercase().as_str() {
                // `http:path` is no URL to follow (the url crate would read
                // it as relative, or `https:host` as `https://host`).
                "http" | "https" if !rest.starts_with("//") => {
                    return Err(Refused::Invalid("the URL has no host".into()));
                }
                "http" | "https" => {}
                other => return Err(Refused::Scheme(other.to_string())),
            }
        }
        let base = Url::parse(&self.absolute()).map_err(|e| Refused::Invalid(e.to_string()))?;
        let mut next = base
            .join(loc)
            .map_err(|e| Refused::Invalid(format!("not a URL ({e})")))?;
        // The url crate trims spaces and control characters at the ends and
        // drops tabs and newlines anywhere, which can reveal a scheme the
        // check above did not see.
        if !matches!(next.scheme(), "http" | "https") {
            return Err(Refused::Scheme(next.scheme().to_string()));
        }
        // A fragment is never sent.
        next.set_fragment(None);
        // Through `parse`, so a redirect meets the rules of a configured URL
        // (no credentials in it).
        Target::parse(next.as_str()).map_err(|e| Refused::Invalid(e.to_string()))
    }
}

/// Why a `Location` cannot be followed.
#[derive(Debug, PartialEq)]
pub(crate) enum Refused {
    /// A scheme other than http(s), lowercased.
    Scheme(String),
    Invalid(String),
}

/// The scheme of an absolute URL reference (RFC 3986: a letter, then
/// letters, digits, `+`, `-` or `.`, then `:`) and what follows the `:`.
/// `None` for a relative reference.
fn split_scheme(loc: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = loc.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

fn redact_query(s: &str) -> String {
    match s.split_once('?') {
        Some((p, _)) => format!("{p}?…"),
        None => s.to_string(),
    }
}

/// A pattern of URLs a module may probe: `https://*.partner.example/*`.
/// Matched by parts, not as text, so `*` in the host never crosses into the
/// path (`https://evil.test/x.partner.example/` does not match the above).
#[derive(Clone, Debug)]
pub struct TargetPattern {
    source: String,
    https: bool,
    host: Regex,
    /// `None`: any port.
    port: Option<u16>,
    path: Regex,
}

/// The source decides the rest (so a reload can tell whether it changed).
impl PartialEq for TargetPattern {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
    }
}

/// A pattern's host as targets have it: lowercase, each label in another
/// script in punycode (a label with both such letters and `*` cannot be).
fn ascii_host(host: &str) -> Result<String, NetError> {
    if host.is_ascii() {
        return Ok(host.to_ascii_lowercase());
    }
    let labels: Result<Vec<String>, NetError> = host
        .split('.')
        .map(|label| {
            if label.is_ascii() {
                return Ok(label.to_ascii_lowercase());
            }
            let ascii = url::quirks::domain_to_ascii(label);
            if ascii.is_empty() || label.contains('*') {
                return Err(NetError::Host(host.to_string()));
            }
            Ok(ascii)
        })
        .collect();
    Ok(labels?.join("."))
}

/// A pattern's path as targets have it: bytes beyond ASCII percent-encoded.
fn ascii_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.is_ascii() {
        return path.into();
    }
    let mut out = String::with_capacity(path.len() * 2);
    for b in path.bytes() {
        if b.is_ascii() {
            out.push(char::from(b));
        } else {
            // Writing into a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out.into()
}

impl TargetPattern {
    pub fn parse(s: &str) -> Result<TargetPattern, NetError> {
        let (scheme, rest) = s.split_once("://").ok_or(NetError::PatternScheme)?;
        let https = match scheme {
            "http" => false,
            "https" => true,
            _ => return Err(NetError::Scheme(scheme.to_string())),
        };
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/*"),
        };
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or(NetError::UnclosedBracket)?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['@', '?', '#']) {
            return Err(NetError::Host(host.to_string()));
        }
        let port = match port {
            None => Some(if https { 443 } else { 80 }),
            Some("*") => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(NetError::Port(p.to_string())),
            },
        };
        // In the form targets take (see `Target::parse`).
        let host = ascii_host(host)?;
        let path = ascii_path(path);
        let glob = |g: &str, any: &str| {
            let body: Vec<String> = g.split('*').map(regex::escape).collect();
            Regex::new(&format!("^{}$", body.join(any)))
        };
        Ok(TargetPattern {
            source: s.to_string(),
            https,
            host: glob(&host, "[a-z0-9.-]*").map_err(|e| NetError::Pattern(e.to_string()))?,
            port,
            path: glob(&path, ".*").map_err(|e| NetError::Pattern(e.to_string()))?,
        })
    }

    pub fn matches(&self, t: &Target) -> bool {
        self.https == t.https
            && self.port.is_none_or(|p| p == t.port)
            && self.host.is_match(&t.host)
            && self.path.is_match(&t.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_redact() {
        let t = Target::parse("https://API.example.com/v1/health?key=s3cret").unwrap();
        assert_eq!(t.host, "api.example.com");
        assert_eq!(t.port, 443);
        assert_eq!(t.redacted(), "https://api.example.com/v1/health?…");
        assert!(Target::parse("https://u:p@x.example/").is_err());
        assert!(Target::parse("ftp://x.example/").is_err());
        let v6 = Target::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.authority(), "[::1]:8080");
        assert_eq!(Target::parse("http://[::1]/x").unwrap().port, 80);
        assert_eq!(Target::parse("http://a.example:/x").unwrap().port, 80);
        assert_eq!(
            Target::parse("https://a.example:65535/").unwrap().port,
            65535
        );
    }

    #[test]
    fn hosts_and_paths_beyond_ascii_are_sent_as_browsers_send_them() {
        let t = Target::parse("https://bücher.example/ü path?q=ä").unwrap();
        assert_eq!(t.host, "xn--bcher-kva.example");
        assert_eq!(t.path, "/%C3%BC%20path?q=%C3%A4");
        assert_eq!(t.port, 443);
        // Not a URL in any script.
        assert!(matches!(
            Target::parse("http://ü:99999/"),
            Err(NetError::NotAUrl(_)) | Err(NetError::Port(_))
        ));
        assert!(matches!(Target::parse("ü"), Err(NetError::NotAUrl(_))));
    }

    #[test]
    fn patterns_in_other_scripts_match_the_targets_they_name() {
        let p = TargetPattern::parse("https://*.bücher.example/über*").unwrap();
        assert!(p.matches(&Target::parse("https://shop.bücher.example/über/uns").unwrap()));
        assert!(p.matches(&Target::parse("https://shop.xn--bcher-kva.example/%C3%BCber").unwrap()));
        assert!(!p.matches(&Target::parse("https://shop.bucher.example/über").unwrap()));
        assert!(!p.matches(&Target::parse("https://shop.bücher.example/uber").unwrap()));
        assert!(matches!(
            TargetPattern::parse("https://bü*.example/"),
            Err(NetError::Host(_))
        ));
        assert!(matches!(
            TargetPattern::parse("http://a.example:0/"),
            Err(NetError::Port(_))
        ));
    }

    /// A port that is not one was read as no port: `:80800` (a typo for
    /// 8080) probed port 80, maybe another service that answers 200.
    #[test]
    fn a_port_that_is_not_one_is_refused_not_defaulted() {
        for (url, port) in [
            ("http://127.0.0.1:99999/", "99999"),
            ("http://a.example:80800/health", "80800"),
            ("https://a.example:65536/", "65536"),
            ("http://a.example:0/", "0"),
            ("http://[::1]:70000/", "70000"),
        ] {
            match Target::parse(url) {
                Err(NetError::Port(p)) => assert_eq!(p, port, "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        let t = Target::parse("http://a.example:81/x").unwrap();
        assert!(matches!(
            t.join("http://b.example:99999/"),
            Err(Refused::Invalid(_))
        ));
    }

    #[test]
    fn redirects_join() {
        let t = Target::parse("http://a.example:81/x/y?q=1").unwrap();
        assert_eq!(t.join("/z").unwrap().absolute(), "http://a.example:81/z");
        assert_eq!(t.join("z").unwrap().absolute(), "http://a.example:81/x/z");
        assert_eq!(
            t.join("https://b.example/").unwrap().absolute(),
            "https://b.example/"
        );
        assert_eq!(
            t.join("//c.example/p").unwrap().absolute(),
            "http://c.example/p"
        );
        assert_eq!(
            t.join("HTTPS://d.example/").unwrap().absolute(),
            "https://d.example/"
        );
        // Other schemes are refused, never read as a relative path.
        assert_eq!(
            t.join("file:///etc/passwd"),
            Err(Refused::Scheme("file".into()))
        );
        assert_eq!(
            t.join("Gopher://x.example/"),
            Err(Refused::Scheme("gopher".into()))
        );
        assert_eq!(
            t.join("z/a:b").unwrap().absolute(),
            "http://a.example:81/x/z/a:b"
        );
        assert!(matches!(t.join("http:z"), Err(Refused::Invalid(_))));
        assert!(matches!(
            t.join("http://u:p@b.example/"),
            Err(Refused::Invalid(_))
        ));
    }

    #[test]
    fn redirects_resolve_dot_segments() {
        let t = Target::parse("http://a.example:81/x/y/z?q=1").unwrap();
        // RFC 3986 5.2.4: `.` goes, `..` takes the segment before it.
        assert_eq!(
            t.join("../a/./b").unwrap().absolute(),
            "http://a.example:81/x/a/b"
        );
        assert_eq!(
            t.join("./../../c/..").unwrap().absolute(),
            "http://a.example:81/"
        );
        // Never above the root, whatever the count.
        assert_eq!(
            t.join("/../../../d").unwrap().absolute(),
            "http://a.example:81/d"
        );
        assert_eq!(
            t.join("https://b.example/p/./q/../r").unwrap().absolute(),
            "https://b.example/p/r"
        );
        // A query alone keeps the path; a fragment is not sent.
        assert_eq!(
            t.join("?k=2#top").unwrap().absolute(),
            "http://a.example:81/x/y/z?k=2"
        );
        // What the url crate strips can not smuggle a scheme past the check.
        assert_eq!(
            t.join(" file:///etc/passwd"),
            Err(Refused::Scheme("file".into()))
        );
    }

    #[test]
    fn allowed_target_patterns_match_by_part() {
        let p = TargetPattern::parse("https://*.partner.example/*").unwrap();
        let ok = |s: &str| p.matches(&Target::parse(s).unwrap());
        assert!(ok("https://api.partner.example/health"));
        assert!(ok("https://a.b.partner.example/"));
        assert!(!ok("http://api.partner.example/health"));
        assert!(!ok("https://api.partner.example:8443/health"));
        assert!(!ok("https://evil.test/x.partner.example/"));
        assert!(!ok("https://partner.example.evil.test/"));
        let any_port = TargetPattern::parse("http://127.0.0.1:*/*").unwrap();
        assert!(any_port.matches(&Target::parse("http://127.0.0.1:5000/x").unwrap()));
        assert!(!any_port.matches(&Target::parse("http://127.0.0.2:5000/x").unwrap()));
        assert!(TargetPattern::parse("partner.example").is_err());
    }
}
