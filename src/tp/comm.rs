//! Communication between ranks: the [`Comm`] trait and the in-process backend [`LocalComm`]
//! (one thread per rank, shared memory).
//!
//! Every collective starts with one *exchange*: each rank deposits its contribution (or, for a
//! large all-reduce, a header naming the collective and its length), and once all have, each
//! reads all of them. The sum of an all-reduce is taken in rank order 0, 1, ...
//! (`((x0 + x1) + x2) + ...`), so all ranks get identical bits and the result never depends on
//! thread timing.
//!
//! A large all-reduce ([`LocalComm::all_reduce_sum`], at least [`CHUNKED_ALL_REDUCE_MIN`]
//! values) is a pipelined reduce-scatter + all-gather through small buffers the group keeps
//! between calls. The buffer is cut into segments (4 MiB summed over the ranks) and each segment
//! into `world_size` chunks; per segment, each rank copies the chunks it does not own into its
//! slots, sums its own chunk over all ranks (each contribution read once, in rank order, a
//! cache-sized block at a time) and copies the other ranks' summed chunks back. The slots of two
//! segments (8 MiB in all) stay in the last-level cache, so only each rank's own buffer streams
//! through memory, about once each way; the segments alternate between two slot sets, so one
//! light synchronization per segment suffices, and nothing is allocated per call.
//!
//! A contribution that does not match the others (another
//! collective, another length) makes the collective fail on every rank with
//! [`TpError::CommMismatch`]; a rank that goes away ([`LocalComm`] dropped, e.g. its thread
//! returned an error) makes every pending and later collective fail with
//! [`TpError::CommPeerGone`]; a collective that waits longer than the group's timeout fails
//! with [`TpError::CommTimeout`]. Nothing hangs.

use crate::error::{Error, Result, TpError};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
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
        if root == 0 { Ok(()) } else { Err(Error::Tp(TpError::ShardRank { rank: root, world_size: 1 })) }
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Fewest values for which [`LocalComm::all_reduce_sum`] takes the chunked reduce-scatter +
/// all-gather path (two synchronizations, shared buffers); shorter buffers are exchanged whole in
/// one synchronization. Both give the same bits.
pub const CHUNKED_ALL_REDUCE_MIN: usize = 1 << 16;

/// Values summed per step of the chunked all-reduce: the accumulator and one block of each
/// contribution stay in L1/L2 while the contributions stream through once.
const REDUCE_BLOCK: usize = 4096;

/// How long a rank waiting at a step of the chunked all-reduce busy-waits before it sleeps.
const STEP_SPIN: Duration = Duration::from_micros(200);

/// Bytes of one segment of the chunked all-reduce, summed over the ranks' buffers.
const SEGMENT_BYTES: usize = 4 << 20;

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

/// One rank's contribution to an exchange: the collective, the length of the rank's buffer, and
/// the data it sends (empty when only the header travels).
type Contribution = (Op, usize, Vec<f32>);

/// Every rank's contribution to one exchange, in rank order.
type Contributions = Arc<Vec<Contribution>>;

struct State {
    /// The exchange being collected.
    round: u64,
    slots: Vec<Option<Contribution>>,
    arrived: usize,
    /// All contributions of `round`, once complete.
    done: Option<Contributions>,
    taken: usize,
    /// A rank that left the group.
    gone: Option<usize>,
}

/// The buffers of the chunked all-reduce, kept (and only grown) between calls.
struct ReduceBuffers {
    /// `parts[set][src * world + chunk]`: rank `src`'s values of chunk `chunk` of a segment
    /// (empty for `chunk == src`: a rank sums its own chunk straight from its buffer). Written
    /// by `src` before a synchronization, read by rank `chunk` after it.
    parts: [Vec<Mutex<Vec<f32>>>; 2],
    /// `sums[set][chunk]`: a segment's reduced chunk, written by rank `chunk` before a
    /// synchronization, read by every other rank after it.
    sums: [Vec<RwLock<Vec<f32>>>; 2],
}

struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<State>,
    cv: Condvar,
    reduce: ReduceBuffers,
    /// Ranks arrived at the current step of a chunked all-reduce.
    step_arrived: AtomicUsize,
    /// Steps completed; a rank waits for it to change.
    step_generation: AtomicU64,
    /// A rank left the group (`State::gone` says which): spinning ranks stop.
    broken: AtomicBool,
    /// Whether a waiting rank may busy-wait: only when every rank can have its own core.
    spin: bool,
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
            step_arrived: AtomicUsize::new(0),
            step_generation: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            spin: std::thread::available_parallelism().is_ok_and(|n| world <= n.get()),
            reduce: ReduceBuffers {
                parts: std::array::from_fn(|_| (0..world * world).map(|_| Mutex::new(Vec::new())).collect()),
                sums: std::array::from_fn(|_| (0..world).map(|_| RwLock::new(Vec::new())).collect()),
            },
        });
        (0..world).map(|rank| LocalComm { rank, round: AtomicU64::new(0), shared: shared.clone() }).collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a rank panicked inside a collective: treat its data as usable
        // (it is only ever replaced whole) and let `gone` report the failure.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deposit `data` for this rank's next collective and return every rank's contribution.
    fn exchange(&self, op: Op, len: usize, data: Vec<f32>) -> Result<Contributions> {
        let my_round = self.round.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.shared.timeout;
        let mut st = self.lock();
        // Wait for the previous exchange to be fully read.
        while st.round != my_round {
            st = self.wait(st, deadline)?;
        }
        st.slots[self.rank] = Some((op, len, data));
        st.arrived += 1;
        if st.arrived == self.shared.world {
            let all: Vec<Contribution> =
                st.slots.iter_mut().map(|s| s.take().unwrap_or((op, 0, Vec::new()))).collect();
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
        if let Some((i, (other, _, _))) = result.iter().enumerate().find(|(_, (o, _, _))| *o != op) {
            return Err(Error::Tp(TpError::CommMismatch {
                rank: i,
                what: other.name(),
                expected: op.name(),
            }));
        }
        Ok(result)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>, deadline: Instant) -> Result<MutexGuard<'a, State>> {
        if let Some(rank) = st.gone {
            return Err(Error::Tp(TpError::CommPeerGone { rank }));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Tp(TpError::CommTimeout {
                rank: self.rank,
                millis: self.shared.timeout.as_millis() as u64,
            }));
        }
        let (st, _) = self.shared.cv.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner());
        Ok(st)
    }

    /// The synchronization between the segments of a chunked all-reduce (whose header exchange
    /// already checked that every rank is in it with the same length): a generation barrier.
    /// A waiting rank first busy-waits for up to [`STEP_SPIN`] (ranks on their own cores meet
    /// within microseconds, far sooner than a sleeping thread wakes; ranks that share cores
    /// yield instead), then sleeps on the group's condition variable, with the exchange's
    /// timeout and gone-rank errors.
    fn step(&self) -> Result<()> {
        let sh = &*self.shared;
        let generation = sh.step_generation.load(Ordering::Acquire);
        if sh.step_arrived.fetch_add(1, Ordering::AcqRel) + 1 == sh.world {
            sh.step_arrived.store(0, Ordering::Relaxed);
            sh.step_generation.fetch_add(1, Ordering::Release);
            // Under the lock, so a rank between its last check and its sleep is not missed.
            let _st = self.lock();
            sh.cv.notify_all();
            return Ok(());
        }
        let passed = || sh.step_generation.load(Ordering::Acquire) != generation;
        let start = Instant::now();
        let deadline = start + sh.timeout;
        let mut spins = 0u32;
        loop {
            if passed() {
                return Ok(());
            }
            if sh.broken.load(Ordering::Acquire) {
                let gone = self.lock().gone;
                return Err(Error::Tp(TpError::CommPeerGone { rank: gone.unwrap_or(self.rank) }));
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < STEP_SPIN {
                if sh.spin {
                    std::hint::spin_loop()
                } else {
                    std::thread::yield_now()
                }
                continue;
            }
            let st = self.lock();
            if passed() {
                return Ok(());
            }
            drop(self.wait(st, deadline)?);
        }
    }

    fn same_lengths(&self, all: &[Contribution], len: usize) -> Result<()> {
        match all.iter().position(|(_, l, _)| *l != len) {
            Some(rank) => Err(Error::Tp(TpError::CommLength { rank, expected: len, got: all[rank].1 })),
            None => Ok(()),
        }
    }

    /// The all-reduce of a large buffer: per segment, reduce-scatter then all-gather through the
    /// group's [`ReduceBuffers`] (see the module docs). Same bits as the whole-buffer exchange.
    ///
    /// Segment `k` uses buffer set `k % 2`, so one synchronization per segment suffices: after
    /// the one that ends segment `k`'s sums, a rank copies segment `k`'s sums out while the
    /// others already sum segment `k + 1` (whose parts were deposited before that
    /// synchronization) into the other set.
    fn all_reduce_chunked(&self, buf: &mut [f32]) -> Result<()> {
        let (world, len) = (self.shared.world, buf.len());
        let seg = segment_len(world);
        let segments = len.div_ceil(seg);
        let segment = |k: usize| k * seg..((k + 1) * seg).min(len);
        self.deposit(buf, segment(0), 0);
        // Every rank has deposited segment 0 and agrees on the collective and the length.
        let all = self.exchange(Op::AllReduce, len, Vec::new())?;
        self.same_lengths(&all, len)?;
        for k in 0..segments {
            self.reduce_own_chunk(buf, segment(k), k % 2);
            if k + 1 < segments {
                self.deposit(buf, segment(k + 1), (k + 1) % 2);
            }
            // Every rank's chunk of segment k is summed (and segment k + 1 deposited).
            self.step()?;
            self.gather_sums(buf, segment(k), k % 2);
        }
        Ok(())
    }

    /// Copy the chunks of `buf[seg]` that other ranks sum into this rank's parts of `set`.
    fn deposit(&self, buf: &[f32], seg: Range<usize>, set: usize) {
        let (world, me) = (self.shared.world, self.rank);
        let seg = &buf[seg];
        for c in (0..world).filter(|&c| c != me) {
            let src = &seg[chunk(seg.len(), world, c)];
            let mut part = lock_any(&self.shared.reduce.parts[set][me * world + c]);
            grow(&mut part, src.len());
            part[..src.len()].copy_from_slice(src);
        }
    }

    /// Sum this rank's chunk of `buf[seg]` over all ranks, in rank order, into `buf` and this
    /// rank's sum slot of `set`, a cache-sized block at a time.
    fn reduce_own_chunk(&self, buf: &mut [f32], seg: Range<usize>, set: usize) {
        let (world, me) = (self.shared.world, self.rank);
        let bufs = &self.shared.reduce;
        let seg = &mut buf[seg];
        let mine = chunk(seg.len(), world, me);
        let guards: Vec<Option<MutexGuard<'_, Vec<f32>>>> =
            (0..world).map(|s| (s != me).then(|| lock_any(&bufs.parts[set][s * world + me]))).collect();
        let mut sum = bufs.sums[set][me].write().unwrap_or_else(|e| e.into_inner());
        grow(&mut sum, mine.len());
        let parts: Vec<Option<&[f32]>> = guards.iter().map(|g| g.as_deref().map(Vec::as_slice)).collect();
        // Additions only: every ISA gives the same bits, so the CPU's best runs.
        crate::lanes::dispatch(
            crate::par::Parallelism::SERIAL,
            SumInRankOrder { parts: &parts, own: &mut seg[mine], sum: &mut sum },
        );
    }

    /// Copy the other ranks' summed chunks of `buf[seg]` from `set`.
    fn gather_sums(&self, buf: &mut [f32], seg: Range<usize>, set: usize) {
        let (world, me) = (self.shared.world, self.rank);
        let seg = &mut buf[seg];
        let n = seg.len();
        for c in (0..world).filter(|&c| c != me) {
            let dst = &mut seg[chunk(n, world, c)];
            let sum = self.shared.reduce.sums[set][c].read().unwrap_or_else(|e| e.into_inner());
            dst.copy_from_slice(&sum[..dst.len()]);
        }
    }
}

