//! Batched execution: the model calls of concurrent sequences, packed into one forward
//! (docs/batching.md).
//!
//! Each sequence runs its own async code (a question's whole run, or one generation) and asks for
//! model calls through [`Calls`]. Under [`Batch::run_all`], a call queues instead of running: once
//! every sequence waits on a call (or is done), the calls made to the same model run as one
//! [`Model::forward_packed`] / one LM-head product, and each sequence resumes with its own rows.
//! Sequences in different stages (one in its prompt, another decoding) pack together; a finished
//! sequence simply stops asking, so it leaves the batch at no cost.

use std::cell::{Cell, OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use burn::tensor::Tensor;

use crate::RmasBackend;
use crate::error::{ModelError, Result};
use crate::generate::{Choices, ReadBack, Sampler, Sampling};
use crate::model::{Cache, Model};
use crate::nn::{cat_rows, split_rows};

/// Where a sequence's model calls run: alone, or packed with other sequences' calls.
pub enum Calls<'b, B: RmasBackend> {
    /// Each call runs at once, by itself.
    Alone,
    /// Calls queue in this batch and run packed with the other sequences' calls.
    Packed(&'b Batch<B>),
}

impl<B: RmasBackend> Clone for Calls<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: RmasBackend> Copy for Calls<'_, B> {}

impl<B: RmasBackend> Calls<'_, B> {
    /// [`Model::forward`]: `x` `[T, H]` after `cache`; final-norm hidden states `[T, H]`.
    pub async fn forward(self, model: &Model<B>, x: Tensor<B, 2>, cache: &mut Cache<B>) -> Result<Tensor<B, 2>> {
        self.forward_input(model, Input::Rows(x), cache).await
    }

    /// [`Self::forward`] of token ids `[T]`, embedded by the model: packed, the ids of every
    /// sequence are embedded together (one upload, one gather).
    pub async fn forward_tokens(self, model: &Model<B>, ids: &[u32], cache: &mut Cache<B>) -> Result<Tensor<B, 2>> {
        self.forward_input(model, Input::Tokens(ids.to_vec()), cache).await
    }

    async fn forward_input(self, model: &Model<B>, x: Input<B>, cache: &mut Cache<B>) -> Result<Tensor<B, 2>> {
        match self {
            Self::Alone => model.forward(x.rows(model)?, cache),
            Self::Packed(batch) => {
                let reply = Slot::default();
                batch.submit(model, Op::Forward { x, cache: std::mem::take(cache), reply: reply.clone() });
                let (out, back) = batch.wait(model, &reply).await;
                *cache = back;
                out
            }
        }
    }

    /// [`Model::logits`] of hidden states `[T, H]`: `[T, V]`.
    pub async fn logits(self, model: &Model<B>, h: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        match self {
            Self::Alone => Ok(model.logits(h)),
            Self::Packed(batch) => {
                let reply = Slot::default();
                batch.submit(model, Op::Logits { h, reply: reply.clone() });
                batch.wait(model, &reply).await
            }
        }
    }

    /// A decode step: [`Self::forward_tokens`] of `id` after `cache`, then the token `sampler`
    /// chooses from its row's logits. Packed, the steps that choose the same way are adjacent rows
    /// of the forward, which go to one LM-head product as they are (no copy per sequence), with
    /// one host read-back (docs/batching.md, "Packed read-backs").
    pub async fn step(self, model: &Model<B>, id: u32, cache: &mut Cache<B>, sampler: &mut Sampler) -> Result<u32> {
        match self {
            Self::Alone => {
                let h = self.forward_tokens(model, &[id], cache).await?; // [1, H]
                sampler.sample(model.logits(h)).await
            }
            Self::Packed(batch) => {
                let (reply, sampling) = (Slot::default(), sampler.sampling());
                batch.submit(model, Op::Step { id, cache: std::mem::take(cache), sampling, reply: reply.clone() });
                let (read, back) = batch.wait(model, &reply).await;
                *cache = back;
                let (read, row) = read?;
                sampler.choose(read.get().await?, row)
            }
        }
    }
}

