//! Retention: which snapshots a `--keep-*` policy keeps, with restic's
//! semantics, and forgetting the others through the normal forget path
//! ([`super::grid_forget`]), so their packets no survivor needs are freed.
//!
//! The rules (restic's `forget --keep-*`): snapshots are taken newest first,
//! one backup set at a time. `keep-last N` keeps the N newest. `keep-hourly
//! N` (daily, weekly, monthly, yearly alike) keeps the newest snapshot of
//! each of the N most recent hours that have a snapshot; weeks are ISO-8601
//! weeks. A snapshot kept by any rule stays. Times are read in UTC. A policy
//! with no rule keeps everything (nothing is ever forgotten by accident).
//!
//! [`decide`] is pure (a list of times in, decisions out);
//! [`apply_retention`] asks the manager for the list and forgets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strew_coordinator::SnapshotId;

use super::{GridError, KnownIndex, ManagerApi, PacketTransport, grid_forget};

/// A `--keep-*` policy; 0 means the rule is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepPolicy {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    #[serde(default)]
    pub yearly: u32,
}

impl KeepPolicy {
    /// No rule set: keeps everything.
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }

    /// The rules as (name, count, bucket of a time).
    fn rules(&self) -> [(&'static str, u32, Bucket); 6] {
        [
            ("last", self.last, |_, nr| nr as i64),
            ("hourly", self.hourly, |t, _| {
                let (y, m, d, h) = civil(t);
                ((y * 100 + m) * 100 + d) * 100 + h
            }),
            ("daily", self.daily, |t, _| {
                let (y, m, d, _) = civil(t);
                (y * 100 + m) * 100 + d
            }),
            ("weekly", self.weekly, |t, _| {
                let (y, w) = iso_week(t);
                y * 100 + w
            }),
            ("monthly", self.monthly, |t, _| {
                let (y, m, _, _) = civil(t);
                y * 100 + m
            }),
            ("yearly", self.yearly, |t, _| civil(t).0),
        ]
    }
}

/// A rule's bucket of a snapshot: its time (unix ms) and its rank (newest = 0).
type Bucket = fn(u64, usize) -> i64;

/// One snapshot of a set, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub snapshot: SnapshotId,
    pub set: String,
    /// Unix milliseconds.
    pub time: u64,
}

/// What the policy decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub snapshot: String,
    pub name: String,
    pub time: u64,
    /// The rules that keep it (`last`, `daily`, ...); empty = forget it.
    pub reasons: Vec<&'static str>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Applies `policy` to each set's snapshots; decisions newest first per set, sets by name.