/// The reduce step of the chunked all-reduce, compiled for the CPU's best ISA: `own` and `sum`
/// become `parts[0] + parts[1] + ...` in rank order, where a `None` part is `own` itself.
struct SumInRankOrder<'a> {
    parts: &'a [Option<&'a [f32]>],
    own: &'a mut [f32],
    sum: &'a mut [f32],
}

impl crate::lanes::Kernel for SumInRankOrder<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) {
        let own = self.own;
        for start in (0..own.len()).step_by(REDUCE_BLOCK) {
            let end = (start + REDUCE_BLOCK).min(own.len());
            let acc = &mut self.sum[start..end];
            for (s, part) in self.parts.iter().enumerate() {
                let src = match part {
                    Some(p) => &p[start..end],
                    None => &own[start..end],
                };
                if s == 0 {
                    acc.copy_from_slice(src);
                } else {
                    for (a, &x) in acc.iter_mut().zip(src) {
                        *a += x;
                    }
                }
            }
            own[start..end].copy_from_slice(acc);
        }
    }
}

/// Values of a rank's buffer in one segment of the chunked all-reduce. The group's slots hold two
/// segments of every rank (`2 * SEGMENT_BYTES` in all, whatever the world size), small enough to
/// stay in the last-level cache, so a part crosses between cores there instead of through
/// memory, and only the ranks' own buffers stream from and to memory.
fn segment_len(world: usize) -> usize {
    (SEGMENT_BYTES / 4 / world.max(1)).max(REDUCE_BLOCK)
}

