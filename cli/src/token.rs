//! `shturman token create [--ttl D]`: makes a join token, stores it as a
//! bootstrap-token Secret in `shturman-system` through the API, and prints
//! the token alone on stdout (`TOKEN=$(shturman token create)`).

use anyhow::{Context, Result};
use chrono::{TimeDelta, Utc};
use shturman_control::tokens::{JoinToken, SYSTEM_NAMESPACE};

use crate::args::TokenCreateArgs;
use crate::client::Client;

pub async fn create(args: &TokenCreateArgs, client: &Client) -> Result<()> {
    let token = JoinToken::random();
    let expires = if args.ttl.is_zero() {
        None
    } else {
        let ttl = TimeDelta::from_std(args.ttl).context("--ttl is too long")?;
        Some(Utc::now().checked_add_signed(ttl).context("--ttl is too long")?)
    };
    let secret = serde_json::to_value(token.to_secret(expires))?;
    client
        .post(&format!("/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets"), &secret)
        .await?;
    println!("{token}");
    Ok(())
}
