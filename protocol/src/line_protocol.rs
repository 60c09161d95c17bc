//! Influx line protocol, as Telegraf and InfluxDB clients send it:
//! `measurement[,tag=value…] field=value[,field=value…] [timestamp]`.
//!
//! Each field becomes one sample: metric `<measurement>_<field>` (the naming VictoriaMetrics
//! and Telegraf's Prometheus output use), the line's tags as tags. Integers, unsigned integers
//! and floats become numbers, booleans 1 or 0, strings text samples.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use crate::{Batch, RESERVED_COLUMNS, SeriesKey, Value};

#[cfg(test)]
mod tests;

/// The unit of the timestamps in a write request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Nanoseconds (the default).
    #[default]
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Minutes (InfluxDB 1.x only).
    Minutes,
    /// Hours (InfluxDB 1.x only).
    Hours,
}

impl Precision {
    /// Parses the `precision` parameter of `/api/v2/write` (`ns`, `us`, `ms`, `s`) and of
    /// `/write` (`n`, `u`, `ms`, `s`, `m`, `h`).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ns" | "n" => Self::Nanoseconds,
            "us" | "u" | "µ" => Self::Microseconds,
            "ms" => Self::Milliseconds,
            "s" => Self::Seconds,
            "m" => Self::Minutes,
            "h" => Self::Hours,
            _ => return None,
        })
    }

    fn nanos(self) -> i64 {
        match self {
            Self::Nanoseconds => 1,
            Self::Microseconds => 1_000,
            Self::Milliseconds => 1_000_000,
            Self::Seconds => 1_000_000_000,
            Self::Minutes => 60_000_000_000,
            Self::Hours => 3_600_000_000_000,
        }
    }
}

/// A line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the request.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses a body of lines, adding the samples of every good line to `out`; lines without a
/// timestamp get `default_time_ns`. Returns the bad lines (their samples are not added).
///
/// Each distinct `measurement,tags` text is parsed once per call: later lines with the same
/// text only parse their fields, and each field's series is added to `out` once.
/// [`SeriesCache::parse_lines`] also remembers the series across calls.
pub fn parse_lines(
    body: &str,
    precision: Precision,
    default_time_ns: i64,
    out: &mut Batch,
) -> Vec<LineError> {
    parse(body, precision, default_time_ns, None, out)
}

/// Shards of a [`SeriesCache`]: writers on different threads rarely wait for each other.
const SHARDS: usize = 16;

/// The series keys of the `measurement,tags` texts and fields that earlier requests sent,
/// shared by a server's writers. A writer sends the same series request after request (every
/// Telegraf agent does); with the cache, its lines are matched to keys built once instead of
/// having their tags parsed and a key built per series and request (at 100,000 series, about
/// 45 % of ingest CPU, perf). Holds at most [`SeriesCache::CAPACITY`] texts: a full shard is
/// emptied.
#[derive(Debug)]
pub struct SeriesCache {
    hasher: ahash::RandomState,
    shards: [Mutex<HashMap<Box<str>, Arc<CachedHead>>>; SHARDS],
}

/// The series of one `measurement,tags` text: field key as written → series key.
#[derive(Debug)]
struct CachedHead(Vec<(Box<str>, Arc<SeriesKey>)>);

impl CachedHead {
    fn find(&self, raw_field: &str) -> Option<&Arc<SeriesKey>> {
        self.0
            .iter()
            .find(|(field, _)| &**field == raw_field)
            .map(|(_, key)| key)
    }
}

