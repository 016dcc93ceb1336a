//! Carries TCP connections between two network namespaces of the local test cluster:
//! it listens on an address inside one and dials an address inside the other, so the
//! host reaches the cluster (and pods reach a server on the host) over loopback only.
//!
//! The listening socket is bound after entering the listen namespace; the thread then
//! enters the connect namespace and runs a single-threaded runtime, so every outgoing
//! connection is made from there. Both directions are copied without blocking each
//! other, which long-lived bidirectional streams (gRPC, watches) need.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use clap::Parser;
use nix::sched::{CloneFlags, setns};
use tokio::net::{TcpListener, TcpStream};

/// Forward TCP connections from one network namespace to another.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on, inside --listen-netns.
    #[arg(long)]
    listen: SocketAddr,
    /// Network namespace to listen in (e.g. /run/netns/NAME); the current one if absent.
    #[arg(long)]
    listen_netns: Option<PathBuf>,
    /// Address each connection is carried to, inside --connect-netns.
    #[arg(long)]
    connect: SocketAddr,
    /// Network namespace to connect from; the current one if absent.
    #[arg(long)]
    connect_netns: Option<PathBuf>,
}

fn enter(netns: &Path) -> anyhow::Result<()> {
    let file = File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {}", netns.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(netns) = &args.listen_netns {
        enter(netns)?;
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("listening on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    if let Some(netns) = &args.connect_netns {
        enter(netns)?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listener, args.connect))
}

async fn serve(listener: std::net::TcpListener, target: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    loop {
        let (mut inbound, peer) = listener.accept().await?;
        tokio::spawn(async move {
            let mut outbound = match TcpStream::connect(target).await {
                Ok(outbound) => outbound,
                Err(error) => {
                    eprintln!("{peer} -> {target}: {error}");
                    return;
                }
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            if let Err(error) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                eprintln!("{peer} -> {target}: {error}");
            }
        });
    }
}
