//! The bytes of a `/metrics` answer: both exposition formats written in one
//! pass from what prometheus-client encodes, control characters out on the
//! way, and gzip framing that lets a cached, compressed body take a small
//! tail written per request without compressing anything again.
//!
//! prometheus-client writes OpenMetrics. The Prometheus 0.0.4 text format
//! differs only in its metadata lines (counter families named with
//! `_total`, `info` as a gauge, no `# UNIT`, no `# EOF`), so [`Writer`]
//! passes sample lines through and rewrites metadata lines as they end.

use std::fmt::{self, Write as _};

use super::kit::unsafe_in_label;

/// Which exposition format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
    /// `text/plain; version=0.0.4`
    Text,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::OpenMetrics, Format::Text];

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenMetrics => "openmetrics",
            Format::Text => "text",
        }
    }
}

/// A `fmt::Write` that prometheus-client encodes into, producing `format`
/// directly: every control character but the line break becomes U+FFFD
/// (prometheus-client escapes newlines inside label values and help texts,
/// so a raw one is always a line break; any other control character came
/// from a configuration name, a MongoDB document or a Redis name), and in
/// the text format metadata lines are rewritten as they end.
pub struct Writer {
    out: String,
    /// When the exposition is compressed as it is written: where `out`
    /// goes whenever it holds [`CHUNK`] bytes at a line's start.
    deflating: Option<Deflating>,
    format: Format,
    /// The metadata line being written (from its `#` to its newline).
    meta: Option<String>,
    at_line_start: bool,
    /// Plain bytes copied from earlier encodings ([`Writer::reuse`]).
    reused: u64,
    /// A `# HELP` line waiting for its `# TYPE` (the text format names the
    /// family by its type).
    pending_help: Option<String>,
}

impl Writer {
    pub fn new(format: Format, capacity: usize) -> Self {
        Writer {
            out: String::with_capacity(capacity),
            deflating: None,
            format,
            meta: None,
            at_line_start: true,
            reused: 0,
            pending_help: None,
        }
    }

    /// A writer that compresses as it goes ([`Writer::finish_deflated`]):
    /// the plain text never exists whole (at 10,000 components it is
    /// 16 MB, written out to memory and read back by the compressor;
    /// in pieces of [`CHUNK`] it stays in the cache), `compressed` the room
    /// to start with for the compressed form.
    pub fn deflating(format: Format, compressed: usize) -> Self {
        Writer {
            deflating: Some(Deflating::new(compressed)),
            ..Writer::new(format, CHUNK + CHUNK / 4)
        }
    }

    fn end_metadata(&mut self) {
        if let Some(m) = self.meta.take() {
            self.metadata(&m);
        }
    }

    /// The exposition written so far (a last unterminated line included).
    /// A deflating writer's text went to its compressor: only the last
    /// piece is here.
    pub fn finish(mut self) -> String {
        self.end_metadata();
        self.out
    }

    /// The whole exposition compressed (the writer's own text compressed
    /// when it was made with [`Writer::new`]).
    pub fn finish_deflated(mut self) -> Deflated {
        self.end_metadata();
        let mut d = self
            .deflating
            .take()
            .unwrap_or_else(|| Deflating::new(self.out.len() / 8 + 64));
        d.write(self.out.as_bytes());
        d.finish()
    }

    /// The `# HELP` and `# TYPE` lines of a family written line by line
    /// ([`super::lines`]), in this writer's format.
    pub fn metadata_lines(
        &mut self,
        name: &str,
        help: &str,
        ty: prometheus_client::metrics::MetricType,
    ) {
        let _ = write!(
            self,
            "# HELP {name} {help}\n# TYPE {name} {}\n",
            ty.as_str()
        );
    }

    /// Where whole sample lines go as they are: already safe, between
    /// metadata lines (the last piece written ended a line).
    /// Called before each series' lines: a deflating writer compresses
    /// what it holds here once that is a [`CHUNK`].
    pub fn samples(&mut self) -> &mut String {
        debug_assert!(self.at_line_start && self.meta.is_none() && self.pending_help.is_none());
        if let Some(d) = &mut self.deflating
            && self.out.len() >= CHUNK
        {
            d.write(self.out.as_bytes());
            self.out.clear();
        }
        &mut self.out
    }

    /// Whether this writer compresses as it goes: only such a writer makes
    /// and reuses [`Segment`]s.
    pub fn segments(&self) -> bool {
        self.deflating.is_some()
    }

