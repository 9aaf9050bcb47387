//! The disk pull request: when `fleet run`'s node watch finds a coin's data volumes filling
//! (`disk.grow_at`, `disk.min_days_left`), a pull request raising the coin file's
//! `instance.data_volume_gb`, with the figures in its body. The repository stays the truth:
//! the rollout grows the volumes once it merges (or, with `disk.auto_grow`, fleet grew them
//! already and the pull request records it).
//!
//! One open per coin, idempotent by the branch name `fleet/disk-<coin>-<from>gb`: an open
//! disk pull request of the coin, whatever its size, means done (it is never superseded:
//! a person may be reviewing it); a closed one from the same size means a person declined
//! (or merged, and the size moved on): not proposed again from that size.

use crate::github::{GitHub, GitHubError};
use crate::watch::{self, Change, WatchSettings};
use crate::yaml_edit::{self, Edit};
use fleet_repo_schema::Desired;

/// The figures behind a grow, as the node watch measured them.
#[derive(Debug, Clone, PartialEq)]
pub struct GrowFigures {
    /// The coin.
    pub coin: String,
    /// The size in force, GB (the repository's, or fleet's own auto-grow's).
    pub from_gb: u32,
    /// The size proposed, GB.
    pub to_gb: u32,
    /// The fullest node.
    pub node: String,
    /// Its use, percent.
    pub used_percent: f64,
    /// GB used on it.
    pub used_gb: f64,
    /// Its growth, GB a day, if measured.
    pub gb_per_day: Option<f64>,
    /// Days until it is full, if measured.
    pub days_left: Option<f64>,
    /// Why, in words.
    pub reason: String,
    /// `disk.grow_at`.
    pub grow_at: u32,
    /// `disk.min_days_left`.
    pub min_days_left: u32,
    /// fleet grew the volumes already (`disk.auto_grow`): the pull request records it.
    pub grown: bool,
}

/// What became of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeOutcome {
    /// Opened.
    Opened {
        /// Number.
        number: u64,
        /// Page.
        url: String,
    },
    /// A disk pull request of the coin is open already.
    AlreadyOpen {
        /// Number.
        number: u64,
    },
    /// The one from this size was closed: not proposed again.
    Declined {
        /// Number.
        number: u64,
    },
    /// The base branch asks as much already (merged since the revision in force).
    UpToDate {
        /// The size there.
        current_gb: u64,
    },
}

/// The branch of a coin's grow from `from_gb`.
pub fn branch_name(coin: &str, from_gb: u32) -> String {
    format!("fleet/disk-{coin}-{from_gb}gb")
}

fn branch_prefix(coin: &str) -> String {
    format!("fleet/disk-{coin}-")
}

/// The pull request's title.
pub fn title(f: &GrowFigures) -> String {
    if f.grown {
        format!("{}: record the data volume grown to {} GB", f.coin, f.to_gb)
    } else {
        format!(
            "{}: grow the data volume {} → {} GB",
            f.coin, f.from_gb, f.to_gb
        )
    }
}

fn days(d: Option<f64>) -> String {
    d.map_or("not measured yet".into(), |d| format!("{d:.1} days"))
}

/// What the reviewer reads: the figures, the rule, what merging does.
pub fn body(f: &GrowFigures) -> String {
    let rate = f
        .gb_per_day
        .map_or("not measured yet".into(), |r| format!("{r:.2} GB a day"));
    let mut b = String::new();
    b.push_str(&format!(
        "fleet's node watch found **{}**'s data volumes filling: {}.\n\n",
        f.coin, f.reason
    ));
    b.push_str("| | |\n|---|---|\n");
    b.push_str(&format!("| Fullest node | `{}` |\n", f.node));
    b.push_str(&format!(
        "| Used | {:.1} % ({:.0} of {} GB) |\n",
        f.used_percent, f.used_gb, f.from_gb
    ));
    b.push_str(&format!("| Growth (last day) | {rate} |\n"));
    b.push_str(&format!("| Full in | {} |\n", days(f.days_left)));
    b.push_str(&format!(
        "| Thresholds | `disk.grow_at` {} %, `disk.min_days_left` {} |\n",
        f.grow_at, f.min_days_left
    ));
    b.push_str(&format!("| Proposed | {} GB |\n\n", f.to_gb));
    if f.grown {
        b.push_str(&format!(
            "With `disk.auto_grow: true` fleet has grown the volumes to {} GB already (EBS ModifyVolume, online, then the file system). This pull request makes the repository say so; until it merges, fleet's journal holds the record that keeps the larger volumes from reading as a shrink.\n",
            f.to_gb
        ));
    } else {
        b.push_str(&format!(
            "Merging grows every node's data volume to {} GB, online (EBS ModifyVolume, then the file system): no restart, no node down. EBS volumes only grow.\n",
            f.to_gb
        ));
    }
    b.push_str("\nThe size is the largest of: the present size and `disk.grow_by`, room for the data 10 points below `disk.grow_at`, and room for twice `disk.min_days_left` at the measured rate, rounded up to 10 GB. Opened by fleet's node watch; one per coin at a time.\n");
    b
}

