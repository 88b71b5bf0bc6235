//! The FSM driven by events with virtual time. `Pair` steps two state machines against each
//! other, as if a TCP connection joined them.

use super::*;
use crate::wire::{AddPathMode, Capability};

const A: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 100);
const B: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 101);

fn cfg(local: Ipv4Addr, passive: bool, hold: u16) -> FsmConfig {
    FsmConfig {
        local_as: 64512,
        peer_as: 64512,
        local_id: local,
        hold_time: hold,
        connect_retry: Duration::from_secs(5),
        passive,
        families: vec![Afi::Ipv4],
        graceful_restart: Some(120),
        keepalive: None,
        restarted: false,
    }
}

fn sent(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// Two FSMs and the messages in flight between them.
struct Pair {
    a: Fsm,
    b: Fsm,
    now: Instant,
    a_out: Vec<Output>,
    b_out: Vec<Output>,
}

impl Pair {
    fn new(hold_a: u16, hold_b: u16) -> Pair {
        let now = Instant::now();
        Pair {
            a: Fsm::new(cfg(A, false, hold_a), now),
            b: Fsm::new(cfg(B, true, hold_b), now),
            now,
            a_out: vec![],
            b_out: vec![],
        }
    }

    /// Starts both, connects them, and delivers messages until nothing moves.
    fn establish(&mut self) {
        self.a_out = self.a.process(self.now, Input::Start);
        self.b_out = self.b.process(self.now, Input::Start);
        assert!(self.a_out.contains(&Output::Connect));
        assert!(!self.b_out.contains(&Output::Connect), "the passive side waits");
        self.a_out.extend(self.a.process(self.now, Input::TcpUp));
        self.b_out.extend(self.b.process(self.now, Input::TcpUp));
        self.deliver();
    }

    fn deliver(&mut self) {
        for _ in 0..10 {
            let to_b = sent(&std::mem::take(&mut self.a_out));
            let to_a = sent(&std::mem::take(&mut self.b_out));
            if to_a.is_empty() && to_b.is_empty() {
                return;
            }
            for m in to_b {
                let o = self.b.process(self.now, Input::Message(m));
                self.b_out.extend(o);
            }
            for m in to_a {
                let o = self.a.process(self.now, Input::Message(m));
                self.a_out.extend(o);
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let o = self.a.process(self.now, Input::Tick);
        self.a_out.extend(o);
        let o = self.b.process(self.now, Input::Tick);
        self.b_out.extend(o);
    }
}

#[test]
fn open_exchange_reaches_established() {
    let mut p = Pair::new(90, 30);
    p.establish();
    assert_eq!(p.a.state(), State::Established);
    assert_eq!(p.b.state(), State::Established);
    let n = p.a.negotiated().expect("negotiated");
    assert_eq!(n.hold_time, 30, "the smaller hold time wins");
    assert_eq!(n.peer_id, B);
    assert!(n.four_octet_as && n.route_refresh);
    assert_eq!(n.peer_restart_time, Some(120));
    assert_eq!(n.families, vec![Afi::Ipv4]);
}

#[test]
fn keepalives_flow_at_a_third_of_the_hold_time_and_keep_the_session_up() {
    let mut p = Pair::new(30, 30);
    p.establish();
    for _ in 0..10 {
        p.advance(Duration::from_secs(10));
        assert!(sent(&p.a_out).contains(&Message::Keepalive), "a keepalive every 10 s");
        p.deliver();
    }
    assert_eq!(p.a.state(), State::Established);
    assert_eq!(p.b.state(), State::Established);
}

#[test]
fn a_configured_keepalive_time_is_used_but_never_beyond_a_third_of_the_hold_time() {
    let keepalives = |keepalive: u16, hold: u16, secs: u64| {
        let mut p = Pair::new(hold, hold);
        p.a = Fsm::new(FsmConfig { keepalive: Some(keepalive), ..cfg(A, false, hold) }, p.now);
        p.establish();
        let mut n = 0;
        for _ in 0..secs {
            p.advance(Duration::from_secs(1));
            n += sent(&p.a_out).iter().filter(|m| **m == Message::Keepalive).count();
            p.deliver();
        }
        assert_eq!((p.a.state(), p.b.state()), (State::Established, State::Established));
        n
    };
    // Every 2 s instead of every 30 s (hold 90).
    assert_eq!(keepalives(2, 90, 20), 10);
    // 60 s asked for with a hold time of 30: a third of it, 10 s, or b would give up.
    assert_eq!(keepalives(60, 30, 60), 6);
}

#[test]
fn hold_timer_expiry_sends_notification_and_goes_down() {
    let mut p = Pair::new(9, 9);
    p.establish();
    // b goes silent: a hears nothing for 9 s.
    p.now += Duration::from_secs(9);
    let out = p.a.process(p.now, Input::Tick);
    assert!(sent(&out).contains(&Message::Notification(Notification::new(err::HOLD_TIMER_EXPIRED, 0))));
    assert!(out.contains(&Output::Close));
    assert!(out.contains(&Output::Down(Down::HoldTimerExpired)));
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(p.a.last_error(), Some("hold timer expired"));
}

#[test]
fn hold_time_zero_means_no_keepalives_and_no_expiry() {
    let mut p = Pair::new(0, 90);
    p.establish();
    assert_eq!(p.a.negotiated().map(|n| n.hold_time), Some(0));
    p.advance(Duration::from_secs(3600));
    assert!(sent(&p.a_out).is_empty());
    assert_eq!(p.a.state(), State::Established);
}

fn to_open_sent(local_as: u32, peer_as: u32) -> (Fsm, Instant) {
    let now = Instant::now();
    let mut f = Fsm::new(FsmConfig { local_as, peer_as, ..cfg(A, false, 90) }, now);
    f.process(now, Input::Start);
    let out = f.process(now, Input::TcpUp);
    assert!(matches!(sent(&out)[0], Message::Open(_)));
    assert_eq!(f.state(), State::OpenSent);
    (f, now)
}

#[test]
fn bad_hold_time_is_refused_with_notification() {
    for bad in [1u16, 2] {
        let (mut f, now) = to_open_sent(64512, 64512);
        let o = Open::new(64512, bad, B, vec![]);
        let out = f.process(now, Input::Message(Message::Open(o)));
        let n = Notification::with_data(err::OPEN, err::UNACCEPTABLE_HOLD_TIME, &bad.to_be_bytes());
        assert!(sent(&out).contains(&Message::Notification(n)), "{out:?}");
        assert_eq!(f.state(), State::Idle);
    }
}

#[test]
fn a_session_with_no_family_in_common_is_refused_naming_ours() {
    // An IPv6 session (IPv6 unicast only) to a peer that offers IPv4 unicast only.
    let now = Instant::now();
    let mut f = Fsm::new(FsmConfig { families: vec![Afi::Ipv6], ..cfg(A, false, 90) }, now);
    f.process(now, Input::Start);
    f.process(now, Input::TcpUp);
    let v4 = Capability::Multiprotocol { afi: Afi::Ipv4.code(), safi: 1 };
    let out = f.process(now, Input::Message(Message::Open(Open::new(64512, 90, B, vec![v4]))));
    let n = Notification::with_data(err::OPEN, err::UNSUPPORTED_CAPABILITY, &[1, 4, 0, 2, 0, 1]);
    assert!(sent(&out).contains(&Message::Notification(n)), "{out:?}");
    assert_eq!(f.state(), State::Idle);
    assert!(f.last_error().is_some_and(|e| e.contains("unsupported capability")), "{:?}", f.last_error());
}

#[test]
fn wrong_peer_as_is_refused() {
    let (mut f, now) = to_open_sent(64512, 64512);
    let out = f.process(now, Input::Message(Message::Open(Open::new(65000, 90, B, vec![]))));
    assert!(sent(&out).iter().any(|m| matches!(m, Message::Notification(n) if n.subcode == err::BAD_PEER_AS)));
    assert!(f.last_error().is_some_and(|e| e.contains("bad peer AS")));
}

#[test]
fn notification_on_a_bad_open_from_the_wire() {
    let (mut f, now) = to_open_sent(64512, 64512);
    let n = Notification::with_data(err::OPEN, err::UNSUPPORTED_VERSION, &[0, 4]);
    let out = f.process(now, Input::DecodeError(n.clone()));
    assert_eq!(sent(&out), vec![Message::Notification(n)]);
    assert!(out.contains(&Output::Close));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn received_notification_takes_the_session_down_with_its_reason() {
    let mut p = Pair::new(90, 90);
    p.establish();
    let out =
        p.a.process(p.now, Input::Message(Message::Notification(Notification::new(err::CEASE, err::ADMIN_SHUTDOWN))));
    assert!(out.iter().any(
        |o| matches!(o, Output::Down(d @ Down::Received(_)) if d.to_string().contains("administrative shutdown"))
    ));
    assert!(sent(&out).is_empty(), "no NOTIFICATION in reply to one");
}

#[test]
fn unexpected_message_is_an_fsm_error() {
    let (mut f, now) = to_open_sent(64512, 64512);
    let out = f.process(now, Input::Message(Message::Keepalive));
    assert_eq!(sent(&out), vec![Message::Notification(Notification::new(err::FSM, 1))]);
}

#[test]
fn errors_back_off_exponentially_then_retry() {
    let (mut f, mut now) = to_open_sent(64512, 64512);
    let mut waits = Vec::new();
    for _ in 0..4 {
        f.process(now, Input::TcpClosed("reset".into()));
        assert_eq!(f.state(), State::Idle);
        let at = f.poll_timeout().expect("retry scheduled");
        waits.push(at - now);
        now = at;
        let out = f.process(now, Input::Tick);
        assert!(out.contains(&Output::Connect), "retries after the back-off");
        f.process(now, Input::TcpUp);
    }
    assert_eq!(waits, [1, 2, 4, 8].map(Duration::from_secs).to_vec());
}

#[test]
fn failed_connect_retries_on_the_connect_retry_timer() {
    let now = Instant::now();
    let mut f = Fsm::new(cfg(A, false, 90), now);
    f.process(now, Input::Start);
    f.process(now, Input::TcpFailed("refused".into()));
    assert_eq!(f.state(), State::Active);
    let out = f.process(now + Duration::from_secs(5), Input::Tick);
    assert!(out.contains(&Output::Connect));
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn a_connection_lost_before_the_open_goes_active_and_retries() {
    let (mut f, now) = to_open_sent(64512, 64512);
    f.process(now, Input::TcpFailed("no OPEN".into()));
    assert_eq!(f.state(), State::Active);
    assert_eq!(f.last_error(), Some("waiting for OPEN: no OPEN"));
    let out = f.process(now + Duration::from_secs(5), Input::Tick);
    assert!(out.contains(&Output::Connect), "{out:?}");
    assert_eq!(f.state(), State::Connect);
}

#[test]
fn a_shutdown_sends_its_cease_and_holds_down_before_trying_again() {
    let mut p = Pair::new(90, 90);
    p.establish();
    let n = Notification::with_data(err::CEASE, err::MAX_PREFIXES, &[0, 1, 1, 0, 0, 0, 10]);
    let reason = "sent 11 prefixes, more than max_prefixes = 10".to_string();
    let hold_down = Duration::from_secs(30);
    let out = p.a.process(p.now, Input::Shutdown { notification: n.clone(), reason: reason.clone(), hold_down });
    assert!(sent(&out).contains(&Message::Notification(n.clone())));
    assert!(out.contains(&Output::Down(Down::Shutdown { notification: n.clone(), why: reason.clone() })));
    assert_eq!((p.a.state(), p.a.last_error()), (State::Idle, Some(reason.as_str())));
    // Not the 1 s back-off of an error: the hold-down, then it starts by itself.
    assert_eq!(p.a.poll_timeout(), Some(p.now + hold_down));
    p.advance(hold_down - Duration::from_secs(1));
    assert_eq!(p.a.state(), State::Idle);
    p.advance(Duration::from_secs(1));
    assert!(p.a_out.contains(&Output::Connect));
}

#[test]
fn stop_sends_cease_and_stays_idle() {
    let mut p = Pair::new(90, 90);
    p.establish();
    let out = p.a.process(p.now, Input::Stop);
    assert!(sent(&out).contains(&Message::Notification(Notification::new(err::CEASE, err::ADMIN_SHUTDOWN))));
    assert_eq!(p.a.poll_timeout(), None, "no automatic restart");
}

#[test]
fn add_path_offer_is_declined_and_peer_without_mp_gets_ipv4() {
    let (mut f, now) = to_open_sent(64512, 64512);
    let o = Open {
        params: vec![crate::wire::OptParam::Capabilities(vec![Capability::AddPath(vec![(1, 1, AddPathMode::Both)])])],
        ..Open::new(64512, 90, B, vec![])
    };
    f.process(now, Input::Message(Message::Open(o)));
    assert_eq!(f.state(), State::OpenConfirm);
    let n = f.negotiated().expect("negotiated");
    assert_eq!(n.families, vec![Afi::Ipv4]);
    assert!(!n.four_octet_as, "that OPEN carried no 4-octet capability");
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    // RFC 4271 §6.8.
    assert!(keep_ours(B, A));
    assert!(!keep_ours(A, B));
}

#[test]
fn a_lost_collision_ceases_our_connection_and_opens_again_on_the_peers() {
    let now = Instant::now();
    let mut a = Fsm::new(cfg(A, false, 90), now);
    let mut b = Fsm::new(cfg(B, false, 90), now);
    a.process(now, Input::Start);
    b.process(now, Input::Start);
    let b_open = sent(&b.process(now, Input::TcpUp)).pop().expect("B sends its OPEN");
    let cease = Message::Notification(Notification::new(err::CEASE, err::COLLISION_RESOLUTION));
    for peer_open_first in [false, true] {
        a.process(now, Input::TcpUp);
        if peer_open_first {
            // B's OPEN arrived on our connection: OpenConfirm, B's identifier known.
            a.process(now, Input::Message(b_open.clone()));
            assert_eq!(a.state(), State::OpenConfirm);
        }
        assert_eq!(a.state(), if peer_open_first { State::OpenConfirm } else { State::OpenSent });
        let out = a.process(now, Input::Collision);
        assert_eq!(sent(&out), vec![cease.clone()]);
        assert!(out.contains(&Output::Close));
        assert_eq!(a.state(), State::Active);
        assert!(a.negotiated().is_none());
        // The peer's connection takes over: a fresh OPEN goes out on it.
        let out = a.process(now, Input::TcpUp);
        assert!(matches!(sent(&out).as_slice(), [Message::Open(_)]), "{out:?}");
        assert_eq!(a.state(), State::OpenSent);
        // Reset for the next round.
        a.process(now, Input::Collision);
    }
    // Nothing to resolve before there is a connection.
    assert!(Fsm::new(cfg(A, false, 90), now).process(now, Input::Collision).is_empty());
}
