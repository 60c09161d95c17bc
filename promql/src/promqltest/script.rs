//! Parsing Prometheus' test language
//! (<https://github.com/prometheus/prometheus/tree/main/promql/promqltest>): `load`,
//! `clear`, `eval instant`, `eval range`, expected results and `expect` lines.

use crate::value::{Labels, METRIC_NAME, stale_nan};

/// One value of a series description: a number, or nothing (`_`, or a native histogram,
/// which exawatch does not store).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Item {
    Value(f64),
    Omitted,
    Histogram,
}

/// A series line: labels and values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeriesLine {
    pub(crate) labels: Labels,
    pub(crate) items: Vec<Item>,
}

/// What an `expect` line or `eval_*` form asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Expectations {
    pub(crate) fail: Option<Matcher>,
    pub(crate) warn: Option<Option<Matcher>>,
    pub(crate) info: Option<Option<Matcher>>,
    pub(crate) no_warn: bool,
    pub(crate) no_info: bool,
    pub(crate) ordered: bool,
    pub(crate) string: Option<String>,
}

/// How an expected message is matched.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matcher {
    Any,
    Exact(String),
    Regex(String),
}

/// The time grid of an eval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EvalKind {
    Instant { at: i64 },
    Range { start: i64, end: i64, step: i64 },
}

/// An expected result line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expected {
    Series(SeriesLine),
    Scalar(f64),
}

/// One command of a test file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Load {
        interval: i64,
        series: Vec<SeriesLine>,
        /// `load_with_nhcb`: classic histograms are also loaded as native ones.
        nhcb: bool,
    },
    Clear,
    Eval {
        line: usize,
        kind: EvalKind,
        expr: String,
        expect: Box<Expectations>,
        expected: Vec<Expected>,
        /// The raw text of the block, to spot native histograms.
        text: String,
    },
}

/// Parses a whole file; errors name the line.
pub(crate) fn parse(text: &str) -> Result<Vec<Command>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut commands = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim();
        i += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // The block: following indented, non-empty lines.
        let mut block = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].starts_with([' ', '\t']) {
            let l = lines[i].trim();
            if !l.starts_with('#') {
                block.push((i + 1, l));
            }
            i += 1;
        }
        let at = |e: String| format!("line {}: {e}", i);
        let (word, rest) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        match word {
            "clear" => commands.push(Command::Clear),
            "load" | "load_with_nhcb" => {
                let interval = parse_duration(rest.trim()).map_err(at)?;
                let mut series = Vec::new();
                for (n, l) in block {
                    series.push(parse_series_line(l).map_err(|e| format!("line {n}: {e}"))?);
                }
                commands.push(Command::Load {
                    interval,
                    series,
                    nhcb: word == "load_with_nhcb",
                });
            }
            w if w.starts_with("eval") => {
                let line_no = i - block.len();
                let mut expect = Expectations::default();
                match w {
                    "eval" => {}
                    "eval_fail" => expect.fail = Some(Matcher::Any),
                    "eval_warn" => expect.warn = Some(None),
                    "eval_info" => expect.info = Some(None),
                    "eval_ordered" => expect.ordered = true,
                    other => return Err(at(format!("unknown command {other}"))),
                }
                let (kind, expr) = parse_eval_header(rest.trim()).map_err(at)?;
                let mut expected = Vec::new();
                let mut text = String::from(trimmed);
                for (n, l) in block {
                    text.push('\n');
                    text.push_str(l);
                    if let Some(e) = l.strip_prefix("expect ") {
                        parse_expect(e.trim(), &mut expect)
                            .map_err(|e| format!("line {n}: {e}"))?;
                    } else if let Ok(v) = parse_number(l) {
                        expected.push(Expected::Scalar(v));
                    } else {
                        expected.push(Expected::Series(
                            parse_series_line(l).map_err(|e| format!("line {n}: {e}"))?,
                        ));
                    }
                }
                commands.push(Command::Eval {
                    line: line_no,
                    kind,
                    expr,
                    expect: Box::new(expect),
                    expected,
                    text,
                });
            }
            other => return Err(at(format!("unknown command {other:?}"))),
        }
    }
    Ok(commands)
}

