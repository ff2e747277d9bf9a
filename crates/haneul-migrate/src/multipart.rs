//! A streaming reader of `multipart/related` bodies (RFC 2046), the form in
//! which WADO-RS sends a study's instances. Bytes are pushed as they arrive
//! and come out as events (a part's headers, pieces of its body, its end), so
//! that no part is ever held whole in memory: what stays buffered is at most
//! the last chunk pushed plus a boundary's length. No I/O here, so that it
//! can be unit-tested and fuzzed (`fuzz/fuzz_targets/wado_multipart.rs`).
//!
//! Lenient where senders differ (a preamble, transport padding after a
//! boundary, bare LF line ends in the part headers, folded header lines),
//! strict where data could be lost: the body must end with the final
//! boundary, or [`MultipartReader::finish`] says it was cut short.

use memchr::memmem::Finder;

/// Most bytes of a preamble (before the first boundary).
pub const MAX_PREAMBLE: usize = 64 * 1024;
/// Most bytes of one part's headers.
pub const MAX_HEADERS: usize = 16 * 1024;
/// Most bytes of transport padding (spaces, tabs) after a boundary.
pub const MAX_PADDING: usize = 1024;
/// Longest boundary taken (RFC 2046 allows 70 characters; some senders use more).
const MAX_BOUNDARY: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("the content type {0:?} is not multipart")]
    NotMultipart(String),
    #[error("the content type {0:?} names no boundary")]
    NoBoundary(String),
    #[error("invalid multipart boundary {0:?}")]
    BadBoundary(String),
    #[error("no multipart boundary in the first {0} bytes")]
    NoFirstBoundary(usize),
    #[error("part headers longer than {0} bytes")]
    HeadersTooLong(usize),
    #[error("malformed part header {0:?}")]
    BadHeader(String),
    #[error("the body ended before its final boundary ({0})")]
    Truncated(&'static str),
}

/// What the pushed bytes held next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part begins, with its headers.
    Part(PartHeaders),
    /// The next bytes of the current part's body.
    Data(Vec<u8>),
    /// The current part's body is complete.
    PartEnd,
    /// The final boundary: nothing follows (an epilogue is ignored).
    End,
}

/// A part's headers, names in lower case, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartHeaders {
    pub headers: Vec<(String, String)>,
}

impl PartHeaders {
    /// The first value of the header `name` (lower case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The media type of the part without its parameters, in lower case.
    pub fn media_type(&self) -> Option<String> {
        let value = self.get("content-type")?;
        Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
    }
}

/// The `boundary` parameter of a multipart content type, e.g. of
/// `multipart/related; type="application/dicom"; boundary=abc`.
pub fn boundary_of(content_type: &str) -> Result<String, MultipartError> {
    let (essence, parameters) = content_type.split_once(';').unwrap_or((content_type, ""));
    if !essence.trim().to_ascii_lowercase().starts_with("multipart/") {
        return Err(MultipartError::NotMultipart(content_type.to_string()));
    }
    let boundary = media_parameters(parameters)
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value)
        .ok_or_else(|| MultipartError::NoBoundary(content_type.to_string()))?;
    check_boundary(&boundary)?;
    Ok(boundary)
}

/// `name=value` parameters of a media type, values unquoted; what does not parse is skipped.
fn media_parameters(text: &str) -> Vec<(String, String)> {
    let mut parameters = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ';' || c.is_whitespace()).is_some() {}
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ';')).collect();
        if name.is_empty() && chars.peek().is_none() {
            return parameters;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    other => value.push(other),
                }
            }
            // Anything between the closing quote and the next ';' is ignored.
            while chars.next_if(|c| *c != ';').is_some() {}
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ';')).collect::<String>().trim().to_string();
        }
        parameters.push((name.trim().to_string(), value));
    }
}

