//! Finding the extent of values in JSON text that is already known to be valid.
//!
//! ingest validates a request body once (serde_json splits it into the raw text of each event);
//! reading an event's few top-level fields then only needs to know where each value starts and
//! ends, not to validate or build it again. These helpers do that, skipping string contents with
//! `memchr`. On text that is *not* valid JSON they return `None` or some extent — never panic —
//! so a caller that broke the precondition gets an error, not a crash.

use std::borrow::Cow;

/// Index of the first byte at or after `i` that is not JSON whitespace.
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// For a string starting with the quote at `i`: the index just past its closing quote, and
/// whether it holds escapes.
pub fn string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        let k = j + find_quote_or_backslash(b.get(j..)?)?;
        if b[k] == b'"' {
            return Some((k + 1, escaped));
        }
        // A backslash and the character it escapes (the rest of `\uXXXX` is hex digits).
        escaped = true;
        j = k + 2;
    }
}

/// The first `"` or `\\` in `b`. Most strings (keys, ids, types) end within a few bytes, where
/// a plain loop beats setting up a vectorised search; longer ones get `memchr`.
fn find_quote_or_backslash(b: &[u8]) -> Option<usize> {
    const SHORT: usize = 16;
    let head = &b[..b.len().min(SHORT)];
    match head.iter().position(|&c| c == b'"' || c == b'\\') {
        Some(p) => Some(p),
        None => memchr::memchr2(b'"', b'\\', b.get(SHORT..)?).map(|p| p + SHORT),
    }
}

/// For a value starting at `i` (no leading whitespace): the index just past it, and whether it
/// is a string holding escapes.
pub fn value_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => container_end(b, i).map(|end| (end, false)),
        // A number, `true`, `false` or `null`: up to the next delimiter (and not empty).
        _ => match b[i..]
            .iter()
            .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
        {
            Some(0) => None,
            Some(n) => Some((i + n, false)),
            None => Some((b.len(), false)),
        },
    }
}

/// For an object or array opening at `i`: the index just past its closing bracket.
fn container_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b'"' => {
                i = string_end(b, i)?.0;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The contents of the string `quoted` (with its quotes), borrowed when it holds no escapes.
pub fn string_contents(quoted: &str, escaped: bool) -> Option<Cow<'_, str>> {
    if escaped {
        serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
    } else {
        quoted
            .get(1..quoted.len().checked_sub(1)?)
            .map(Cow::Borrowed)
    }
}

/// What strict JSON parsers refuse in `raw` (valid JSON, per RFC 8259's grammar): an object
/// with the same key twice (RFC 8259 leaves its meaning undefined: parsers keep the first, the
/// last, or fail), a lone UTF-16 surrogate escape (`"\ud800"`: valid grammar, no Unicode
/// text). Numbers are not among them: any size and precision is kept as sent, a promise of the
/// API (a consumer reading them as doubles rounds or overflows them itself). One pass; strings
/// skipped with [`string_end`].
pub fn strict_problem(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    // Per open container: the keys of an object (`None` for an array).
    let mut open: Vec<Option<Vec<Cow<'_, str>>>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'{' => {
                open.push(Some(Vec::new()));
                expect_key = true;
            }
            b'[' => {
                open.push(None);
                expect_key = false;
            }
            b'}' | b']' => {
                open.pop();
            }
            b',' => expect_key = matches!(open.last(), Some(Some(_))),
            b':' => expect_key = false,
            b'"' => {
                let (end, escaped) = string_end(b, i)?;
                let quoted = &raw[i..end];
                if escaped && has_lone_surrogate(&quoted[1..quoted.len() - 1]) {
                    return Some("a string holds a lone UTF-16 surrogate escape".into());
                }
                if expect_key && let Some(Some(keys)) = open.last_mut() {
                    let key = string_contents(quoted, escaped)?;
                    if keys.contains(&key) {
                        return Some(format!("an object holds the key {quoted} twice"));
                    }
                    keys.push(key);
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether the contents of a JSON string (between its quotes) escape a lone surrogate.
fn has_lone_surrogate(contents: &str) -> bool {
    let b = contents.as_bytes();
    let hex = |at: usize| {
        contents
            .get(at..at + 4)
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let Some(unit) = hex(i + 2) else { return false };
        match unit {
            0xD800..=0xDBFF => {
                let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                    .then(|| hex(i + 8))
                    .flatten();
                if !low.is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) {
                    return true;
                }
                i += 12;
            }
            0xDC00..=0xDFFF => return true,
            _ => i += 6,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_strict_parsers_refuse_is_found() {
        for (raw, why) in [
            (r#"{"a":1,"a":2}"#, "twice"),
            (r#"{"x":{"k":1,"\u006b":2}}"#, "twice"),
            (r#"{"s":"\ud800"}"#, "surrogate"),
            (r#"{"s":"\udc00x"}"#, "surrogate"),
            (r#"{"s":["ok","\ud83d\u0041"]}"#, "surrogate"),
        ] {
            let problem = strict_problem(raw).unwrap_or_else(|| panic!("{raw} passed"));
            assert!(problem.contains(why), "{raw}: {problem}");
        }
        for fine in [
            r#"{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}"#,
            r#"{"emoji":"\ud83d\ude00","esc":"\\ud800 is text","e":"1e99999"}"#,
            r#"{"n":1e999999,"m":123456789012345678901234567890,"t":true,"f":false,"z":null}"#,
            r#"{"keys":{"true":1,"e":2}, "arr":[1,2,{"x":[]}]}"#,
        ] {
            assert_eq!(strict_problem(fine), None, "{fine}");
        }
    }

    fn end(text: &str) -> Option<&str> {
        value_end(text.as_bytes(), 0).map(|(e, _)| &text[..e])
    }

    #[test]
    fn values_end_where_json_says() {
        assert_eq!(end(r#""a\"b" , 1"#), Some(r#""a\"b""#));
        assert_eq!(end(r#""a\\" , 1"#), Some(r#""a\\""#));
        assert_eq!(
            end(r#"{"a":["}",{"b":"]"}]} x"#),
            Some(r#"{"a":["}",{"b":"]"}]}"#)
        );
        assert_eq!(end("12.5e3,"), Some("12.5e3"));
        assert_eq!(end("null}"), Some("null"));
        assert_eq!(end("true"), Some("true"));
    }

    #[test]
    fn broken_text_gives_none_not_a_panic() {
        for text in [r#""abc"#, r#""ab\"#, "{", r#"{"a":"}"#, "]", "", r#"[1,"\"#] {
            let _ = value_end(text.as_bytes(), 0);
        }
        assert_eq!(end(r#""abc"#), None);
        assert_eq!(end("{[}"), None);
        assert_eq!(end("]"), None);
    }

    #[test]
    fn strings_are_borrowed_unless_escaped() {
        assert!(matches!(
            string_contents(r#""abc""#, false),
            Some(Cow::Borrowed("abc"))
        ));
        assert_eq!(
            string_contents(r#""t\u0079pe\n""#, true).as_deref(),
            Some("type\n")
        );
        assert_eq!(string_contents("\"", false), None);
    }
}
