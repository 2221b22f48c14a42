//! The tenant-selection headers on the edge routes (README "Callers"):
//! `x-aegis-tenant` selects a tenant for admins and is ignored for anyone
//! else; `X-Tenant-Id` naming the caller's own tenant is accepted, another
//! tenant only for admins and for service accounts holding
//! `aegis.edge.fleet.manage`, and refused with 403 for everyone else. Each
//! case reads the host list, one host and a call to it, so a header that
//! leaked another tenant's edges would show in any of them.

mod common;

use aegis_relay::auth::FLEET_MANAGE_ROLE;
use aegis_relay::edge_client::EdgeOptions;
use common::edges::{enroll_edge, run_edge};
use common::idp::FakeIdp;
use common::{assert_graceful, http_request, TestResult};
use serde_json::{json, Value};
use uuid::Uuid;

/// What one caller with one header sees: the listed host ids, the status of
/// `GET` and of an echo invoke on `host`.
async fn look(
    http: &str,
    headers: &[(&str, &str)],
    host: Uuid,
) -> Result<(u16, Vec<String>, u16, u16), Box<dyn std::error::Error>> {
    let (list_status, list) =
        http_request("GET", &format!("{http}/v1/edge/hosts"), headers, "").await?;
    let ids = serde_json::from_str::<Value>(&list)
        .ok()
        .and_then(|hosts| {
            hosts.as_array().map(|hosts| {
                hosts
                    .iter()
                    .filter_map(|h| h["id"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    let (get, _) =
        http_request("GET", &format!("{http}/v1/edge/hosts/{host}"), headers, "").await?;
    let body = json!({"tool_name": "cmd.run", "args": {"command": "echo", "args": ["hi"]}, "security_context_name": "zaru-free"});
    let (invoke, answer) = http_request(
        "POST",
        &format!("{http}/v1/edge/hosts/{host}/invoke"),
        headers,
        &body.to_string(),
    )
    .await?;
    if invoke == 200 {
        assert!(answer.contains(r#""stdout":"hi\n""#), "{answer}");
    }
    Ok((list_status, ids, get, invoke))
}

#[tokio::test]
async fn tenant_headers_on_the_edge_routes_follow_the_rules() -> TestResult {
    let idp = FakeIdp::start().await?;
    let relay = common::idp::start_oidc_relay(&idp).await?;
    let a = enroll_edge(&relay, "t-a").await?;
    let b = enroll_edge(&relay, "t-b").await?;
    let edge_a = run_edge(&relay, &a.state, EdgeOptions::default()).await?;
    let edge_b = run_edge(&relay, &b.state, EdgeOptions::default()).await?;
    let (id_a, id_b) = (a.state.node_id, b.state.node_id);
    let http = format!("http://{}", relay.http_addr());

    let token = |subject: &str, tenant: &str, edit: &dyn Fn(&mut Value)| {
        let mut claims = idp.claims(subject, tenant);
        edit(&mut claims);
        idp.sign(&claims).map(|token| format!("Bearer {token}"))
    };
    let manage = |claims: &mut Value| claims["realm_access"]["roles"] = json!([FLEET_MANAGE_ROLE]);
    let manager_a = token("manager", "t-a", &manage)?;
    let service = |roles: Value| {
        move |claims: &mut Value| {
            claims["preferred_username"] = json!("service-account-ci");
            claims["realm_access"]["roles"] = roles.clone();
        }
    };
    let service_manager = token("ci", "aegis-system", &service(json!([FLEET_MANAGE_ROLE])))?;
    let service_plain = token("ci", "aegis-system", &service(json!([])))?;
    let admin = token("ops", "aegis-system", &|claims| {
        claims["aegis_role"] = json!("aegis:admin")
    })?;

    let (a_text, b_text) = (vec![id_a.to_string()], vec![id_b.to_string()]);
    let mut both = vec![id_a.to_string(), id_b.to_string()];
    both.sort();
    type Case<'a> = (
        &'a str,
        &'a str,
        (&'a str, &'a str),
        Uuid,
        (u16, Vec<String>, u16, u16),
    );
    let cases: Vec<Case> = vec![
        // x-aegis-tenant is ignored for a tenant's own manager.
        (
            "manager, x-aegis-tenant: t-b",
            &manager_a,
            ("x-aegis-tenant", "t-b"),
            id_b,
            (200, a_text.clone(), 404, 404),
        ),
        (
            "manager, x-aegis-tenant: t-b, own host",
            &manager_a,
            ("x-aegis-tenant", "t-b"),
            id_a,
            (200, a_text.clone(), 200, 200),
        ),
        // X-Tenant-Id: its own tenant is fine, another is refused.
        (
            "manager, X-Tenant-Id: t-a",
            &manager_a,
            ("x-tenant-id", "t-a"),
            id_a,
            (200, a_text.clone(), 200, 200),
        ),
        (
            "manager, X-Tenant-Id: t-b",
            &manager_a,
            ("x-tenant-id", "t-b"),
            id_b,
            (403, vec![], 403, 403),
        ),
        // A service account delegates only with the role.
        (
            "service manager, X-Tenant-Id: t-b",
            &service_manager,
            ("x-tenant-id", "t-b"),
            id_b,
            (200, b_text.clone(), 200, 200),
        ),
        (
            "service manager, X-Tenant-Id: t-b, t-a's host",
            &service_manager,
            ("x-tenant-id", "t-b"),
            id_a,
            (200, b_text.clone(), 404, 404),
        ),
        (
            "service account, X-Tenant-Id: t-b",
            &service_plain,
            ("x-tenant-id", "t-b"),
            id_b,
            (403, vec![], 403, 403),
        ),
        // A service account's x-aegis-tenant is ignored: it acts for its own tenant.
        (
            "service manager, x-aegis-tenant: t-b",
            &service_manager,
            ("x-aegis-tenant", "t-b"),
            id_b,
            (200, vec![], 404, 404),
        ),
        // Admins select with either header (host reads and writes span every
        // tenant for them, as the README says; fleet calls act for the one).
        (
            "admin, x-aegis-tenant: t-b",
            &admin,
            ("x-aegis-tenant", "t-b"),
            id_b,
            (200, both.clone(), 200, 200),
        ),
        (
            "admin, X-Tenant-Id: t-b",
            &admin,
            ("x-tenant-id", "t-b"),
            id_b,
            (200, both.clone(), 200, 200),
        ),
        // A malformed tenant id is a bad request, not a lookup.
        (
            "admin, X-Tenant-Id: ../t-b",
            &admin,
            ("x-tenant-id", "../t-b"),
            id_b,
            (400, vec![], 400, 400),
        ),
    ];
    for (name, bearer, header, host, expected) in cases {
        let headers = [("authorization", bearer), header];
        let mut seen = look(&http, &headers, host).await?;
        seen.1.sort();
        assert_eq!(seen, expected, "{name}");
    }
    drop((edge_a, edge_b));
    assert_graceful(relay.shutdown().await);
    Ok(())
}
