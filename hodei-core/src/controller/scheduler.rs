//! Which waiting job gets a worker slot next: the highest priority first; within one
//! priority the owner with the fewest running jobs (the one served longest ago on a tie);
//! within one owner, arrival order. A job starts only within its provider's worker cap
//! and its owner's cap of running jobs. Running jobs are never stopped to make room.
//!
//! [`Queue`] decides, with no I/O and no clock; [`Scheduler`] wraps it in a lock, hands
//! each admitted job a [`Slot`] (its place among the running, given back when dropped) and
//! tells each waiting job where it stands.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap},
    fmt,
    sync::Arc,
    time::Duration,
};

use parking_lot::{Mutex, MutexGuard};
use tokio::{
    sync::{oneshot, watch},
    time::{Instant, sleep_until},
};

/// Waiting jobs told their exact place in line; those further back read "more than" it,
/// so a long queue does not rewrite every job's detail whenever the line moves.
pub(crate) const EXACT_PLACES: usize = 100;
/// Least time between two updates of one waiting job's detail.
const DETAIL_INTERVAL: Duration = Duration::from_secs(1);

/// Caps on the running jobs of one owner, on all providers together.
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnerCaps {
    /// The cap of every owner without an override; 0 means none.
    pub(crate) default: usize,
    /// Caps of named owners; 0 means none for that owner.
    pub(crate) overrides: BTreeMap<String, usize>,
}

impl OwnerCaps {
    fn of(&self, owner: &str) -> Option<usize> {
        let cap = self.overrides.get(owner).copied().unwrap_or(self.default);
        (cap > 0).then_some(cap)
    }
}

/// Counts of one owner with running or waiting jobs.
#[derive(Debug, Default)]
struct OwnerState {
    running: usize,
    waiting: usize,
    /// When the owner last had a job admitted (an admission count); 0 for never.
    last_admitted: u64,
}

/// A waiting job.
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub(crate) owner: String,
    pub(crate) provider: Arc<str>,
    pub(crate) priority: i32,
    pub(crate) payload: T,
}

/// Order of waiting jobs: smaller goes first.
type Key = (Reverse<i32>, usize, u64, u64);

/// Why a waiting job has not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Its owner runs as many jobs as the owner may.
    OwnerLimit(usize),
    /// Its provider runs as many workers as it may; the count is given to the jobs near
    /// the front only.
    ProviderFull {
        provider: Arc<str>,
        running: Option<usize>,
    },
}

/// Where a waiting job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Standing {
    /// Place in line among the jobs waiting for the same provider, from 1; `None` past
    /// [`EXACT_PLACES`].
    pub(crate) place: Option<usize>,
    pub(crate) priority: i32,
    pub(crate) blocked: Blocked,
}

impl fmt::Display for Standing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.place {
            Some(place) => write!(f, "queued: {} in line", Ordinal(place))?,
            None => write!(f, "queued: more than {EXACT_PLACES} in line")?,
        }
        write!(f, " (priority {}), ", self.priority)?;
        match &self.blocked {
            Blocked::OwnerLimit(cap) => write!(f, "owner limit {cap} reached"),
            Blocked::ProviderFull {
                provider,
                running: Some(running),
            } => write!(
                f,
                "waiting for a free {provider} worker slot ({running} running)"
            ),
            Blocked::ProviderFull {
                provider,
                running: None,
            } => write!(f, "waiting for a free {provider} worker slot"),
        }
    }
}

/// 1st, 2nd, 3rd, 4th, 11th, 21st, ...
struct Ordinal(usize);

impl fmt::Display for Ordinal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let suffix = match (n % 10, n % 100) {
            (_, 11..=13) => "th",
            (1, _) => "st",
            (2, _) => "nd",
            (3, _) => "rd",
            _ => "th",
        };
        write!(f, "{n}{suffix}")
    }
}