impl Default for SeriesCache {
    fn default() -> Self {
        Self {
            hasher: ahash::RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl SeriesCache {
    /// Texts kept at most (each with the keys of its fields).
    pub const CAPACITY: usize = 1 << 18;

    /// [`parse_lines`], taking the keys of texts and fields seen before from the cache and
    /// adding those of new ones.
    pub fn parse_lines(
        &self,
        body: &str,
        precision: Precision,
        default_time_ns: i64,
        out: &mut Batch,
    ) -> Vec<LineError> {
        parse(body, precision, default_time_ns, Some(self), out)
    }

    fn shard(&self, head: &str) -> &Mutex<HashMap<Box<str>, Arc<CachedHead>>> {
        &self.shards[self.hasher.hash_one(head) as usize % SHARDS]
    }

    fn get(&self, head: &str) -> Option<Arc<CachedHead>> {
        let shard = self.shard(head).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(head).cloned()
    }

    /// Adds the keys a call built for `head` to those the cache had (`known`).
    fn add(&self, head: &str, known: Option<&CachedHead>, built: Vec<(&str, Arc<SeriesKey>)>) {
        let mut series = known.map(|k| k.0.clone()).unwrap_or_default();
        series.extend(built.into_iter().map(|(field, key)| (field.into(), key)));
        let mut shard = self.shard(head).lock().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= Self::CAPACITY / SHARDS {
            shard.clear();
        }
        shard.insert(head.into(), Arc::new(CachedHead(series)));
    }
}

fn parse(
    body: &str,
    precision: Precision,
    default_time_ns: i64,
    cache: Option<&SeriesCache>,
    out: &mut Batch,
) -> Vec<LineError> {
    let mut parser = Parser {
        precision,
        default_time_ns,
        cache,
        known: HashMap::default(),
        heads: Vec::new(),
        fields: Vec::new(),
    };
    let mut errors = Vec::new();
    for (index, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let before = out.len();
        if let Err(message) = parser.line(line, out) {
            out.truncate_points(before);
            errors.push(LineError {
                line: index + 1,
                message,
            });
        }
    }
    if let Some(cache) = cache {
        for head in parser.heads {
            if !head.built.is_empty() {
                cache.add(head.text, head.cached.as_deref(), head.built);
            }
        }
    }
    errors
}

/// A hash map keyed by line text: aHash, as the store's series table.
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// What one call of [`parse_lines`] has learnt of the series texts it has seen.
struct Parser<'a> {
    precision: Precision,
    default_time_ns: i64,
    cache: Option<&'a SeriesCache>,
    /// `measurement,tags` text → index into `heads`.
    known: HashMap<&'a str, usize>,
    heads: Vec<Head<'a>>,
    /// The fields of the line being parsed: series and value.
    fields: Vec<(u32, Value)>,
}

/// A `measurement,tags` text and the series of its fields seen so far.
struct Head<'a> {
    text: &'a str,
    /// The measurement and tags, parsed once a field's key must be built.
    parsed: Option<ParsedHead>,
    /// What the cache knew of the text.
    cached: Option<Arc<CachedHead>>,
    /// Field key as written (escapes and all) → series in the batch.
    fields: Vec<(&'a str, u32)>,
    /// Keys built in this call (not from the cache), to add to the cache.
    built: Vec<(&'a str, Arc<SeriesKey>)>,
}

/// The measurement of a `measurement,tags` text and its tags sorted by key.
struct ParsedHead {
    measurement: String,
    tags: Vec<(String, String)>,
}

impl<'a> Parser<'a> {
    fn line(&mut self, line: &'a str, out: &mut Batch) -> Result<(), String> {
        let split = head_end(line);
        let text = &line[..split];
        let head = match self.known.get(text) {
            Some(&head) => head,
            None => {
                let cached = self.cache.and_then(|cache| cache.get(text));
                // A text the cache knows parsed before; a new one is checked now.
                let parsed = match cached {
                    Some(_) => None,
                    None => Some(parse_head(text)?),
                };
                self.heads.push(Head {
                    text,
                    parsed,
                    cached,
                    fields: Vec::new(),
                    built: Vec::new(),
                });
                self.known.insert(text, self.heads.len() - 1);
                self.heads.len() - 1
            }
        };
        let mut cursor = Cursor::new(line);
        cursor.at = split;
        if !cursor.eat(b' ') {
            return Err("expected a space and the fields after the tags".into());
        }
        cursor.skip_spaces();
        self.fields.clear();
        loop {
            let key_start = cursor.at;
            let field = cursor.token(b"=,", "field key")?;
            let raw_field = &line[key_start..cursor.at];
            if !cursor.eat(b'=') {
                return Err(format!("field {field:?} has no '='"));
            }
            let value = cursor
                .field_value()
                .map_err(|e| format!("field {field:?}: {e}"))?;
            let head = &mut self.heads[head];
            let series = match head.fields.iter().find(|(k, _)| *k == raw_field) {
                Some(&(_, series)) => series,
                None => {
                    let key = match head.cached.as_ref().and_then(|c| c.find(raw_field)) {
                        Some(key) => Arc::clone(key),
                        None => {
                            let parsed = match &mut head.parsed {
                                Some(parsed) => parsed,
                                none => none.insert(parse_head(head.text)?),
                            };
                            let key = Arc::new(SeriesKey {
                                metric: format!("{}_{field}", parsed.measurement),
                                tags: parsed.tags.clone(),
                            });
                            if self.cache.is_some() {
                                head.built.push((raw_field, Arc::clone(&key)));
                            }
                            key
                        }
                    };
                    let series = out.add_shared_series(key);
                    head.fields.push((raw_field, series));
                    series
                }
            };
            self.fields.push((series, value));
            if !cursor.eat(b',') {
                break;
            }
        }
        cursor.skip_spaces();
        let rest = cursor.rest().trim_end();
        let time_ns = if rest.is_empty() {
            self.default_time_ns
        } else {
            rest.parse::<i64>()
                .ok()
                .and_then(|t| t.checked_mul(self.precision.nanos()))
                .ok_or_else(|| format!("timestamp {rest:?} is not an integer in range"))?
        };
        for (series, value) in self.fields.drain(..) {
            out.push(series, time_ns, value);
        }
        Ok(())
    }
}

/// Where the `measurement,tags` part of a line ends: its first unescaped space.
fn head_end(line: &str) -> usize {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b' ' => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Parses `measurement[,tag=value…]`: the measurement, and the tags sorted by key.
fn parse_head(head: &str) -> Result<ParsedHead, String> {
    let mut cursor = Cursor::new(head);
    let measurement = cursor.token(b", ", "measurement")?.into_owned();
    let mut tags = Vec::new();
    while cursor.eat(b',') {
        let key = cursor.token(b"=,", "tag key")?;
        if !cursor.eat(b'=') {
            return Err(format!("tag {key:?} has no '='"));
        }
        let value = cursor.token(b", ", "tag value")?;
        tags.push((key.into_owned(), value.into_owned()));
    }
    tags.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (i, (key, _)) in tags.iter().enumerate() {
        if RESERVED_COLUMNS.contains(&key.as_str()) {
            return Err(format!(
                "tag key {key:?} is reserved (time, metric, value, text, value_mantissa, value_scale)"
            ));
        }
        if i > 0 && tags[i - 1].0 == *key {
            return Err(format!("tag {key:?} appears twice"));
        }
    }
    Ok(ParsedHead { measurement, tags })
}

/// A position in one line. Every delimiter is ASCII, so the line is scanned byte by byte
/// and sliced only at delimiters (always character boundaries).
struct Cursor<'a> {
    line: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str) -> Self {
        Self { line, at: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.line[self.at..]
    }

    fn peek(&self) -> Option<u8> {
        self.line.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.eat(b' ') {}
    }

    /// An unquoted name up to one of `stops` (or a space/end), with backslash escapes:
    /// borrowed from the line unless it has any.
    fn token(&mut self, stops: &[u8], what: &str) -> Result<Cow<'a, str>, String> {
        let bytes = self.line.as_bytes();
        let start = self.at;
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'\\' && bytes[end] != b' ' {
            if stops.contains(&bytes[end]) {
                break;
            }
            end += 1;
        }
        self.at = end;
        let token = if self.peek() == Some(b'\\') {
            Cow::Owned(self.escaped_token(start, stops))
        } else {
            Cow::Borrowed(&self.line[start..end])
        };
        if token.is_empty() {
            return Err(format!("empty {what}"));
        }
        Ok(token)
    }

    /// The rest of a token from `start` that has a backslash at the cursor.
    fn escaped_token(&mut self, start: usize, stops: &[u8]) -> String {
        let bytes = self.line.as_bytes();
        let mut token = String::from(&self.line[start..self.at]);
        let mut plain = self.at;
        while let Some(c) = self.peek() {
            if c == b'\\' {
                token.push_str(&self.line[plain..self.at]);
                self.at += 1;
                match bytes.get(self.at) {
                    Some(&escaped @ (b',' | b'=' | b' ' | b'\\' | b'"')) => {
                        token.push(char::from(escaped));
                        self.at += 1;
                    }
                    // Kept as written, and what follows is read as usual.
                    _ => token.push('\\'),
                }
                plain = self.at;
                continue;
            }
            if stops.contains(&c) || c == b' ' {
                break;
            }
            self.at += 1;
        }
        token.push_str(&self.line[plain..self.at]);
        token
    }

    fn field_value(&mut self) -> Result<Value, String> {
        if self.eat(b'"') {
            return self.string_value().map(Value::Text);
        }
        let bytes = self.line.as_bytes();
        let start = self.at;
        while self.at < bytes.len() && bytes[self.at] != b',' && bytes[self.at] != b' ' {
            self.at += 1;
        }
        let raw = &self.line[start..self.at];
        match raw {
            "" => Err("empty value".into()),
            "t" | "T" | "true" | "True" | "TRUE" => Ok(Value::Float(1.0)),
            "f" | "F" | "false" | "False" | "FALSE" => Ok(Value::Float(0.0)),
            _ => match raw.strip_suffix('i').or_else(|| raw.strip_suffix('u')) {
                Some(integer) => integer
                    .parse::<i128>()
                    .map(|v| Value::Float(v as f64))
                    .map_err(|_| format!("{raw:?} is not an integer")),
                None => raw
                    .parse::<f64>()
                    .map(Value::Float)
                    .map_err(|_| format!("{raw:?} is not a number")),
            },
        }
    }

    /// A quoted string's text after the opening quote, up to and past the closing one:
    /// `\"` and `\\` are escapes, any other backslash is kept.
    fn string_value(&mut self) -> Result<String, String> {
        let bytes = self.line.as_bytes();
        let mut text = String::new();
        let mut plain = self.at;
        loop {
            match bytes.get(self.at) {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    text.push_str(&self.line[plain..self.at]);
                    self.at += 1;
                    return Ok(text);
                }
                Some(b'\\') => {
                    text.push_str(&self.line[plain..self.at]);
                    self.at += 1;
                    match bytes.get(self.at) {
                        Some(&c @ (b'"' | b'\\')) => {
                            text.push(char::from(c));
                            self.at += 1;
                        }
                        _ => text.push('\\'),
                    }
                    plain = self.at;
                }
                Some(_) => self.at += 1,
            }
        }
    }
}
