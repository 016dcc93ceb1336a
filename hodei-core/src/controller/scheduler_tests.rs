//! The scheduler's order on crafted queues, and its slots and waiting jobs in paused time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use super::*;

/// A queue of jobs named by `&str`, on provider "p" with `capacity` workers.
fn queue(capacity: usize, caps: OwnerCaps) -> Queue<&'static str> {
    Queue::new(HashMap::from([("p".to_owned(), capacity)]), caps)
}

/// Admits every job that may start now, in order.
fn admit_all(queue: &mut Queue<&'static str>) -> Vec<&'static str> {
    std::iter::from_fn(|| queue.admit_next().map(|e| e.payload)).collect()
}

/// Runs the queue one slot at a time: admits, then ends that job, until none is left.
fn one_at_a_time(queue: &mut Queue<&'static str>) -> Vec<&'static str> {
    let mut order = Vec::new();
    while let Some(entry) = queue.admit_next() {
        order.push(entry.payload);
        queue.release(&entry.owner, &entry.provider);
    }
    order
}

fn caps(default: usize, overrides: &[(&str, usize)]) -> OwnerCaps {
    OwnerCaps {
        default,
        overrides: overrides
            .iter()
            .map(|(o, c)| ((*o).to_owned(), *c))
            .collect(),
    }
}

#[test]
fn higher_priority_goes_first_whatever_its_arrival() {
    let mut q = queue(1, OwnerCaps::default());
    q.take("x", "p");
    q.push("a", "p", 0, "low");
    q.push("a", "p", -5, "lowest");
    q.push("a", "p", 10, "high");
    q.push("b", "p", 10, "high-b");
    assert!(admit_all(&mut q).is_empty(), "the one slot is taken");
    q.release("x", "p");
    assert_eq!(one_at_a_time(&mut q), ["high", "high-b", "low", "lowest"]);
}

#[test]
fn within_a_priority_the_owner_with_fewer_running_jobs_goes_first() {
    let mut q = queue(4, OwnerCaps::default());
    for _ in 0..3 {
        q.take("alice", "p");
    }
    q.push("alice", "p", 0, "a1");
    q.push("bob", "p", 0, "b1");
    q.push("bob", "p", 0, "b2");
    // One slot left: bob runs none, alice three.
    assert_eq!(admit_all(&mut q), ["b1"]);
    // Bob runs one, alice two: bob again, though alice's job came first.
    q.release("alice", "p");
    assert_eq!(admit_all(&mut q), ["b2"]);
    q.release("bob", "p");
    assert_eq!(admit_all(&mut q), ["a1"]);
}

#[test]
fn owners_with_equal_running_counts_take_turns_and_each_keeps_its_arrival_order() {
    let mut q = queue(1, OwnerCaps::default());
    for job in ["a1", "a2", "a3"] {
        q.push("alice", "p", 0, job);
    }
    for job in ["b1", "b2"] {
        q.push("bob", "p", 0, job);
    }
    assert_eq!(one_at_a_time(&mut q), ["a1", "b1", "a2", "b2", "a3"]);
    assert_eq!(q.owners(), 0, "idle owners are forgotten");
}

#[test]
fn the_owner_cap_holds_back_only_that_owner_and_an_override_replaces_it() {
    let mut q = queue(10, caps(1, &[("ci", 2), ("root", 0)]));
    for job in ["a1", "a2"] {
        q.push("alice", "p", 5, job);
    }
    for job in ["c1", "c2", "c3"] {
        q.push("ci", "p", 0, job);
    }
    for job in ["r1", "r2"] {
        q.push("root", "p", 0, job);
    }
    assert_eq!(admit_all(&mut q), ["a1", "c1", "r1", "c2", "r2"]);
    assert_eq!((q.running_of("alice"), q.running_of("ci")), (1, 2));
    let standings: Vec<String> = q.standings().iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(
        standings,
        [
            "queued: 1st in line (priority 5), owner limit 1 reached",
            "queued: 2nd in line (priority 0), owner limit 2 reached",
        ]
    );
    q.release("alice", "p");
    assert_eq!(admit_all(&mut q), ["a2"]);
}

#[test]
fn the_owner_cap_applies_on_a_provider_without_a_worker_cap() {
    let mut q: Queue<&str> = Queue::new(HashMap::new(), caps(2, &[]));
    for job in ["a1", "a2", "a3"] {
        q.push("alice", "unlimited", 0, job);
    }
    q.push("bob", "unlimited", 0, "b1");
    assert_eq!(admit_all(&mut q), ["a1", "b1", "a2"]);
    q.release("alice", "unlimited");
    assert_eq!(admit_all(&mut q), ["a3"]);
}

#[test]
fn a_freed_slot_starts_the_next_job_and_a_taken_one_counts_past_the_cap() {
    let mut q = queue(1, OwnerCaps::default());
    q.take("adopted", "p");
    q.take("adopted", "p");
    q.push("alice", "p", 0, "a1");
    q.release("adopted", "p");
    assert!(admit_all(&mut q).is_empty(), "one adopted job still runs");
    q.release("adopted", "p");
    assert_eq!(admit_all(&mut q), ["a1"]);
}

#[test]
fn a_job_cancelled_while_waiting_leaves_the_line() {
    let mut q = queue(1, OwnerCaps::default());
    q.take("x", "p");
    let a1 = q.push("alice", "p", 0, "a1");
    q.push("bob", "p", 0, "b1");
    assert_eq!(q.remove(a1).map(|e| e.payload), Some("a1"));
    assert!(q.remove(a1).is_none());
    let standings: Vec<String> = q.standings().iter().map(|(s, _)| s.to_string()).collect();
    assert_eq!(
        standings,
        ["queued: 1st in line (priority 0), waiting for a free p worker slot (1 running)"]
    );
    q.release("x", "p");
    assert_eq!(one_at_a_time(&mut q), ["b1"]);
    assert_eq!(q.owners(), 0);
}

#[test]
fn only_the_front_of_a_long_line_gets_exact_places() {
    let mut q = queue(1, OwnerCaps::default());
    q.take("x", "p");
    for _ in 0..EXACT_PLACES + 5 {
        q.push("alice", "p", 0, "a");
    }
    q.push("bob", "p", 1, "b");
    let standings = q.standings();
    let text = |i: usize| standings[i].0.to_string();
    // Bob's job arrived last but has the higher priority.
    assert_eq!(
        text(EXACT_PLACES + 5),
        "queued: 1st in line (priority 1), waiting for a free p worker slot (1 running)"
    );
    assert_eq!(
        text(0),
        "queued: 2nd in line (priority 0), waiting for a free p worker slot (1 running)"
    );
    assert_eq!(standings[EXACT_PLACES - 2].0.place, Some(EXACT_PLACES));
    assert_eq!(
        text(EXACT_PLACES - 1),
        "queued: more than 100 in line (priority 0), waiting for a free p worker slot"
    );
}

#[test]
fn ordinals_read_as_english() {
    let read = |n| Ordinal(n).to_string();
    assert_eq!(
        [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 100, 101, 111].map(read),
        [
            "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "100th",
            "101st", "111th"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_slot_admits_the_next_waiting_job_and_a_dropped_wait_leaves() {
    let scheduler = Scheduler::new(HashMap::from([("p".to_owned(), 1)]), OwnerCaps::default());
    let mut first = scheduler.wait("alice", "p", 0);
    let Turn::Admitted(slot) = first.next().await else {
        panic!("a free slot admits at once");
    };
    let mut second = scheduler.wait("alice", "p", 0);
    let gone = scheduler.wait("bob", "p", 0);
    let Turn::Detail(detail) = second.next().await else {
        panic!("the slot is taken");
    };
    assert_eq!(
        detail,
        "queued: 2nd in line (priority 0), waiting for a free p worker slot (1 running)"
    );
    drop(gone);
    // The line moved: the next report waits out the interval, then says so.
    let before = Instant::now();
    let Turn::Detail(detail) = second.next().await else {
        panic!("the slot is still taken");
    };
    assert_eq!(Instant::now() - before, DETAIL_INTERVAL);
    assert!(detail.starts_with("queued: 1st in line"), "{detail}");
    drop(slot);
    let Turn::Admitted(_slot) = tokio::time::timeout(Duration::from_secs(1), second.next())
        .await
        .unwrap()
    else {
        panic!("the freed slot goes to the waiting job");
    };
}