/// The waiting jobs and the running counts: every decision, none of the waiting.
///
/// Bounded: it holds only admitted jobs (capped by the queue caps) and the owners and
/// providers of jobs it holds or runs.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    caps: OwnerCaps,
    /// Worker caps of the providers that have one.
    capacity: HashMap<String, usize>,
    /// Running jobs of each provider that has a cap.
    running_on: HashMap<String, usize>,
    owners: HashMap<String, OwnerState>,
    /// By arrival.
    waiting: BTreeMap<u64, Entry<T>>,
    arrivals: u64,
    admissions: u64,
}

impl<T> Queue<T> {
    pub(crate) fn new(capacity: HashMap<String, usize>, caps: OwnerCaps) -> Self {
        Self {
            caps,
            capacity,
            running_on: HashMap::new(),
            owners: HashMap::new(),
            waiting: BTreeMap::new(),
            arrivals: 0,
            admissions: 0,
        }
    }

    /// Adds a waiting job; returns its arrival number, which names it here.
    pub(crate) fn push(&mut self, owner: &str, provider: &str, priority: i32, payload: T) -> u64 {
        self.arrivals += 1;
        self.owners.entry(owner.to_owned()).or_default().waiting += 1;
        self.waiting.insert(
            self.arrivals,
            Entry {
                owner: owner.to_owned(),
                provider: provider.into(),
                priority,
                payload,
            },
        );
        self.arrivals
    }

    /// Takes a job out of the line without starting it (it was cancelled).
    pub(crate) fn remove(&mut self, arrival: u64) -> Option<Entry<T>> {
        let entry = self.waiting.remove(&arrival)?;
        if let Some(owner) = self.owners.get_mut(&entry.owner) {
            owner.waiting -= 1;
        }
        self.forget_if_idle(&entry.owner);
        Some(entry)
    }

    /// The next job to start, if any may start now; it counts as running from here.
    pub(crate) fn admit_next(&mut self) -> Option<Entry<T>> {
        let arrival = self
            .waiting
            .iter()
            .filter(|(_, entry)| self.limit_hit(entry).is_none())
            .min_by_key(|(arrival, entry)| self.key(**arrival, entry))
            .map(|(arrival, _)| *arrival)?;
        let entry = self.waiting.remove(&arrival)?;
        if let Some(owner) = self.owners.get_mut(&entry.owner) {
            owner.waiting -= 1;
        }
        self.start(&entry.owner, &entry.provider);
        Some(entry)
    }

    /// Counts a job as running at once, even past a cap: it already runs (a job taken
    /// over after a restart).
    pub(crate) fn take(&mut self, owner: &str, provider: &str) {
        self.start(owner, provider);
    }

    /// A running job ended.
    pub(crate) fn release(&mut self, owner: &str, provider: &str) {
        if let Some(state) = self.owners.get_mut(owner) {
            state.running = state.running.saturating_sub(1);
        }
        self.forget_if_idle(owner);
        if let Some(running) = self.running_on.get_mut(provider) {
            *running = running.saturating_sub(1);
        }
    }

    /// Where every waiting job stands, with a mutable reference to its payload.
    pub(crate) fn standings(&mut self) -> Vec<(Standing, &mut T)> {
        let mut lines: HashMap<Arc<str>, Vec<(Key, u64)>> = HashMap::new();
        for (arrival, entry) in &self.waiting {
            lines
                .entry(Arc::clone(&entry.provider))
                .or_default()
                .push((self.key(*arrival, entry), *arrival));
        }
        let mut places = HashMap::with_capacity(self.waiting.len());
        for line in lines.values_mut() {
            // Only the front needs its exact order.
            if line.len() > EXACT_PLACES {
                line.select_nth_unstable(EXACT_PLACES);
                line[..EXACT_PLACES].sort_unstable();
            } else {
                line.sort_unstable();
            }
            for (index, (_, arrival)) in line.iter().enumerate() {
                places.insert(*arrival, (index < EXACT_PLACES).then_some(index + 1));
            }
        }
        let found: Vec<(Option<usize>, Blocked)> = self
            .waiting
            .iter()
            .map(|(arrival, entry)| {
                let place = places.get(arrival).copied().flatten();
                // Never `None` after `admit_next` ran dry; shown as waiting for its
                // provider if it were.
                let blocked = self
                    .blocked(entry, place)
                    .unwrap_or_else(|| Blocked::ProviderFull {
                        provider: Arc::clone(&entry.provider),
                        running: None,
                    });
                (place, blocked)
            })
            .collect();
        self.waiting
            .values_mut()
            .zip(found)
            .map(|(entry, (place, blocked))| {
                let standing = Standing {
                    place,
                    priority: entry.priority,
                    blocked,
                };
                (standing, &mut entry.payload)
            })
            .collect()
    }

