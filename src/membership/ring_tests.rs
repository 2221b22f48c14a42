//! Ring unit tests: the golden assignments, epochs, shares, and the
//! join/leave/balance properties over random names.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const GOLDEN_MEMBERS: [&str; 5] = ["relay-0", "relay-1", "relay-2", "relay-3", "relay-4"];
/// `printf 'relay-0\nrelay-1\nrelay-2\nrelay-3\nrelay-4\n' | sha256sum | cut -c1-16`
const GOLDEN_EPOCH: &str = "f54b93152600f95d";
const GOLDEN_HEADER: &str = "\
# Pinned tenant -> owner assignments of membership::ring on relay-0..relay-4.
# If this file must change, every replica built before the change disagrees with
# every replica built after it: a rolling upgrade reshuffles tenants and, while
# both versions serve, the two halves pick different owners. Regenerate only on
# purpose, with:
#   RING_GOLDEN_BLESS=1 cargo test -p aegis-relay --lib membership::ring::tests::golden
";

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/membership/ring_golden.txt")
}

fn golden_text(ring: &Ring) -> Result<String, String> {
    let mut text = format!("{GOLDEN_HEADER}epoch {}\n", ring.epoch());
    for i in 0..1000 {
        let tenant = format!("tenant-{i}");
        let owner = ring
            .owner(&tenant)
            .ok_or("a ring with members has an owner")?;
        text.push_str(&format!("{tenant} {owner}\n"));
    }
    Ok(text)
}

#[test]
fn golden_assignments_on_five_replicas_do_not_change() -> TestResult {
    let ring = Ring::new(GOLDEN_MEMBERS);
    assert_eq!(ring.epoch().to_string(), GOLDEN_EPOCH);
    let expected = golden_text(&ring)?;
    if std::env::var_os("RING_GOLDEN_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(golden_path(), &expected)?;
        println!("rewrote {}", golden_path().display());
        return Ok(());
    }
    let pinned = std::fs::read_to_string(golden_path())?;
    let changed: Vec<(&str, &str)> = pinned
        .lines()
        .zip(expected.lines())
        .filter(|(a, b)| a != b)
        .take(5)
        .collect();
    assert!(
        changed.is_empty() && pinned.lines().count() == expected.lines().count(),
        "ring assignments differ from {} (first differences, pinned vs now: {changed:?}); \
         see the file's header before regenerating",
        golden_path().display()
    );
    Ok(())
}

#[test]
fn the_epoch_depends_on_the_set_only() {
    let a = Ring::new(["relay-2", "relay-0", "relay-1"]);
    let b = Ring::new(vec![
        "relay-1".to_owned(),
        "relay-2".into(),
        "relay-0".into(),
    ]);
    let with_duplicates = Ring::new(["relay-1", "relay-0", "relay-2", "relay-1"]);
    assert_eq!(a.epoch(), b.epoch());
    assert_eq!(a, b);
    assert_eq!(a, with_duplicates);
    assert_eq!(a.members(), ["relay-0", "relay-1", "relay-2"]);
    assert_eq!(a.len(), 3);

    let fewer = Ring::new(["relay-0", "relay-1"]);
    let other = Ring::new(["relay-0", "relay-1", "relay-3"]);
    assert_ne!(a.epoch(), fewer.epoch());
    assert_ne!(a.epoch(), other.epoch());
    assert_ne!(a, other);
}

