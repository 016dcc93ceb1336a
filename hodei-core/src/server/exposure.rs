//! Secure by default: a server reachable from other hosts must use TLS, and its job API
//! must authenticate callers, unless the operator explicitly accepts the risk.

use std::{fmt, net::SocketAddr};

/// A protection a listener off loopback lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// TLS on the listener.
    Tls,
    /// Authentication of job API callers.
    CallerAuthentication,
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls => "TLS",
            Self::CallerAuthentication => "caller authentication",
        })
    }
}

/// A listener reachable from other hosts without some protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprotected {
    /// The first address that is not loopback, e.g. `0.0.0.0:50051`.
    pub addr: SocketAddr,
    /// What is missing, at least one.
    pub missing: Vec<Protection>,
}

impl fmt::Display for Unprotected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not loopback and has no ", self.addr)?;
        for (i, protection) in self.missing.iter().enumerate() {
            if i > 0 {
                f.write_str(" and no ")?;
            }
            write!(f, "{protection}")?;
        }
        Ok(())
    }
}

/// What a server is about to serve, as far as exposure goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exposure {
    pub job_addr: SocketAddr,
    pub worker_addr: SocketAddr,
    pub tls: bool,
    pub caller_authentication: bool,
}

impl Exposure {
    /// `Err` when a listener other hosts can reach lacks TLS, or the job listener lacks
    /// caller authentication. Loopback needs neither.
    pub fn check(&self) -> Result<(), Unprotected> {
        let mut missing = Vec::new();
        let mut addr = None;
        if !is_loopback(self.job_addr) {
            addr = Some(self.job_addr);
            if !self.tls {
                missing.push(Protection::Tls);
            }
            if !self.caller_authentication {
                missing.push(Protection::CallerAuthentication);
            }
        }
        if !is_loopback(self.worker_addr) && !self.tls {
            if missing.is_empty() {
                addr = Some(self.worker_addr);
            }
            if !missing.contains(&Protection::Tls) {
                missing.push(Protection::Tls);
            }
        }
        match addr {
            Some(addr) if !missing.is_empty() => Err(Unprotected { addr, missing }),
            _ => Ok(()),
        }
    }
}

fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(job: &str, worker: &str, tls: bool, auth: bool) -> Exposure {
        Exposure {
            job_addr: job.parse().unwrap(),
            worker_addr: worker.parse().unwrap(),
            tls,
            caller_authentication: auth,
        }
    }

    #[test]
    fn loopback_needs_nothing() {
        for (job, worker) in [
            ("127.0.0.1:50051", "127.0.0.1:50052"),
            ("[::1]:0", "127.0.0.2:0"),
            ("[::ffff:127.0.0.1]:1", "127.0.0.1:2"),
        ] {
            assert_eq!(exposure(job, worker, false, false).check(), Ok(()));
        }
    }

    #[test]
    fn an_open_job_listener_needs_tls_and_authentication() {
        let refused = exposure("0.0.0.0:50051", "127.0.0.1:50052", false, false)
            .check()
            .unwrap_err();
        assert_eq!(refused.addr, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(
            refused.missing,
            [Protection::Tls, Protection::CallerAuthentication]
        );
        assert_eq!(
            refused.to_string(),
            "0.0.0.0:50051 is not loopback and has no TLS and no caller authentication"
        );
        assert_eq!(
            exposure("10.0.0.1:1", "127.0.0.1:2", true, false)
                .check()
                .unwrap_err()
                .missing,
            [Protection::CallerAuthentication]
        );
        assert_eq!(
            exposure("[::]:1", "127.0.0.1:2", false, true)
                .check()
                .unwrap_err()
                .missing,
            [Protection::Tls]
        );
        assert_eq!(
            exposure("0.0.0.0:1", "0.0.0.0:2", true, true).check(),
            Ok(())
        );
    }

    #[test]
    fn an_open_worker_listener_needs_tls_only() {
        let refused = exposure("127.0.0.1:50051", "0.0.0.0:50052", false, false)
            .check()
            .unwrap_err();
        assert_eq!(refused.addr, "0.0.0.0:50052".parse().unwrap());
        assert_eq!(refused.missing, [Protection::Tls]);
        assert_eq!(
            exposure("127.0.0.1:50051", "0.0.0.0:50052", true, false).check(),
            Ok(())
        );
    }
}
