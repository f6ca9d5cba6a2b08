//! Redaction of credentials in text meant for people: configuration errors,
//! start-up errors and logs. Anything that looks like a URL with userinfo
//! (`scheme://user:pass@host`, and the malformed or scheme-less forms people
//! actually type: `rediss//:pass@host`, `user:pass@host`) loses its password;
//! [`scrub`] takes known secrets out of a driver's message.

/// `text` with the password of every URL-like word replaced by `***`.
///
/// A word is a run of characters up to whitespace or a quote. Its userinfo
/// is what lies between the start of the authority (after `//`, or the
/// word's start) and the last `@` before any `?` or `#`; everything after
/// the first `:` of it is the password. A password with an unescaped `/` or
/// `@` is still covered: over-redacting a host is better than leaking.
pub fn userinfo(text: &str) -> String {
    if !text.contains('@') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut word_start = 0;
    for (i, c) in text.char_indices() {
        if is_boundary(c) {
            out.push_str(&redact_word(&text[word_start..i]));
            out.push(c);
            word_start = i + c.len_utf8();
        }
    }
    out.push_str(&redact_word(&text[word_start..]));
    out
}

fn is_boundary(c: char) -> bool {
    c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '<' | '>' | '(' | ')' | ',')
}

fn redact_word(word: &str) -> String {
    let before_query = word.find(['?', '#']).unwrap_or(word.len());
    let Some(at) = word[..before_query].rfind('@') else {
        return word.to_string();
    };
    let start = word[..at].find("//").map_or(0, |i| i + 2);
    let user = &word[start..at];
    match user.find(':') {
        // `user:` with an empty password, or `:pass`: either way hide it.
        Some(colon) if colon + 1 < user.len() => {
            format!("{}***{}", &word[..start + colon + 1], &word[at..])
        }
        _ => word.to_string(),
    }
}

/// `scheme://user:***@host/...`: a URL without its password.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The userinfo ends at the last '@' before the path.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user = &authority[..at];
            let user = match user.split_once(':') {
                Some((u, _)) => format!("{u}:***"),
                None => user.to_string(),
            };
            format!("{scheme}://{user}@{}", &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// Removes every secret (and the URL's password) from a message.
pub fn scrub(msg: &str, secrets: &[&str]) -> String {
    let mut out = msg.to_string();
    for s in secrets {
        if let Some(p) = url_password(s) {
            out = out.replace(s, &redact_url(s));
            // The driver may show the password decoded (`p%40ss` is `p@ss`).
            for p in [percent_decode(&p), p] {
                if p.len() >= 3 {
                    out = out.replace(&p, "***");
                }
            }
        } else if s.len() >= 3 {
            out = out.replace(s, "***");
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let user = &authority[..authority.rfind('@')?];
    user.split_once(':').map(|(_, p)| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("mongodb://app:p%40ss@db1,db2/app?authSource=admin"),
            "mongodb://app:***@db1,db2/app?authSource=admin"
        );
        assert_eq!(redact_url("redis://127.0.0.1"), "redis://127.0.0.1");
        assert_eq!(
            scrub(
                "cannot reach redis://u:hunter22@h/0 (hunter22)",
                &["redis://u:hunter22@h/0"]
            ),
            "cannot reach redis://u:***@h/0 (***)"
        );
        assert_eq!(
            scrub("auth failed for p@ss-word", &["mongodb://u:p%40ss-word@h/"]),
            "auth failed for ***"
        );
    }

    #[test]
    fn passwords_in_url_like_words_are_hidden() {
        for (input, want) in [
            (
                "redis://default:s3cret@cache:6379/0",
                "redis://default:***@cache:6379/0",
            ),
            (
                "invalid URL `rediss//:RTypoPwSECRET@host:6379`",
                "invalid URL `rediss//:***@host:6379`",
            ),
            ("user:PW@host/db", "user:***@host/db"),
            ("mongodb://u:p/w@db:27017", "mongodb://u:***@db:27017"),
            ("https://u:p%40ss@h/x?q=a@b", "https://u:***@h/x?q=a@b"),
            ("mail me at ops@example.com", "mail me at ops@example.com"),
            ("redis://cache:6379", "redis://cache:6379"),
            (
                "a user@host without password",
                "a user@host without password",
            ),
            ("", ""),
        ] {
            assert_eq!(userinfo(input), want, "{input}");
        }
    }

    #[test]
    fn multibyte_text_is_kept() {
        assert_eq!(userinfo("für x:pässwört@h ok"), "für x:***@h ok");
    }
}
