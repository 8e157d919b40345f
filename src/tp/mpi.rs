//! The MPI backend of [`Comm`]: one rank per MPI process, launched by `mpirun -np N`.
//!
//! Every collective starts with the same *header* exchange: an `MPI_Allgather` of
//! `[collective, length, root, chunk]` from every rank. Each rank then checks all headers
//! before moving any data, so a rank that called another collective, passed another length
//! (all-reduce, broadcast) or another root, or named a root outside the world makes the
//! collective fail on **every** rank with the same kind of [`Error`] (and leaves the ranks in
//! step, so later collectives work). Without this, mismatched MPI collectives are undefined
//! behaviour in MPI: a hang, garbage or an abort.
//!
//! The sum of [`Comm::all_reduce_sum`] is *not* `MPI_Allreduce`: MPI leaves the order in which
//! a built-in `SUM` adds the ranks' values to the implementation (it may depend on the world
//! size, the message size and the algorithm chosen at run time), and float addition is not
//! associative. Instead every rank all-gathers the buffers and adds them in rank order,
//! `((x0 + x1) + x2) + ...`, exactly like [`super::LocalComm`]: all ranks get identical bits,
//! the same bits as the in-process backend, on every run.
//!
//! Messages are split into chunks of at most [`MpiComm::with_max_chunk`] values per rank (the
//! smallest any rank asked for), which bounds the all-reduce's scratch memory to
//! `world_size × chunk` values and keeps every MPI count within its 32-bit `int`.
//!
//! What this backend cannot turn into an [`Error`]: MPI's own failures (a process that dies,
//! a broken network) go to MPI's default error handler, which aborts the whole job, and a rank
//! that never calls a collective the others are in leaves them waiting (run under
//! `mpirun --timeout`, or end a failing rank with [`MpiComm::abort`]).

use super::Comm;
use crate::error::{Error, KernelError, Result, TpError};
use ::mpi::Count;
use ::mpi::datatype::PartitionMut;
use ::mpi::environment::{Threading, Universe};
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator, CommunicatorCollectives, Root};
use std::sync::{Mutex, MutexGuard};

/// Default [`MpiComm::with_max_chunk`]: 4 Mi values (16 MiB of `f32`) per rank per message.
pub const DEFAULT_MAX_CHUNK: usize = 1 << 22;

/// Collective codes of the header exchange.
const ALL_REDUCE: u64 = 1;
const ALL_GATHER: u64 = 2;
const BROADCAST: u64 = 3;
const BARRIER: u64 = 4;
/// Values per header: collective, length, root, chunk.
const HEADER: usize = 4;

fn op_name(op: u64) -> &'static str {
    match op {
        ALL_REDUCE => "all_reduce_sum",
        ALL_GATHER => "all_gather",
        BROADCAST => "broadcast",
        BARRIER => "barrier",
        _ => "an unknown collective",
    }
}

/// `usize` as a header value (lossless on every platform Rust supports, `usize` ≤ 64 bits).
fn wide(v: usize) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A header value back as `usize` (saturating on 32-bit targets; such a length could not be
/// allocated there anyway).
fn narrow(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// An MPI count (callers keep every count within `i32::MAX` by chunking).
fn count(v: usize) -> Count {
    Count::try_from(v).unwrap_or(Count::MAX)
}

/// One rank of `MPI_COMM_WORLD` as a [`Comm`] (see the module docs).
///
/// Create it once per process, on every rank, with [`MpiComm::init`] (which initializes MPI)
/// or [`MpiComm::new`] (from the [`Universe`] of `mpi::initialize()`). It owns the universe:
/// dropping the `MpiComm` finalizes MPI, after which no MPI call works in this process.
///
/// ```no_run
/// use quant_kernels::tp::{Comm, MpiComm};
/// let comm = MpiComm::init()?; // once per process, on every rank
/// let mut v = vec![comm.rank() as f32; 4];
/// comm.all_reduce_sum(&mut v)?; // 0 + 1 + ... + (N - 1) in every element, on every rank
/// println!("rank {}/{}: {v:?}", comm.rank(), comm.world_size());
/// # Ok::<(), quant_kernels::Error>(())
/// ```
///
/// Collectives may be called from any thread; they are serialized by a lock inside (the
/// universe of [`MpiComm::init`] is initialized with `MPI_THREAD_SERIALIZED`; one from
/// `mpi::initialize()` is `MPI_THREAD_SINGLE`, so call it from the initializing thread only).
/// As with any backend, every rank must issue the same collectives in the same order.
///
/// Only the world communicator is supported: rsmpi's handles of other communicators are not
/// `Send`/`Sync`, which [`Comm`] requires, and this crate has no `unsafe` to assert them.
pub struct MpiComm {
    universe: Universe,
    threading: Threading,
    rank: usize,
    world_size: usize,
    max_chunk: usize,
    /// Held for the whole of each collective: MPI calls never overlap.
    lock: Mutex<()>,
}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("threading", &self.threading)
            .field("max_chunk", &self.max_chunk)
            .finish()
    }
}

