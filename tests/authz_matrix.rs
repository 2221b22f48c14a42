//! Every REST route and gRPC RPC × every kind of caller, with the exact
//! status of each cell (tests/common/authz.rs), against one relay whose
//! callers are OIDC tokens of a realm and which does not accept its own
//! operator tokens (`run` without `relay.accept_local_admin_tokens`).

mod common;

use std::time::Duration;

use aegis_relay::app;
use aegis_relay::auth::FLEET_MANAGE_ROLE;
use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::proto::cluster::edge_command;
use common::authz::{run_matrix, Credential, Fixture, Kind, Targets};
use common::edges::{edge_channel, enroll_edge, run_edge};
use common::idp::FakeIdp;
use common::{http_request, TestResult};
use serde_json::json;

const TENANT: &str = "t-acme";

#[tokio::test]
async fn every_route_answers_every_kind_of_caller_exactly() -> TestResult {
    let idp = FakeIdp::start().await?;
    let relay = common::idp::start_oidc_relay(&idp).await?;

    let sign = |subject: &str, tenant: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = idp.claims(subject, tenant);
        edit(&mut claims);
        idp.sign(&claims).map(|token| format!("Bearer {token}"))
    };
    let roles = |roles: &'static [&'static str]| {
        move |claims: &mut serde_json::Value| claims["realm_access"]["roles"] = json!(roles)
    };
    let manager = sign("manager", TENANT, &roles(&[FLEET_MANAGE_ROLE]))?;

    // Fixtures: a connected edge of the tenant, a group, and the token the
    // edge received with a command.
    let edge = enroll_edge(&relay, TENANT).await?;
    let mut running = run_edge(&relay, &edge.state, EdgeOptions::default()).await?;
    let http = format!("http://{}", relay.http_addr());
    let auth = [("authorization", manager.as_str())];
    let (status, group) = http_request(
        "POST",
        &format!("{http}/v1/edge/groups"),
        &auth,
        &json!({"name": "fixture", "selector": {"tools": [], "labels": [], "tags": []}})
            .to_string(),
    )
    .await?;
    assert_eq!(status, 200, "{group}");
    let group: serde_json::Value = serde_json::from_str(&group)?;
    let group = uuid::Uuid::parse_str(group["id"].as_str().ok_or("no group id")?)?;
    let (status, answer) = http_request(
        "POST",
        &format!("{http}/v1/edge/hosts/{}/invoke", running.node_id),
        &auth,
        &json!({"tool_name": "cmd.run", "args": {"command": "echo"}, "security_context_name": "zaru-free"}).to_string(),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    let command_token = loop {
        let command = tokio::time::timeout(Duration::from_secs(10), running.commands.recv())
            .await?
            .ok_or("the edge stopped")?;
        if let Some(edge_command::Command::InvokeTool(invoke)) = command.command {
            break invoke
                .seal_envelope
                .ok_or("no envelope")?
                .user_security_token;
        }
    };

    let fixture = Fixture {
        tenant: TENANT.into(),
        host: running.node_id,
        group,
    };
    let bearer = |value: String| Credential {
        authorization: Some(value),
        headers: Vec::new(),
    };
    let acting_for_tenant = |value: String| Credential {
        authorization: Some(value),
        headers: vec![("x-tenant-id", TENANT.to_owned())],
    };
    let token_for = |kind: Kind| -> Result<Credential, Box<dyn std::error::Error>> {
        let operator = |level: &'static str| {
            move |claims: &mut serde_json::Value| claims["aegis_role"] = json!(level)
        };
        let service_account = |with: &'static [&'static str]| {
            move |claims: &mut serde_json::Value| {
                claims["preferred_username"] = json!("service-account-ci");
                claims["realm_access"]["roles"] = json!(with);
            }
        };
        Ok(match kind {
            Kind::NoToken => Credential::default(),
            Kind::Malformed => bearer("not-a-jwt".into()),
            Kind::Expired => bearer(sign("manager", TENANT, &|claims| {
                roles(&[FLEET_MANAGE_ROLE])(claims);
                let now = aegis_relay::runtime::SystemClock.utc_now().timestamp();
                claims["iat"] = json!(now - 7200);
                claims["exp"] = json!(now - 3600);
            })?),
            Kind::OtherIssuer => bearer(sign("manager", TENANT, &|claims| {
                roles(&[FLEET_MANAGE_ROLE])(claims);
                claims["iss"] = json!("http://127.0.0.1:9/realms/elsewhere");
            })?),
            Kind::Readonly => bearer(sign(
                "auditor",
                "aegis-system",
                &operator("aegis:readonly"),
            )?),
            Kind::TenantUser => bearer(sign("user", TENANT, &|_| {})?),
            Kind::TenantManager => bearer(manager.clone()),
            Kind::OtherTenant => bearer(sign("other", "t-other", &roles(&[FLEET_MANAGE_ROLE]))?),
            Kind::Operator => bearer(sign("ops", "aegis-system", &operator("aegis:operator"))?),
            Kind::Admin => bearer(sign("root", "aegis-system", &operator("aegis:admin"))?),
            Kind::ServiceAccount => {
                acting_for_tenant(sign("sa", "aegis-system", &service_account(&[]))?)
            }
            Kind::ServiceAccountManager => acting_for_tenant(sign(
                "sa-manager",
                "aegis-system",
                &service_account(&[FLEET_MANAGE_ROLE]),
            )?),
            Kind::CommandToken => bearer(format!("Bearer {command_token}")),
        })
    };
    let targets = Targets {
        http,
        grpc: edge_channel(&relay).await?,
    };
    let mismatches = run_matrix(&targets, &fixture, &token_for).await?;
    assert!(mismatches.is_empty(), "cells that differ:\n{mismatches}");
    drop(running);
    assert_eq!(relay.shutdown().await, app::ShutdownOutcome::Graceful);
    Ok(())
}
