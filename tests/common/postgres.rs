//! A throwaway PostgreSQL database per test, created on the server named by
//! `AEGIS_RELAY_TEST_POSTGRES_URL` (an admin URL); tests skip without it and
//! fail under `CI=true`, where cluster/test provides the server.

use sqlx::Connection;

/// Env var naming the admin URL of the test server.
pub const URL_VAR: &str = "AEGIS_RELAY_TEST_POSTGRES_URL";

type BoxError = Box<dyn std::error::Error>;

/// The admin URL, or `None` (skip) when unset outside CI.
pub fn admin_url() -> Result<Option<String>, BoxError> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Ok(Some(url)),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => Err(format!(
            "{URL_VAR} is not set but CI=true: cluster/test starts PostgreSQL and sets it"
        )
        .into()),
        _ => {
            eprintln!("skipping: {URL_VAR} is not set (e.g. postgres://postgres@127.0.0.1:55432/postgres)");
            Ok(None)
        }
    }
}

/// Creates an empty database `relay_<label>_<uuid>` and returns its URL, or
/// `None` when the test should be skipped. The label is cut so the name fits
/// PostgreSQL's 63 bytes with the whole uuid (a longer name is truncated,
/// and reruns on one server would collide).
pub async fn fresh_database(label: &str) -> Result<Option<String>, BoxError> {
    let Some(admin) = admin_url()? else {
        return Ok(None);
    };
    let label: String = label
        .chars()
        .take(63 - "relay_".len() - 1 - 32)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let name = format!(
        "relay_{label}_{}",
        aegis_relay::runtime::OsEntropy.uuid().simple()
    );
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(Some(with_database(&admin, &name)?))
}

/// Drops a database made by [`fresh_database`] (closing its sessions).
pub async fn drop_database(url: &str) -> Result<(), BoxError> {
    let Some(admin) = admin_url()? else {
        return Ok(());
    };
    let name = database_of(url).ok_or("URL without a database name")?;
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// `url` with its database path replaced by `name` (query kept).
fn with_database(url: &str, name: &str) -> Result<String, BoxError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").ok_or("admin URL has no scheme")? + 3;
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// The database path of `url`.
fn database_of(url: &str) -> Option<&str> {
    let base = url.split('?').next()?;
    let scheme_end = base.find("://")? + 3;
    let slash = base[scheme_end..].find('/')? + scheme_end;
    Some(&base[slash + 1..]).filter(|name| !name.is_empty())
}