/// Counts of a batch's packed calls (what packing saved: `sequences / calls` per call).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Packed model calls run (forwards and LM-head products).
    pub calls: usize,
    /// Sequence calls they served.
    pub sequences: usize,
}

/// One sequence's work under a [`Batch`]: a future that makes its model calls through [`Calls::Packed`].
pub type Sequence<'f, T> = Pin<Box<dyn Future<Output = T> + 'f>>;

/// Queued model calls of concurrent sequences (see the module docs).
pub struct Batch<B: RmasBackend> {
    /// Calls made since the last flush began.
    queue: RefCell<Vec<Request<B>>>,
    /// Calls being flushed: each model's calls run when the first of its sequences is polled.
    ready: RefCell<Vec<Request<B>>>,
    stats: Cell<BatchStats>,
}

/// One sequence's queued call; `model` is the model's address, which names it while the call waits.
struct Request<B: RmasBackend> {
    model: usize,
    op: Op<B>,
}

/// Where a call's result goes: the waiting sequence takes it from there.
type Slot<T> = Rc<RefCell<Option<T>>>;

/// A queued call with its reply slot; a forward or a step gets its cache back whatever the result.
enum Op<B: RmasBackend> {
    Forward { x: Input<B>, cache: Cache<B>, reply: Slot<Forwarded<B>> },
    Logits { h: Tensor<B, 2>, reply: Slot<Result<Tensor<B, 2>>> },
    Step { id: u32, cache: Cache<B>, sampling: Sampling, reply: StepSlot<B> },
}

/// A step's token: the read-back its group shares, and its row there.
type TokenRow = (Rc<SharedRead>, usize);
/// Where a step's token (or why it failed) goes, with its cache.
type StepSlot<B> = Slot<(Result<TokenRow>, Cache<B>)>;
/// A forward's rows `[T, H]` (or why it failed), with its cache back.
type Forwarded<B> = (Result<Tensor<B, 2>>, Cache<B>);

/// A forward's input: embedded rows, or token ids the model embeds.
enum Input<B: RmasBackend> {
    Rows(Tensor<B, 2>),
    Tokens(Vec<u32>),
}

impl<B: RmasBackend> Input<B> {
    /// The rows `[T, H]`.
    fn rows(self, model: &Model<B>) -> Result<Tensor<B, 2>> {
        match self {
            Self::Rows(x) => Ok(x),
            Self::Tokens(ids) => model.embed(&ids),
        }
    }

    /// Its number of rows.
    fn len(&self) -> usize {
        match self {
            Self::Rows(x) => x.dims()[0],
            Self::Tokens(ids) => ids.len(),
        }
    }
}

/// One host read-back that the sequences of a packed call share: whichever polls it first drives
/// it, and each then takes its own row.
pub(crate) struct SharedRead {
    /// Polled until `done` is set, never after.
    read: RefCell<ReadBack>,
    done: OnceCell<std::result::Result<Choices, String>>,
}

impl SharedRead {
    fn new(read: ReadBack) -> Rc<Self> {
        Rc::new(Self { read: RefCell::new(read), done: OnceCell::new() })
    }

    /// The values read, once the read is done (a device error for every sequence if it failed).
    async fn get(&self) -> Result<&Choices> {
        std::future::poll_fn(|cx| {
            let done = match self.done.get() {
                Some(done) => done,
                None => match self.read.borrow_mut().as_mut().poll(cx) {
                    Poll::Ready(result) => self.done.get_or_init(|| result.map_err(|e| e.to_string())),
                    Poll::Pending => return Poll::Pending,
                },
            };
            Poll::Ready(done.as_ref().map_err(|e| ModelError::Device(e.clone())))
        })
        .await
    }
}

impl<B: RmasBackend> Default for Batch<B> {
    fn default() -> Self {
        Self { queue: RefCell::default(), ready: RefCell::default(), stats: Cell::default() }
    }
}

fn key<B: RmasBackend>(model: &Model<B>) -> usize {
    model as *const Model<B> as usize
}

