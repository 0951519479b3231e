//! What `offboard serve` runs: the event consumer, the outbox publisher and the work loop,
//! side by side until told to stop. Stopping lets in-flight steps finish; a workflow
//! interrupted between steps is resumed by the next process that claims it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::intake::link::BrokerLink;
use crate::outbox::{publish_outbox, Outbox};
use crate::runtime::engine::Engine;

/// A running service.
pub struct Service {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The consumer's broker connection, for the console's readiness check.
    #[cfg_attr(not(feature = "console"), allow(dead_code))]
    broker: BrokerLink,
}

impl Service {
    /// Starts consuming, publishing and working.
    pub fn start(engine: Arc<Engine>) -> Service {
        let (stop, rx) = watch::channel(false);
        let broker = BrokerLink::default();
        let outbox = engine.take_outbox().map(|fresh| Outbox {
            fresh,
            store: engine.store().clone(),
            owner: engine.worker_id().to_string(),
            config: engine.config().clone(),
        });
        let mut tasks = vec![
            tokio::spawn(crate::intake::consume(
                engine.clone(),
                broker.clone(),
                rx.clone(),
            )),
            tokio::spawn(engine.clone().work(rx.clone())),
        ];
        if let Some(outbox) = outbox {
            tasks.push(tokio::spawn(publish_outbox(outbox, rx)));
        }
        Service {
            stop,
            tasks,
            broker,
        }
    }

    /// Serves the operators' console on `listener` too, until the service stops.
    #[cfg(feature = "console")]
    pub fn listen(
        mut self,
        listener: tokio::net::TcpListener,
        console: crate::console::Console,
    ) -> Service {
        let stop = self.stop.subscribe();
        let broker = self.broker.clone();
        self.tasks.push(tokio::spawn(crate::console::serve(
            listener, console, broker, stop,
        )));
        self
    }

    /// Serves the HR-facing HTTP intake on `listener` too, until the service stops.
    #[cfg(feature = "console")]
    pub fn ingest(
        mut self,
        listener: tokio::net::TcpListener,
        ingest: crate::ingest::Ingest,
    ) -> Service {
        let stop = self.stop.subscribe();
        self.tasks
            .push(tokio::spawn(crate::ingest::serve(listener, ingest, stop)));
        self
    }

    /// Stops, waiting for in-flight steps.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