fn parse_expect(text: &str, expect: &mut Expectations) -> Result<(), String> {
    let (kind, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let rest = rest.trim();
    let matcher = || -> Result<Matcher, String> {
        if rest.is_empty() {
            Ok(Matcher::Any)
        } else if let Some(m) = rest.strip_prefix("msg:") {
            Ok(Matcher::Exact(m.trim().to_owned()))
        } else if let Some(r) = rest.strip_prefix("regex:") {
            Ok(Matcher::Regex(r.trim().to_owned()))
        } else {
            Err(format!("bad expectation {text:?}"))
        }
    };
    match kind {
        "fail" => expect.fail = Some(matcher()?),
        "warn" => expect.warn = Some(Some(matcher()?)),
        "info" => expect.info = Some(Some(matcher()?)),
        "no_warn" => expect.no_warn = true,
        "no_info" => expect.no_info = true,
        "ordered" => expect.ordered = true,
        "string" => expect.string = Some(unquote(rest)?.0),
        other => return Err(format!("unknown expectation {other:?}")),
    }
    Ok(())
}

fn parse_eval_header(text: &str) -> Result<(EvalKind, String), String> {
    let words: Vec<&str> = text.splitn(3, char::is_whitespace).collect();
    if let ["instant", "at", rest] = words.as_slice() {
        let (time, expr) = rest
            .trim()
            .split_once(char::is_whitespace)
            .ok_or("eval without expression")?;
        return Ok((
            EvalKind::Instant {
                at: parse_duration(time)?,
            },
            expr.trim().to_owned(),
        ));
    }
    let words: Vec<&str> = text.splitn(8, char::is_whitespace).collect();
    if let ["range", "from", start, "to", end, "step", step, expr] = words.as_slice() {
        return Ok((
            EvalKind::Range {
                start: parse_duration(start)?,
                end: parse_duration(end)?,
                step: parse_duration(step)?,
            },
            expr.trim().to_owned(),
        ));
    }
    Err(format!("bad eval header {text:?}"))
}

/// A duration (`1h30m`, `10s`, `100ms`) or a number of seconds, in milliseconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Ok((seconds * 1000.0).round() as i64);
    }
    let mut total = 0i64;
    let mut rest = text;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("bad duration {text:?}"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {text:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(format!("bad duration {text:?}")),
        };
        total += n * unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A number as the test language writes it (`1`, `-2.5e3`, `Inf`, `NaN`, `stale`).
fn parse_number(text: &str) -> Result<f64, String> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "stale" => return Ok(stale_nan()),
        "inf" | "+inf" => return Ok(f64::INFINITY),
        "-inf" => return Ok(f64::NEG_INFINITY),
        "nan" | "+nan" | "-nan" => return Ok(f64::NAN),
        _ => {}
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16)
            .map(|v| v as f64)
            .map_err(|_| format!("bad number {text:?}"));
    }
    if text.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+') {
        text.replace('_', "")
            .parse::<f64>()
            .map_err(|_| format!("bad number {text:?}"))
    } else {
        Err(format!("bad number {text:?}"))
    }
}

/// Parses `name{labels} values…`.
pub(crate) fn parse_series_line(line: &str) -> Result<SeriesLine, String> {
    let (labels, rest) = parse_labels(line)?;
    Ok(SeriesLine {
        labels,
        items: parse_items(rest.trim())?,
    })
}