impl MpiComm {
    /// Initialize MPI (requesting `MPI_THREAD_SERIALIZED`) and wrap its world communicator.
    ///
    /// Call it once per process: MPI can be initialized only once, so a second call (or one
    /// after `mpi::initialize()`) returns [`TpError::MpiInitialized`].
    pub fn init() -> Result<Self> {
        let (universe, threading) = ::mpi::initialize_with_threading(Threading::Serialized)
            .ok_or(Error::Tp(TpError::MpiInitialized))?;
        Ok(Self::with_threading(universe, threading))
    }

    /// Wrap the world communicator of `universe`, the value `mpi::initialize()` returns (once
    /// per process; it returns `None` after that). The `MpiComm` keeps the universe, so MPI
    /// stays initialized until it is dropped.
    pub fn new(universe: Universe) -> Self {
        Self::with_threading(universe, ::mpi::environment::threading_support())
    }

    fn with_threading(universe: Universe, threading: Threading) -> Self {
        let world = universe.world();
        // MPI ranks and sizes are non-negative `int`s.
        let rank = usize::try_from(world.rank()).unwrap_or(0);
        let world_size = usize::try_from(world.size()).unwrap_or(1).max(1);
        Self { universe, threading, rank, world_size, max_chunk: DEFAULT_MAX_CHUNK, lock: Mutex::new(()) }
    }

    /// At most `values` values (at least 1) per rank in one MPI message; default
    /// [`DEFAULT_MAX_CHUNK`]. Ranks may differ: each collective uses the smallest. Results do
    /// not depend on it (the sum is element-wise).
    pub fn with_max_chunk(mut self, values: usize) -> Self {
        self.max_chunk = values.max(1);
        self
    }

    /// The universe (MPI stays initialized while this `MpiComm` lives).
    pub fn universe(&self) -> &Universe {
        &self.universe
    }

    /// The thread support MPI provided.
    pub fn threading(&self) -> Threading {
        self.threading
    }

    /// End every process of the job with `code` (`MPI_Abort`): the way out for a rank that
    /// fails outside a collective while the others may be waiting in one. It does not take the
    /// collectives' lock, so it works while another thread of this process waits in one.
    pub fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data; a panic elsewhere leaves nothing inconsistent.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Exchange this rank's header; return every rank's `[op, len, root, chunk]` after
    /// checking that all ranks called `op` (and, for a broadcast, one valid root).
    fn headers(
        &self,
        world: &SimpleCommunicator,
        op: u64,
        len: usize,
        root: usize,
    ) -> Result<Vec<[u64; HEADER]>> {
        let mine = [op, wide(len), wide(root), wide(self.max_chunk)];
        let mut all = vec![0u64; HEADER * self.world_size];
        world.all_gather_into(&mine[..], &mut all[..]);
        let headers: Vec<[u64; HEADER]> =
            all.chunks_exact(HEADER).map(|h| [h[0], h[1], h[2], h[3]]).collect();
        // Every rank runs the same checks on the same headers: all fail, or none does.
        if let Some(rank) = headers.iter().position(|h| h[0] != op) {
            return Err(Error::Tp(TpError::CommMismatch {
                rank,
                what: op_name(headers[rank][0]),
                expected: op_name(op),
            }));
        }
        if op == BROADCAST {
            if let Some(h) = headers.iter().find(|h| narrow(h[2]) >= self.world_size) {
                return Err(Error::Tp(TpError::ShardRank {
                    rank: narrow(h[2]),
                    world_size: self.world_size,
                }));
            }
            if let Some(rank) = headers.iter().position(|h| h[2] != wide(root)) {
                return Err(Error::Tp(TpError::CommMismatch {
                    rank,
                    what: "broadcast",
                    expected: "broadcast",
                }));
            }
        }
        Ok(headers)
    }

    /// Error unless every rank passed `len` values.
    fn same_lengths(&self, headers: &[[u64; HEADER]], len: usize) -> Result<()> {
        match headers.iter().position(|h| h[1] != wide(len)) {
            Some(rank) => {
                Err(Error::Tp(TpError::CommLength { rank, expected: len, got: narrow(headers[rank][1]) }))
            }
            None => Ok(()),
        }
    }

