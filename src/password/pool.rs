//! The bounded worker pool for CPU-heavy work (Argon2, key generation): N threads outside the
//! async runtime, a bounded queue served round-robin across tenants, and immediate shedding
//! (`Busy`) when the queue or the tenant's share of it is full, so memory stays under
//! `workers × m` and one tenant's flood cannot starve the others.
//!
//! Like FQ-CoDel's new/old flow lists, a tenant with nothing queued or running goes ahead of the
//! tenants that are backlogged: an institution signing its users in one at a time waits for one
//! free worker, not for one more job of every flooding tenant. New and backlogged tenants then
//! alternate while both wait, so many one-at-a-time tenants cannot starve a backlogged one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Per-worker Argon2 memory, reused across hashes instead of allocated per hash: an anonymous
/// mapping advised for transparent huge pages. Argon2 reads blocks at random, and with 4 KiB
/// pages nearly every read misses the TLB (doubly costly under a hypervisor); 2 MiB pages made
/// sign-ins ~18 % faster here (docs/BENCHMARKS.md). Without THP it is ordinary memory.
#[derive(Default)]
pub struct Scratch {
    map: Option<memmap2::MmapMut>,
}

/// Huge-page size: mappings are rounded up to it so that the kernel aligns them to it.
const HUGE_PAGE: usize = 2 << 20;

impl Scratch {
    /// `n` blocks of scratch memory, mapped on first use and when parameters need more.
    pub fn blocks(&mut self, n: usize) -> std::io::Result<&mut [argon2::Block]> {
        let len = n * argon2::Block::SIZE;
        if self.map.as_ref().is_none_or(|m| m.len() < len) {
            self.map = None; // unmap the old one first: peak memory stays one mapping
            let map = memmap2::MmapMut::map_anon(len.next_multiple_of(HUGE_PAGE))
                .inspect_err(|e| tracing::error!(error = %e, bytes = len, "cannot map Argon2 memory"))?;
            #[cfg(target_os = "linux")]
            if let Err(e) = map.advise(memmap2::Advice::HugePage) {
                tracing::debug!(error = %e, "no transparent huge pages for Argon2 memory");
            }
            self.map = Some(map);
        }
        let map = self.map.as_mut().expect("mapped above");
        Ok(argon2::Block::slice_from_bytes_mut(&mut map[..len]).expect("mappings are page-aligned"))
    }
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

#[derive(Debug, thiserror::Error)]
#[error("the hashing queue is full")]
pub struct Busy;

#[derive(Default)]
struct Queue {
    by_tenant: HashMap<String, TenantJobs>,
    /// Tenants with a job queued and none queued or running before it, served first, in order.
    new_turn: VecDeque<String>,
    /// Backlogged tenants, in turn.
    old_turn: VecDeque<String>,
    /// Whether the last job served came from `new_turn` while a backlogged tenant waited.
    passed_over_old: bool,
    len: usize,
    closed: bool,
}

/// One tenant's queued jobs and how many of its jobs are hashing now.
#[derive(Default)]
struct TenantJobs {
    jobs: VecDeque<(Instant, Job)>,
    running: usize,
}

impl Queue {
    fn queued(&self, tenant: &str) -> usize {
        self.by_tenant.get(tenant).map_or(0, |t| t.jobs.len())
    }

    /// Queues `job`: a tenant with nothing queued or running joins the new tenants, one that
    /// is running but had nothing queued rejoins the backlogged ones.
    fn push(&mut self, tenant: &str, job: Job) {
        let t = self.by_tenant.entry(tenant.to_string()).or_default();
        let idle = t.jobs.is_empty() && t.running == 0;
        t.jobs.push_back((Instant::now(), job));
        if idle {
            self.new_turn.push_back(tenant.to_string());
        } else if t.jobs.len() == 1 {
            self.old_turn.push_back(tenant.to_string());
        }
        self.len += 1;
    }

    /// The next job in service order, with its tenant.
    fn next(&mut self) -> Option<(String, Instant, Job)> {
        let backlogged = !self.old_turn.is_empty();
        let tenant = match self.new_turn.pop_front() {
            Some(t) if !(self.passed_over_old && backlogged) => {
                self.passed_over_old = backlogged;
                t
            }
            next_new => {
                if let Some(t) = next_new {
                    self.new_turn.push_front(t);
                }
                self.passed_over_old = false;
                self.old_turn.pop_front()?
            }
        };
        let t = self.by_tenant.get_mut(&tenant).expect("queue of a tenant in turn");
        let (queued_at, job) = t.jobs.pop_front().expect("non-empty tenant queue");
        t.running += 1;
        if !t.jobs.is_empty() {
            self.old_turn.push_back(tenant.clone());
        }
        self.len -= 1;
        Some((tenant, queued_at, job))
    }

