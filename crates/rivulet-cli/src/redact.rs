//! Passwords out of everything the command prints.

/// `url` with its password (and any query string, which may carry one) replaced by
///
pub(crate) fn redact(url: &str) -> String {
    fn mask_query(s: &str) -> String {
        match s.split_once('?') {
            Some((base, _)) => format!("{base}?***"),
            None => s.to_owned(),
        }
    }
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    // In `secret://x@host` the text before `://` is a password, not a scheme.
    let known = [
        "redis",
        "rediss",
        "redis+unix",
        "unix",
        "redis+sentinel",
        "rediss+sentinel",
    ];
    let (scheme, rest) = if known.contains(&scheme.to_ascii_lowercase().as_str()) {
        (scheme, rest)
    } else {
        ("", url)
    };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    // The last `@` ends the user info, so a password containing `@`, `/` or `?` never
    // shows.
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            // Without a scheme, nothing says the text before `:` is a user name.
            let user = match userinfo.split_once(':') {
                Some((user, _password)) if !scheme.is_empty() => format!("{user}:***"),
                _ => "***".to_owned(),
            };
            format!("{scheme}{user}@{}", mask_query(host))
        }
        None => format!("{scheme}{}", mask_query(rest)),
    }
}

/// The password of a URL's userinfo (after the first `:` of the text between `://` and
/// the last `@`), when it has one of at least 4 characters (shorter ones would mask
/// unrelated text).
pub(crate) fn password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (userinfo, _) = rest.rsplit_once('@')?;
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    (password.len() >= 4).then_some(password)
}

#[cfg(test)]
mod tests {
    use super::{password, redact};

    #[test]
    fn passwords_are_found() {
        assert_eq!(password("redis://:s3cret@h:1"), Some("s3cret"));
        assert_eq!(password("redis://u:p@ss@h:1"), Some("p@ss"));
        assert_eq!(password("redis://h:1"), None);
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("redis://localhost:6379"), "redis://localhost:6379");
        assert_eq!(redact("redis://:s3cret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(redact("rediss://app:p@ss@h:1"), "rediss://app:***@h:1");
        assert_eq!(redact("redis://token@h"), "redis://***@h");
        assert_eq!(
            redact("redis://u:p@h/0?password=x"),
            "redis://u:***@h/0?***"
        );
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(redact("redis://h?password=x"), "redis://h?***");
        assert_eq!(redact("redis://:pa?s/s@h:1"), "redis://:***@h:1");
        assert_eq!(redact(":secret@h:1"), "***@h:1");
        assert_eq!(redact("qz1://kx7@h:1"), "***@h:1");
        // Every character that ends a URL part early (issue 14).
        assert_eq!(
            redact("redis://u:qz1/kx7?wv3#pm5@jd8:rt4@h:1/0"),
            "redis://u:***@h:1/0"
        );
    }
}