    /// Values per rank per message: the smallest any rank asked for, and small enough that a
    /// whole gathered chunk (`world_size ×` it) is a valid MPI count.
    fn chunk(&self, headers: &[[u64; HEADER]]) -> usize {
        let asked = headers.iter().map(|h| narrow(h[3])).min().unwrap_or(DEFAULT_MAX_CHUNK);
        let limit = usize::try_from(Count::MAX).unwrap_or(usize::MAX) / self.world_size;
        asked.min(limit).max(1)
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    /// All-gather, then the rank-order sum on every rank (see the module docs for why not
    /// `MPI_Allreduce`).
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let _guard = self.lock();
        let world = SimpleCommunicator::world();
        let headers = self.headers(&world, ALL_REDUCE, buf.len(), 0)?;
        self.same_lengths(&headers, buf.len())?;
        let chunk = self.chunk(&headers);
        let mut gathered = vec![0.0f32; chunk.min(buf.len()) * self.world_size];
        for part in buf.chunks_mut(chunk) {
            let n = part.len();
            let all = &mut gathered[..n * self.world_size];
            world.all_gather_into(&*part, &mut *all);
            let (first, rest) = all.split_at(n);
            part.copy_from_slice(first);
            for other in rest.chunks_exact(n) {
                for (b, &x) in part.iter_mut().zip(other) {
                    *b += x;
                }
            }
        }
        Ok(())
    }

    /// Lengths from the header, then `MPI_Allgatherv` (in rounds of at most one chunk per
    /// rank).
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let _guard = self.lock();
        let world = SimpleCommunicator::world();
        let headers = self.headers(&world, ALL_GATHER, local.len(), 0)?;
        let lens: Vec<usize> = headers.iter().map(|h| narrow(h[1])).collect();
        let total = lens
            .iter()
            .try_fold(0usize, |t, &l| t.checked_add(l))
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: self.world_size, cols: local.len() }))?;
        let starts: Vec<usize> = lens.iter().scan(0, |s, &l| Some(std::mem::replace(s, *s + l))).collect();
        let mut out = vec![0.0f32; total];
        let chunk = self.chunk(&headers);
        let longest = lens.iter().copied().max().unwrap_or(0);
        let mut scratch = Vec::new();
        for from in (0..longest).step_by(chunk) {
            // This round: values from..from + chunk of every rank (fewer, or none, near its end).
            let counts: Vec<usize> = lens.iter().map(|&l| l.saturating_sub(from).min(chunk)).collect();
            let displs: Vec<usize> =
                counts.iter().scan(0, |s, &c| Some(std::mem::replace(s, *s + c))).collect();
            scratch.resize(counts.iter().sum(), 0.0f32);
            let send = &local[from.min(local.len())..][..counts[self.rank]];
            {
                let c: Vec<Count> = counts.iter().map(|&c| count(c)).collect();
                let d: Vec<Count> = displs.iter().map(|&d| count(d)).collect();
                let mut recv = PartitionMut::new(&mut scratch[..], c, d);
                world.all_gather_varcount_into(send, &mut recv);
            }
            for r in (0..self.world_size).filter(|&r| counts[r] > 0) {
                // counts[r] > 0: from < lens[r], so rank r's values from.. are inside `out`.
                let at = starts[r] + from;
                out[at..at + counts[r]].copy_from_slice(&scratch[displs[r]..displs[r] + counts[r]]);
            }
        }
        Ok(out)
    }

    /// Header check, then `MPI_Bcast` from `root` (chunked).
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let _guard = self.lock();
        let world = SimpleCommunicator::world();
        // A root outside the world is still exchanged (as the header's root), so every rank
        // reports it, not only the ranks that passed it.
        let headers = self.headers(&world, BROADCAST, buf.len(), root)?;
        self.same_lengths(&headers, buf.len())?;
        let chunk = self.chunk(&headers);
        let process = world.process_at_rank(count(root));
        for part in buf.chunks_mut(chunk) {
            process.broadcast_into(part);
        }
        Ok(())
    }

    /// The header exchange alone: an `MPI_Allgather` returns on no rank before every rank has
    /// contributed, so it is a barrier.
    fn barrier(&self) -> Result<()> {
        let _guard = self.lock();
        let world = SimpleCommunicator::world();
        self.headers(&world, BARRIER, 0, 0).map(|_| ())
    }
}