    /// The tenant that gives up its newest queued job when the queue is full and a tenant with
    /// `queued` jobs queued arrives: the one with the most, if it has at least two more (so it
    /// keeps as many as the arrival then has, and two tenants never take turns evicting).
    fn victim(&self, queued: usize) -> Option<&str> {
        self.by_tenant
            .iter()
            .filter(|(_, t)| t.jobs.len() > queued + 1)
            .max_by_key(|(_, t)| t.jobs.len())
            .map(|(name, _)| name.as_str())
    }

    /// Whether `tenant` may queue a job: within its share, and the queue has room or a fuller
    /// tenant's newest job makes room (dropping from the fattest flow, as FQ-CoDel does), so
    /// a few flooding tenants together cannot shut the others out.
    fn admits(&self, tenant: &str, capacity: usize, share: usize) -> bool {
        let queued = self.queued(tenant);
        !self.closed && queued < share && (self.len < capacity || self.victim(queued).is_some())
    }

    /// Drops the victim's newest job (its caller gets `Busy`) when the queue is full.
    fn make_room(&mut self, tenant: &str, capacity: usize) {
        if self.len < capacity {
            return;
        }
        let Some(victim) = self.victim(self.queued(tenant)).map(str::to_string) else {
            return;
        };
        if let Some(t) = self.by_tenant.get_mut(&victim)
            && t.jobs.pop_back().is_some()
        {
            self.len -= 1;
            metrics::counter!("unicred_hash_shed_total").increment(1);
        }
    }

