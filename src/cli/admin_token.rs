//! `aegis-relay admin-token --config F --out FILE`: mints one of the relay's
//! own operator tokens with the configured signer (the local key file or
//! OpenBao Transit). Break-glass access while the identity provider is down,
//! and scripts. The token goes to a 0600 file and is never printed; relays
//! accept it only with `relay.accept_local_admin_tokens: true`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{run::signer, tokio_runtime, Failure};
use crate::auth::{is_valid_tenant_id, write_private, TokenIssuer, ENROLL_ROLE, FLEET_MANAGE_ROLE};
use crate::config::{load_file, ConfigError, ProcessEnv};

/// Longest lifetime of a minted operator token.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Args)]
pub(super) struct AdminTokenArgs {
    #[command(flatten)]
    config: super::ConfigArgs,
    /// Lifetime (e.g. 1h, 12h, 7d; at most 30d).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Mint a token of this tenant (roles aegis.edge.fleet.manage and
    /// aegis.edge.enroll, no operator level) instead of an aegis:admin
    /// operator token of aegis-system.
    #[arg(long)]
    tenant: Option<String>,
    /// Subject (`sub`) the relay logs for this token's requests.
    #[arg(long, default_value = "admin-token")]
    subject: String,
    /// File to write the token to (created with mode 0600, replaced if present).
    #[arg(long)]
    out: PathBuf,
}

pub(super) fn admin_token(args: AdminTokenArgs) -> Result<(), Failure> {
    let config = load_file(&args.config.config, &ProcessEnv).map_err(Failure::Config)?;
    if args.ttl.is_zero() || args.ttl > MAX_TTL {
        return Err(Failure::Config(ConfigError::invalid(
            "--ttl",
            "must be more than 0 and at most 30d",
        )));
    }
    if let Some(tenant) = args.tenant.as_deref().filter(|t| !is_valid_tenant_id(t)) {
        return Err(Failure::Config(ConfigError::invalid(
            "--tenant",
            format!("{tenant:?} is not a tenant id (1-63 of a-z, 0-9 and '-')"),
        )));
    }
    if args.subject.trim().is_empty() {
        return Err(Failure::Config(ConfigError::invalid(
            "--subject",
            "must not be empty",
        )));
    }
    let minted = tokio_runtime()?.block_on(async {
        let tokens = TokenIssuer::new(
            signer(&config).await?,
            config.relay.issuer.clone(),
            Vec::new(),
            config.cluster.public_endpoint.clone(),
        );
        let tokens = Arc::new(tokens);
        let now = crate::runtime::utc_now(&crate::runtime::SystemClock);
        let minted = match args.tenant.as_deref() {
            None => tokens.mint_admin_token(&args.subject, now, args.ttl).await,
            Some(tenant) => {
                let roles = [FLEET_MANAGE_ROLE, ENROLL_ROLE];
                tokens
                    .mint_tenant_token(&args.subject, tenant, &roles, now, args.ttl)
                    .await
            }
        };
        minted.context("cannot sign the token")
    })?;
    write_private(&args.out, minted.token.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let who = match &args.tenant {
        None => "an aegis:admin operator token of aegis-system".to_owned(),
        Some(tenant) => {
            format!("a token of tenant {tenant} (roles {FLEET_MANAGE_ROLE}, {ENROLL_ROLE})")
        }
    };
    let expires = chrono::DateTime::from_timestamp(minted.claims.exp, 0).unwrap_or_default();
    println!(
        "wrote {who}, subject {}, valid until {}, to {}",
        args.subject,
        expires.to_rfc3339(),
        args.out.display()
    );
    if !config.relay.accept_local_admin_tokens {
        println!(
            "note: this config has relay.accept_local_admin_tokens: false; its relays refuse the \
             token until you set it to true"
        );
    }
    Ok(())
}