    /// The sample lines written from here to [`Writer::end_segment`] make
    /// a [`Segment`] (a no-op unless [`Writer::segments`]).
    pub fn begin_segment(&mut self) {
        if let Some(d) = self.handed_over() {
            d.begin_segment();
        }
    }

    /// The segment begun last, ended here.
    pub fn end_segment(&mut self) -> Option<Segment> {
        self.handed_over()?.end_segment()
    }

    /// `s`, made by an earlier encoding, where its text goes: as if that
    /// text had been written here (only on a writer with
    /// [`Writer::segments`]; `false` on any other, which writes nothing).
    pub fn reuse(&mut self, s: &Segment) -> bool {
        let Some(d) = self.handed_over() else {
            return false;
        };
        d.reuse(s);
        self.reused += s.len;
        true
    }

    /// A deflating writer's compressor, with everything written so far
    /// handed to it (between lines); `None` for a plain writer.
    fn handed_over(&mut self) -> Option<&mut Deflating> {
        debug_assert!(self.at_line_start && self.meta.is_none() && self.pending_help.is_none());
        let d = self.deflating.as_mut()?;
        d.write(self.out.as_bytes());
        self.out.clear();
        Some(d)
    }

    /// Plain bytes so far that were copied from earlier encodings
    /// ([`Writer::reuse`]), not written.
    pub fn reused(&self) -> u64 {
        self.reused
    }

    fn data(&mut self, s: &str) {
        push_scrubbed(&mut self.out, s);
    }

    /// One whole metadata line, with its newline.
    fn metadata(&mut self, line: &str) {
        if self.format == Format::OpenMetrics {
            push_scrubbed(&mut self.out, line);
            return;
        }
        let body = line.strip_suffix('\n').unwrap_or(line);
        if let Some(rest) = body.strip_prefix("# HELP ") {
            self.pending_help = Some(rest.to_string());
            return;
        }
        if let Some(rest) = body.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, ty) = match ty {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" | "stateset" | "gaugehistogram" => ("", "untyped"),
                t => ("", t),
            };
            let mut lines = String::with_capacity(line.len() + 64);
            if let Some(help) = self.pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                let _ = writeln!(lines, "# HELP {name}{suffix} {text}");
            }
            let _ = writeln!(lines, "# TYPE {name}{suffix} {ty}");
            push_scrubbed(&mut self.out, &lines);
            return;
        }
        // `# UNIT` and `# EOF` have no place in the text format; any other
        // comment is kept.
        if !body.starts_with("# UNIT ") && body != "# EOF" {
            push_scrubbed(&mut self.out, line);
        }
    }
}

