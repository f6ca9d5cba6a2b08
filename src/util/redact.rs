//! Redaction of credentials in text meant for people: configuration errors,
//! start-up errors and logs. Anything that looks like a URL with userinfo
//! (`scheme://user:pass@host`, and the malformed or scheme-less forms people
//! actually type: `rediss//:pass@host`, `user:pass@host`) loses its password.

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

#[cfg(test)]
mod tests {
    use super::userinfo;

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
