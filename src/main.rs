//! ironlun: an iSCSI target server with replication in its write path.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ironlun::{config::Config, server};

/// An iSCSI target server with replication built into its write path.
#[derive(Debug, Parser)]
#[command(name = "ironlun", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the target server.
    Serve {
        /// Configuration file (TOML). Without one, an embedded default serves a 1 GiB
        /// sparse LUN at iqn.2026-11.io.ironlun:default on 127.0.0.1:3260.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Check the configuration and exit (0 valid, 1 invalid).
        #[arg(long)]
        validate: bool,
    },
    /// Drive the replication service of a running server through its admin socket.
    Admin(ironlun::cli::AdminArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, validate } => serve(config, validate),
        Command::Admin(a) => match ironlun::cli::run(a) {
            Ok(code) => return std::process::ExitCode::from(code),
            Err(e) => {
                eprintln!("ironlun admin: {e:#}");
                return std::process::ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironlun: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(path: Option<PathBuf>, validate: bool) -> anyhow::Result<()> {
    let config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default_config(),
    };
    if validate {
        println!(
            "configuration is valid: {} portal(s), {} target(s)",
            config.portals.len(),
            config.targets.len()
        );
        return Ok(());
    }
    // Connections run on the server's network threads; this runtime accepts them and
    // serves the admin socket.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let server = server::Server::new(config)?;
        let bound = server.listen().await?;
        let admin = if server.config.admin.enabled {
            let path = server.config.admin_socket();
            let sock = ironlun::admin::start(&server, &path).await?;
            println!("ironlun: admin socket {}", path.display());
            Some(sock)
        } else {
            None
        };
        for (addr, p) in bound.iter().zip(&server.config.portals) {
            println!("ironlun: listening on {addr} (portal group {})", p.group);
        }
        for t in &server.registry.targets {
            for (lun, lu) in t.lun_map().iter() {
                println!(
                    "ironlun: target {} LUN {lun}: {} bytes, block size {}{}",
                    t.name,
                    lu.device().size(),
                    lu.config().block_size,
                    if lu.config().read_only {
                        ", read-only"
                    } else {
                        ""
                    }
                );
            }
        }
        if let (Some(addr), Some(t)) = (bound.first(), server.registry.targets.first()) {
            println!("ironlun: connect with:");
            println!("  iscsiadm -m discovery -t sendtargets -p {addr}");
            println!("  iscsiadm -m node -T {} -p {addr} --login", t.name);
            println!("  iscsi-ls -s iscsi://{addr}");
            println!("  qemu-img info iscsi://{addr}/{}/0", t.name);
        }
        println!("ironlun: ready");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        tracing::info!("shutting down");
        drop(admin);
        server.sessions.stop_all();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        server.shutdown();
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