impl<B: RmasBackend> Batch<B> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The packed calls run so far.
    pub fn stats(&self) -> BatchStats {
        self.stats.get()
    }

    /// Drives `sequences` to completion together, packing their calls; outputs in input order.
    pub fn run_all<'f, T>(&self, sequences: Vec<Sequence<'f, T>>) -> Vec<T> {
        let mut outputs: Vec<Option<T>> = sequences.iter().map(|_| None).collect();
        let done = self.run_queue(usize::MAX, sequences, |i, value| {
            outputs[i] = Some(value);
            std::ops::ControlFlow::<()>::Continue(())
        });
        debug_assert!(done.is_continue());
        outputs.into_iter().map(|o| o.expect("every sequence finished")).collect()
    }

    /// Continuous batching: keeps up to `width` of `sequences` running together, starting the next
    /// as one finishes, and hands each output to `done` with the sequence's index as it comes.
    /// `done` breaking stops everything (the running sequences are dropped) and returns its value.
    /// Natively only: a sequence waiting on anything but this batch is polled again in a loop.
    pub fn run_queue<'f, T, E>(
        &self,
        width: usize,
        sequences: impl IntoIterator<Item = Sequence<'f, T>>,
        done: impl FnMut(usize, T) -> std::ops::ControlFlow<E>,
    ) -> std::ops::ControlFlow<E> {
        let mut pending = sequences.into_iter().fuse();
        self.run_source(width, |_| pending.next(), done)
    }

    /// [`Self::run_queue`] over sequences that arrive while others run (a server's requests):
    /// `next(idle)` gives the next sequence to start, or `None` when none is there now. It is asked
    /// whenever a place is free, between packed calls; with `idle` (nothing running) it may wait
    /// for one, and `None` then ends the run. Indices count the sequences in the order they came.
    pub fn run_source<'f, T, E>(
        &self,
        width: usize,
        mut next: impl FnMut(bool) -> Option<Sequence<'f, T>>,
        mut done: impl FnMut(usize, T) -> std::ops::ControlFlow<E>,
    ) -> std::ops::ControlFlow<E> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut started = 0;
        let mut live: Vec<(usize, Sequence<'f, T>)> = Vec::new();
        let outcome = loop {
            while live.len() < width.max(1) {
                let Some(sequence) = next(live.is_empty()) else { break };
                live.push((started, sequence));
                started += 1;
            }
            if live.is_empty() {
                break std::ops::ControlFlow::Continue(());
            }
            let mut finished = Vec::new();
            for (slot, (i, fut)) in live.iter_mut().enumerate() {
                if let Poll::Ready(value) = fut.as_mut().poll(&mut cx) {
                    finished.push((slot, *i, value));
                }
            }
            debug_assert!(self.ready.borrow().is_empty(), "a waiting sequence flushes its model's calls");
            let progressed = !finished.is_empty();
            let mut stop = None;
            for (slot, i, value) in finished.into_iter().rev() {
                drop(live.swap_remove(slot));
                if let std::ops::ControlFlow::Break(e) = done(i, value) {
                    stop = Some(e);
                }
            }
            if let Some(e) = stop {
                break std::ops::ControlFlow::Break(e);
            }
            // Flush once every live sequence waits on a call: those still reading back (on a GPU,
            // a sampled token) would otherwise miss the pack and fall out of step. After a sequence
            // finished, the next round first starts and polls its successor.
            if progressed {
                continue;
            }
            if self.queue.borrow().len() == live.len() {
                *self.ready.borrow_mut() = std::mem::take(&mut *self.queue.borrow_mut());
            } else {
                std::thread::yield_now(); // a sequence waits on the device (a read-back), not on a call
            }
        };
        drop(live);
        self.queue.borrow_mut().clear();
        self.ready.borrow_mut().clear();
        outcome
    }

    fn submit(&self, model: &Model<B>, op: Op<B>) {
        self.queue.borrow_mut().push(Request { model: key(model), op });
    }

    /// Waits for `reply`; when the calls are being flushed, the first waiting sequence of a model
    /// runs all of that model's calls (it holds the model, which they share).
    async fn wait<T>(&self, model: &Model<B>, reply: &RefCell<Option<T>>) -> T {
        loop {
            if let Some(r) = reply.borrow_mut().take() {
                return r;
            }
            if self.ready.borrow().iter().any(|r| r.model == key(model)) {
                self.flush(model);
            } else {
                YieldOnce(false).await;
            }
        }
    }

    /// Runs the ready calls to `model`: one packed forward of its forwards and steps (the steps
    /// first, grouped by how they choose), one LM-head product for the calls that want logits, and
    /// one product and read-back per group of steps.
    fn flush(&self, model: &Model<B>) {
        let (mine, rest) =
            std::mem::take(&mut *self.ready.borrow_mut()).into_iter().partition(|r| r.model == key(model));
        *self.ready.borrow_mut() = rest;
        let (mut forwards, mut heads, mut steps) = (Vec::new(), Vec::new(), Vec::<(Sampling, Vec<_>)>::new());
        for Request { op, .. } in mine {
            match op {
                Op::Forward { x, cache, reply } => forwards.push((x, cache, reply)),
                Op::Logits { h, reply } => heads.push((h, reply)),
                Op::Step { id, cache, sampling, reply } => match steps.iter_mut().find(|(s, _)| *s == sampling) {
                    Some((_, group)) => group.push((id, cache, reply)),
                    None => steps.push((sampling, vec![(id, cache, reply)])),
                },
            }
        }
        let mut stats = self.stats.get();
        let mut count = |n: usize| {
            stats.calls += 1;
            stats.sequences += n;
        };
        let stepped = steps.iter().map(|(_, group)| group.len()).sum::<usize>();
        if stepped + forwards.len() > 0 {
            count(stepped + forwards.len());
            // One row each, the steps are the pack's first rows, a group's rows side by side.
            let (mut calls, mut groups) = (Vec::new(), Vec::new());
            for (sampling, group) in steps {
                count(group.len());
                let replies = group.into_iter().map(|(id, cache, reply)| {
                    calls.push((Input::Tokens(vec![id]), cache));
                    reply
                });
                groups.push((sampling, replies.collect::<Vec<_>>()));
            }
            let mut forward_replies = Vec::new();
            for (x, cache, reply) in forwards {
                calls.push((x, cache));
                forward_replies.push(reply);
            }
            let (packed, mut outs) = forward_pack(model, calls);
            for ((out, cache), reply) in outs.split_off(stepped).into_iter().zip(forward_replies) {
                *reply.borrow_mut() = Some((out, cache));
            }
            choose_tokens(model, packed, outs, groups);
        }
        if !heads.is_empty() {
            count(heads.len());
            let lens: Vec<usize> = heads.iter().map(|(h, _)| h.dims()[0]).collect();
            let (hs, replies): (Vec<_>, Vec<_>) = heads.into_iter().unzip();
            let logits = model.logits_packed(cat_rows(hs), &lens); // [ΣT, V]
            for (rows, reply) in split_rows(logits, &lens).into_iter().zip(replies) {
                *reply.borrow_mut() = Some(Ok(rows));
            }
        }
        self.stats.set(stats);
    }
}

