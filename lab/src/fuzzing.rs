//! The body of the `config_files` fuzz target (`fuzz/`), here so that the tests replay its
//! corpus through the same checks: any text as one of the files a user writes. The first
//! byte picks which: a node config (TOML), a lab topology (TOML, single or dual stack), or
//! Calico resources (YAML or JSON). No reader panics; an error names a line the text has (as YAML counts them);
//! resources read become the same resources again when stored as JSON and read back; the
//! same text read as a stored resource of each kind (leniently, as from etcd) does not panic.

use datastore::resources::{self, Resource};
use std::path::Path;

pub fn config_files(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let path = Path::new("fuzz.toml");
    match which % 4 {
        0 => {
            let _ = nodeapi::config::NodeConfig::parse(path, text);
        }
        1 | 2 => {
            let _ = crate::topology::Topology::parse_with(path, text, which % 4 == 2);
        }
        _ => {
            // As found in etcd, of every kind: what reads leniently is, stored again, what
            // the strict reader reads, with nothing left out.
            for kind in resources::Kind::ALL {
                if let Ok(s) = Resource::from_stored(kind, rest, "fuzz") {
                    let json = serde_json::to_vec(&s.resource.to_json()).expect("a resource serializes");
                    let again = Resource::from_json(kind, &json, "fuzz").expect("what is left reads strictly");
                    assert_eq!(again, s.resource, "what is left, stored and read back, is the same");
                    // Applied back over itself (`get` piped into `apply`): what it did not
                    // know is carried over, and what it knows is as applied.
                    let mut next = s.resource.to_json();
                    let carried = Resource::carry_unknown(kind, rest, &mut next, "fuzz").expect("it read once");
                    let next = serde_json::to_vec(&next).expect("a resource serializes");
                    let back = Resource::from_stored(kind, &next, "fuzz").expect("what is carried reads");
                    assert_eq!(back.resource, s.resource, "carrying over changes nothing this router knows");
                    assert!(back.ignored.iter().all(|p| s.ignored.contains(p) && carried.contains(p)));
                }
            }
            match resources::parse(text) {
                Ok(rs) => {
                    for r in rs {
                        let json = serde_json::to_vec(&r.to_json()).expect("a resource serializes");
                        let again = Resource::from_json(r.kind(), &json, "fuzz").expect("its stored form reads");
                        assert_eq!(again, r, "a resource stored and read back is the same");
                    }
                }
                Err(e) => {
                    // Counted as YAML counts them (CR, NEL, LS and PS end lines too).
                    let lines = resources::lines_as_yaml_breaks_them(text).lines().count().max(1);
                    assert!(e.line.is_none_or(|l| l >= 1 && l <= lines + 1), "line {:?} of {lines}: {e}", e.line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Replays the corpus: the seeds (every kind of file the project ships) and what the
    /// fuzzer kept.
    #[test]
    fn config_files_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config_files");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            super::config_files(&std::fs::read(e.path()).expect("corpus file"));
            n += 1;
        }
        assert!(n >= 10, "{n} files");
    }
}