    /// Running jobs of `owner`.
    #[cfg(test)]
    pub(crate) fn running_of(&self, owner: &str) -> usize {
        self.owners.get(owner).map_or(0, |o| o.running)
    }

    /// Owners with running or waiting jobs.
    #[cfg(test)]
    pub(crate) fn owners(&self) -> usize {
        self.owners.len()
    }

    fn start(&mut self, owner: &str, provider: &str) {
        self.admissions += 1;
        let state = self.owners.entry(owner.to_owned()).or_default();
        state.running += 1;
        state.last_admitted = self.admissions;
        if self.capacity.contains_key(provider) {
            *self.running_on.entry(provider.to_owned()).or_default() += 1;
        }
    }

    fn forget_if_idle(&mut self, owner: &str) {
        if self
            .owners
            .get(owner)
            .is_some_and(|o| o.running == 0 && o.waiting == 0)
        {
            self.owners.remove(owner);
        }
    }

    fn key(&self, arrival: u64, entry: &Entry<T>) -> Key {
        let owner = self.owners.get(&entry.owner);
        (
            Reverse(entry.priority),
            owner.map_or(0, |o| o.running),
            owner.map_or(0, |o| o.last_admitted),
            arrival,
        )
    }

    /// What keeps `entry` from starting now, if anything; the provider's running count
    /// is given only to a job with an exact `place`.
    fn blocked(&self, entry: &Entry<T>, place: Option<usize>) -> Option<Blocked> {
        Some(match self.limit_hit(entry)? {
            Limit::Owner(cap) => Blocked::OwnerLimit(cap),
            Limit::Provider(running) => Blocked::ProviderFull {
                provider: Arc::clone(&entry.provider),
                running: place.map(|_| running),
            },
        })
    }

    /// The cap `entry` is at, if any: its owner's first, then its provider's.
    fn limit_hit(&self, entry: &Entry<T>) -> Option<Limit> {
        if let Some(cap) = self.caps.of(&entry.owner) {
            let running = self.owners.get(&entry.owner).map_or(0, |o| o.running);
            if running >= cap {
                return Some(Limit::Owner(cap));
            }
        }
        let capacity = *self.capacity.get(&*entry.provider)?;
        let running = self.running_on.get(&*entry.provider).copied().unwrap_or(0);
        (running >= capacity).then_some(Limit::Provider(running))
    }
}

/// A cap a waiting job is at.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// Its owner's, with the cap.
    Owner(usize),
    /// Its provider's, with the provider's running jobs.
    Provider(usize),
}

/// What the scheduler keeps of a waiting job.
#[derive(Debug)]
struct Waiter {
    admit: oneshot::Sender<Slot>,
    detail: watch::Sender<String>,
    shown: Option<Standing>,
}

/// Hands out worker slots in the scheduler's order. Shared by every job run.
#[derive(Debug)]
pub(crate) struct Scheduler {
    queue: Mutex<Queue<Waiter>>,
}