/// The steps' tokens: each group's rows of the forward (`packed`'s first rows, group after group,
/// as they are; else each step's own row, copied) go to one LM-head product and one read-back.
fn choose_tokens<B: RmasBackend>(
    model: &Model<B>,
    packed: Option<Tensor<B, 2>>,
    outs: Vec<Forwarded<B>>,
    groups: Vec<(Sampling, Vec<StepSlot<B>>)>,
) {
    let (mut outs, mut start) = (outs.into_iter(), 0);
    for (sampling, replies) in groups {
        let n = replies.len();
        let group: Vec<Forwarded<B>> = outs.by_ref().take(n).collect();
        let rows = match &packed {
            Some(h) => Some(h.clone().narrow(0, start, n)), // [n, H]: the pack's rows, not a copy
            None => {
                let ok: Vec<_> = group.iter().filter_map(|(out, _)| out.as_ref().ok().cloned()).collect();
                (!ok.is_empty()).then(|| cat_rows(ok)) // a failed step has no row
            }
        };
        start += n;
        let read = rows.map(|rows| {
            let lens = vec![1; rows.dims()[0]];
            SharedRead::new(sampling.read(model.logits_packed(rows, &lens))) // [n, V], read back once
        });
        let mut row = 0;
        for ((out, cache), reply) in group.into_iter().zip(replies) {
            let token = out.map(|_| {
                row += 1;
                (read.clone().expect("a step that ran has a row"), row - 1)
            });
            *reply.borrow_mut() = Some((token, cache));
        }
    }
}