/// Parses a metric name and/or a `{…}` label set; returns the rest of the line.
pub(crate) fn parse_labels(line: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::default();
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    if name_end > 0 {
        labels.set(METRIC_NAME, &line[..name_end]);
    }
    let mut rest = &line[name_end..];
    if !rest.starts_with('{') {
        return Ok((labels, rest));
    }
    rest = rest[1..].trim_start();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = if rest.starts_with(['"', '\'', '`']) {
            let (name, consumed) = unquote(rest)?;
            (name, &rest[consumed..])
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("bad label set in {line:?}"));
            }
            (rest[..end].to_owned(), &rest[end..])
        };
        rest = r.trim_start();
        if let Some(r) = rest.strip_prefix('=') {
            let r = r.trim_start();
            let (value, consumed) = unquote(r)?;
            labels.set(&name, &value);
            rest = r[consumed..].trim_start();
        } else {
            // A quoted name alone is the metric name.
            labels.set(METRIC_NAME, &name);
        }
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        }
    }
}

/// Unquotes a Go string literal at the start of `text`; returns it and the bytes consumed.
pub(crate) fn unquote(text: &str) -> Result<(String, usize), String> {
    let quote = text.chars().next().ok_or("expected a string")?;
    if !matches!(quote, '"' | '\'' | '`') {
        return Err(format!("expected a string at {text:?}"));
    }
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((out, i + 1));
        }
        if c == '\\' && quote != '`' {
            let (_, e) = chars.next().ok_or("unterminated string")?;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'v' => out.push('\u{b}'),
                '\\' | '"' | '\'' => out.push(e),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = (0..n)
                        .filter_map(|_| chars.next().map(|(_, c)| c))
                        .collect();
                    let code = u32::from_str_radix(&hex, 16).map_err(|_| "bad escape")?;
                    out.push(char::from_u32(code).ok_or("bad escape")?);
                }
                d if d.is_digit(8) => {
                    let mut code = d.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        let (_, c) = chars.next().ok_or("bad escape")?;
                        code = code * 8 + c.to_digit(8).ok_or("bad escape")?;
                    }
                    out.push(char::from_u32(code).ok_or("bad escape")?);
                }
                other => return Err(format!("unknown escape \\{other}")),
            }
        } else {
            out.push(c);
        }
    }
    Err("unterminated string".into())
}

/// Parses a values sequence: `1 2 _ stale 0+10x5 _x3 {{…}}x2`.
pub(crate) fn parse_items(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let token_end = if rest.starts_with("{{") {
            // A native histogram (possibly `{{…}}+{{…}}x3`): up to the last `}}` of the token.
            let mut end = 0;
            let mut search = rest;
            loop {
                let close = search.find("}}").ok_or("unterminated histogram")? + 2;
                end += close;
                search = &rest[end..];
                if !search.starts_with(['+', '-']) || !search[1..].starts_with("{{") {
                    break;
                }
            }
            end + rest[end..]
                .find(char::is_whitespace)
                .unwrap_or(rest.len() - end)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        let token = &rest[..token_end];
        rest = rest[token_end..].trim_start();
        items.extend(parse_item(token)?);
    }
    Ok(items)
}

fn parse_item(token: &str) -> Result<Vec<Item>, String> {
    if token.starts_with("{{") {
        let repeat = token
            .rsplit_once("}}x")
            .and_then(|(_, n)| n.parse::<usize>().ok());
        return Ok(vec![Item::Histogram; repeat.map_or(1, |n| n + 1)]);
    }
    let (base, times) = match token.rsplit_once('x') {
        Some((base, n))
            if !base.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() =>
        {
            (base, Some(n.parse::<usize>().map_err(|_| "bad repeat")?))
        }
        _ => (token, None),
    };
    if base == "_" {
        return Ok(vec![Item::Omitted; times.unwrap_or(1)]);
    }
    let Some(times) = times else {
        return Ok(vec![Item::Value(parse_number(base)?)]);
    };
    // `a`, `a+b` or `a-b`: split at a sign that is not the leading one nor an exponent's.
    let bytes = base.as_bytes();
    let split = (1..bytes.len())
        .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (start, increment) = match split {
        Some(i) => (parse_number(&base[..i])?, parse_number(&base[i..])?),
        None => (parse_number(base)?, 0.0),
    };
    let mut value = start;
    let mut items = Vec::with_capacity(times + 1);
    for _ in 0..=times {
        items.push(Item::Value(value));
        value += increment;
    }
    Ok(items)
}
