//! Resolving an image tag to its digest, for the `image.digest` pin of a bump.
//!
//! The OCI distribution API: `HEAD /v2/<name>/manifests/<tag>` answers with the manifest's
//! digest in `Docker-Content-Digest`. Registries that want a token answer `401` with
//! `WWW-Authenticate: Bearer realm=…,service=…,scope=…`; the token is fetched from the realm
//! (with the configured credentials, if any) and the request repeated. `Basic` challenges
//! are answered with the credentials (ECR: user `AWS`, password from
//! `aws ecr get-login-password`). The digest is checked against the fleet's digest rule
//! before it is written anywhere.

use crate::net::is_loopback;
use base64::Engine;
use fleet_repo_schema::values::Digest;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Finds the digest of `repository:tag`. `Ok(None)`: the registry has no such tag.
#[async_trait::async_trait]
pub trait DigestResolver: Send + Sync {
    /// Resolve; the error says why not, in words for a pull request body.
    async fn resolve(&self, repository: &str, tag: &str) -> Result<Option<String>, String>;
}

/// Registry credentials. `Debug` never shows the password.
#[derive(Clone)]
pub struct RegistryAuth {
    /// User.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryAuth({}, <redacted>)", self.username)
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// The OCI distribution API over HTTPS (plain HTTP for registries on loopback only).
pub struct OciResolver {
    client: Client,
    auth: Option<RegistryAuth>,
    timeout: Duration,
}

impl std::fmt::Debug for OciResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OciResolver(auth: {})", self.auth.is_some())
    }
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// `registry host` and `name` of an image repository (`docker.io` when no host is given).
pub fn split_repository(repo: &str) -> (String, String) {
    match repo.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => {
            let name = if repo.contains('/') {
                repo.to_string()
            } else {
                format!("library/{repo}")
            };
            ("registry-1.docker.io".to_string(), name)
        }
    }
}

/// An image repository in Amazon ECR, from its host `<account>.dkr.ecr.<region>.amazonaws.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRepository {
    /// The registry's account id (12 digits).
    pub account: String,
    /// Its region.
    pub region: String,
    /// The repository's name inside the registry (`coin-daemons/bitcoin`).
    pub name: String,
}

/// The ECR repository `repo` names, or None when it is not in ECR (any other registry is
/// read through the OCI distribution API).
pub fn ecr_repository(repo: &str) -> Option<EcrRepository> {
    let (host, name) = repo.split_once('/')?;
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (account, region) = rest.split_once(".dkr.ecr.")?;
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.contains('-');
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    (region_ok && account_ok && !name.is_empty()).then(|| EcrRepository {
        account: account.to_string(),
        region: region.to_string(),
        name: name.to_string(),
    })
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge.
fn challenge_params(h: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = h;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, val));
        rest = next;
    }
    out
}