/// Chunk `c` of `world` of a segment of `len` values.
fn chunk(len: usize, world: usize, c: usize) -> Range<usize> {
    c * len / world..(c + 1) * len / world
}

/// Make `v` at least `len` long (slots only grow, so a repeated size writes no zeros).
fn grow(v: &mut Vec<f32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0.0);
    }
}

/// Lock a mutex whose holder may have panicked: the buffers it guards are plain values that are
/// overwritten whole before they are read, and a rank that panicked is reported by `gone`.
fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        let mut st = self.lock();
        if st.gone.is_none() {
            st.gone = Some(self.rank);
        }
        self.shared.broken.store(true, Ordering::Release);
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
        if self.shared.world > 1 && buf.len() >= CHUNKED_ALL_REDUCE_MIN {
            return self.all_reduce_chunked(buf);
        }
        // Small buffers: one exchange of whole buffers. A rank whose length took the other path
        // still meets this exchange with the same op, and the length check fails on all ranks.
        let all = self.exchange(Op::AllReduce, buf.len(), buf.to_vec())?;
        self.same_lengths(&all, buf.len())?;
        let (first, rest) = all.split_first().map_or((&[][..], &[][..]), |(f, r)| (&f.2[..], r));
        buf.copy_from_slice(first);
        for (_, _, v) in rest {
            for (b, &x) in buf.iter_mut().zip(v) {
                *b += x;
            }
        }
        Ok(())
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let all = self.exchange(Op::AllGather, local.len(), local.to_vec())?;
        Ok(all.iter().flat_map(|(_, _, v)| v.iter().copied()).collect())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.shared.world {
            return Err(Error::Tp(TpError::ShardRank { rank: root, world_size: self.shared.world }));
        }
        let mine = if self.rank == root { buf.to_vec() } else { Vec::new() };
        let all = self.exchange(Op::Broadcast(root), buf.len(), mine)?;
        self.same_lengths(&all, buf.len())?;
        buf.copy_from_slice(&all[root].2);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.exchange(Op::Barrier, 0, Vec::new()).map(|_| ())
    }
}