pub fn decide(policy: &KeepPolicy, snapshots: &[Candidate]) -> Vec<Decision> {
    let mut by_set: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for s in snapshots {
        by_set.entry(&s.set).or_default().push(s);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_set {
        // Newest first; equal times in a fixed order.
        list.sort_by(|a, b| b.time.cmp(&a.time).then(a.snapshot.cmp(&b.snapshot)));
        let mut rules: Vec<(&'static str, u32, Bucket, Option<i64>)> = policy
            .rules()
            .into_iter()
            .map(|(name, count, bucket)| (name, count, bucket, None))
            .collect();
        for (nr, s) in list.into_iter().enumerate() {
            let mut reasons = Vec::new();
            if policy.is_empty() {
                reasons.push("no policy");
            }
            for (name, count, bucket, last) in &mut rules {
                if *count == 0 {
                    continue;
                }
                let value = bucket(s.time, nr);
                if *last != Some(value) {
                    *last = Some(value);
                    *count -= 1;
                    reasons.push(*name);
                }
            }
            out.push(Decision {
                snapshot: s.snapshot.to_string(),
                name: s.set.clone(),
                time: s.time,
                reasons,
            });
        }
    }
    out
}

/// What applying a policy did.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub keep: Vec<Decision>,
    pub remove: Vec<Decision>,
    /// Packets deleted from their targets (none on a dry run).
    pub deleted: u64,
    /// Packets freed that could not be deleted now (their targets were unreachable).
    pub undeleted: u64,
}

/// Lists the snapshots (of `set`, or all sets), decides, and forgets those
/// no rule keeps (unless `dry_run`), one by one through the forget path.
pub async fn apply_retention<M: ManagerApi, T: PacketTransport>(
    manager: &M,
    transport: &T,
    known: &KnownIndex,
    policy: &KeepPolicy,
    set: Option<String>,
    dry_run: bool,
) -> Result<RetentionReport, GridError> {
    let list = manager.list(set).await?;
    let candidates: Vec<Candidate> = list
        .iter()
        .map(|s| Candidate {
            snapshot: s.snapshot,
            set: s.set.clone(),
            time: s.time,
        })
        .collect();
    let (keep, remove): (Vec<Decision>, Vec<Decision>) = decide(policy, &candidates)
        .into_iter()
        .partition(Decision::keep);
    let mut report = RetentionReport {
        dry_run,
        keep,
        remove,
        deleted: 0,
        undeleted: 0,
    };
    if dry_run {
        return Ok(report);
    }
    for d in &report.remove {
        let snapshot: SnapshotId = d
            .snapshot
            .parse()
            .map_err(|_| GridError::Other(format!("bad snapshot id {}", d.snapshot)))?;
        let forgot = grid_forget(manager, transport, known, snapshot).await?;
        report.deleted += forgot.deleted;
        report.undeleted += forgot
            .undeleted
            .values()
            .map(|v| v.len() as u64)
            .sum::<u64>();
    }
    Ok(report)
}

/// Days since 1970-01-01 of a unix-ms time.
fn days(ms: u64) -> i64 {
    (ms / 86_400_000) as i64
}

/// (year, month, day) of a day number (Howard Hinnant's civil_from_days).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day, hour) in UTC.
fn civil(ms: u64) -> (i64, i64, i64, i64) {
    let (y, m, d) = civil_from_days(days(ms));
    (y, m, d, ((ms / 3_600_000) % 24) as i64)
}

/// ISO-8601 (week-year, week) in UTC: the week's Thursday decides its year.
fn iso_week(ms: u64) -> (i64, i64) {
    let day = days(ms);
    let weekday = (day + 3).rem_euclid(7); // Monday = 0 (1970-01-01 was a Thursday)
    let thursday = day - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    // Day number of January 1st of that year: walk back from the Thursday.
    let mut jan1 = thursday;
    while civil_from_days(jan1 - 1).0 == year {
        jan1 -= 1;
    }
    (year, (thursday - jan1) / 7 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date and time.
    fn at(y: i64, m: i64, d: i64, h: i64) -> u64 {
        // days_from_civil (Hinnant).
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        ((days * 24 + h) * 3_600_000) as u64
    }

    #[test]
    fn iso_weeks_match_the_calendar() {
        // 2021-01-03 is a Sunday of week 53 of 2020; 2021-01-04 starts week 1.
        assert_eq!(iso_week(at(2021, 1, 3, 12)), (2020, 53));
        assert_eq!(iso_week(at(2021, 1, 4, 0)), (2021, 1));
        // 2024-12-30 (Monday) is in week 1 of 2025.
        assert_eq!(iso_week(at(2024, 12, 30, 0)), (2025, 1));
        assert_eq!(iso_week(at(2026, 11, 30, 0)), (2026, 49));
        assert_eq!(civil(at(2026, 2, 28, 23)), (2026, 2, 28, 23));
    }

    fn id(n: u8) -> SnapshotId {
        SnapshotId([n; 32])
    }

    /// restic's documented example shape: ten snapshots, `--keep-daily 3
    /// --keep-weekly 2`. Daily keeps the newest of the 3 most recent days
    /// with snapshots; weekly the newest of the 2 most recent ISO weeks.
    #[test]
    fn keep_daily_and_weekly_follow_restics_rules() {
        // Mon 2026-11-02 .. : two snapshots on some days, gaps on others.
        let times = [
            (1, at(2026, 10, 20, 9)), // Tue, week 43
            (2, at(2026, 10, 27, 9)), // Tue, week 44
            (3, at(2026, 10, 29, 9)), // Thu, week 44
            (4, at(2026, 11, 2, 9)),  // Mon, week 45
            (5, at(2026, 11, 3, 9)),  // Tue, week 45
            (6, at(2026, 11, 3, 18)), // Tue, week 45 (newest of that day)
            (7, at(2026, 11, 5, 9)),  // Thu, week 45
            (8, at(2026, 11, 6, 8)),  // Fri, week 45
            (9, at(2026, 11, 6, 20)), // Fri, week 45 (newest)
            (10, at(2026, 11, 9, 7)), // Mon, week 46
        ];
        let candidates: Vec<Candidate> = times
            .iter()
            .map(|(n, t)| Candidate {
                snapshot: id(*n),
                set: "home".into(),
                time: *t,
            })
            .collect();
        let policy = KeepPolicy {
            daily: 3,
            weekly: 2,
            ..KeepPolicy::default()
        };
        let decisions = decide(&policy, &candidates);
        let kept: Vec<(String, Vec<&str>)> = decisions
            .iter()
            .filter(|d| d.keep())
            .map(|d| (d.snapshot.clone(), d.reasons.clone()))
            .collect();
        // Newest first: 10 (day 11-09, week 46), 9 (day 11-06, week 45),
        // 7 (day 11-05); weekly's two weeks are 46 and 45, already kept.
        assert_eq!(
            kept,
            vec![
                (id(10).to_string(), vec!["daily", "weekly"]),
                (id(9).to_string(), vec!["daily", "weekly"]),
                (id(7).to_string(), vec!["daily"]),
            ]
        );
        assert_eq!(decisions.len(), 10);
    }

    #[test]
    fn last_and_sets_are_separate_and_an_empty_policy_keeps_all() {
        let mut c = Vec::new();
        for n in 0..4u8 {
            for set in ["a", "b"] {
                c.push(Candidate {
                    snapshot: SnapshotId([n + if set == "a" { 0 } else { 100 }; 32]),
                    set: set.into(),
                    time: at(2026, 1, 1, 0) + u64::from(n) * 1000,
                });
            }
        }
        let d = decide(
            &KeepPolicy {
                last: 2,
                ..KeepPolicy::default()
            },
            &c,
        );
        let kept: Vec<&str> = d
            .iter()
            .filter(|d| d.keep())
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(kept, vec!["a", "a", "b", "b"]);
        assert!(
            decide(&KeepPolicy::default(), &c)
                .iter()
                .all(Decision::keep)
        );
        // Monthly and yearly: one per month, newest of each.
        let months: Vec<Candidate> = (1..=6)
            .flat_map(|m| [1, 15].map(move |d| (m, d)))
            .enumerate()
            .map(|(i, (m, d))| Candidate {
                snapshot: SnapshotId([i as u8; 32]),
                set: "m".into(),
                time: at(2026, m, d, 0),
            })
            .collect();
        let d = decide(
            &KeepPolicy {
                monthly: 3,
                yearly: 1,
                ..KeepPolicy::default()
            },
            &months,
        );
        let kept: Vec<u64> = d.iter().filter(|d| d.keep()).map(|d| d.time).collect();
        assert_eq!(
            kept,
            vec![at(2026, 6, 15, 0), at(2026, 5, 15, 0), at(2026, 4, 15, 0)]
        );
    }
}
