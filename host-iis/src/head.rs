//! Headers and statuses in the text forms the IIS interfaces use: the raw
//! header block of a request (`ALL_RAW`), and the status line and header
//! block of a response (`HSE_SEND_HEADER_EX_INFO`).

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};

use crate::mapping::MappingError;

/// Parses a raw header block (`ALL_RAW`: `Name: value` lines ending in CRLF;
/// bare LF tolerated). Values keep their bytes, obs-text included; folded
/// continuation lines join the previous value with one space.
pub fn parse_header_block(block: &[u8]) -> Result<HeaderMap, MappingError> {
    parse_headers(block, |value| HeaderValue::from_bytes(value).ok())
}

/// [`parse_header_block`] on a shared buffer: the values are slices of
/// `block` rather than copies (except folded ones).
pub fn parse_header_bytes(block: &Bytes) -> Result<HeaderMap, MappingError> {
    parse_headers(block, |value| {
        HeaderValue::from_maybe_shared(block.slice_ref(value)).ok()
    })
}

/// The header parser; `value` makes a value from a part of `block` (`None`
/// if it holds control characters).
fn parse_headers(
    block: &[u8],
    value: impl Fn(&[u8]) -> Option<HeaderValue>,
) -> Result<HeaderMap, MappingError> {
    let bad = |why: String| MappingError::Invalid {
        name: "ALL_RAW",
        why,
    };
    let mut headers = HeaderMap::new();
    // A value is copied only when a continuation line extends it.
    let mut last: Option<(HeaderName, Cow<'_, [u8]>)> = None;
    let flush = |headers: &mut HeaderMap,
                 entry: Option<(HeaderName, Cow<'_, [u8]>)>|
     -> Result<(), MappingError> {
        if let Some((name, raw)) = entry {
            let made = match raw {
                Cow::Borrowed(raw) => value(raw.trim_ascii()),
                Cow::Owned(raw) => HeaderValue::from_bytes(raw.trim_ascii()).ok(),
            };
            let made = made
                .ok_or_else(|| bad(format!("header {name} has a value with control characters")))?;
            headers.append(name, made);
        }
        Ok(())
    };
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            let (_, folded) = last
                .as_mut()
                .ok_or_else(|| bad("a continuation line comes first".into()))?;
            let folded = folded.to_mut();
            folded.push(b' ');
            folded.extend_from_slice(line.trim_ascii());
            continue;
        }
        flush(&mut headers, last.take())?;
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            bad(format!(
                "line without a colon: {:?}",
                String::from_utf8_lossy(line)
            ))
        })?;
        let name = HeaderName::from_bytes(line[..colon].trim_ascii()).map_err(|_| {
            bad(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&line[..colon])
            ))
        })?;
        last = Some((name, Cow::Borrowed(&line[colon + 1..])));
    }
    flush(&mut headers, last)?;
    Ok(headers)
}

/// The header block IIS takes with a response status: `Name: value` lines,
/// each ending in CRLF, and the blank line that ends the head.
pub fn header_block(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() * 32 + 2);
    append_header_block(&mut out, headers);
    out
}

/// [`header_block`], appended to `out`.
pub fn append_header_block(out: &mut Vec<u8>, headers: &HeaderMap) {
    append_header_lines(out, headers);
    out.extend_from_slice(b"\r\n");
}

/// [`append_header_block`] without the empty line that ends the block, for
/// a caller that adds headers of its own after these.
pub fn append_header_lines(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal, written into the end of `buf` (a `u64` has at most 20
/// digits): for a header value without formatting machinery or allocation.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The status as IIS takes it: `200 OK`, or the bare code when there is no
/// standard reason phrase.
pub fn status_line(status: StatusCode) -> String {
    let mut out = Vec::with_capacity(32);
    append_status_line(&mut out, status);
    // Digits and a standard reason phrase: ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

/// [`status_line`], appended to `out`.
pub fn append_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(status.as_str().as_bytes());
    if let Some(reason) = status.canonical_reason() {
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_keep_bytes_order_and_repeats() {
        let raw = b"Host: x\r\nX-Multi: one\r\nX-Latin: caf\xe9\r\nX-Multi: two\r\nX-Folded: a\r\n\tb\r\n\r\n";
        let h = parse_header_block(raw).unwrap();
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert_eq!(h["x-latin"].as_bytes(), b"caf\xe9");
        assert_eq!(h["x-folded"], "a b");
        assert!(parse_header_block(b"no colon here\r\n").is_err());
        assert!(parse_header_block(b" leading continuation\r\n").is_err());
        assert!(parse_header_block(b"Bad Name: x\r\n").is_err());
        assert_eq!(
            parse_header_block(b"A: 1\nB: 2\n").unwrap().len(),
            2,
            "bare LF tolerated"
        );
        // The same from a shared buffer, whose unfolded values are not
        // copied.
        let shared = Bytes::from_static(raw);
        let from_bytes = parse_header_bytes(&shared).unwrap();
        assert_eq!(from_bytes, h);
        let inside = |v: &HeaderValue| shared.as_ptr_range().contains(&v.as_bytes().as_ptr());
        assert!(inside(&from_bytes["x-latin"]));
        assert!(!inside(&from_bytes["x-folded"]), "a folded value is new");
        assert!(parse_header_bytes(&Bytes::from_static(b"A: x\x01y\r\n")).is_err());
    }

    #[test]
    fn decimals_are_written_whole() {
        for n in [0, 7, 10, 99, 4096, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
        }
    }

    #[test]
    fn response_heads_are_formatted_as_iis_takes_them() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        assert_eq!(
            header_block(&h),
            b"content-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n".to_vec()
        );
        assert_eq!(header_block(&HeaderMap::new()), b"\r\n".to_vec());
        assert_eq!(status_line(StatusCode::OK), "200 OK");
        assert_eq!(status_line(StatusCode::from_u16(299).unwrap()), "299");
        // Round trip: what we write parses back to the same headers.
        assert_eq!(parse_header_block(&header_block(&h)).unwrap(), h);
    }
}
