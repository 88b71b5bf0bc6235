//! The capture tap: while a capture runs, workers copy what they receive and send to a
//! bounded channel; a writer elsewhere turns it into pcap. When no capture runs the cost is
//! one relaxed load per batch.

use crate::iface::IfaceId;
use arc_swap::ArcSwapOption;
use crossbeam_channel::{Receiver, Sender};
use std::net::IpAddr;
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
    /// Only frames to or from this address ([`crate::trace::involves`]), judged before the
    /// copy, so that what is left out costs no allocation and no room in the channel.
    host: ArcSwapOption<IpAddr>,
    tx: Sender<Captured>,
    rx: Receiver<Captured>,
    /// Frames lost because the writer fell behind.
    pub lost: AtomicU64,
}

impl Default for Tap {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(8192);
        Tap {
            active: AtomicBool::new(false),
            iface: AtomicU32::new(u32::MAX),
            host: ArcSwapOption::empty(),
            tx,
            rx,
            lost: AtomicU64::new(0),
        }
    }
}

impl Tap {
    /// Starts copying frames of `iface` (all interfaces when `None`), only those to or from
    /// `host` if one is given.
    pub fn start(&self, iface: Option<IfaceId>, host: Option<IpAddr>) {
        while self.rx.try_recv().is_ok() {}
        self.iface.store(iface.map_or(u32::MAX, |i| u32::from(i.0)), Relaxed);
        self.host.store(host.map(std::sync::Arc::new));
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
        if self.host.load().as_deref().is_some_and(|h| !crate::trace::involves(data, ethernet, *h)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_filter_leaves_other_frames_uncopied() {
        let tap = Tap::default();
        let rx = tap.receiver();
        tap.start(None, Some([10, 244, 3, 1].into()));
        let mut to_pod = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 244, 1, 1], [10, 244, 3, 1], 64)
            .udp(1, 2)
            .write(&mut to_pod, b"x")
            .expect("build");
        let mut elsewhere = to_pod.clone();
        elsewhere[19] = 9; // the destination's last byte: 10.244.3.9
        tap.copy(IfaceId(0), Direction::Rx, &elsewhere, false);
        tap.copy(IfaceId(0), Direction::Rx, &to_pod, false);
        let got: Vec<Captured> = rx.try_iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].frame[14..], &to_pod[..]);
        // A new capture without the filter takes everything again.
        tap.start(None, None);
        tap.copy(IfaceId(0), Direction::Rx, &elsewhere, false);
        assert_eq!(rx.try_iter().count(), 1);
    }
}
