//! `/v1/edge/hosts` and `/v1/edge/fleet/preview` (protocol.md §8.5) against
//! a relay with live edges: host views, tag changes and what they do to
//! fleet resolution, tenant isolation (404, never another tenant's data),
//! and the refusals every route shares (401, 400 naming the field, 413).

mod common;

use std::time::Duration;

use common::edges::{enroll_edge, tenant_bearer};
use common::enroll::admin_bearer;
use common::rest::{caller_bearer, live_edge, resolved, sorted_ids, Rest};
use common::{start_relay, TestResult};
use serde_json::{json, Value};

const TENANT_A: &str = "t-a";
const TENANT_B: &str = "t-b";

fn has_tag(tag: &str) -> Value {
    json!({"Selector": {"tools": [], "labels": [], "tags": [{"Has": tag}]}})
}

#[tokio::test]
async fn a_live_edge_is_listed_and_read_with_its_session_facts() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let (_enrolled, edge) = live_edge(&relay, TENANT_A).await?;
    let rest = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));

    // `last_seen_at` is written by the batched store flush after the Hello.
    let list = common::eventually(Duration::from_secs(30), "last_seen_at set", || {
        let rest = rest.clone();
        async move {
            let list = rest.get("/v1/edge/hosts").await.ok()?;
            list.json[0]["last_seen_at"].is_string().then_some(list)
        }
    })
    .await?;
    assert_eq!(list.status, 200, "{}", list.text);
    let hosts = list.json.as_array().ok_or("the list is not an array")?;
    assert_eq!(hosts.len(), 1, "{}", list.text);
    let host = &hosts[0];
    assert_eq!(host["id"], json!(edge.node_id.to_string()));
    assert_eq!(host["name"], json!("test-edge"));
    assert_eq!(host["tenant_id"], json!(TENANT_A));
    assert_eq!(host["status"], json!("active"));
    assert_eq!(host["connected"], json!(true));
    assert_eq!(host["tags"], json!([]));
    assert_eq!(host["os"], json!(std::env::consts::OS));
    assert_eq!(host["arch"], json!(std::env::consts::ARCH));
    let enrolled_at = host["enrolled_at"].as_str().ok_or("no enrolled_at")?;
    let enrolled_at = chrono::DateTime::parse_from_rfc3339(enrolled_at)?;
    let last_seen = host["last_seen_at"].as_str().ok_or("no last_seen_at")?;
    let last_seen = chrono::DateTime::parse_from_rfc3339(last_seen)?;
    let now = aegis_relay::runtime::SystemClock.utc_now();
    assert!(
        last_seen >= enrolled_at && last_seen <= now,
        "last_seen_at {last_seen} outside [{enrolled_at}, {now}]"
    );

    let one = rest
        .get(&format!("/v1/edge/hosts/{}", edge.node_id))
        .await?;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(&one.json, host);

    let offline = enroll_edge(&relay, TENANT_A).await?;
    let path = format!("/v1/edge/hosts/{}", offline.state.node_id);
    let answer = rest.get(&path).await?;
    assert_eq!(answer.json["connected"], json!(false), "{}", answer.text);
    assert_eq!(answer.json["last_seen_at"], Value::Null);
    let list = rest.get("/v1/edge/hosts").await?;
    let ids: Vec<String> = list
        .json
        .as_array()
        .ok_or("the list is not an array")?
        .iter()
        .filter_map(|host| host["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, sorted_ids(&[edge.node_id, offline.state.node_id]));
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn tag_changes_are_stored_and_steer_fleet_preview() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let (_enrolled, edge) = live_edge(&relay, TENANT_A).await?;
    let rest = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));
    let path = format!("/v1/edge/hosts/{}", edge.node_id);

    let before = rest.preview(&has_tag("x")).await?;
    assert_eq!(before.status, 400, "{}", before.text);
    assert!(
        before.message().contains("no connected edge matches"),
        "{}",
        before.text
    );

    let patch = json!({"tags": ["x", "y"], "add_tags": ["z", "x"], "remove_tags": ["y"]});
    let patched = rest.patch(&path, &patch).await?;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["tags"], json!(["x", "z"]));
    assert_eq!(patched.json["connected"], json!(true));
    let stored = relay.store().get_edge(edge.node_id).await?.ok_or("gone")?;
    assert_eq!(stored.tags, ["x", "z"]);

    let preview = rest.preview(&has_tag("x")).await?;
    assert_eq!(preview.status, 200, "{}", preview.text);
    assert_eq!(resolved(&preview), sorted_ids(&[edge.node_id]));
    let node = rest.preview(&json!({"Node": edge.node_id})).await?;
    assert_eq!(resolved(&node), sorted_ids(&[edge.node_id]));
    let all = rest.preview(&json!("All")).await?;
    assert_eq!(resolved(&all), sorted_ids(&[edge.node_id]));

    let removed = rest.patch(&path, &json!({"remove_tags": ["x"]})).await?;
    assert_eq!(removed.json["tags"], json!(["z"]), "{}", removed.text);
    let after = rest.preview(&has_tag("x")).await?;
    assert_eq!(after.status, 400, "{}", after.text);

    // The current name may be echoed back; a new one renames, before tags apply.
    let same = rest.patch(&path, &json!({"name": "test-edge"})).await?;
    assert_eq!(same.status, 200, "{}", same.text);
    let empty = rest.patch(&path, &json!({"name": ""})).await?;
    assert_eq!(empty.status, 400, "{}", empty.text);
    assert!(empty.message().contains("`name`"), "{}", empty.text);
    let rename = rest
        .patch(&path, &json!({"name": "db-1", "tags": []}))
        .await?;
    assert_eq!(rename.status, 200, "{}", rename.text);
    let stored = relay.store().get_edge(edge.node_id).await?.ok_or("gone")?;
    assert_eq!(stored.display_name, "db-1");
    assert!(stored.tags.is_empty());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn preview_of_a_node_says_why_it_is_not_addressable() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let rest = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));
    let offline = enroll_edge(&relay, TENANT_A).await?;
    let answer = rest
        .preview(&json!({"Node": offline.state.node_id}))
        .await?;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert!(
        answer.message().contains("not connected"),
        "{}",
        answer.text
    );
    let unknown = rest
        .preview(&json!({"Node": aegis_relay::runtime::OsEntropy.uuid()}))
        .await?;
    assert_eq!(
        (unknown.status, unknown.json["code"].clone()),
        (404, json!("not_found"))
    );
    let group = rest
        .preview(&json!({"Group": aegis_relay::runtime::OsEntropy.uuid()}))
        .await?;
    assert_eq!(group.status, 404, "{}", group.text);
    let bad = rest.preview(&json!({"Selector": {"tools": []}})).await?;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.message().contains("target.Selector"), "{}", bad.text);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn another_tenant_never_sees_or_touches_a_host() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let (_a, edge_a) = live_edge(&relay, TENANT_A).await?;
    let (_b, edge_b) = live_edge(&relay, TENANT_B).await?;
    let b = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_B).await?));
    let path_a = format!("/v1/edge/hosts/{}", edge_a.node_id);

    let list = b.get("/v1/edge/hosts").await?;
    assert_eq!(list.json.as_array().map(Vec::len), Some(1), "{}", list.text);
    assert_eq!(list.json[0]["id"], json!(edge_b.node_id.to_string()));
    for answer in [
        b.get(&path_a).await?,
        b.patch(&path_a, &json!({"add_tags": ["mine"]})).await?,
        b.delete(&path_a).await?,
        b.preview(&json!({"Node": edge_a.node_id})).await?,
    ] {
        assert_eq!(answer.status, 404, "{}", answer.text);
        assert!(!answer.text.contains(TENANT_A), "{}", answer.text);
    }
    let all = b.preview(&json!("All")).await?;
    assert_eq!(resolved(&all), sorted_ids(&[edge_b.node_id]));
    let stored = relay
        .store()
        .get_edge(edge_a.node_id)
        .await?
        .ok_or("gone")?;
    assert!(
        stored.tags.is_empty(),
        "B changed A's tags: {:?}",
        stored.tags
    );

    // Operators see every tenant's hosts, but a fleet target resolves in
    // the tenant the request acts for (the admin's own, without a header),
    // which has no edges here.
    let admin = Rest::new(&relay, Some(&admin_bearer(&relay).await?));
    let list = admin.get("/v1/edge/hosts").await?;
    assert_eq!(list.json.as_array().map(Vec::len), Some(2), "{}", list.text);
    let all = admin.preview(&json!("All")).await?;
    assert_eq!(all.status, 400, "{}", all.text);
    assert_eq!(
        admin
            .preview(&json!({"Node": edge_a.node_id}))
            .await?
            .status,
        404
    );
    assert_eq!(admin.get(&path_a).await?.status, 200);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn refusals_name_the_problem() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let enrolled = enroll_edge(&relay, TENANT_A).await?;
    let path = format!("/v1/edge/hosts/{}", enrolled.state.node_id);
    let rest = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));

    let anonymous = Rest::new(&relay, None);
    for answer in [
        anonymous.get("/v1/edge/hosts").await?,
        anonymous.get(&path).await?,
        anonymous.patch(&path, &json!({"tags": []})).await?,
        anonymous.preview(&json!("All")).await?,
    ] {
        assert_eq!(answer.status, 401, "{}", answer.text);
        assert_eq!(answer.json["code"], json!("unauthorized"));
    }

    let not_uuid = rest.get("/v1/edge/hosts/not-a-uuid").await?;
    assert_eq!(not_uuid.status, 400, "{}", not_uuid.text);
    let wrong_type = rest.patch(&path, &json!({"tags": "x"})).await?;
    assert_eq!(wrong_type.status, 400, "{}", wrong_type.text);
    assert!(
        wrong_type.message().contains("`tags`"),
        "{}",
        wrong_type.text
    );
    let wrong_item = rest.patch(&path, &json!({"add_tags": ["ok", 5]})).await?;
    assert!(
        wrong_item.message().contains("add_tags[1]"),
        "{}",
        wrong_item.text
    );
    let malformed = rest.send("PATCH", &path, "{\"tags\": [").await?;
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    let no_target = rest
        .post("/v1/edge/fleet/preview", &json!({"tagret": "All"}))
        .await?;
    assert_eq!(no_target.status, 400, "{}", no_target.text);
    assert!(no_target.message().contains("target"), "{}", no_target.text);
    let ignored = rest
        .patch(&path, &json!({"tags": ["a"], "colour": "red"}))
        .await?;
    assert_eq!(
        ignored.status, 200,
        "unknown fields are ignored: {}",
        ignored.text
    );

    let huge = json!({"tags": ["x".repeat(70 * 1024)]}).to_string();
    let oversized = rest.send("PATCH", &path, &huge).await?;
    assert_eq!(oversized.status, 413, "{}", oversized.text);
    let oversized = rest.send("POST", "/v1/edge/fleet/preview", &huge).await?;
    assert_eq!(oversized.status, 413, "{}", oversized.text);

    let readonly = caller_bearer(&relay, "auditor", "aegis-system", "aegis:readonly").await?;
    let readonly = Rest::new(&relay, Some(&readonly));
    assert_eq!(readonly.get("/v1/edge/hosts").await?.status, 200);
    let refused = readonly.patch(&path, &json!({"tags": []})).await?;
    assert_eq!(refused.status, 403, "{}", refused.text);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn concurrent_tag_patches_all_reach_the_store_and_fleet_selectors() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let (_enrolled, edge) = live_edge(&relay, TENANT_A).await?;
    let bearer = tenant_bearer(&relay, TENANT_A).await?;
    let path = format!("/v1/edge/hosts/{}", edge.node_id);
    let tags: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    let rest = Rest::new(&relay, Some(&bearer));
    let bodies: Vec<Value> = tags.iter().map(|tag| json!({"add_tags": [tag]})).collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|body| rest.patch(&path, body))).await;
    for answer in answers {
        let answer = answer?;
        assert_eq!(answer.status, 200, "{}", answer.text);
    }
    let mut stored = relay
        .store()
        .get_edge(edge.node_id)
        .await?
        .ok_or("gone")?
        .tags;
    stored.sort();
    let mut expected = tags.clone();
    expected.sort();
    assert_eq!(
        stored, expected,
        "a concurrent change was lost in the store"
    );
    // The registry's copy (what selectors match) ends as the store's last commit.
    let every_tag = json!({"Selector": {"tools": [], "labels": [], "tags": [{"AllOf": tags}]}});
    let preview = rest.preview(&every_tag).await?;
    assert_eq!(preview.status, 200, "{}", preview.text);
    assert_eq!(resolved(&preview), sorted_ids(&[edge.node_id]));
    Ok(())
}