    fn done(&mut self, tenant: &str) {
        if let Some(t) = self.by_tenant.get_mut(tenant) {
            t.running -= 1;
            if t.running == 0 && t.jobs.is_empty() {
                self.by_tenant.remove(tenant);
            }
        }
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct HashPool {
    shared: Arc<Shared>,
    capacity: usize,
    tenant_share: usize,
    workers: usize,
}

impl HashPool {
    pub fn new(workers: usize, capacity: usize) -> HashPool {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        for i in 0..workers {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("hash-{i}"))
                .spawn(move || worker(&shared))
                .expect("spawn hashing worker");
        }
        // A tenant may hold a quarter of the queue (at least one slot), so a flood against
        // one institution is shed while the others keep their slots.
        let tenant_share = (capacity / 4).max(1).min(capacity);
        HashPool {
            shared,
            capacity,
            tenant_share,
            workers,
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether `tenant` could queue a job now: callers shed early, before doing any other
    /// work for a request the pool would refuse anyway.
    pub fn has_room(&self, tenant: &str) -> bool {
        self.shared.lock().admits(tenant, self.capacity, self.tenant_share)
    }

    /// Queues `f` for `tenant` and awaits its result; `Busy` at once if there is no room.
    pub async fn run<R, F>(&self, tenant: &str, f: F) -> Result<R, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut Scratch) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut q = self.shared.lock();
            if !q.admits(tenant, self.capacity, self.tenant_share) {
                metrics::counter!("unicred_hash_shed_total").increment(1);
                return Err(Busy);
            }
            q.make_room(tenant, self.capacity);
            let job: Job = Box::new(move |scratch| {
                let _ = tx.send(f(scratch));
            });
            q.push(tenant, job);
            metrics::gauge!("unicred_hash_queue_depth").set(q.len as f64);
        }
        self.shared.ready.notify_one();
        // The worker always answers unless it panicked inside `f`.
        rx.await.map_err(|_| Busy)
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

fn worker(shared: &Shared) {
    let mut scratch = Scratch::default();
    loop {
        let (tenant, queued_at, job) = {
            let mut q = shared.lock();
            loop {
                if let Some(next) = q.next() {
                    metrics::gauge!("unicred_hash_queue_depth").set(q.len as f64);
                    break next;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        metrics::histogram!("unicred_hash_wait_seconds").record(queued_at.elapsed().as_secs_f64());
        let started = Instant::now();
        // A panicking job must not take the worker down with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut scratch)));
        metrics::histogram!("unicred_hash_seconds").record(started.elapsed().as_secs_f64());
        shared.lock().done(&tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn until(f: impl Fn() -> bool) {
        while !f() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn sheds_a_flooding_tenant_and_serves_tenants_in_turn() {
        let pool = Arc::new(HashPool::new(1, 8)); // a tenant's share: 2 slots
        let len = |p: &HashPool| p.shared.lock().len;
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        let s = started.clone();
        let p = pool.clone();
        let blocker = tokio::spawn(async move {
            p.run("a", move |_| {
                s.store(true, Ordering::SeqCst);
                gate.recv().ok();
            })
            .await
        });
        until(|| started.load(Ordering::SeqCst)).await;

        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for label in ["a0", "a1", "a2", "b0", "b1"] {
            let (p, o) = (pool.clone(), order.clone());
            let before = len(&pool);
            let task = tokio::spawn(async move {
                let tenant = &label[..1];
                p.run(tenant, move |_| o.lock().unwrap().push(label)).await
            });
            until(|| len(&pool) > before || task.is_finished()).await;
            tasks.push(task);
        }
        open.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut shed = 0;
        for t in tasks {
            shed += t.await.unwrap().is_err() as usize;
        }
        assert_eq!(shed, 1, "only the flooding tenant's third job is shed");
        assert_eq!(
            *order.lock().unwrap(),
            vec!["b0", "a0", "b1", "a1"],
            "b arrived idle and goes first (a is running), then round-robin"
        );
    }

    /// Four tenants at their share fill the queue; a fifth still gets in, in place of the
    /// newest job of one of the fullest, whose caller is told `Busy`.
    #[tokio::test]
    async fn flooding_tenants_together_cannot_shut_another_out() {
        let pool = Arc::new(HashPool::new(1, 8)); // a tenant's share: 2 slots
        let len = |p: &HashPool| p.shared.lock().len;
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let started = Arc::new(AtomicBool::new(false));
        let (s, p) = (started.clone(), pool.clone());
        let blocker = tokio::spawn(async move {
            p.run("z", move |_| {
                s.store(true, Ordering::SeqCst);
                gate.recv().ok();
            })
            .await
        });
        until(|| started.load(Ordering::SeqCst)).await;
        let mut floods = Vec::new();
        for label in ["a", "a", "b", "b", "c", "c", "d", "d"] {
            let p = pool.clone();
            let before = len(&pool);
            floods.push(tokio::spawn(async move { p.run(label, |_| ()).await }));
            until(|| len(&pool) > before).await;
        }
        assert!(!pool.has_room("a"), "a is at its share");
        assert!(pool.has_room("e"), "the queue is full, but e has nothing queued");
        let p = pool.clone();
        let e = tokio::spawn(async move { p.run("e", |_| "e ran").await });
        until(|| floods.iter().any(|t| t.is_finished())).await;
        assert_eq!(len(&pool), 8);
        open.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(e.await.unwrap().unwrap(), "e ran");
        let mut shed = 0;
        for t in floods {
            shed += t.await.unwrap().is_err() as usize;
        }
        assert_eq!(shed, 1, "one flooding tenant's newest job made room");
    }

    #[test]
    fn new_and_backlogged_tenants_alternate_so_neither_starves() {
        let mut q = Queue::default();
        let push = |q: &mut Queue, tenant: &str| q.push(tenant, Box::new(|_: &mut Scratch| {}));
        // a is backlogged (one running, three queued); b, c, d each bring one job.
        for t in ["a", "a", "a", "a"] {
            push(&mut q, t);
        }
        let (first, ..) = q.next().unwrap();
        assert_eq!(first, "a");
        for t in ["b", "c", "d"] {
            push(&mut q, t);
        }
        let order: Vec<String> = std::iter::from_fn(|| q.next().map(|(t, ..)| t)).collect();
        assert_eq!(order, ["b", "a", "c", "a", "d", "a"]);
    }

    #[tokio::test]
    async fn a_tenant_with_nothing_queued_or_running_goes_ahead_of_a_backlogged_one() {
        let pool = Arc::new(HashPool::new(1, 12)); // a tenant's share: 3 slots
        let len = |p: &HashPool| p.shared.lock().len;
        let order = Arc::new(Mutex::new(Vec::new()));
        // The worker is busy with a0 (gated) while a1, a2 wait: tenant a is backlogged.
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let o = order.clone();
        let p = pool.clone();
        let mut tasks = vec![tokio::spawn(async move {
            p.run("a", move |_| {
                o.lock().unwrap().push("a0");
                gate.recv().ok();
            })
            .await
        })];
        until(|| !order.lock().unwrap().is_empty()).await;
        for label in ["a1", "a2", "b0", "b1"] {
            let (p, o) = (pool.clone(), order.clone());
            let before = len(&pool);
            tasks.push(tokio::spawn(async move {
                p.run(&label[..1], move |_| o.lock().unwrap().push(label)).await
            }));
            until(|| len(&pool) > before).await;
        }
        open.send(()).unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["a0", "b0", "a1", "b1", "a2"],
            "b arrived idle: served at the next free worker, then in turn with a"
        );
    }
}
