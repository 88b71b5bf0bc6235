//! Calico's label selectors (`nodeSelector`, `peerSelector`): `all()`, `has(k)`, `k == 'v'`,
//! `k != 'v'`, `k in {'a', 'b'}`, `k not in {...}`, `k contains 'v'`, `k starts with 'v'`,
//! `k ends with 'v'`, joined with `!`, `&&`, `||` and parentheses. As in Calico, `k != 'v'`
//! and `k not in {...}` hold for a node without the label.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Has(String),
    Equal(String, String),
    NotEqual(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    Not(Box<Selector>),
    And(Box<Selector>, Box<Selector>),
    Or(Box<Selector>, Box<Selector>),
}

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let mut p = Parser { s: s.as_bytes(), at: 0 };
        p.space();
        if p.at == p.s.len() {
            // Calico reads an empty selector as one that matches nothing; say so instead.
            return Err("empty selector (all() selects every node)".into());
        }
        let sel = p.or()?;
        p.space();
        if p.at < p.s.len() {
            return Err(p.error("expected && or || or the end"));
        }
        Ok(sel)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| labels.get(k).map(String::as_str);
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Equal(k, v) => get(k) == Some(v),
            Selector::NotEqual(k, v) => get(k) != Some(v),
            Selector::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Selector::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Selector::Contains(k, v) => get(k).is_some_and(|x| x.contains(v.as_str())),
            Selector::StartsWith(k, v) => get(k).is_some_and(|x| x.starts_with(v.as_str())),
            Selector::EndsWith(k, v) => get(k).is_some_and(|x| x.ends_with(v.as_str())),
            Selector::Not(a) => !a.matches(labels),
            Selector::And(a, b) => a.matches(labels) && b.matches(labels),
            Selector::Or(a, b) => a.matches(labels) || b.matches(labels),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at character {}", self.at + 1)
    }

    fn space(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    /// Takes `tok` (after spaces) if it comes next. A word must not run on into a label.
    fn eat(&mut self, tok: &str) -> bool {
        self.space();
        let end = self.at + tok.len();
        let word = tok.bytes().all(|b| b.is_ascii_alphabetic() || b == b' ');
        let runs_on = word && self.s.get(end).is_some_and(|&b| label_byte(b));
        if self.s.get(self.at..end) == Some(tok.as_bytes()) && !runs_on {
            self.at = end;
            return true;
        }
        false
    }

    fn or(&mut self) -> Result<Selector, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Selector::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Selector, String> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Selector::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Selector, String> {
        if self.eat("!") {
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        if self.eat("all()") {
            return Ok(Selector::All);
        }
        if self.eat("has(") {
            let k = self.label()?;
            if !self.eat(")") {
                return Err(self.error("expected ) after the label of has("));
            }
            return Ok(Selector::Has(k));
        }
        let k = self.label()?;
        // "not in" before "in"; the operators that take a set, then those that take a value.
        type Of<T> = fn(String, T) -> Selector;
        let sets: [(&str, Of<Vec<String>>); 2] = [("not in", Selector::NotIn), ("in", Selector::In)];
        for (op, make) in sets {
            if self.eat(op) {
                return Ok(make(k, self.set()?));
            }
        }
        let values: [(&str, Of<String>); 5] = [
            ("==", Selector::Equal),
            ("!=", Selector::NotEqual),
            ("contains", Selector::Contains),
            ("starts with", Selector::StartsWith),
            ("ends with", Selector::EndsWith),
        ];
        for (op, make) in values {
            if self.eat(op) {
                return Ok(make(k, self.string()?));
            }
        }
        Err(self.error(&format!("expected ==, !=, in, not in, contains, starts with or ends with after {k:?}")))
    }

    fn label(&mut self) -> Result<String, String> {
        self.space();
        let start = self.at;
        while self.s.get(self.at).is_some_and(|&b| label_byte(b)) {
            self.at += 1;
        }
        if start == self.at {
            return Err(self.error("expected a label, all() or has(label)"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    /// A quoted value, in single or double quotes.
    fn string(&mut self) -> Result<String, String> {
        self.space();
        let Some(&q) = self.s.get(self.at).filter(|&&b| b == b'\'' || b == b'"') else {
            return Err(self.error("expected a quoted value"));
        };
        let start = self.at + 1;
        let Some(len) = self.s[start..].iter().position(|&b| b == q) else {
            return Err(self.error("unterminated quoted value"));
        };
        self.at = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn set(&mut self) -> Result<Vec<String>, String> {
        if !self.eat("{") {
            return Err(self.error("expected { after in"));
        }
        let mut out = Vec::new();
        if self.eat("}") {
            return Ok(out);
        }
        loop {
            out.push(self.string()?);
            if self.eat("}") {
                return Ok(out);
            }
            if !self.eat(",") {
                return Err(self.error("expected , or }"));
            }
        }
    }
}

/// What a label key may hold (Kubernetes: a DNS prefix, `/`, a name).
fn label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn calico_documentation_selectors_match_as_calico_does() {
        let rr = labels(&[("route-reflector", "true"), ("rack", "r1")]);
        let plain = labels(&[("rack", "r2"), ("kubernetes.io/hostname", "node-b")]);
        let none = labels(&[]);
        let cases: &[(&str, [bool; 3])] = &[
            ("all()", [true, true, true]),
            ("route-reflector == 'true'", [true, false, false]),
            ("has(route-reflector)", [true, false, false]),
            ("!has(route-reflector)", [false, true, true]),
            ("rack != 'r1'", [false, true, true]),
            ("rack in {'r1', \"r3\"}", [true, false, false]),
            ("rack not in {'r1'}", [false, true, true]),
            ("rack == 'r2' || route-reflector == 'true'", [true, true, false]),
            ("has(rack) && !(rack == 'r2')", [true, false, false]),
            ("kubernetes.io/hostname starts with 'node-'", [false, true, false]),
            ("rack ends with '1' && rack contains 'r'", [true, false, false]),
            ("rack in {}", [false, false, false]),
            ("  all( )", [false, false, false]),
        ];
        for (s, want) in cases {
            let Ok(sel) = Selector::parse(s) else {
                assert_eq!(*want, [false; 3], "{s} does not parse");
                continue;
            };
            let got = [sel.matches(&rr), sel.matches(&plain), sel.matches(&none)];
            assert_eq!(got, *want, "{s}: {sel:?}");
        }
    }

    #[test]
    fn bad_selectors_say_where() {
        for (s, why) in [
            ("", "empty selector"),
            ("rack = 'r1'", "expected ==, !=, in"),
            ("rack == r1", "expected a quoted value at character 9"),
            ("rack == 'r1", "unterminated"),
            ("has(rack", "expected )"),
            ("(all()", "expected )"),
            ("all() all()", "expected && or ||"),
            ("rack in {'a' 'b'}", "expected , or }"),
            ("index == 'x' && ", "expected a label"),
            ("rack inside {'a'}", "expected ==, !=, in"),
        ] {
            let e = Selector::parse(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn any_text_parses_or_is_refused_without_a_panic() {
        // Pieces of selectors, multi-byte text among them, strung together at random: a
        // deterministic stand-in for a fuzzer over the one parser a user's text reaches.
        let pieces = [
            "a",
            "rack",
            "'",
            "\"",
            "(",
            ")",
            "!",
            "==",
            "!=",
            "=",
            "&&",
            "||",
            "&",
            "{",
            "}",
            ",",
            " ",
            "in",
            "not in",
            "has(",
            "all()",
            "contains",
            "starts with",
            "ends with",
            "é",
            "ß'",
            "r1",
            "/",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let labels = labels(&[("rack", "r1"), ("a", "é")]);
        let mut parsed = 0;
        for _ in 0..50_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 9) as usize;
            let text: String = (0..n).map(|k| pieces[((seed >> (6 * k)) % pieces.len() as u64) as usize]).collect();
            if let Ok(sel) = Selector::parse(&text) {
                let _ = sel.matches(&labels);
                parsed += 1;
            }
        }
        assert!(parsed > 0, "some random selectors parse");
    }
}
