//! The release watch reads the digest of a new tag from ECR through the AWS SDK
//! (`ecr:DescribeImages`, `people::registry::Registries`), on moto: a pushed tag gives the
//! digest ECR computed, a tag not pushed yet is "not there" (the bump stays a draft), a
//! repository that does not exist is an error that says so, and a repository in another
//! region than the fleet's is asked in its own region (taken from the repository's host).

use aws_sdk_ecr::Client;
use bots::registry::{DigestResolver, OciResolver};
use fleet_tests::world::{moto_endpoint, moto_sdk_config};
use reconciler::people::registry::Registries;

/// moto's default account: ECR's registry id in a repository's host.
const ACCOUNT: &str = "123456789012";

async fn ecr(region: &str) -> Client {
    let sdk = moto_sdk_config().await;
    Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&sdk)
            .region(aws_sdk_ecr::config::Region::new(region.to_string()))
            .build(),
    )
}

/// Create `name` in `region` and push `tag` with a manifest unique to it; ECR's digest.
async fn push(c: &Client, name: &str, tag: &str) -> String {
    let _ = c.create_repository().repository_name(name).send().await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                   "digest": format!("sha256:{:0>64}", tag.replace('.', ""))},
        "layers": []
    })
    .to_string();
    let out = c
        .put_image()
        .repository_name(name)
        .image_manifest(manifest)
        .image_tag(tag)
        .send()
        .await
        .expect("moto PutImage");
    out.image()
        .and_then(|i| i.image_id())
        .and_then(|i| i.image_digest())
        .expect("a digest")
        .to_string()
}

fn host(region: &str) -> String {
    format!("{ACCOUNT}.dkr.ecr.{region}.amazonaws.com")
}

#[tokio::test]
async fn ecr_tags_resolve_to_their_digest_or_to_not_yet() {
    let name = format!("coin-daemons/bitcoin-{}", std::process::id());
    let c = ecr("eu-central-1").await;
    let pushed = push(&c, &name, "29.0").await;
    assert!(
        pushed.starts_with("sha256:") && pushed.len() == 71,
        "{pushed}"
    );

    let r = Registries::new(OciResolver::new(None).unwrap(), Some(moto_endpoint()));
    let repo = format!("{}/{name}", host("eu-central-1"));
    assert_eq!(
        r.resolve(&repo, "29.0").await,
        Ok(Some(pushed.clone())),
        "the digest ECR computed"
    );
    assert_eq!(
        r.resolve(&repo, "29.1").await,
        Ok(None),
        "a tag not pushed yet is not there"
    );
    let missing = format!(
        "{}/coin-daemons/no-such-{}",
        host("eu-central-1"),
        std::process::id()
    );
    let e = r
        .resolve(&missing, "29.0")
        .await
        .expect_err("no repository");
    assert!(e.contains("RepositoryNotFoundException"), "{e}");

    // Another region: asked there, not in the first repository's.
    let west = ecr("us-west-2").await;
    let other = push(&west, &name, "30.0").await;
    let repo_west = format!("{}/{name}", host("us-west-2"));
    assert_eq!(r.resolve(&repo_west, "30.0").await, Ok(Some(other)));
    assert_eq!(
        r.resolve(&repo, "30.0").await,
        Ok(None),
        "30.0 was pushed in us-west-2 only"
    );
}