impl fmt::Write for Writer {
    fn write_str(&mut self, mut s: &str) -> fmt::Result {
        // The usual piece (a name, a label value, a number, a line's end):
        // inside a sample line, no control character, at most a final
        // newline. One pass over its bytes, one copy.
        if self.meta.is_none() && !(self.at_line_start && s.starts_with('#')) {
            let b = s.as_bytes();
            match b.iter().position(|&c| c < 0x20 || c == 0x7f || c == 0xc2) {
                None if !b.is_empty() => {
                    self.out.push_str(s);
                    self.at_line_start = false;
                    return Ok(());
                }
                Some(i) if i + 1 == b.len() && b[i] == b'\n' => {
                    self.out.push_str(s);
                    self.at_line_start = true;
                    return Ok(());
                }
                _ => {}
            }
        }
        while !s.is_empty() {
            if let Some(meta) = &mut self.meta {
                match s.find('\n') {
                    Some(i) => {
                        meta.push_str(&s[..=i]);
                        let line = std::mem::take(meta);
                        self.meta = None;
                        self.metadata(&line);
                        self.at_line_start = true;
                        s = &s[i + 1..];
                    }
                    None => {
                        meta.push_str(s);
                        return Ok(());
                    }
                }
            } else if self.at_line_start && s.starts_with('#') {
                self.meta = Some(String::with_capacity(128));
            } else {
                match s.find('\n') {
                    Some(i) => {
                        self.data(&s[..=i]);
                        self.at_line_start = true;
                        s = &s[i + 1..];
                    }
                    None => {
                        self.data(s);
                        self.at_line_start = false;
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// Appends `s` with every control character but `\n` as U+FFFD.
fn push_scrubbed(out: &mut String, s: &str) {
    // Almost always clean: bytes below 0x20 (but \n), DEL, and 0xC2 (the
    // lead byte of the C1 controls, and of harmless characters) send the
    // piece to the careful path.
    if s.bytes()
        .all(|b| (b >= 0x20 || b == b'\n') && b != 0x7f && b != 0xc2)
    {
        out.push_str(s);
        return;
    }
    out.extend(s.chars().map(|c| {
        if c != '\n' && unsafe_in_label(c) {
            '\u{FFFD}'
        } else {
            c
        }
    }));
}

/// Families that write themselves through a [`Writer`] (`lines::Registry`).
pub trait Direct {
    fn write(&self, w: &mut Writer);
}

/// Everything in `registry` and then in `direct` in `format`, without the
/// OpenMetrics `# EOF`, into a buffer of `capacity` bytes to start with.
pub fn encode(
    registry: &prometheus_client::registry::Registry,
    direct: &[&dyn Direct],
    format: Format,
    capacity: usize,
) -> String {
    let mut w = Writer::new(format, capacity);
    write_all(&mut w, registry, direct);
    w.finish()
}

/// `registry` and then `direct` through `w`.
fn write_all(
    w: &mut Writer,
    registry: &prometheus_client::registry::Registry,
    direct: &[&dyn Direct],
) {
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode_registry(w, registry);
    for d in direct {
        d.write(w);
    }
}

/// Everything in `registry` and then in `direct` in `format`, compressed as
/// it is written (see [`Writer::deflating`]), without the OpenMetrics
/// `# EOF`.
pub fn encode_deflated(
    registry: &prometheus_client::registry::Registry,
    direct: &[&dyn Direct],
    format: Format,
    compressed: usize,
) -> Deflated {
    let mut w = Writer::deflating(format, compressed);
    write_all(&mut w, registry, direct);
    w.finish_deflated()
}

/// An OpenMetrics text (scrubbed) in `format`.
pub fn convert(om: &str, format: Format) -> String {
    let mut w = Writer::new(format, om.len());
    let _ = w.write_str(om);
    w.finish()
}

/// An exposition body compressed once as raw DEFLATE ending in a sync flush
/// (byte-aligned, not final), so that a gzip answer is this, a tail in one
/// final stored block, and a trailer whose CRC combines both: the tail is
/// written per request without compressing anything again.
pub struct Deflated {
    deflate: bytes::Bytes,
    crc: crc32fast::Hasher,
    len: u64,
}

/// A [`Deflated`] body being inflated piece by piece.
pub struct Inflating {
    deflate: bytes::Bytes,
    d: flate2::Decompress,
    /// Plain bytes still to come.
    left: u64,
}

impl Inflating {
    /// Plain bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.left
    }

    /// The next piece of the body, `None` at its end (or, logged, where
    /// the kept stream cannot be inflated: the answer is then short).
    pub fn next_piece(&mut self) -> Option<bytes::Bytes> {
        if self.left == 0 {
            return None;
        }
        let want = usize::try_from(self.left).map_or(CHUNK, |l| l.min(CHUNK));
        let mut out = Vec::with_capacity(want);
        // The stream ends in a sync flush, not a final block: the
        // decompressor stops when the input is used up.
        while out.len() < want {
            let at = usize::try_from(self.d.total_in()).unwrap_or(usize::MAX);
            let before = out.len();
            let input = self.deflate.get(at..).unwrap_or_default();
            match self
                .d
                .decompress_vec(input, &mut out, flate2::FlushDecompress::Sync)
            {
                Ok(_) if out.len() > before => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot inflate a kept /metrics encoding.");
                    break;
                }
            }
        }
        if out.is_empty() {
            debug_assert!(false, "a kept encoding ended {} bytes early", self.left);
            self.left = 0;
            return None;
        }
        self.left = self.left.saturating_sub(out.len() as u64);
        Some(bytes::Bytes::from(out))
    }
}

/// The gzip member header: no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The plain text a deflating [`Writer`] holds before compressing it.
pub const CHUNK: usize = 128 * 1024;

/// A [`Deflated`] being written.
struct Deflating {
    c: flate2::Compress,
    out: Vec<u8>,
    /// CRC-32 and length of the plain text outside the open segment.
    crc: crc32fast::Hasher,
    len: u64,
    /// The segment being written, if any.
    open: Option<Open>,
}

/// A segment being written: where its compressed bytes start in the
/// output, the CRC-32 and length of its plain text so far.
struct Open {
    start: usize,
    crc: crc32fast::Hasher,
    len: u64,
}

/// A run of a deflating [`Writer`]'s output that stands alone: its
/// compressed bytes refer to nothing before them (the compressor's history
/// was reset where it began) and end byte-aligned, so that a later
/// encoding can copy them where the same text would go instead of writing
/// and compressing that text again ([`Writer::reuse`]).
#[derive(Clone)]
pub struct Segment {
    deflate: std::sync::Arc<[u8]>,
    crc: crc32fast::Hasher,
    len: u64,
}

impl Segment {
    /// Size of the segment's text before compression.
    pub fn plain_len(&self) -> u64 {
        self.len
    }
}

impl Deflating {
    /// At the fast level: an exposition is repetitive, so the fast level
    /// already shrinks it 15- to 20-fold.
    fn new(capacity: usize) -> Deflating {
        Deflating {
            c: flate2::Compress::new(flate2::Compression::fast(), false),
            out: Vec::with_capacity(capacity),
            crc: crc32fast::Hasher::new(),
            len: 0,
            open: None,
        }
    }

    fn write(&mut self, plain: &[u8]) {
        self.compress(plain, flate2::FlushCompress::None);
        let (crc, len) = match &mut self.open {
            Some(o) => (&mut o.crc, &mut o.len),
            None => (&mut self.crc, &mut self.len),
        };
        crc.update(plain);
        *len += plain.len() as u64;
    }

    /// Compresses `input`, then flushes as `flush` says.
    fn compress(&mut self, mut input: &[u8], flush: flate2::FlushCompress) {
        loop {
            if self.out.capacity() - self.out.len() < 1024 {
                self.out.reserve((input.len() / 8).max(16 * 1024));
            }
            let before = self.c.total_in();
            // Compressing into a Vec with room cannot fail.
            let _ = self.c.compress_vec(input, &mut self.out, flush);
            let used = usize::try_from(self.c.total_in() - before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            // The output not filled: all of the input taken, the flush done.
            if input.is_empty() && self.out.len() < self.out.capacity() {
                return;
            }
        }
    }

    /// Everything so far compressed and byte-aligned, and the compressor's
    /// history forgotten: what follows refers to nothing before.
    fn full_flush(&mut self) {
        self.compress(&[], flate2::FlushCompress::Full);
    }

    fn begin_segment(&mut self) {
        debug_assert!(self.open.is_none(), "segments do not nest");
        self.full_flush();
        self.open = Some(Open {
            start: self.out.len(),
            crc: crc32fast::Hasher::new(),
            len: 0,
        });
    }

    fn end_segment(&mut self) -> Option<Segment> {
        self.full_flush();
        let o = self.open.take()?;
        self.crc.combine(&o.crc);
        self.len += o.len;
        Some(Segment {
            deflate: self.out[o.start..].into(),
            crc: o.crc,
            len: o.len,
        })
    }

    fn reuse(&mut self, s: &Segment) {
        debug_assert!(self.open.is_none(), "segments do not nest");
        self.full_flush();
        self.out.extend_from_slice(&s.deflate);
        self.crc.combine(&s.crc);
        self.len += s.len;
    }

    fn finish(mut self) -> Deflated {
        debug_assert!(self.open.is_none(), "a segment left open");
        // A sync flush: byte-aligned, not final.
        self.compress(&[], flate2::FlushCompress::Sync);
        Deflated {
            deflate: bytes::Bytes::from(self.out),
            crc: self.crc,
            len: self.len,
        }
    }
}

impl Deflated {
    /// Compresses `plain` (see [`Deflating`]).
    pub fn new(plain: &[u8]) -> Deflated {
        let mut d = Deflating::new(plain.len() / 8 + 64);
        d.write(plain);
        d.finish()
    }

    /// Size of the body before compression.
    pub fn plain_len(&self) -> u64 {
        self.len
    }

    /// The body again, whole.
    #[cfg(test)]
    pub fn inflate(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = self.inflating();
        while let Some(piece) = i.next_piece() {
            out.extend_from_slice(&piece);
        }
        debug_assert_eq!(out.len() as u64, self.len);
        out
    }

    /// The body again, in pieces of at most [`CHUNK`] bytes (a scrape
    /// without gzip of an encoding kept only compressed: at 10,000
    /// components 16 MB that never exist whole).
    pub fn inflating(&self) -> Inflating {
        Inflating {
            deflate: self.deflate.clone(),
            d: flate2::Decompress::new(false),
            left: self.len,
        }
    }

    /// Compressed size of the body alone.
    pub fn compressed_len(&self) -> usize {
        self.deflate.len()
    }

    /// The pieces of a gzip member holding the body then `tail` (at most
    /// 65,535 bytes): the header, the compressed body (borrowed) and the
    /// rest (a final stored block with `tail`, then CRC-32 and size).
    pub fn gzip_with(&self, tail: &[u8]) -> (&'static [u8], bytes::Bytes, Vec<u8>) {
        let n = u16::try_from(tail.len()).expect("a gzip tail of at most 65,535 bytes");
        let mut rest = Vec::with_capacity(tail.len() + 13);
        // BFINAL=1, BTYPE=00 (stored); the body ended byte-aligned.
        rest.push(0x01);
        rest.extend_from_slice(&n.to_le_bytes());
        rest.extend_from_slice(&(!n).to_le_bytes());
        rest.extend_from_slice(tail);
        let mut crc = self.crc.clone();
        crc.update(tail);
        rest.extend_from_slice(&crc.finalize().to_le_bytes());
        let total = self.len + tail.len() as u64;
        rest.extend_from_slice(&(total as u32).to_le_bytes());
        (&GZIP_HEADER, self.deflate.clone(), rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The gzip answer of `d` with `tail`, decoded.
    fn gunzip_with(d: &Deflated, tail: &str) -> String {
        let (h, mid, rest) = d.gzip_with(tail.as_bytes());
        let gz = [h, &mid[..], &rest[..]].concat();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    fn through(format: Format, pieces: &[&str]) -> String {
        let mut w = Writer::new(format, 64);
        for p in pieces {
            w.write_str(p).unwrap();
        }
        w.finish()
    }

    #[test]
    fn text_format_renames_counters_whatever_the_pieces() {
        let om = "# HELP a_checks Checks run.\n# TYPE a_checks counter\na_checks_total{c=\"x\"} 1\n# HELP a_info Build.\n# TYPE a_info info\na_info_info{v=\"1\"} 1\n# TYPE a_d histogram\n# UNIT a_d seconds\na_d_bucket{le=\"+Inf\"} 0\n# EOF\n";
        let want = "# HELP a_checks_total Checks run.\n# TYPE a_checks_total counter\na_checks_total{c=\"x\"} 1\n# HELP a_info_info Build.\n# TYPE a_info_info gauge\na_info_info{v=\"1\"} 1\n# TYPE a_d histogram\na_d_bucket{le=\"+Inf\"} 0\n";
        // Whole, and cut at every position (the encoder writes in pieces).
        assert_eq!(through(Format::Text, &[om]), want);
        for i in 1..om.len() {
            assert_eq!(
                through(Format::Text, &[&om[..i], &om[i..]]),
                want,
                "cut at {i}"
            );
        }
        assert_eq!(through(Format::OpenMetrics, &[om]), om);
    }

    #[test]
    fn control_characters_become_replacement_characters() {
        let s = "a{c=\"nul\0del\u{7f}c1\u{85}ok\u{b0}\"} 1\n# HELP x bell\u{7}\n# TYPE x gauge\n";
        for f in Format::ALL {
            let out = through(f, &[s]);
            assert!(
                out.contains("a{c=\"nul\u{FFFD}del\u{FFFD}c1\u{FFFD}ok\u{b0}\"} 1\n"),
                "{out}"
            );
            assert!(out.contains("# HELP x bell\u{FFFD}\n"), "{out}");
        }
    }

    #[test]
    fn gzip_of_a_cached_body_and_a_fresh_tail_decodes_whole() {
        let body: String = (0..5000)
            .map(|i| format!("depwatch_up{{component=\"c{i}\",kind=\"http\"}} 1\n"))
            .collect();
        let d = Deflated::new(body.as_bytes());
        assert!(
            d.compressed_len() * 10 < body.len(),
            "{}",
            d.compressed_len()
        );
        for tail in ["", "x 1\n# EOF\n"] {
            assert_eq!(gunzip_with(&d, tail), format!("{body}{tail}"));
        }
    }

    #[test]
    fn a_body_kept_only_compressed_inflates_whole() {
        // Larger than the decompressor's window and its internal buffers.
        let body: String = (0..200_000)
            .map(|i| {
                format!(
                    "depwatch_up{{component=\"c{i}\",kind=\"http\"}} {}\n",
                    i % 2
                )
            })
            .collect();
        assert!(body.len() > 4 << 20);
        assert_eq!(Deflated::new(body.as_bytes()).inflate(), body.as_bytes());
        assert_eq!(Deflated::new(b"").inflate(), b"");
    }

    /// A segment copied into another encoding decodes as its text there:
    /// it refers to nothing written before it, and what follows it refers
    /// to nothing before it either (the compressor never saw its text).
    #[test]
    fn a_segment_stands_alone_wherever_it_is_copied() {
        let lines = |tag: &str, n: usize| -> String {
            (0..n)
                .map(|i| format!("depwatch_up{{component=\"{tag}{i}\",kind=\"http\"}} 1\n"))
                .collect()
        };
        let (x, y, z) = (lines("x", 200), lines("y", 200), lines("z", 200));
        // Each made of lines the others repeat, so that a compressor that
        // could refer across a boundary would.
        let yx = format!("{y}{x}");
        let mut a = Writer::deflating(Format::Text, 16);
        a.samples().push_str(&x);
        a.begin_segment();
        a.samples().push_str(&y);
        a.samples().push_str(&x);
        let seg = a.end_segment().unwrap();
        assert_eq!(seg.plain_len(), yx.len() as u64);
        a.samples().push_str(&z);
        let whole = a.finish_deflated();
        assert_eq!(whole.inflate(), format!("{x}{y}{x}{z}").as_bytes());
        assert!(seg.deflate.len() * 10 < yx.len(), "{}", seg.deflate.len());

        // Elsewhere: other text before, the same text after and before.
        let mut b = Writer::deflating(Format::Text, 16);
        b.samples().push_str(&z);
        b.samples().push_str(&y);
        assert!(b.reuse(&seg));
        b.samples().push_str(&z);
        b.samples().push_str(&x);
        b.samples().push_str(&y);
        assert_eq!(b.reused(), yx.len() as u64);
        let d = b.finish_deflated();
        let want = format!("{z}{y}{y}{x}{z}{x}{y}");
        assert_eq!(d.inflate(), want.as_bytes());
        assert_eq!(gunzip_with(&d, "# EOF\n"), want + "# EOF\n");

        // A plain writer has no segments.
        let mut p = Writer::new(Format::Text, 16);
        p.begin_segment();
        p.samples().push_str(&x);
        assert!(p.end_segment().is_none());
        assert!(!p.reuse(&seg));
        assert_eq!(p.finish(), x);
    }

    /// A deflating writer compresses at series boundaries: inflated, it is
    /// exactly what a plain writer writes, in both formats, metadata
    /// (rewritten for the text format) included.
    #[test]
    fn a_deflating_writer_writes_what_a_plain_one_does() {
        use crate::metrics::kit::ComponentOnly;
        use crate::metrics::lines::{Lines, Registry as Direct_};
        use prometheus_client::metrics::counter::Counter;
        let mut reg = prometheus_client::registry::Registry::default();
        let c = Counter::<u64>::default();
        c.inc_by(3);
        reg.register("depwatch_built", "Built, with a\u{1}control", c);
        let mut lines = Direct_::default();
        let up = Lines::<ComponentOnly, Counter>::default();
        lines.register("depwatch", "checks", "Checks", up.clone());
        for i in 0..20_000 {
            up.get_or_create(&ComponentOnly {
                component: format!("component-{i:05}").into(),
            })
            .inc_by(i);
        }
        for format in Format::ALL {
            let plain = encode(&reg, &[&lines], format, 0);
            assert!(plain.len() > 4 * CHUNK, "{}", plain.len());
            let d = encode_deflated(&reg, &[&lines], format, 16);
            assert_eq!(d.plain_len(), plain.len() as u64);
            assert!(d.compressed_len() < plain.len() / 5);
            assert_eq!(String::from_utf8(d.inflate()).unwrap(), plain);
            // And as a whole gzip answer with a tail.
            assert_eq!(gunzip_with(&d, "# EOF\n"), plain + "# EOF\n");
        }
    }
}