/// One packed forward of `calls`: the packed `[ΣT, H]` and each call's rows with its cache back.
/// If the pack is refused (a sequence past its cache, a bad width or token), each call runs alone
/// so that only the bad one fails, with its own error, and no packed output is returned. When every
/// call brings token ids, they are embedded together.
fn forward_pack<B: RmasBackend>(
    model: &Model<B>,
    calls: Vec<(Input<B>, Cache<B>)>,
) -> (Option<Tensor<B, 2>>, Vec<Forwarded<B>>) {
    let lens: Vec<usize> = calls.iter().map(|(x, _)| x.len()).collect();
    let (xs, mut caches): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
    let packed = match lens.len() {
        1 => None,
        _ => packed_rows(model, &xs).ok().and_then(|x| {
            let mut refs: Vec<&mut Cache<B>> = caches.iter_mut().collect();
            model.forward_packed(x, &lens, &mut refs).ok()
        }),
    };
    match packed {
        Some(h) => {
            let outs = split_rows(h.clone(), &lens).into_iter().map(Ok).zip(caches).collect();
            (Some(h), outs)
        }
        None => {
            let outs = xs
                .into_iter()
                .zip(caches)
                .map(|(x, mut cache)| (x.rows(model).and_then(|x| model.forward(x, &mut cache)), cache))
                .collect();
            (None, outs)
        }
    }
}

/// The inputs of a packed forward as one `[ΣT, H]`: one embedding of all ids when every input is
/// ids, else each input's rows concatenated.
fn packed_rows<B: RmasBackend>(model: &Model<B>, xs: &[Input<B>]) -> Result<Tensor<B, 2>> {
    let ids: Option<Vec<u32>> = xs
        .iter()
        .map(|x| match x {
            Input::Tokens(ids) => Some(ids.as_slice()),
            Input::Rows(_) => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(|parts| parts.concat());
    match ids {
        Some(ids) => model.embed(&ids),
        None => Ok(cat_rows(
            xs.iter()
                .map(|x| match x {
                    Input::Rows(x) => Ok(x.clone()),
                    Input::Tokens(ids) => model.embed(ids),
                })
                .collect::<Result<Vec<_>>>()?,
        )),
    }
}

/// A future that is pending once: the driver polls the sequence again in its next round.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        match std::mem::replace(&mut self.0, true) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use burn::backend::NdArray;

    use super::*;

    /// [`Batch::run_source`] asks for a sequence whenever a place is free (never when `width` run),
    /// says `idle` exactly when nothing runs, ends on `None` only then, and numbers the sequences
    /// in the order they came.
    #[test]
    fn a_source_fills_free_places_and_may_wait_only_when_idle() {
        let batch = Batch::<NdArray>::new();
        let (mut asked, mut made, mut finished) = (Vec::new(), 0usize, Vec::new());
        let flow = batch.run_source(
            2,
            |idle| {
                asked.push(idle);
                // Three sequences, each pending for one round before it ends.
                (made < 3).then(|| {
                    made += 1;
                    let n = made;
                    Box::pin(async move {
                        YieldOnce(false).await;
                        n * 10
                    }) as Sequence<'_, usize>
                })
            },
            |i, value| {
                finished.push((i, value));
                ControlFlow::<()>::Continue(())
            },
        );
        assert!(flow.is_continue());
        finished.sort();
        assert_eq!(finished, [(0, 10), (1, 20), (2, 30)]);
        // Empty: two start; full: none asked; both end; empty: the third starts, none comes; one
        // place free while it runs; it ends; empty and none: the end.
        assert_eq!(asked, [true, false, true, false, false, true]);
    }
}
