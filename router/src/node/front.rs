//! The node's front door: a thread of its own accepts admin and metrics connections and reads
//! their requests (whole within a deadline, size-capped), then hands each to the control
//! thread as a job and writes the answer back. The control thread only ever computes answers
//! from memory, so no client, however slow or silent, can hold up the BGP keepalives that
//! share its loop.

use crossbeam_channel::{bounded, Receiver, Sender};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use nodeapi::admin::{self, Answer, Request};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the control thread is asked to compute.
#[derive(Debug)]
pub(super) enum Job {
    Admin(Request, Sender<Answer>),
    Metrics(Sender<String>),
}

/// How long the front thread waits for the control thread's answer (a full table's route
/// listing takes a while) before telling the client.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Jobs waiting for the control thread; more clients than this wait in the listen backlog.
const QUEUE: usize = 16;

const ADMIN: Token = Token(0);
const METRICS: Token = Token(1);
/// The node is stopping: wakes the thread, which sleeps up to `IDLE_WAIT` when idle.
const STOP: Token = Token(2);

#[derive(Debug)]
pub(super) struct Front {
    pub jobs: Receiver<Job>,
    stop: Arc<AtomicBool>,
    /// Wakes the thread to see `stop`.
    stopping: Waker,
    thread: Option<JoinHandle<()>>,
}

impl Front {
    /// Starts the thread; `wake` wakes the control thread's poll when a job is queued.
    pub fn spawn(
        admin: UnixListener,
        metrics: Option<TcpListener>,
        wake: std::sync::Arc<Waker>,
    ) -> std::io::Result<Front> {
        let (tx, jobs) = bounded(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let poll = Poll::new()?;
        let stopping = Waker::new(poll.registry(), STOP)?;
        let thread = std::thread::Builder::new().name("admin".into()).spawn({
            let stop = stop.clone();
            move || {
                if let Err(e) = run(poll, admin, metrics, &tx, &wake, &stop) {
                    tracing::error!(error = %e, "the admin thread stopped");
                }
            }
        })?;
        Ok(Front { jobs, stop, stopping, thread: Some(thread) })
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.stopping.wake();
        if let Some(t) = self.thread.take() {
            // Jobs nobody will answer now: dropping their reply senders ends the waits.
            while !t.is_finished() {
                while self.jobs.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = t.join();
        }
    }
}

/// Queues a job and waits for its answer; `None` when the control thread is gone or busy.
fn ask<T>(tx: &Sender<Job>, wake: &Waker, job: impl FnOnce(Sender<T>) -> Job) -> Option<T> {
    let (reply, answer) = bounded(1);
    tx.send_timeout(job(reply), ANSWER_WAIT).ok()?;
    let _ = wake.wake();
    answer.recv_timeout(ANSWER_WAIT).ok()
}

fn run(
    mut poll: Poll,
    admin_l: UnixListener,
    mut metrics: Option<TcpListener>,
    tx: &Sender<Job>,
    wake: &Waker,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    poll.registry().register(&mut mio::unix::SourceFd(&admin_l.as_raw_fd()), ADMIN, Interest::READABLE)?;
    if let Some(m) = metrics.as_mut() {
        poll.registry().register(m, METRICS, Interest::READABLE)?;
    }
    let mut events = Events::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(forwarding::IDLE_WAIT)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == ADMIN {
                admin::serve_pending(&admin_l, |req| {
                    ask(tx, wake, |r| Job::Admin(req, r))
                        .unwrap_or_else(|| Err("the node did not answer in time (it may be stopping)".into()))
                });
            } else if let Some(l) = metrics.as_ref() {
                while let Ok((stream, _)) = l.accept() {
                    let s = std::net::TcpStream::from(std::os::fd::OwnedFd::from(stream));
                    if s.set_nonblocking(false).is_err() {
                        continue;
                    }
                    let body = || ask(tx, wake, Job::Metrics).unwrap_or_default();
                    if let Err(e) = crate::metrics::serve_http(s, body) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                }
            }
        }
    }
    Ok(())
}
