//! BGP-4 without I/O: the wire codec (RFC 4271, 4760, 6793, 7911, 7606), the session state
//! machine (RFC 4271 §8), the RIBs with route reflection (RFC 4456).
//!
//! Nothing here opens a socket or reads a clock: time comes in as an argument, and actions
//! come out as values for a driver to carry out (the router's `speaker` module is one).

pub mod fsm;
pub mod policy;
pub mod rib;
pub mod wire;

/// Entry points for the fuzz targets (`fuzz/`): one per message decoder, each taking raw
/// bytes as the peer would send them.
pub mod fuzzing {
    use super::wire::{self, Ctx, Message, Open, Update};

    /// A body that fits in one message, as the header's length check guarantees on the wire.
    fn fits(body: &[u8]) -> bool {
        body.len() <= wire::MAX_LEN - wire::HEADER_LEN
    }

    /// An OPEN body (after the 19-byte header).
    pub fn decode_open(body: &[u8], _ctx: &Ctx) -> Option<Message> {
        if !fits(body) || body.len() < 10 {
            return None;
        }
        Open::decode(body).ok().map(Message::Open)
    }

    /// An UPDATE body (after the header).
    pub fn decode_update(body: &[u8], ctx: &Ctx) -> Option<Message> {
        if !fits(body) || body.len() < 4 {
            return None;
        }
        Update::decode(body, ctx).ok().map(Message::Update)
    }

    /// What every decoder target checks: a decoded message encodes into bytes that decode to
    /// the same routes and attributes (discarded attributes are not re-encoded).
    pub fn check_round_trip(m: Message, ctx: &Ctx) {
        let bytes = m.to_bytes(ctx);
        let again = wire::decode(&bytes, ctx).ok().flatten().map(|(m, _)| m);
        if let (Message::Update(a), Some(Message::Update(b))) = (&m, &again) {
            assert_eq!(a.attrs, b.attrs);
            assert_eq!(a.nlri, b.nlri);
        } else {
            assert_eq!(Some(m), again);
        }
    }

    /// A whole message with its header, of any type.
    pub fn decode_message(bytes: &[u8], ctx: &Ctx) -> Option<Message> {
        wire::decode(bytes, ctx).ok().flatten().map(|(m, _)| m)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        type Decoder = fn(&[u8], &Ctx) -> Option<Message>;

        /// Replays each target's corpus: no panic, and what decodes survives a round trip.
        #[test]
        fn fuzz_corpora_replay() {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
            let ctx = Ctx::default();
            let targets: [(&str, Decoder); 3] =
                [("bgp_open", decode_open), ("bgp_update", decode_update), ("bgp_message", decode_message)];
            for (name, f) in targets {
                let dir = root.join(name);
                let mut decoded = 0;
                for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
                    let data = std::fs::read(e.path()).expect("corpus file");
                    if let Some(m) = f(&data, &ctx) {
                        check_round_trip(m, &ctx);
                        decoded += 1;
                    }
                }
                assert!(decoded >= 2, "{name}: corpus decodes only {decoded} files");
            }
        }
    }
}