impl OciResolver {
    /// A resolver with optional credentials.
    pub fn new(auth: Option<RegistryAuth>) -> Result<OciResolver, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(Arc::clone(&provider))
            .or_else(|_| {
                hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider)
            })
            .map_err(|e| format!("TLS: {e}"))?;
        let connector = b.https_or_http().enable_http1().build();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(OciResolver {
            client,
            auth,
            timeout: Duration::from_secs(20),
        })
    }

    async fn send(
        &self,
        method: http::Method,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<http::Response<Bytes>, String> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::ACCEPT, ACCEPT)
            .header(http::header::USER_AGENT, "fleet-release-watch");
        if let Some(a) = authorization {
            b = b.header(http::header::AUTHORIZATION, a);
        }
        let req = b.body(Empty::new()).map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| "the registry did not answer in time".to_string())?
            .map_err(|e| format!("cannot reach the registry: {e}"))?;
        let (parts, body) = res.into_parts();
        let body = tokio::time::timeout(self.timeout, body.collect())
            .await
            .map_err(|_| "the registry did not answer in time".to_string())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }

    fn basic(&self) -> Option<String> {
        self.auth.as_ref().map(|a| {
            let raw = format!("{}:{}", a.username, a.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
            )
        })
    }

    async fn token(&self, challenge: &str) -> Result<String, String> {
        let params = challenge_params(challenge.trim_start_matches("Bearer").trim());
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or("the registry's challenge names no realm")?;
        let uri: http::Uri = realm
            .parse()
            .map_err(|_| "the realm is not a URL".to_string())?;
        let host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        if uri.scheme_str() != Some("https") && !is_loopback(&host) {
            return Err(format!(
                "refusing a token realm that is not https ({realm})"
            ));
        }
        let mut q = Vec::new();
        for k in ["service", "scope"] {
            if let Some(v) = get(k) {
                q.push(format!("{k}={}", v.replace(' ', "%20")));
            }
        }
        let url = if q.is_empty() {
            realm
        } else {
            format!("{realm}?{}", q.join("&"))
        };
        let basic = self.basic();
        let r = self.send(http::Method::GET, &url, basic.as_deref()).await?;
        if !r.status().is_success() {
            return Err(format!(
                "the registry's token service answered {}",
                r.status()
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(r.body())
            .map_err(|_| "the token service's answer is not JSON".to_string())?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| "the token service returned no token".to_string())
    }
}

#[async_trait::async_trait]
impl DigestResolver for OciResolver {
    async fn resolve(&self, repository: &str, tag: &str) -> Result<Option<String>, String> {
        let (host, name) = split_repository(repository);
        let scheme = if is_loopback(&host) { "http" } else { "https" };
        let url = format!("{scheme}://{host}/v2/{name}/manifests/{tag}");
        let mut authz: Option<String> = None;
        for _ in 0..2 {
            let r = self
                .send(http::Method::HEAD, &url, authz.as_deref())
                .await?;
            match r.status().as_u16() {
                200 => {
                    let d = r
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .ok_or("the registry sent no Docker-Content-Digest")?;
                    return Digest::parse(d)
                        .map(|d| Some(d.to_string()))
                        .map_err(|e| format!("the registry's digest `{d}` is malformed: {e}"));
                }
                404 => return Ok(None),
                401 if authz.is_none() => {
                    let ch = r
                        .headers()
                        .get(http::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    authz = Some(if ch.starts_with("Bearer") {
                        self.token(&ch).await?
                    } else {
                        self.basic().ok_or(
                            "the registry needs credentials (registry.username_env / password_env)",
                        )?
                    });
                }
                s => return Err(format!("the registry answered {s} for {host}/{name}:{tag}")),
            }
        }
        Err(format!(
            "the registry refused the credentials for {host}/{name}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_split_into_host_and_name() {
        assert_eq!(
            split_repository(
                "123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin"
            ),
            (
                "123456789012.dkr.ecr.eu-central-1.amazonaws.com".into(),
                "coin-daemons/bitcoin".into()
            )
        );
        assert_eq!(
            split_repository("127.0.0.1:5000/x/y"),
            ("127.0.0.1:5000".into(), "x/y".into())
        );
        assert_eq!(
            split_repository("ethereum/client-go"),
            ("registry-1.docker.io".into(), "ethereum/client-go".into())
        );
        assert_eq!(
            split_repository("alpine"),
            ("registry-1.docker.io".into(), "library/alpine".into())
        );
    }

    #[test]
    fn ecr_repositories_are_recognised_by_their_host() {
        assert_eq!(
            ecr_repository("123456789012.dkr.ecr.eu-central-1.amazonaws.com/coin-daemons/bitcoin"),
            Some(EcrRepository {
                account: "123456789012".into(),
                region: "eu-central-1".into(),
                name: "coin-daemons/bitcoin".into(),
            })
        );
        assert_eq!(
            ecr_repository("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/x").map(|r| r.region),
            Some("cn-north-1".into())
        );
        for other in [
            "ethereum/client-go",
            "alpine",
            "public.ecr.aws/bitnami/geth",
            "12345.dkr.ecr.eu-central-1.amazonaws.com/x",
            "123456789012.dkr.ecr..amazonaws.com/x",
            "123456789012.dkr.ecr.eu-central-1.amazonaws.com/",
            "123456789012.dkr.ecr.eu-central-1.amazonaws.com.evil.example/x",
            "127.0.0.1:5000/x/y",
        ] {
            assert_eq!(ecr_repository(other), None, "{other}");
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
        assert_eq!(
            p[2],
            ("scope".into(), "repository:library/alpine:pull".into())
        );
    }
}
