//! Communication between ranks: the [`Comm`] trait and the in-process backend [`LocalComm`]
//! (one thread per rank, shared memory).
//!
//! Every collective is one *exchange*: each rank deposits its contribution, and once all have,
//! each reads all of them. The sum of an all-reduce is then taken in rank order 0, 1, ...
//! (`((x0 + x1) + x2) + ...`) by every rank, so all ranks get identical bits and the result
//! never depends on thread timing. A contribution that does not match the others (another
//! collective, another length) makes the collective fail on every rank with
//! [`Error::CommMismatch`]; a rank that goes away ([`LocalComm`] dropped, e.g. its thread
//! returned an error) makes every pending and later collective fail with
//! [`Error::CommPeerGone`]; a collective that waits longer than the group's timeout fails
//! with [`Error::CommTimeout`]. Nothing hangs.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What ranks need from each other; layers use it without knowing the backend.
pub trait Comm: Send + Sync {
    /// This rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Replace `buf` by the element-wise sum of every rank's `buf` (same length on all ranks).
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Every rank's `local`, concatenated in rank order (lengths may differ).
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// Replace `buf` by rank `root`'s `buf` (same length on all ranks).
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Return once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// A world of one: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleComm;

impl Comm for SingleComm {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn broadcast(&self, _: &mut [f32], root: usize) -> Result<()> {
        if root == 0 { Ok(()) } else { Err(Error::ShardRank { rank: root, world_size: 1 }) }
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Which collective a contribution belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    AllReduce,
    AllGather,
    Broadcast(usize),
    Barrier,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::AllReduce => "all_reduce_sum",
            Op::AllGather => "all_gather",
            Op::Broadcast(_) => "broadcast",
            Op::Barrier => "barrier",
        }
    }
}

/// Every rank's contribution to one exchange, in rank order.
type Contributions = Arc<Vec<(Op, Vec<f32>)>>;

struct State {
    /// The exchange being collected.
    round: u64,
    slots: Vec<Option<(Op, Vec<f32>)>>,
    arrived: usize,
    /// All contributions of `round`, once complete.
    done: Option<Contributions>,
    taken: usize,
    /// A rank that left the group.
    gone: Option<usize>,
}

struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<State>,
    cv: Condvar,
}

/// One rank of an in-process group (see the module docs). Create all ranks with
/// [`LocalComm::group`] and move each to its own thread.
///
/// ```
/// use quant_kernels::tp::{Comm, LocalComm};
/// let ranks = LocalComm::group(3);
/// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
///     let hs: Vec<_> = ranks.into_iter().map(|c| s.spawn(move || {
///         let mut v = vec![c.rank() as f32, 1.0];
///         c.all_reduce_sum(&mut v).map(|_| v)
///     })).collect();
///     hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
/// });
/// assert_eq!(sums, vec![vec![3.0, 3.0]; 3]); // 0 + 1 + 2, 1 + 1 + 1
/// ```
pub struct LocalComm {
    rank: usize,
    /// This rank's next exchange (a rank's collectives are issued in program order).
    round: AtomicU64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalComm").field("rank", &self.rank).field("world_size", &self.shared.world).finish()
    }
}

impl LocalComm {
    /// The ranks of a new group of `world_size` (at least 1), with a 60 s timeout.
    pub fn group(world_size: usize) -> Vec<LocalComm> {
        Self::group_with_timeout(world_size, Duration::from_secs(60))
    }

    /// [`LocalComm::group`] with a chosen timeout per collective.
    pub fn group_with_timeout(world_size: usize, timeout: Duration) -> Vec<LocalComm> {
        let world = world_size.max(1);
        let shared = Arc::new(Shared {
            world,
            timeout,
            state: Mutex::new(State {
                round: 0,
                slots: (0..world).map(|_| None).collect(),
                arrived: 0,
                done: None,
                taken: 0,
                gone: None,
            }),
            cv: Condvar::new(),
        });
        (0..world).map(|rank| LocalComm { rank, round: AtomicU64::new(0), shared: shared.clone() }).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a rank panicked inside a collective: treat its data as usable
        // (it is only ever replaced whole) and let `gone` report the failure.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deposit `data` for this rank's next collective and return every rank's contribution.
    fn exchange(&self, op: Op, data: Vec<f32>) -> Result<Contributions> {
        let my_round = self.round.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.shared.timeout;
        let mut st = self.lock();
        // Wait for the previous exchange to be fully read.
        while st.round != my_round {
            st = self.wait(st, deadline)?;
        }
        st.slots[self.rank] = Some((op, data));
        st.arrived += 1;
        if st.arrived == self.shared.world {
            let all: Vec<(Op, Vec<f32>)> =
                st.slots.iter_mut().map(|s| s.take().unwrap_or((op, Vec::new()))).collect();
            st.done = Some(Arc::new(all));
            self.shared.cv.notify_all();
        }
        let result = loop {
            if let Some(done) = &st.done {
                break done.clone();
            }
            st = self.wait(st, deadline)?;
        };
        st.taken += 1;
        if st.taken == self.shared.world {
            st.done = None;
            st.arrived = 0;
            st.taken = 0;
            st.round += 1;
            self.shared.cv.notify_all();
        }
        drop(st);
        // Every rank checks the same contributions, so all fail or none does.
        if let Some((i, (other, _))) = result.iter().enumerate().find(|(_, (o, _))| *o != op) {
            return Err(Error::CommMismatch { rank: i, what: other.name(), expected: op.name() });
        }
        Ok(result)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>, deadline: Instant) -> Result<MutexGuard<'a, State>> {
        if let Some(rank) = st.gone {
            return Err(Error::CommPeerGone { rank });
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::CommTimeout {
                rank: self.rank,
                millis: self.shared.timeout.as_millis() as u64,
            });
        }
        let (st, _) = self.shared.cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner());
        Ok(st)
    }

    fn same_lengths(&self, all: &[(Op, Vec<f32>)], len: usize) -> Result<()> {
        match all.iter().position(|(_, v)| v.len() != len) {
            Some(rank) => Err(Error::CommLength { rank, expected: len, got: all[rank].1.len() }),
            None => Ok(()),
        }
    }
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        let mut st = self.lock();
        if st.gone.is_none() {
            st.gone = Some(self.rank);
        }
        self.shared.cv.notify_all();
    }
}

impl Comm for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let all = self.exchange(Op::AllReduce, buf.to_vec())?;
        self.same_lengths(&all, buf.len())?;
        let (first, rest) = all.split_first().map_or((&[][..], &[][..]), |(f, r)| (&f.1[..], r));
        buf.copy_from_slice(first);
        for (_, v) in rest {
            for (b, &x) in buf.iter_mut().zip(v) {
                *b += x;
            }
        }
        Ok(())
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let all = self.exchange(Op::AllGather, local.to_vec())?;
        Ok(all.iter().flat_map(|(_, v)| v.iter().copied()).collect())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.shared.world {
            return Err(Error::ShardRank { rank: root, world_size: self.shared.world });
        }
        let mine = if self.rank == root { buf.to_vec() } else { vec![0.0; buf.len()] };
        let all = self.exchange(Op::Broadcast(root), mine)?;
        self.same_lengths(&all, buf.len())?;
        buf.copy_from_slice(&all[root].1);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.exchange(Op::Barrier, Vec::new()).map(|_| ())
    }
}
