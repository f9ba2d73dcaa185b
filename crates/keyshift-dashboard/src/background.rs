//! The dashboard served in the background of another command that runs a workload from topic
//! to topic (`keyshift experiment --dashboard`): bind first, so a bad address fails before the
//! workload starts; [`spawn`](Background::spawn) it on the command's runtime once the cluster
//! is known; [`show`](Background::show) each run's topic as it begins; [`stop`](Background::stop)
//! it before the cluster goes away.

use std::net::SocketAddr;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::server::{Dashboard, DashboardConfig, DashboardError, Source};

/// A dashboard serving on a runtime's threads while its owner runs; see the
/// [module docs](self).
#[derive(Debug)]
pub struct Background {
    addr: SocketAddr,
    source: watch::Sender<Option<Source>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), DashboardError>>,
}

impl Background {
    /// Serves `dashboard` on `runtime` (`config.kafka`'s topic and groups are unused: the
    /// page shows what [`show`](Self::show) names, nothing until then).
    pub fn spawn(
        dashboard: Dashboard,
        config: DashboardConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let addr = dashboard.local_addr();
        let (source, following) = watch::channel(None);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(dashboard.serve_following(config, following, async move {
            // A dropped sender stops the dashboard too.
            let _ = stopped.await;
        }));
        Background {
            addr,
            source,
            stop,
            task,
        }
    }

    /// The address the page is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shows `source` from the next round on (about one interval).
    pub fn show(&self, source: Source) {
        self.source.send_replace(Some(source));
    }

    /// Stops serving (open pages' event streams end) and waits for the server to finish.
    pub async fn stop(self) -> Result<(), DashboardError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(DashboardError::Setup(format!(
                "the dashboard task failed: {e}"
            ))),
        }
    }
}
