//! The one rule for every URL the bots send a credential to: https, or plain http to a
//! server on this machine (tests, a local proxy). A token must never cross a network in
//! clear text.

/// Whether `host` (`name` or `name:port`, IPv6 in brackets) is this machine.
pub fn is_loopback(host: &str) -> bool {
    if host.starts_with("[::1]") || host == "::1" {
        return true;
    }
    let h = host.split(':').next().unwrap_or(host);
    matches!(h, "127.0.0.1" | "localhost")
}

/// `url` if it is https, or http to loopback; else why not (`what` names the credential).
pub fn require_https(url: &str, what: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(&host) => Ok(uri),
        _ => Err(format!(
            "`{url}` is not https: {what} would travel in clear text (http is allowed on loopback only)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_or_loopback() {
        assert!(require_https("https://api.github.com", "the token").is_ok());
        assert!(require_https("http://127.0.0.1:8080/api/v3", "the token").is_ok());
        assert!(require_https("http://localhost/api", "the token").is_ok());
        assert!(require_https("http://[::1]:9/api", "the token").is_ok());
        let e = require_https("http://github.example.com/api/v3", "the token").unwrap_err();
        assert!(e.contains("clear text"), "{e}");
        assert!(require_https("http://127.0.0.1.evil.com/", "x").is_err());
        assert!(require_https("ftp://127.0.0.1/", "x").is_err());
        assert!(require_https("not a url", "x").is_err());
    }
}
