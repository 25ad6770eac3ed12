//! The one encoding of the records a store keeps outside the process (timer entries, node
//! messages in the Redis store): a tag letter, then fields; a text field is `<length>:<bytes>`,
//! a number field is `<digits>;`. Self-delimiting, so names need no escaping and a number can
//! be left open (a *hole*) for a script to fill in with the digits it assigns.

/// Writes one record.
#[derive(Default)]
pub struct Writer {
    done: Vec<String>,
    cur: String,
}

impl Writer {
    /// A record of kind `tag`.
    pub fn new(tag: char) -> Writer {
        let mut w = Writer::default();
        w.cur.push(tag);
        w
    }

    /// A text field.
    pub fn text(mut self, s: &str) -> Writer {
        self.cur.push_str(&s.len().to_string());
        self.cur.push(':');
        self.cur.push_str(s);
        self
    }

    /// An optional text field (absent: the empty text, with a marker).
    pub fn opt_text(self, s: Option<&str>) -> Writer {
        match s {
            Some(s) => self.num(1).text(s),
            None => self.num(0),
        }
    }

    /// A number field.
    pub fn num(mut self, n: u64) -> Writer {
        self.cur.push_str(&n.to_string());
        self.cur.push(';');
        self
    }

    /// A number field left open: [`Writer::finish_open`] splits the record around it.
    pub fn hole(mut self) -> Writer {
        self.done.push(std::mem::take(&mut self.cur));
        self.cur.push(';');
        self
    }

    /// The record.
    pub fn finish(self) -> String {
        debug_assert!(
            self.done.is_empty(),
            "a record with a hole is finished open"
        );
        self.cur
    }

    /// The record around its one hole: `before`, the digits, `after`.
    pub fn finish_open(mut self) -> (String, String) {
        debug_assert_eq!(self.done.len(), 1, "one hole");
        (self.done.pop().unwrap_or_default(), self.cur)
    }
}

/// Reads one record; every accessor is `None` on malformed input (never a panic).
pub struct Reader<'a> {
    rest: &'a str,
}

impl<'a> Reader<'a> {
    /// Start reading `s`; returns its tag.
    pub fn new(s: &'a str) -> Option<(char, Reader<'a>)> {
        let tag = s.chars().next()?;
        Some((
            tag,
            Reader {
                rest: &s[tag.len_utf8()..],
            },
        ))
    }

    /// A text field.
    pub fn text(&mut self) -> Option<&'a str> {
        let colon = self.rest.find(':')?;
        let len: usize = self.rest[..colon].parse().ok()?;
        let start = colon + 1;
        let end = start.checked_add(len)?;
        let s = self.rest.get(start..end)?;
        self.rest = &self.rest[end..];
        Some(s)
    }

    /// An optional text field.
    pub fn opt_text(&mut self) -> Option<Option<&'a str>> {
        match self.num()? {
            0 => Some(None),
            1 => self.text().map(Some),
            _ => None,
        }
    }

    /// A number field.
    pub fn num(&mut self) -> Option<u64> {
        let semi = self.rest.find(';')?;
        let digits = &self.rest[..semi];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = digits.parse().ok()?;
        self.rest = &self.rest[semi + 1..];
        Some(n)
    }

    /// Whether everything was read (an optional last field is absent).
    pub fn rest_is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Everything was read.
    pub fn end(self) -> Option<()> {
        self.rest.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_holes_split_the_record() {
        let s = Writer::new('x')
            .text("a b:c;")
            .num(42)
            .opt_text(None)
            .opt_text(Some("é"))
            .finish();
        let (tag, mut r) = Reader::new(&s).unwrap();
        assert_eq!(tag, 'x');
        assert_eq!(r.text(), Some("a b:c;"));
        assert_eq!(r.num(), Some(42));
        assert_eq!(r.opt_text(), Some(None));
        assert_eq!(r.opt_text(), Some(Some("é")));
        assert_eq!(r.end(), Some(()));
        let (before, after) = Writer::new('y').text("t").hole().text("u").finish_open();
        let filled = format!("{before}7{after}");
        let (_, mut r) = Reader::new(&filled).unwrap();
        assert_eq!(
            (r.text(), r.num(), r.text()),
            (Some("t"), Some(7), Some("u"))
        );
    }

    #[test]
    fn malformed_input_is_refused() {
        assert!(Reader::new("").is_none(), "no tag");
        // each record after its tag: neither a text field nor a number field reads
        for bad in [
            "x5:ab",                  // shorter than its length
            "x;",                     // no digits
            "x1a;",                   // not a number
            "x-1;",                   // a sign
            "x99999999999999999999:", // a length past usize
            "x99999999999999999999;", // a number past u64
            "x",                      // nothing
        ] {
            let (tag, r) = Reader::new(bad).unwrap();
            assert_eq!(tag, 'x');
            let (mut t, mut n) = (Reader { rest: r.rest }, Reader { rest: r.rest });
            assert_eq!(t.text(), None, "text of {bad:?}");
            assert_eq!(n.num(), None, "num of {bad:?}");
            assert_eq!(Reader { rest: r.rest }.opt_text(), None, "opt of {bad:?}");
        }
        // a field that reads leaves the rest, and a record with more is not at its end
        let (_, mut r) = Reader::new("x2:ab;").unwrap();
        assert_eq!(r.text(), Some("ab"));
        assert_eq!(r.end(), None, "a trailing ';' is left over");
        let (_, mut r) = Reader::new("x2;").unwrap();
        assert_eq!(r.opt_text(), None, "an optional field is 0 or 1");
        let (_, mut r) = Reader::new("x3:é").unwrap();
        assert_eq!(r.text(), None, "a length that cuts a character");
    }
}
