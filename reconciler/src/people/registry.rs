//! Where the release watch reads the digest of a new image tag: a repository in Amazon ECR
//! through the AWS SDK (`ecr:DescribeImages` with the reconciler's own IAM identity, so no
//! 12-hour registry password has to be kept fresh), any other registry through the OCI
//! distribution API ([`bots::registry::OciResolver`]). Either answer is checked against the
//! fleet's digest rule before the watch writes it anywhere.

use bots::registry::{DigestResolver, OciResolver, ecr_repository};
use fleet_repo_schema::values::Digest;

/// Every registry the fleet's images live in.
pub struct Registries {
    oci: OciResolver,
    #[cfg(feature = "aws")]
    ecr: Ecr,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registries({:?})", self.oci)
    }
}

/// The ECR client, made on the first ECR repository asked about (a fleet whose images are
/// elsewhere never loads AWS credentials for the watch).
#[cfg(feature = "aws")]
struct Ecr {
    endpoint: Option<String>,
    client: tokio::sync::OnceCell<crate::provider::aws::AwsProvider>,
}

impl Registries {
    /// `oci` for registries outside ECR; ECR through the AWS SDK (at `aws_endpoint` when
    /// set: an emulator or a VPC endpoint).
    pub fn new(oci: OciResolver, aws_endpoint: Option<String>) -> Registries {
        #[cfg(not(feature = "aws"))]
        let _ = aws_endpoint;
        Registries {
            oci,
            #[cfg(feature = "aws")]
            ecr: Ecr {
                endpoint: aws_endpoint,
                client: tokio::sync::OnceCell::new(),
            },
        }
    }
}

#[async_trait::async_trait]
impl DigestResolver for Registries {
    async fn resolve(&self, repository: &str, tag: &str) -> Result<Option<String>, String> {
        let Some(ecr) = ecr_repository(repository) else {
            return self.oci.resolve(repository, tag).await;
        };
        #[cfg(feature = "aws")]
        {
            use crate::provider::aws::{AwsOptions, AwsProvider};
            let aws = self
                .ecr
                .client
                .get_or_init(|| {
                    AwsProvider::connect(AwsOptions {
                        region: Some(ecr.region.clone()),
                        endpoint_url: self.ecr.endpoint.clone(),
                        max_attempts: 3,
                        ..AwsOptions::default()
                    })
                })
                .await;
            let found = aws
                .ecr_image_digest(&ecr.account, &ecr.region, &ecr.name, tag)
                .await
                .map_err(|e| format!("ECR: {e}"))?;
            match found {
                None => Ok(None),
                Some(d) => Digest::parse(&d)
                    .map(|d| Some(d.to_string()))
                    .map_err(|e| format!("ECR's digest `{d}` is malformed: {e}")),
            }
        }
        #[cfg(not(feature = "aws"))]
        {
            let _ = (ecr, Digest::parse);
            Err("this fleet was built without the `aws` feature: ECR digests cannot be read".into())
        }
    }
}
