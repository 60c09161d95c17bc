//! Influx line protocol, as Telegraf and InfluxDB clients send it:
//! `measurement[,tag=value…] field=value[,field=value…] [timestamp]`.
//!
//! Each field becomes one sample: metric `<measurement>_<field>` (the naming VictoriaMetrics
//! and Telegraf's Prometheus output use), the line's tags as tags. Integers, unsigned integers
//! and floats become numbers, booleans 1 or 0, strings text samples.

use crate::{RESERVED_COLUMNS, Sample, Value};

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

/// Parses a body of lines, appending the samples of every good line to `out`; lines without
/// a timestamp get `default_time_ns`. Returns the bad lines (their samples are not appended).
pub fn parse_lines(
    body: &str,
    precision: Precision,
    default_time_ns: i64,
    out: &mut Vec<Sample>,
) -> Vec<LineError> {
    let mut errors = Vec::new();
    for (index, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let before = out.len();
        if let Err(message) = parse_line(line, precision, default_time_ns, out) {
            out.truncate(before);
            errors.push(LineError {
                line: index + 1,
                message,
            });
        }
    }
    errors
}

fn parse_line(
    line: &str,
    precision: Precision,
    default_time_ns: i64,
    out: &mut Vec<Sample>,
) -> Result<(), String> {
    let mut cursor = Cursor::new(line);
    let measurement = cursor.token(&[',', ' '], "measurement")?;
    let mut tags = Vec::new();
    while cursor.eat(',') {
        let key = cursor.token(&['=', ','], "tag key")?;
        if !cursor.eat('=') {
            return Err(format!("tag {key:?} has no '='"));
        }
        let value = cursor.token(&[',', ' '], "tag value")?;
        tags.push((key, value));
    }
    if !cursor.eat(' ') {
        return Err("expected a space and the fields after the tags".into());
    }
    cursor.skip_spaces();
    let mut fields = Vec::new();
    loop {
        let key = cursor.token(&['=', ','], "field key")?;
        if !cursor.eat('=') {
            return Err(format!("field {key:?} has no '='"));
        }
        let value = cursor
            .field_value()
            .map_err(|e| format!("field {key:?}: {e}"))?;
        fields.push((key, value));
        if !cursor.eat(',') {
            break;
        }
    }
    cursor.skip_spaces();
    let rest = cursor.rest().trim_end();
    let time_ns = if rest.is_empty() {
        default_time_ns
    } else {
        rest.parse::<i64>()
            .ok()
            .and_then(|t| t.checked_mul(precision.nanos()))
            .ok_or_else(|| format!("timestamp {rest:?} is not an integer in range"))?
    };
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
    for (field, value) in fields {
        out.push(Sample {
            metric: format!("{measurement}_{field}"),
            tags: tags.clone(),
            time_ns,
            value,
        });
    }
    Ok(())
}

/// A position in one line.
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

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.eat(' ') {}
    }

    /// An unquoted name up to one of `stops` (or a space/end), with backslash escapes.
    fn token(&mut self, stops: &[char], what: &str) -> Result<String, String> {
        let mut token = String::new();
        while let Some(c) = self.peek() {
            if c == '\\' {
                self.at += 1;
                match self.peek() {
                    Some(escaped) => {
                        self.at += escaped.len_utf8();
                        if !matches!(escaped, ',' | '=' | ' ' | '\\' | '"') {
                            token.push('\\');
                        }
                        token.push(escaped);
                    }
                    None => token.push('\\'),
                }
                continue;
            }
            if stops.contains(&c) || c == ' ' {
                break;
            }
            token.push(c);
            self.at += c.len_utf8();
        }
        if token.is_empty() {
            return Err(format!("empty {what}"));
        }
        Ok(token)
    }

    fn field_value(&mut self) -> Result<Value, String> {
        if self.eat('"') {
            let mut text = String::new();
            loop {
                match self.peek() {
                    None => return Err("unterminated string".into()),
                    Some('"') => {
                        self.at += 1;
                        return Ok(Value::Text(text));
                    }
                    Some('\\') => {
                        self.at += 1;
                        match self.peek() {
                            Some(c @ ('"' | '\\')) => {
                                self.at += 1;
                                text.push(c);
                            }
                            _ => text.push('\\'),
                        }
                    }
                    Some(c) => {
                        self.at += c.len_utf8();
                        text.push(c);
                    }
                }
            }
        }
        let start = self.at;
        while let Some(c) = self.peek() {
            if c == ',' || c == ' ' {
                break;
            }
            self.at += c.len_utf8();
        }
        let raw = &self.line[start..self.at];
        let number = |digits: &str| -> Result<Value, String> {
            digits
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| format!("{raw:?} is not a number"))
        };
        match raw {
            "" => Err("empty value".into()),
            "t" | "T" | "true" | "True" | "TRUE" => Ok(Value::Float(1.0)),
            "f" | "F" | "false" | "False" | "FALSE" => Ok(Value::Float(0.0)),
            _ => match raw.strip_suffix('i').or_else(|| raw.strip_suffix('u')) {
                Some(integer) => integer
                    .parse::<i128>()
                    .map(|v| Value::Float(v as f64))
                    .map_err(|_| format!("{raw:?} is not an integer")),
                None => number(raw),
            },
        }
    }
}
