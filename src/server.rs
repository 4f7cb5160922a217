//! The server: configuration, targets, sessions, the I/O pool, and the portal listeners.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use iscsi_proto::negotiate::{DigestPolicy, TargetLimits};
use tokio::{net::TcpListener, sync::Semaphore};

use replication::service::{PoolConfig, ReplicationService, ServiceConfig};

use crate::{
    config::Config,
    conn,
    io_pool::IoPool,
    net_threads::NetThreads,
    registry::{Registry, configured_uid, open_device},
    sessions::SessionTable,
};

/// Shared server state.
#[derive(Debug)]
pub struct Server {
    /// The configuration in force.
    pub config: Config,
    /// Negotiation limits derived from the configuration.
    pub limits: TargetLimits,
    /// Targets and portals.
    pub registry: Arc<Registry>,
    /// The replication layer every LUN's writes pass through.
    pub replication: Arc<ReplicationService>,
    /// Sessions.
    pub sessions: SessionTable,
    /// Disk I/O threads.
    pub io: IoPool,
    /// The threads connections run on.
    pub net: NetThreads,
    connections: Arc<Semaphore>,
}

impl Server {
    /// Build the server: open every LUN and start the I/O threads.
    pub fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let s = &config.server;
        let limits = TargetLimits {
            max_recv_data_segment_length: s.max_recv_data_segment_length,
            max_burst_length: s.max_burst_length,
            first_burst_length: s.first_burst_length,
            max_outstanding_r2t: s.max_outstanding_r2t,
            initial_r2t: s.initial_r2t,
            immediate_data: s.immediate_data,
            default_time2wait: 2,
            default_time2retain: 0,
            digest_policy: match s.digests.as_str() {
                "require" => DigestPolicy::Require,
                "refuse" => DigestPolicy::Refuse,
                _ => DigestPolicy::Allow,
            },
        };
        let replication = open_replication(&config)?;
        let registry = Registry::from_config(&config, &|name| {
            replication
                .volume(name)
                .map(|v| v as Arc<dyn blockdev::BlockDevice>)
        })?;
        // Volumes exposed through the admin socket.
        for v in replication.exposures() {
            if let Err(e) = registry.expose_volume(&v) {
                tracing::warn!(volume = %v.name, target = %v.exposure.target, lun = v.exposure.lun, error = %format!("{e:#}"), "recorded exposure not applied");
            }
        }
        let registry = Arc::new(registry);
        // HA pairs: the service sets the access states of their LUs.
        replication.set_ha_host(registry.clone());
        let io = IoPool::new(s.io_threads).context("starting I/O threads")?;
        let net = NetThreads::new(s.net_threads()).context("starting network threads")?;
        let connections = Arc::new(Semaphore::new(s.max_connections));
        Ok(Arc::new(Self {
            config,
            limits,
            registry,
            replication,
            sessions: SessionTable::default(),
            io,
            net,
            connections,
        }))
    }

    /// Bind every portal; returns the bound addresses in configuration order.
    pub async fn listen(self: &Arc<Self>) -> anyhow::Result<Vec<SocketAddr>> {
        let mut bound = Vec::new();
        let portals = self.config.portals.clone();
        for (i, p) in portals.iter().enumerate() {
            let listener = TcpListener::bind(p.address)
                .await
                .with_context(|| format!("listening on {}", p.address))?;
            let addr = listener.local_addr()?;
            self.registry.set_bound(i, addr);
            bound.push(addr);
            tokio::spawn(self.clone().accept_loop(listener, p.group));
        }
        Ok(bound)
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, group: u16) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let Ok(permit) = self.connections.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(10);
                    tracing::debug!(%peer, group, "connection");
                    // The socket moves to a network thread's runtime.
                    let stream = match stream.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "accepted connection dropped");
                            continue;
                        }
                    };
                    let server = self.clone();
                    self.net.spawn(async move {
                        match tokio::net::TcpStream::from_std(stream) {
                            Ok(stream) => conn::serve(server, stream, group).await,
                            Err(e) => tracing::warn!(%peer, error = %e, "connection dropped"),
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of descriptors and similar: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Stop: make everything written durable, then stop the replication layer cleanly.
    pub fn shutdown(&self) {
        self.flush_all();
        self.replication.shutdown();
    }

    /// Make everything written durable (at shutdown).
    pub fn flush_all(&self) {
        for t in &self.registry.targets {
            for (lun, lu) in t.lun_map().iter() {
                if let Err(e) = lu.device().flush() {
                    tracing::error!(target = %t.name, lun, error = %e, "flush failed");
                }
            }
        }
    }
}

/// Open the replication service, register every configured LUN as a volume, and recover.
fn open_replication(config: &Config) -> anyhow::Result<Arc<ReplicationService>> {
    let pools = config
        .pools()
        .into_iter()
        .map(|p| PoolConfig {
            name: p.name,
            dir: p.path,
            limit: p.limit.map_or(0, |s| s.0),
        })
        .collect();
    let cfg = ServiceConfig {
        data_dir: config.server.data_dir.clone(),
        pools,
        quick_wait: Duration::from_millis(config.replication.job_wait_ms),
        async_max_lag: config.replication.async_max_lag.0,
        drain_timeout: Duration::from_millis(config.replication.drain_timeout_ms),
    };
    let svc = ReplicationService::open(cfg).context("opening the replication state")?;
    for t in &config.targets {
        for l in &t.luns {
            let dev = open_device(t, l)?;
            svc.register_configured(
                &l.volume_name(&t.name),
                Arc::new(dev),
                &l.path,
                l.block_size,
                configured_uid(t, l),
            );
        }
    }
    svc.start().context("starting the replication layer")?;
    Ok(svc)
}