/// Make sure one pull request raises `f.coin`'s `instance.data_volume_gb` to `f.to_gb`.
pub async fn propose(
    gh: &GitHub,
    s: &WatchSettings,
    desired: &Desired,
    f: &GrowFigures,
) -> Result<VolumeOutcome, GitHubError> {
    let branch = branch_name(&f.coin, f.from_gb);
    let prefix = branch_prefix(&f.coin);
    let open = gh.pulls(&s.fleet_repo, "open", &s.base, None).await?;
    if let Some(p) = open.iter().find(|p| p.head.starts_with(&prefix)) {
        return Ok(VolumeOutcome::AlreadyOpen { number: p.number });
    }
    let head = format!("{}:{branch}", watch::owner(&s.fleet_repo));
    let closed = gh
        .pulls(&s.fleet_repo, "closed", &s.base, Some(&head))
        .await?;
    if let Some(p) = closed.iter().find(|p| p.head == branch) {
        return Ok(VolumeOutcome::Declined { number: p.number });
    }
    let Some(c) = desired.coins.get(&f.coin) else {
        return Err(GitHubError::Config(format!(
            "{} is not in the fleet",
            f.coin
        )));
    };
    let path = watch::join_path(&s.subdir, &c.file);
    let Some(file) = gh.file(&s.fleet_repo, &path, &s.base).await? else {
        return Err(GitHubError::Status {
            what: format!("GET /repos/{}/contents/{path}", s.fleet_repo),
            status: 404,
            message: format!("{path} is not on {}", s.base),
        });
    };
    let edit_err = |e: yaml_edit::EditError| GitHubError::Decode {
        what: path.clone(),
        message: e.to_string(),
    };
    let current = yaml_edit::get_scalar(&path, &file.text, "instance.data_volume_gb")
        .map_err(edit_err)?
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(current_gb) = current.filter(|c| *c >= f.to_gb as u64) {
        return Ok(VolumeOutcome::UpToDate { current_gb });
    }
    let new_text = yaml_edit::set_scalars(
        &path,
        &file.text,
        &[Edit::number("instance.data_volume_gb", f.to_gb as u64)],
    )
    .map_err(edit_err)?;
    watch::validate(gh, s, &c.file, &file.text, &new_text).await?;
    let title = title(f);
    let body = body(f);
    let message = format!(
        "{}: data_volume_gb {} → {} ({})\n\nProposed by fleet's node watch.",
        f.coin, f.from_gb, f.to_gb, f.reason
    );
    let pr = watch::open_pull(
        gh,
        s,
        &Change {
            branch: &branch,
            path: &path,
            file: &file,
            new_text: &new_text,
            message: &message,
            title: &title,
            body: &body,
            draft: false,
        },
    )
    .await?;
    tracing::info!(coin = %f.coin, to_gb = f.to_gb, number = pr.number, url = %pr.url, "disk pull request opened");
    Ok(VolumeOutcome::Opened {
        number: pr.number,
        url: pr.url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(grown: bool) -> GrowFigures {
        GrowFigures {
            coin: "bitcoin".into(),
            from_gb: 1000,
            to_gb: 1250,
            node: "bitcoin/eu-central-1a/1".into(),
            used_percent: 86.2,
            used_gb: 862.0,
            gb_per_day: Some(0.5),
            days_left: Some(275.6),
            reason: "86.2 % used (disk.grow_at is 85 %)".into(),
            grow_at: 85,
            min_days_left: 30,
            grown,
        }
    }

    #[test]
    fn the_body_carries_the_figures_and_says_what_merging_does() {
        let b = body(&figures(false));
        for s in [
            "`bitcoin/eu-central-1a/1`",
            "86.2 % (862 of 1000 GB)",
            "0.50 GB a day",
            "275.6 days",
            "| Proposed | 1250 GB |",
            "Merging grows every node's data volume to 1250 GB",
        ] {
            assert!(b.contains(s), "{s} not in\n{b}");
        }
        assert_eq!(
            title(&figures(false)),
            "bitcoin: grow the data volume 1000 → 1250 GB"
        );
        let g = body(&figures(true));
        assert!(
            g.contains("has grown the volumes to 1250 GB already"),
            "{g}"
        );
        assert!(title(&figures(true)).starts_with("bitcoin: record"));
        assert_eq!(branch_name("bitcoin", 1000), "fleet/disk-bitcoin-1000gb");
    }
}
