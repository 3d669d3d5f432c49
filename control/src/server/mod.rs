//! The API server (being written).
use crate::{Config, Error};
use std::path::PathBuf;

pub struct Running {
    pub url: String,
    pub admin_conf: PathBuf,
}

pub async fn start(config: Config) -> Result<Running, Error> {
    Ok(Running {
        url: format!("http://{}", config.api_addr),
        admin_conf: config.data_dir.join("admin.conf"),
    })
}

impl Running {
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        shutdown.await;
        Ok(())
    }
}
