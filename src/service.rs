//! What `offboard serve` runs: the event consumer, the outbox publisher and the work loop,
//! side by side until told to stop. Stopping lets in-flight steps finish; a workflow
//! interrupted between steps is resumed by the next process that claims it.

use std::sync::Arc;

use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::intake::link::BrokerLink;
use crate::outbox::{publish_outbox, Outbox};
use crate::runtime::engine::Engine;

/// A running service.
pub struct Service {
    /// Cancelled by [`Service::stop`], or when the service is dropped without it.
    stop: DropGuard,
    /// The token every task watches, for the listeners added after the start.
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    stopping: CancellationToken,
    tasks: TaskTracker,
    /// The consumer's broker connection, for the console's readiness check.
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    broker: BrokerLink,
}

impl Service {
    /// Starts consuming, publishing and working.
    pub fn start(engine: Arc<Engine>) -> Service {
        let stopping = CancellationToken::new();
        let broker = BrokerLink::default();
        let outbox = engine.take_outbox().map(|fresh| Outbox {
            fresh,
            store: engine.store().clone(),
            owner: engine.worker_id().to_string(),
            config: engine.config().clone(),
        });
        let tasks = TaskTracker::new();
        tasks.spawn(crate::intake::consume(
            engine.clone(),
            broker.clone(),
            stopping.clone(),
        ));
        tasks.spawn(engine.clone().work(stopping.clone()));
        if let Some(outbox) = outbox {
            tasks.spawn(publish_outbox(outbox, stopping.clone()));
        }
        Service {
            stop: stopping.clone().drop_guard(),
            stopping,
            tasks,
            broker,
        }
    }

    /// Serves the operators' console on `listener` too, until the service stops.
    #[cfg(feature = "console")]
    pub fn listen(
        self,
        listener: tokio::net::TcpListener,
        console: crate::console::Console,
    ) -> Service {
        let broker = self.broker.clone();
        self.tasks.spawn(crate::console::serve(
            listener,
            console,
            broker,
            self.stopping.clone(),
        ));
        self
    }

    /// Serves the HR-facing HTTP intake on `listener` too, until the service stops.
    #[cfg(feature = "console")]
    pub fn ingest(
        self,
        listener: tokio::net::TcpListener,
        ingest: crate::ingest::Ingest,
    ) -> Service {
        self.tasks.spawn(crate::ingest::serve(
            listener,
            ingest,
            self.stopping.clone(),
        ));
        self
    }

    /// Stops, waiting for in-flight steps.
    pub async fn stop(self) {
        drop(self.stop);
        self.tasks.close();
        self.tasks.wait().await;
    }
}
