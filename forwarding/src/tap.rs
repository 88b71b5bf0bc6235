//! The capture tap: while a capture runs, workers copy what they receive and send to a
//! bounded channel; a writer elsewhere turns it into pcap. When no capture runs the cost is
//! one relaxed load per batch.

use crate::iface::IfaceId;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Rx,
    Tx,
}

/// One copied frame. Bare IP packets (tun mode) get a zero Ethernet header so that a capture
/// has one link type.
#[derive(Debug, Clone)]
pub struct Captured {
    pub time: SystemTime,
    pub iface: IfaceId,
    pub direction: Direction,
    pub frame: Vec<u8>,
}

#[derive(Debug)]
pub struct Tap {
    active: AtomicBool,
    /// `u32::MAX`: every interface.
    iface: AtomicU32,
    tx: Sender<Captured>,
    rx: Receiver<Captured>,
    /// Frames lost because the writer fell behind.
    pub lost: AtomicU64,
}

impl Default for Tap {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(8192);
        Tap { active: AtomicBool::new(false), iface: AtomicU32::new(u32::MAX), tx, rx, lost: AtomicU64::new(0) }
    }
}

impl Tap {
    /// Starts copying frames of `iface` (all interfaces when `None`).
    pub fn start(&self, iface: Option<IfaceId>) {
        while self.rx.try_recv().is_ok() {}
        self.iface.store(iface.map_or(u32::MAX, |i| u32::from(i.0)), Relaxed);
        self.active.store(true, Relaxed);
    }

    pub fn stop(&self) {
        self.active.store(false, Relaxed);
    }

    #[inline]
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    pub fn receiver(&self) -> Receiver<Captured> {
        self.rx.clone()
    }

    /// Copies a frame if it matches the filter (call only when `active()`).
    pub fn copy(&self, iface: IfaceId, direction: Direction, data: &[u8], ethernet: bool) {
        let f = self.iface.load(Relaxed);
        if f != u32::MAX && f != u32::from(iface.0) {
            return;
        }
        let frame = if ethernet {
            data.to_vec()
        } else {
            let mut v = vec![0u8; 14];
            v[12..14].copy_from_slice(&[0x08, 0x00]);
            v.extend_from_slice(data);
            v
        };
        let c = Captured { time: SystemTime::now(), iface, direction, frame };
        if self.tx.try_send(c).is_err() {
            crate::counters::bump(&self.lost, 1);
        }
    }
}