fn check_boundary(boundary: &str) -> Result<(), MultipartError> {
    let valid = !boundary.is_empty()
        && boundary.len() <= MAX_BOUNDARY
        && !boundary.ends_with(' ')
        && boundary.bytes().all(|byte| (0x20..0x7F).contains(&byte));
    match valid {
        true => Ok(()),
        false => Err(MultipartError::BadBoundary(boundary.to_string())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    Headers,
    Body,
    /// After the final boundary.
    Epilogue,
}

/// What follows a boundary in the bytes at hand.
enum Tail {
    /// Not enough bytes to tell.
    NeedMore,
    /// `--`: the final boundary (bytes to consume after the boundary).
    Close(usize),
    /// Padding and a line end: a part follows (bytes to consume).
    Open(usize),
    /// Something else: the boundary's text is part of the data.
    NotBoundary,
}

fn tail(rest: &[u8]) -> Tail {
    if rest.starts_with(b"--") {
        return Tail::Close(2);
    }
    if rest == b"-" {
        return Tail::NeedMore;
    }
    let padding = rest.iter().take_while(|&&byte| byte == b' ' || byte == b'\t').count();
    if padding > MAX_PADDING {
        return Tail::NotBoundary;
    }
    match rest.get(padding..) {
        Some([b'\n', ..]) => Tail::Open(padding + 1),
        Some([b'\r', b'\n', ..]) => Tail::Open(padding + 2),
        Some([] | [b'\r']) => Tail::NeedMore,
        _ => Tail::NotBoundary,
    }
}

/// What one header line was.
enum Line {
    NeedMore,
    Header,
    /// The empty line that ends the headers.
    Last(PartHeaders),
}

/// The reader of one multipart body.
pub struct MultipartReader {
    /// `--boundary`, which opens the first part.
    dash_boundary: Finder<'static>,
    /// `\r\n--boundary`, which ends a part.
    delimiter: Finder<'static>,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already read.
    start: usize,
    state: State,
    /// Whether `start` is at the beginning of a line (of the preamble).
    line_start: bool,
    /// Preamble or header bytes read so far.
    counted: usize,
    headers: PartHeaders,
    /// `End` is due after the `PartEnd` just returned.
    end_due: bool,
}

impl MultipartReader {
    pub fn new(boundary: &str) -> Result<MultipartReader, MultipartError> {
        check_boundary(boundary)?;
        Ok(MultipartReader {
            dash_boundary: Finder::new(format!("--{boundary}").as_bytes()).into_owned(),
            delimiter: Finder::new(format!("\r\n--{boundary}").as_bytes()).into_owned(),
            buffer: Vec::new(),
            start: 0,
            state: State::Preamble,
            line_start: true,
            counted: 0,
            headers: PartHeaders::default(),
            end_due: false,
        })
    }

    /// Append received bytes; read the events they hold with [`MultipartReader::next_event`].
    pub fn push(&mut self, data: &[u8]) {
        if self.state == State::Epilogue {
            return;
        }
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(data);
    }

    /// Bytes held, not yet returned as events.
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// The next event of what was pushed; `None` when more bytes are needed
    /// (or the final boundary was read).
    pub fn next_event(&mut self) -> Result<Option<Event>, MultipartError> {
        loop {
            if std::mem::take(&mut self.end_due) {
                return Ok(Some(Event::End));
            }
            match self.state {
                State::Preamble => {
                    if !self.preamble()? && !self.end_due {
                        return Ok(None);
                    }
                }
                State::Headers => match self.header_line()? {
                    Line::NeedMore => return Ok(None),
                    Line::Header => {}
                    Line::Last(headers) => return Ok(Some(Event::Part(headers))),
                },
                State::Body => return Ok(self.body()),
                State::Epilogue => {
                    self.start = self.buffer.len();
                    return Ok(None);
                }
            }
        }
    }

    /// The body has ended: an error unless its final boundary was read.
    pub fn finish(&self) -> Result<(), MultipartError> {
        match self.state {
            State::Epilogue => Ok(()),
            State::Preamble => Err(MultipartError::Truncated("no part began")),
            State::Headers => Err(MultipartError::Truncated("in the headers of a part")),
            State::Body => Err(MultipartError::Truncated("in the body of a part")),
        }
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
    }

    /// Look for the first boundary, at the start of a line; true once past it.
    fn preamble(&mut self) -> Result<bool, MultipartError> {
        let boundary_len = self.dash_boundary.needle().len();
        let mut from = 0;
        loop {
            let available = &self.buffer[self.start..];
            let Some(found) = self.dash_boundary.find(&available[from..]).map(|at| at + from) else { break };
            let at_line_start = if found == 0 { self.line_start } else { available[found - 1] == b'\n' };
            if at_line_start {
                // The same limit however the preamble was cut into chunks.
                if self.counted + found > MAX_PREAMBLE {
                    return Err(MultipartError::NoFirstBoundary(MAX_PREAMBLE));
                }
                match tail(&available[found + boundary_len..]) {
                    Tail::NeedMore => {
                        self.counted += found;
                        self.consume(found);
                        self.line_start = true;
                        return self.check_preamble().map(|()| false);
                    }
                    Tail::Open(after) => {
                        self.consume(found + boundary_len + after);
                        self.state = State::Headers;
                        self.counted = 0;
                        return Ok(true);
                    }
                    Tail::Close(after) => {
                        // A body without parts.
                        self.consume(found + boundary_len + after);
                        self.state = State::Epilogue;
                        self.end_due = true;
                        return Ok(false);
                    }
                    Tail::NotBoundary => {}
                }
            }
            from = found + 1;
        }
        // Keep what could be the start of a boundary cut off by the chunk's end.
        let available = &self.buffer[self.start..];
        let discard = available.len().saturating_sub(boundary_len - 1);
        if discard > 0 {
            self.line_start = available[discard - 1] == b'\n';
            self.counted += discard;
            self.consume(discard);
        }
        self.check_preamble().map(|()| false)
    }

    fn check_preamble(&self) -> Result<(), MultipartError> {
        match self.counted > MAX_PREAMBLE {
            true => Err(MultipartError::NoFirstBoundary(MAX_PREAMBLE)),
            false => Ok(()),
        }
    }

    /// One header line.
    fn header_line(&mut self) -> Result<Line, MultipartError> {
        let available = &self.buffer[self.start..];
        let Some(end) = memchr::memchr(b'\n', available) else {
            if self.counted + available.len() > MAX_HEADERS {
                return Err(MultipartError::HeadersTooLong(MAX_HEADERS));
            }
            return Ok(Line::NeedMore);
        };
        self.counted += end + 1;
        if self.counted > MAX_HEADERS {
            return Err(MultipartError::HeadersTooLong(MAX_HEADERS));
        }
        let line = available[..end].strip_suffix(b"\r").unwrap_or(&available[..end]);
        let line = String::from_utf8_lossy(line).into_owned();
        self.consume(end + 1);
        if line.is_empty() {
            self.state = State::Body;
            return Ok(Line::Last(std::mem::take(&mut self.headers)));
        }
        if line.starts_with([' ', '\t']) {
            // A folded line continues the previous header.
            let Some((_, value)) = self.headers.headers.last_mut() else {
                return Err(MultipartError::BadHeader(shorten(&line)));
            };
            value.push(' ');
            value.push_str(line.trim());
            return Ok(Line::Header);
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(MultipartError::BadHeader(shorten(&line)));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(MultipartError::BadHeader(shorten(&line)));
        }
        self.headers.headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        Ok(Line::Header)
    }

    /// The next piece of the body, or its end.
    fn body(&mut self) -> Option<Event> {
        let delimiter_len = self.delimiter.needle().len();
        let available = &self.buffer[self.start..];
        match self.delimiter.find(available) {
            Some(0) => match tail(&available[delimiter_len..]) {
                Tail::NeedMore => None,
                Tail::Open(after) => {
                    self.consume(delimiter_len + after);
                    self.state = State::Headers;
                    self.counted = 0;
                    Some(Event::PartEnd)
                }
                Tail::Close(after) => {
                    self.consume(delimiter_len + after);
                    self.state = State::Epilogue;
                    self.end_due = true;
                    Some(Event::PartEnd)
                }
                Tail::NotBoundary => {
                    // The boundary has no CR, so no delimiter starts inside this text.
                    let data = available[..delimiter_len].to_vec();
                    self.consume(delimiter_len);
                    Some(Event::Data(data))
                }
            },
            Some(found) => {
                let data = available[..found].to_vec();
                self.consume(found);
                Some(Event::Data(data))
            }
            None => {
                // Keep what could be the start of a delimiter cut off by the chunk's end.
                let ready = available.len().saturating_sub(delimiter_len - 1);
                if ready == 0 {
                    return None;
                }
                let data = available[..ready].to_vec();
                self.consume(ready);
                Some(Event::Data(data))
            }
        }
    }
}

fn shorten(line: &str) -> String {
    line.chars().take(100).collect()
}

/// One part as [`read_all`] collects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: PartHeaders,
    pub body: Vec<u8>,
}

/// Every part of a body pushed in `chunks` (for tests and fuzzing; a
/// retrieve streams the events instead). Panics if the reader's events come
/// out of order (data outside a part, no `End` before a clean finish): a
/// bug of the reader, which is what fuzzing looks for.
pub fn read_all<'a>(boundary: &str, chunks: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<Part>, MultipartError> {
    let mut reader = MultipartReader::new(boundary)?;
    let mut parts: Vec<Part> = Vec::new();
    let (mut in_part, mut ended) = (false, false);
    for chunk in chunks {
        reader.push(chunk);
        while let Some(event) = reader.next_event()? {
            assert!(!ended, "{event:?} after the end");
            match (event, in_part) {
                (Event::Part(headers), false) => {
                    parts.push(Part { headers, body: Vec::new() });
                    in_part = true;
                }
                (Event::Data(data), true) => match parts.last_mut() {
                    Some(part) => part.body.extend_from_slice(&data),
                    None => unreachable!("in a part without parts"),
                },
                (Event::PartEnd, true) => in_part = false,
                (Event::End, false) => ended = true,
                (event, _) => panic!("{event:?} {} a part", if in_part { "inside" } else { "outside" }),
            }
        }
    }
    reader.finish()?;
    assert!(ended, "finished without the End event");
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "439234e8-1982-48f1-9bc6-9d6e5eedcd22";

    fn body(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        out
    }

    fn bodies(parts: &[Part]) -> Vec<&[u8]> {
        parts.iter().map(|part| part.body.as_slice()).collect()
    }

    #[test]
    fn several_parts_with_their_headers() {
        let input = body(&[b"first", b"", b"\r\nthird\r\n"]);
        let parts = read_all(BOUNDARY, [input.as_slice()]).expect("a valid body");
        assert_eq!(bodies(&parts), vec![&b"first"[..], b"", b"\r\nthird\r\n"]);
        assert_eq!(parts[0].headers.media_type().as_deref(), Some("application/dicom"));
        assert_eq!(parts[0].headers.get("content-type"), Some("application/dicom"));
    }

    #[test]
    fn a_body_split_at_every_position_reads_the_same() {
        let data: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let input = body(&[b"part one", &data, format!("--{BOUNDARY}").as_bytes()]);
        let whole = read_all(BOUNDARY, [input.as_slice()]).expect("a valid body");
        assert_eq!(whole.len(), 3);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(read_all(BOUNDARY, [a, b]).as_ref(), Ok(&whole), "cut at {cut}");
        }
        for size in [1, 2, 3, 7, 40, 41, 42, 43] {
            assert_eq!(read_all(BOUNDARY, input.chunks(size)).as_ref(), Ok(&whole), "chunks of {size}");
        }
    }

    #[test]
    fn boundary_like_text_inside_data_is_data() {
        let tricky: Vec<u8> = [
            format!("--{BOUNDARY}").as_bytes(),
            b"\r\n",
            format!("\r\n--{BOUNDARY}X").as_bytes(),
            format!("\r\n--{}", &BOUNDARY[..10]).as_bytes(),
            b"\r\n-",
            b"\r\n--",
            b"\r",
        ]
        .concat();
        let input = body(&[&tricky, b"after"]);
        for size in [1, 5, input.len()] {
            let parts = read_all(BOUNDARY, input.chunks(size)).expect("a valid body");
            assert_eq!(bodies(&parts), vec![tricky.as_slice(), b"after"], "chunks of {size}");
        }
    }

    #[test]
    fn a_preamble_padding_bare_line_feeds_and_an_epilogue_are_taken() {
        let input = format!(
            "This is a preamble.\r\n--{BOUNDARY}  \t\r\nContent-Type: application/dicom;\n transfer-syntax=1.2.840.10008.1.2.1\nContent-Length: 3\n\nabc\r\n--{BOUNDARY}--\r\nepilogue --{BOUNDARY}\r\n"
        );
        let parts = read_all(BOUNDARY, input.as_bytes().chunks(3)).expect("a valid body");
        assert_eq!(bodies(&parts), vec![&b"abc"[..]]);
        assert_eq!(
            parts[0].headers.get("content-type"),
            Some("application/dicom; transfer-syntax=1.2.840.10008.1.2.1")
        );
        assert_eq!(parts[0].headers.media_type().as_deref(), Some("application/dicom"));
        assert_eq!(parts[0].headers.get("content-length"), Some("3"));
        // A boundary not at the start of a line is preamble text.
        let input = format!("x--{BOUNDARY}\r\n--{BOUNDARY}\r\n\r\nabc\r\n--{BOUNDARY}--");
        let parts = read_all(BOUNDARY, [input.as_bytes()]).expect("a valid body");
        assert_eq!(bodies(&parts), vec![&b"abc"[..]]);
        assert!(parts[0].headers.headers.is_empty());
        // No parts at all.
        assert_eq!(read_all(BOUNDARY, [format!("--{BOUNDARY}--").as_bytes()]), Ok(Vec::new()));
    }

    #[test]
    fn a_missing_final_boundary_is_an_error() {
        let input = body(&[b"first", b"second"]);
        let closing = format!("--{BOUNDARY}--\r\n").len();
        let cut = &input[..input.len() - closing];
        assert_eq!(read_all(BOUNDARY, [cut]), Err(MultipartError::Truncated("in the body of a part")));
        let in_headers = format!("--{BOUNDARY}\r\nContent-Type: app");
        assert_eq!(
            read_all(BOUNDARY, [in_headers.as_bytes()]),
            Err(MultipartError::Truncated("in the headers of a part"))
        );
        assert_eq!(read_all(BOUNDARY, [&b""[..]]), Err(MultipartError::Truncated("no part began")));
        // Every cut short of the final boundary is an error, never a panic.
        for end in 0..input.len() - 2 {
            assert!(read_all(BOUNDARY, [&input[..end]]).is_err(), "cut at {end}");
        }
    }

    #[test]
    fn malformed_and_oversized_input_is_an_error() {
        let input = format!("--{BOUNDARY}\r\nno colon here\r\n\r\nabc\r\n--{BOUNDARY}--");
        assert_eq!(read_all(BOUNDARY, [input.as_bytes()]), Err(MultipartError::BadHeader("no colon here".into())));
        let long = format!("--{BOUNDARY}\r\nX-Long: {}\r\n\r\n", "a".repeat(MAX_HEADERS));
        assert_eq!(read_all(BOUNDARY, long.as_bytes().chunks(100)), Err(MultipartError::HeadersTooLong(MAX_HEADERS)));
        let preamble = vec![b'x'; MAX_PREAMBLE + 1000];
        assert_eq!(read_all(BOUNDARY, preamble.chunks(1000)), Err(MultipartError::NoFirstBoundary(MAX_PREAMBLE)));
        assert!(MultipartReader::new("").is_err());
        assert!(MultipartReader::new("a\r\nb").is_err());
    }

    #[test]
    fn memory_stays_bounded_whatever_the_part_size() {
        let big = vec![0x5Au8; 3 << 20];
        let input = body(&[&big]);
        let mut reader = MultipartReader::new(BOUNDARY).expect("a valid boundary");
        let mut received = 0;
        let mut most_buffered = 0;
        for chunk in input.chunks(64 * 1024) {
            reader.push(chunk);
            most_buffered = most_buffered.max(reader.buffered());
            while let Some(event) = reader.next_event().expect("a valid body") {
                if let Event::Data(data) = event {
                    received += data.len();
                }
            }
        }
        reader.finish().expect("complete");
        assert_eq!(received, big.len());
        assert!(most_buffered <= 64 * 1024 + BOUNDARY.len() + 4, "{most_buffered} bytes buffered");
    }

    /// Random bodies made of the pieces that matter to the reader read the
    /// same (parts, or error) whether pushed whole or in small chunks.
    #[test]
    fn random_bodies_read_the_same_whatever_the_chunks() {
        let boundary = "b1";
        let pieces: [&[u8]; 14] = [
            b"--b1",
            b"\r\n",
            b"--",
            b"\n",
            b"x",
            b" ",
            b"\r",
            b"-",
            b"Content-Type: a/b\r\n",
            b":",
            b"b1",
            b"\t",
            b"--b1--",
            b"\r\n--b1\r\n\r\n",
        ];
        // A fixed xorshift sequence: the same inputs on every run.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut complete = 0;
        for _ in 0..5000 {
            let length = next() % 24;
            let input: Vec<u8> = (0..length).flat_map(|_| pieces[(next() % 14) as usize].to_vec()).collect();
            let whole = read_all(boundary, [input.as_slice()]);
            complete += usize::from(whole.is_ok());
            for size in 1..=4 {
                assert_eq!(
                    read_all(boundary, input.chunks(size)),
                    whole,
                    "{:?} in chunks of {size}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        assert!(complete > 100, "only {complete} inputs were complete bodies");
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        let orthanc = "multipart/related; type=\"application/dicom\"; boundary=439234e8-1982";
        assert_eq!(boundary_of(orthanc).as_deref(), Ok("439234e8-1982"));
        let quoted = "Multipart/Related; BOUNDARY=\"a;b \\\"c\\\"\"; type=\"application/dicom\"";
        assert_eq!(boundary_of(quoted).as_deref(), Ok("a;b \"c\""));
        let after = "multipart/related;type=\"application/dicom; transfer-syntax=*\";boundary=xyz ";
        assert_eq!(boundary_of(after).as_deref(), Ok("xyz"));
        assert!(matches!(boundary_of("application/dicom"), Err(MultipartError::NotMultipart(_))));
        assert!(matches!(boundary_of("multipart/related; type=x"), Err(MultipartError::NoBoundary(_))));
        assert!(matches!(boundary_of("multipart/related; boundary=\"\""), Err(MultipartError::BadBoundary(_))));
        assert!(matches!(boundary_of("multipart/related; boundary"), Err(MultipartError::NoBoundary(_))));
    }
}