impl Scheduler {
    /// A scheduler for providers with the given worker caps (those absent have none).
    pub(crate) fn new(capacity: HashMap<String, usize>, caps: OwnerCaps) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue::new(capacity, caps)),
        })
    }

    /// Puts a job in line; it may be admitted at once.
    pub(crate) fn wait(self: &Arc<Self>, owner: &str, provider: &str, priority: i32) -> Waiting {
        let (admit, admitted) = oneshot::channel();
        let (detail, detail_rx) = watch::channel(String::new());
        let mut queue = self.queue.lock();
        let arrival = queue.push(
            owner,
            provider,
            priority,
            Waiter {
                admit,
                detail,
                shown: None,
            },
        );
        self.pump(queue);
        Waiting {
            scheduler: Arc::clone(self),
            arrival,
            owner: owner.to_owned(),
            provider: provider.to_owned(),
            admitted,
            detail: detail_rx,
            detail_open: true,
            dirty: false,
            next_detail: Instant::now(),
        }
    }

    /// A slot at once, even past a cap: for a job that already runs.
    pub(crate) fn take_now(self: &Arc<Self>, owner: &str, provider: &str) -> Slot {
        let mut queue = self.queue.lock();
        queue.take(owner, provider);
        self.pump(queue);
        Slot {
            scheduler: Arc::clone(self),
            owner: owner.to_owned(),
            provider: provider.to_owned(),
        }
    }

    fn release(self: &Arc<Self>, owner: &str, provider: &str) {
        let mut queue = self.queue.lock();
        queue.release(owner, provider);
        self.pump(queue);
    }

    fn leave(self: &Arc<Self>, arrival: u64) {
        let mut queue = self.queue.lock();
        if queue.remove(arrival).is_some() {
            self.pump(queue);
        }
    }

    /// Starts every job that may start, then tells each waiting job where it stands if
    /// that changed.
    fn pump(self: &Arc<Self>, mut queue: MutexGuard<'_, Queue<Waiter>>) {
        let mut admitted = Vec::new();
        while let Some(entry) = queue.admit_next() {
            let slot = Slot {
                scheduler: Arc::clone(self),
                owner: entry.owner,
                provider: entry.provider.to_string(),
            };
            admitted.push((entry.payload.admit, slot));
        }
        for (standing, waiter) in queue.standings() {
            if waiter.shown.as_ref() != Some(&standing) {
                waiter.detail.send_replace(standing.to_string());
                waiter.shown = Some(standing);
            }
        }
        drop(queue);
        for (admit, slot) in admitted {
            // A job gone meanwhile gives its slot back here, outside the lock.
            drop(admit.send(slot));
        }
    }
}

/// A running job's place; dropping it lets the next job start.
#[derive(Debug)]
pub(crate) struct Slot {
    scheduler: Arc<Scheduler>,
    owner: String,
    provider: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.scheduler.release(&self.owner, &self.provider);
    }
}

/// What happened to a waiting job.
#[derive(Debug)]
pub(crate) enum Turn {
    /// It may start.
    Admitted(Slot),
    /// Where it stands now, as its detail should say.
    Detail(String),
}

/// A job in line; dropping it takes the job out of line.
#[derive(Debug)]
pub(crate) struct Waiting {
    scheduler: Arc<Scheduler>,
    arrival: u64,
    owner: String,
    provider: String,
    admitted: oneshot::Receiver<Slot>,
    detail: watch::Receiver<String>,
    detail_open: bool,
    /// A new standing arrived and is not yet reported.
    dirty: bool,
    next_detail: Instant,
}

impl Waiting {
    /// The job's turn, or a change of its standing (at most one per [`DETAIL_INTERVAL`],
    /// the latest). Cancel-safe.
    pub(crate) async fn next(&mut self) -> Turn {
        loop {
            tokio::select! {
                biased;
                slot = &mut self.admitted => {
                    return Turn::Admitted(match slot {
                        Ok(slot) => slot,
                        // The scheduler drops a waiter only when admitting it or when it
                        // leaves, so this does not happen; the job is not stranded if it does.
                        Err(_) => self.scheduler.take_now(&self.owner, &self.provider),
                    });
                }
                changed = self.detail.changed(), if self.detail_open && !self.dirty => {
                    match changed {
                        Ok(()) => self.dirty = true,
                        Err(_) => self.detail_open = false,
                    }
                }
                () = sleep_until(self.next_detail), if self.dirty => {
                    self.dirty = false;
                    self.next_detail = Instant::now() + DETAIL_INTERVAL;
                    return Turn::Detail(self.detail.borrow_and_update().clone());
                }
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.scheduler.leave(self.arrival);
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
