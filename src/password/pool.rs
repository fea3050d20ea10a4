//! The bounded worker pool for CPU-heavy work (Argon2, key generation): N threads outside the
//! async runtime, a bounded queue served round-robin across tenants, and immediate shedding
//! (`Busy`) when the queue or the tenant's share of it is full, so memory stays under
//! `workers × m` and one tenant's flood cannot starve the others.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Per-worker scratch memory, reused across hashes instead of allocating per hash.
#[derive(Default)]
pub struct Scratch {
    pub blocks: Vec<argon2::Block>,
}

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

#[derive(Debug, thiserror::Error)]
#[error("the hashing queue is full")]
pub struct Busy;

#[derive(Default)]
struct Queue {
    by_tenant: HashMap<String, VecDeque<(Instant, Job)>>,
    /// Tenants with pending jobs, in service order.
    turn: VecDeque<String>,
    len: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
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
        let q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mine = q.by_tenant.get(tenant).map_or(0, VecDeque::len);
        !q.closed && q.len < self.capacity && mine < self.tenant_share
    }

    /// Queues `f` for `tenant` and awaits its result; `Busy` at once if there is no room.
    pub async fn run<R, F>(&self, tenant: &str, f: F) -> Result<R, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut Scratch) -> R + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            let mine = q.by_tenant.get(tenant).map_or(0, VecDeque::len);
            if q.closed || q.len >= self.capacity || mine >= self.tenant_share {
                metrics::counter!("unicred_hash_shed_total").increment(1);
                return Err(Busy);
            }
            let job: Job = Box::new(move |scratch| {
                let _ = tx.send(f(scratch));
            });
            if mine == 0 {
                q.turn.push_back(tenant.to_string());
            }
            q.by_tenant
                .entry(tenant.to_string())
                .or_default()
                .push_back((Instant::now(), job));
            q.len += 1;
            metrics::gauge!("unicred_hash_queue_depth").set(q.len as f64);
        }
        self.shared.ready.notify_one();
        // The worker always answers unless it panicked inside `f`.
        rx.await.map_err(|_| Busy)
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.shared.ready.notify_all();
    }
}

fn worker(shared: &Shared) {
    let mut scratch = Scratch::default();
    loop {
        let (queued_at, job) = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.len > 0 {
                    break;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            let tenant = q.turn.pop_front().expect("a tenant with pending work");
            let jobs = q.by_tenant.get_mut(&tenant).expect("queue of a tenant in turn");
            let item = jobs.pop_front().expect("non-empty tenant queue");
            if jobs.is_empty() {
                q.by_tenant.remove(&tenant);
            } else {
                q.turn.push_back(tenant);
            }
            q.len -= 1;
            metrics::gauge!("unicred_hash_queue_depth").set(q.len as f64);
            item
        };
        metrics::histogram!("unicred_hash_wait_seconds").record(queued_at.elapsed().as_secs_f64());
        let started = Instant::now();
        // A panicking job must not take the worker down with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut scratch)));
        metrics::histogram!("unicred_hash_seconds").record(started.elapsed().as_secs_f64());
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
        let len = |p: &HashPool| p.shared.queue.lock().unwrap().len;
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
            vec!["a0", "b0", "a1", "b1"],
            "round-robin across tenants"
        );
    }
}
