//! Ledger URLs: which backend a URL names, and keeping its password out of
//! every message.

/// The backend a ledger URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `postgres://` or `postgresql://` (any letter case).
    Postgres,
    /// Anything else: a path, a `sqlite:` URL, `sqlite::memory:`.
    Sqlite,
}

/// The backend of `url`.
pub(crate) fn backend(url: &str) -> Backend {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

/// Byte range of the password in `url`: after the first `:` of the user
/// information, which runs from `://` to the LAST `@` (a password may hold
/// an unescaped `@`; redacting too much is harmless, too little is not).
fn password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let at = start + url[start..].rfind('@')?;
    let colon = start + url[start..at].find(':')?;
    (colon + 1 < at).then_some(colon + 1..at)
}

/// `url` with its password (if any) replaced by `***`, e.g.
/// `postgres://bot:***@db:5432/ledger`. Paths and URLs without a password
/// come back unchanged.
pub fn redact(url: &str) -> String {
    match password_range(url) {
        Some(r) => format!("{}***{}", &url[..r.start], &url[r.end..]),
        None => url.to_owned(),
    }
}

/// `text` with every occurrence of `url`'s password (as written and
/// percent-decoded) replaced by `***`: for messages of libraries that might
/// quote what they were given.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let Some(r) = password_range(url) else {
        return text.to_owned();
    };
    let raw = &url[r];
    let mut out = text.replace(raw, "***");
    if let Some(decoded) = percent_decode(raw).filter(|d| !d.is_empty() && d != raw) {
        out = out.replace(&decoded, "***");
    }
    out
}

/// `%XX` escapes decoded; `None` if the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_their_backend() {
        for url in ["postgres://h/db", "postgresql://u@h/db", "POSTGRES://h/db"] {
            assert_eq!(backend(url), Backend::Postgres, "{url}");
        }
        for url in [
            "paperbot.db",
            "/var/lib/x.db",
            "sqlite:x.db",
            "sqlite::memory:",
            "file://x",
        ] {
            assert_eq!(backend(url), Backend::Sqlite, "{url}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        let cases = [
            (
                "postgres://bot:s3cret@db:5432/ledger",
                "postgres://bot:***@db:5432/ledger",
            ),
            ("postgres://bot:p@ss:w/rd@db/l", "postgres://bot:***@db/l"),
            ("postgres://bot@db/ledger", "postgres://bot@db/ledger"),
            ("postgres://db/ledger", "postgres://db/ledger"),
            ("postgres://bot:@db/l", "postgres://bot:@db/l"),
            ("paperbot.db", "paperbot.db"),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want);
        }
        let url = "postgres://bot:p%40ss%2Fx@db/l";
        assert_eq!(
            scrub("auth failed for p@ss/x and p%40ss%2Fx", url),
            "auth failed for *** and ***"
        );
        assert_eq!(percent_decode("a%2"), Some("a%2".into()));
    }
}