#[test]
fn an_epoch_is_sixteen_hex_digits_and_serializes_as_a_string() -> TestResult {
    let ring = Ring::new(["relay-0"]);
    let shown = ring.epoch().to_string();
    assert_eq!(shown.len(), 16);
    assert!(shown.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(
        serde_json::to_value(ring.epoch())?,
        serde_json::json!(shown)
    );
    assert_eq!(ring.epoch().as_str(), shown);
    Ok(())
}

#[test]
fn an_empty_ring_owns_nothing() {
    let ring = Ring::new(Vec::<String>::new());
    assert!(ring.is_empty());
    assert_eq!(ring.len(), 0);
    assert_eq!(ring.owner("tenant-0"), None);
    assert!(ring.shares().is_empty());
    // SHA-256 of no bytes.
    assert_eq!(ring.epoch().to_string(), "e3b0c44298fc1c14");
}

#[test]
fn a_single_member_owns_everything() {
    let ring = Ring::new(["solo"]);
    assert_eq!(ring.owner("tenant-0"), Some("solo"));
    assert_eq!(ring.owner(""), Some("solo"));
    assert_eq!(ring.shares(), BTreeMap::from([("solo".to_owned(), 1.0)]));
}

#[test]
fn shares_sum_to_one_and_match_the_tenants_counted() -> TestResult {
    let ring = Ring::new(GOLDEN_MEMBERS);
    let shares = ring.shares();
    assert_eq!(shares.len(), 5);
    assert!((shares.values().sum::<f64>() - 1.0).abs() < 1e-9);
    let keys = 20_000;
    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..keys {
        *counted
            .entry(ring.owner(&format!("tenant-{i}")).ok_or("owner")?)
            .or_default() += 1;
    }
    for (name, share) in &shares {
        let seen = counted.get(name.as_str()).copied().unwrap_or(0) as f64 / f64::from(keys);
        assert!(
            (seen - share).abs() < 0.02,
            "{name}: share {share}, counted {seen}"
        );
    }
    Ok(())
}

#[test]
fn points_shared_by_two_members_go_to_the_smaller_name() {
    let shares = arc_shares(
        &[
            VNode {
                point: 10,
                member: 0,
            },
            VNode {
                point: 20,
                member: 1,
            },
        ],
        2,
    );
    assert_eq!(shares[1], 10.0 / (1u128 << 64) as f64);

    // Force collisions: the same names, hashed with one virtual node each, twice over.
    let mut vnodes = vec![
        VNode {
            point: 7,
            member: 1,
        },
        VNode {
            point: 7,
            member: 0,
        },
        VNode {
            point: 9,
            member: 1,
        },
    ];
    vnodes.sort_unstable_by_key(|v| (v.point, v.member));
    vnodes.dedup_by_key(|v| v.point);
    assert_eq!(
        vnodes,
        [
            VNode {
                point: 7,
                member: 0
            },
            VNode {
                point: 9,
                member: 1
            }
        ]
    );
}

#[test]
fn the_point_hasher_returns_exactly_the_bytes_written() {
    let build = PointBuild;
    assert_eq!(
        build.hash_one(Point(0x0102_0304_0506_0708)),
        0x0102_0304_0506_0708
    );
    assert_eq!(
        build.hash_one(VNode {
            point: u64::MAX,
            member: 3
        }),
        u64::MAX
    );
}

fn owners<'r>(ring: &'r Ring, keys: &[String]) -> Result<Vec<&'r str>, TestCaseError> {
    keys.iter()
        .map(|k| ring.owner(k).ok_or_else(|| TestCaseError::fail("no owner")))
        .collect()
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("tenant-{i}")).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random names: balance within 1.20 of the mean; a join moves tenants only
    /// to the newcomer, a leave only the leaver's tenants.
    #[test]
    fn random_names_balance_and_move_minimally(
        names in proptest::collection::btree_set("[a-z][a-z0-9.-]{0,24}", 3..=11),
        leaver_pick in any::<prop::sample::Index>(),
    ) {
        let mut names: Vec<String> = names.into_iter().collect();
        let newcomer = names.pop().ok_or_else(|| TestCaseError::fail("set of 3 or more"))?;
        let keys = keys(10_000);
        let before = Ring::new(&names);
        let after = Ring::new(names.iter().chain([&newcomer]));
        let owned_before = owners(&before, &keys)?;
        let owned_after = owners(&after, &keys)?;

        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for owner in &owned_before {
            *counts.entry(owner).or_default() += 1;
        }
        let mean = keys.len() as f64 / names.len() as f64;
        let max = counts.values().copied().max().unwrap_or(0) as f64;
        prop_assert!(max / mean <= 1.20, "max/mean {} over {names:?}", max / mean);

        let mut moved = 0;
        for (was, is) in owned_before.iter().zip(&owned_after) {
            if was != is {
                prop_assert_eq!(*is, newcomer.as_str());
                moved += 1;
            }
        }
        let bound = 1.0 / (names.len() + 1) as f64 + 0.03;
        prop_assert!(moved as f64 / keys.len() as f64 <= bound);

        let leaver = leaver_pick.get(&names).clone();
        let left = Ring::new(names.iter().chain([&newcomer]).filter(|n| **n != leaver));
        for (was, is) in owned_after.iter().zip(owners(&left, &keys)?) {
            if *was != is {
                prop_assert_eq!(*was, leaver.as_str());
            } else {
                prop_assert_ne!(is, leaver.as_str());
            }
        }
        prop_assert!((after.shares().values().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_epoch_ignores_order_and_duplicates(
        names in proptest::collection::vec("[a-z0-9-]{1,12}", 1..8),
        seed in any::<u64>(),
    ) {
        let mut shuffled = names.clone();
        shuffled.rotate_left((seed % names.len() as u64) as usize);
        shuffled.push(names[0].clone());
        prop_assert_eq!(Ring::new(&names).epoch().clone(), Ring::new(&shuffled).epoch().clone());
    }
}
