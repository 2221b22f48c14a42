//! `/v1/edge/groups` (protocol.md §8.5) and groups as fleet targets: CRUD,
//! 409 on a taken name, selector validation naming the field, resolution of
//! selector matches plus connected pinned members, and tenant isolation.

mod common;

use std::time::Duration;

use common::edges::{enroll_edge, tenant_bearer};
use common::rest::{caller_bearer, live_edge, resolved, sorted_ids, Rest};
use common::{start_relay, TestResult};
use serde_json::{json, Value};

const TENANT_A: &str = "t-a";
const TENANT_B: &str = "t-b";

fn selector_has(tag: &str) -> Value {
    json!({"tools": [], "labels": [], "tags": [{"Has": tag}]})
}

/// The id of a group answer.
fn id_of(answer: &common::rest::Answer) -> Result<String, String> {
    answer.json["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no group id in {}", answer.text))
}

#[tokio::test]
async fn groups_are_created_read_changed_and_deleted() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let rest = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));
    let pinned = aegis_relay::runtime::OsEntropy.uuid();

    let body = json!({"name": "db", "selector": selector_has("db"),
                      "pinned_members": [pinned, pinned], "extra": true});
    let created = rest.post("/v1/edge/groups", &body).await?;
    assert_eq!(created.status, 200, "{}", created.text);
    let id = id_of(&created)?;
    let group = &created.json;
    assert_eq!(group["name"], json!("db"));
    assert_eq!(group["tenant_id"], json!(TENANT_A));
    assert_eq!(group["created_by"], json!("user"), "the caller");
    assert_eq!(group["pinned_members"], json!([pinned]));
    assert_eq!(
        group["selector"],
        json!({"os": null, "arch": null, "tools": [], "labels": [], "tags": [{"Has": "db"}]})
    );
    let created_at = group["created_at"].as_str().ok_or("no created_at")?;
    chrono::DateTime::parse_from_rfc3339(created_at)?;

    let path = format!("/v1/edge/groups/{id}");
    let read = rest.get(&path).await?;
    assert_eq!((read.status, &read.json), (200, group), "{}", read.text);
    let listed = rest.get("/v1/edge/groups").await?;
    assert_eq!(listed.json, json!([group]));

    let again = rest.post("/v1/edge/groups", &body).await?;
    assert_eq!(again.status, 409, "{}", again.text);
    assert_eq!(again.json["code"], json!("conflict"));
    assert!(again.message().contains("group exists"), "{}", again.text);

    let by = json!({"name": "web", "selector": selector_has("web"), "created_by": "ci"});
    let web = rest.post("/v1/edge/groups", &by).await?;
    assert_eq!(
        web.json["created_by"],
        json!("user"),
        "the caller, never the body: {}",
        web.text
    );
    let taken = rest.patch(&path, &json!({"name": "web"})).await?;
    assert_eq!(taken.status, 409, "{}", taken.text);

    let patch = json!({"name": "databases", "selector": selector_has("pg"), "pinned_members": []});
    let patched = rest.patch(&path, &patch).await?;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.json["name"], json!("databases"));
    assert_eq!(patched.json["selector"]["tags"], json!([{"Has": "pg"}]));
    assert_eq!(patched.json["pinned_members"], json!([]));
    assert_eq!(patched.json["created_at"], group["created_at"]);
    let untouched = rest.patch(&path, &json!({})).await?;
    assert_eq!(untouched.json, patched.json);

    let deleted = rest.delete(&path).await?;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    assert_eq!(rest.get(&path).await?.status, 404);
    assert_eq!(rest.delete(&path).await?.status, 404);
    assert_eq!(rest.patch(&path, &json!({})).await?.status, 404);
    let listed = rest.get("/v1/edge/groups").await?;
    assert_eq!(
        listed.json.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_group_target_resolves_matches_and_connected_pinned_members() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let rest = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));
    let (_tagged_state, tagged) = live_edge(&relay, TENANT_A).await?;
    let (_pinned_state, pinned) = live_edge(&relay, TENANT_A).await?;
    let (_other_state, _other) = live_edge(&relay, TENANT_A).await?;
    let (_foreign_state, foreign) = live_edge(&relay, TENANT_B).await?;
    let offline = enroll_edge(&relay, TENANT_A).await?;

    let tag = rest
        .patch(
            &format!("/v1/edge/hosts/{}", tagged.node_id),
            &json!({"add_tags": ["db"]}),
        )
        .await?;
    assert_eq!(tag.status, 200, "{}", tag.text);
    let body = json!({"name": "db", "selector": selector_has("db"),
                      "pinned_members": [pinned.node_id, offline.state.node_id, foreign.node_id]});
    let created = rest.post("/v1/edge/groups", &body).await?;
    let id = id_of(&created)?;

    let preview = rest.preview(&json!({ "Group": id })).await?;
    assert_eq!(preview.status, 200, "{}", preview.text);
    assert_eq!(
        resolved(&preview),
        sorted_ids(&[tagged.node_id, pinned.node_id])
    );

    // Untagging drops the match; the pinned member stays.
    rest.patch(
        &format!("/v1/edge/hosts/{}", tagged.node_id),
        &json!({"remove_tags": ["db"]}),
    )
    .await?;
    let preview = rest.preview(&json!({ "Group": id })).await?;
    assert_eq!(resolved(&preview), sorted_ids(&[pinned.node_id]));
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn another_tenant_never_sees_or_touches_a_group() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let a = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));
    let b = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_B).await?));
    let body = json!({"name": "shared-name", "selector": selector_has("db")});
    let id = id_of(&a.post("/v1/edge/groups", &body).await?)?;
    let path = format!("/v1/edge/groups/{id}");

    // Names are unique per tenant only.
    let b_group = b.post("/v1/edge/groups", &body).await?;
    assert_eq!(b_group.status, 200, "{}", b_group.text);
    let listed = b.get("/v1/edge/groups").await?;
    assert_eq!(
        listed.json.as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
    assert_eq!(listed.json[0]["tenant_id"], json!(TENANT_B));
    for answer in [
        b.get(&path).await?,
        b.patch(&path, &json!({"name": "stolen"})).await?,
        b.delete(&path).await?,
        b.preview(&json!({ "Group": id })).await?,
    ] {
        assert_eq!(answer.status, 404, "{}", answer.text);
        assert!(!answer.text.contains(TENANT_A), "{}", answer.text);
    }
    let still = a.get(&path).await?;
    assert_eq!(still.json["name"], json!("shared-name"), "{}", still.text);

    // Operators see every tenant's groups.
    let admin = Rest::new(&relay, Some(&common::enroll::admin_bearer(&relay).await?));
    let all = admin.get("/v1/edge/groups").await?;
    assert_eq!(all.json.as_array().map(Vec::len), Some(2), "{}", all.text);
    assert_eq!(admin.get(&path).await?.status, 200);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn bad_group_requests_name_the_field() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let rest = Rest::new(&relay, Some(&tenant_bearer(&relay, TENANT_A).await?));
    let cases = [
        (json!({"selector": selector_has("x")}), "name"),
        (
            json!({"name": " ", "selector": selector_has("x")}),
            "`name`",
        ),
        (json!({"name": "g"}), "selector"),
        (json!({"name": "g", "selector": {"tools": []}}), "selector"),
        (
            json!({"name": "g", "selector": {"tools": [], "labels": [{"Equals": "k"}], "tags": []}}),
            "selector.labels[0]",
        ),
        (
            json!({"name": "g", "selector": selector_has("x"), "pinned_members": ["nope"]}),
            "pinned_members[0]",
        ),
        (json!({"name": 5, "selector": selector_has("x")}), "name"),
    ];
    for (body, field) in cases {
        let answer = rest.post("/v1/edge/groups", &body).await?;
        assert_eq!(answer.status, 400, "{body}: {}", answer.text);
        assert!(answer.message().contains(field), "{field}: {}", answer.text);
    }
    let malformed = rest.send("POST", "/v1/edge/groups", "{\"name\":").await?;
    assert_eq!(malformed.status, 400, "{}", malformed.text);
    let empty = rest.send("POST", "/v1/edge/groups", "").await?;
    assert_eq!(empty.status, 400, "{}", empty.text);
    let huge = json!({"name": "g".repeat(70 * 1024), "selector": selector_has("x")});
    let oversized = rest.post("/v1/edge/groups", &huge).await?;
    assert_eq!(oversized.status, 413, "{}", oversized.text);
    assert_eq!(rest.get("/v1/edge/groups/not-a-uuid").await?.status, 400);

    let id = id_of(
        &rest
            .post(
                "/v1/edge/groups",
                &json!({"name": "g", "selector": selector_has("x")}),
            )
            .await?,
    )?;
    let path = format!("/v1/edge/groups/{id}");
    let bad_patch = rest
        .patch(&path, &json!({"selector": {"tags": []}}))
        .await?;
    assert_eq!(bad_patch.status, 400, "{}", bad_patch.text);
    assert!(
        bad_patch.message().contains("selector"),
        "{}",
        bad_patch.text
    );
    let empty_name = rest.patch(&path, &json!({"name": ""})).await?;
    assert_eq!(empty_name.status, 400, "{}", empty_name.text);

    let anonymous = Rest::new(&relay, None);
    for answer in [
        anonymous.get("/v1/edge/groups").await?,
        anonymous.post("/v1/edge/groups", &json!({})).await?,
        anonymous.get(&path).await?,
        anonymous.patch(&path, &json!({})).await?,
        anonymous.delete(&path).await?,
    ] {
        assert_eq!(answer.status, 401, "{}", answer.text);
    }
    let readonly = caller_bearer(&relay, "auditor", "aegis-system", "aegis:readonly").await?;
    let readonly = Rest::new(&relay, Some(&readonly));
    assert_eq!(readonly.get("/v1/edge/groups").await?.status, 200);
    let body = json!({"name": "ro", "selector": selector_has("x")});
    assert_eq!(readonly.post("/v1/edge/groups", &body).await?.status, 403);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}
