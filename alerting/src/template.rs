//! The part of Go's `text/template` that Prometheus rule files use in labels and annotations:
//! `{{ $labels.node }}`, `{{ $value }}`, `{{ $externalLabels.x }}`, `.Labels`/`.Value`,
//! pipelines (`{{ $value | humanize }}`) and the functions `humanize`, `humanize1024`,
//! `humanizePercentage`, `humanizeDuration`, `printf`, `toUpper`, `toLower`, `title` and
//! `reReplaceAll`. Control structures (`if`, `range`, `with`, …) and the query functions are
//! refused when the file is loaded, with the reason.
//!
//! Numbers print as Go prints them (`%v`, `%.4g`, `%e`), so expanded text is the same as
//! Prometheus'.

use exawatch_promql::Labels;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Vec<Command>),
}

/// One command of a pipeline: a function and its arguments, or a single operand.
#[derive(Debug, Clone, PartialEq)]
struct Command {
    function: Option<Function>,
    args: Vec<Operand>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Humanize,
    Humanize1024,
    HumanizePercentage,
    HumanizeDuration,
    Printf,
    ToUpper,
    ToLower,
    Title,
    ReReplaceAll,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Labels(Option<String>),
    ExternalLabels(Option<String>),
    Value,
    ExternalUrl,
    String(String),
    Number(f64),
}

/// What a template is expanded with.
#[derive(Debug, Clone, Copy)]
pub struct TemplateData<'a> {
    /// The alert's sample labels (`$labels`).
    pub labels: &'a Labels,
    /// The sample value (`$value`).
    pub value: f64,
    /// The configured external labels (`$externalLabels`).
    pub external_labels: &'a Labels,
    /// The server's external URL (`$externalURL`).
    pub external_url: &'a str,
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Num(f64),
    Map(Labels),
}

impl Val {
    fn print(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(v) => go_float(*v, 'v', None),
            Val::Map(labels) => {
                let pairs: Vec<String> = labels.iter().map(|(n, v)| format!("{n}:{v}")).collect();
                format!("map[{}]", pairs.join(" "))
            }
        }
    }

    fn number(&self) -> Result<f64, String> {
        match self {
            Val::Num(v) => Ok(*v),
            Val::Str(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("cannot convert {s:?} to a number")),
            Val::Map(_) => Err("cannot convert a map to a number".into()),
        }
    }
}

impl Template {
    /// Parses `text`; the error says what is wrong or not supported.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nodes = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let mut before = &rest[..open];
            let mut inner = &rest[open + 2..];
            if let Some(trimmed) = inner.strip_prefix("- ") {
                before = before.trim_end();
                inner = trimmed;
            }
            let close = inner
                .find("}}")
                .ok_or_else(|| format!("unclosed action in {text:?}"))?;
            let mut action = &inner[..close];
            rest = &inner[close + 2..];
            if let Some(trimmed) = action.strip_suffix(" -") {
                action = trimmed;
                rest = rest.trim_start();
            }
            if !before.is_empty() {
                nodes.push(Node::Text(before.to_owned()));
            }
            let action = action.trim();
            if action.starts_with("/*") {
                continue;
            }
            nodes.push(Node::Action(parse_pipeline(action)?));
        }
        if !rest.is_empty() {
            nodes.push(Node::Text(rest.to_owned()));
        }
        Ok(Self { nodes })
    }

    /// A template that expands to `text` as written.
    pub fn literal(text: &str) -> Self {
        Self {
            nodes: vec![Node::Text(text.to_owned())],
        }
    }

    /// Expands the template; an error is worded as Prometheus words it in the annotation.
    pub fn expand(&self, data: &TemplateData<'_>) -> Result<String, String> {
        let mut out = String::new();
        for node in &self.nodes {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Action(pipeline) => {
                    let mut value: Option<Val> = None;
                    for command in pipeline {
                        value = Some(run(command, value, data)?);
                    }
                    if let Some(value) = value {
                        out.push_str(&value.print());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Expands the template; a failure gives Prometheus' `<error expanding template: …>`.
    pub fn expand_or_error(&self, data: &TemplateData<'_>) -> String {
        self.expand(data)
            .unwrap_or_else(|e| format!("<error expanding template: {e}>"))
    }
}

fn parse_pipeline(action: &str) -> Result<Vec<Command>, String> {
    let tokens = tokenize(action)?;
    if let Some(first) = tokens.first()
        && let Token::Word(word) = first
        && [
            "if", "else", "end", "range", "with", "define", "template", "block", "break",
            "continue",
        ]
        .contains(&word.as_str())
    {
        return Err(format!(
            "template action {word:?} is not supported (only values, pipelines and the humanize, printf and string functions are)"
        ));
    }
    let mut commands = Vec::new();
    for part in tokens.split(|t| matches!(t, Token::Pipe)) {
        commands.push(parse_command(part)?);
    }
    if commands
        .iter()
        .any(|c| c.function.is_none() && c.args.is_empty())
    {
        return Err(format!("empty command in {{{{{action}}}}}"));
    }
    Ok(commands)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    String(String),
    Pipe,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '|' {
            chars.next();
            tokens.push(Token::Pipe);
        } else if c == '"' || c == '`' {
            chars.next();
            let mut s = String::new();
            let mut closed = false;
            while let Some((_, ch)) = chars.next() {
                if ch == c {
                    closed = true;
                    break;
                }
                if ch == '\\' && c == '"' {
                    match chars.next() {
                        Some((_, 'n')) => s.push('\n'),
                        Some((_, 't')) => s.push('\t'),
                        Some((_, other)) => s.push(other),
                        None => break,
                    }
                } else {
                    s.push(ch);
                }
            }
            if !closed {
                return Err(format!("unterminated string in {text:?}"));
            }
            tokens.push(Token::String(s));
        } else if c == '(' || c == ')' {
            return Err(format!("parentheses are not supported in {text:?}"));
        } else {
            let end = text[i..]
                .find(|ch: char| ch.is_whitespace() || ch == '|')
                .map_or(text.len(), |e| i + e);
            tokens.push(Token::Word(text[i..end].to_owned()));
            while chars.peek().is_some_and(|&(j, _)| j < end) {
                chars.next();
            }
        }
    }
    Ok(tokens)
}

fn parse_command(tokens: &[Token]) -> Result<Command, String> {
    let mut function = None;
    let mut args = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::String(s) => args.push(Operand::String(s.clone())),
            Token::Pipe => unreachable!("split at pipes"),
            Token::Word(word) => {
                if i == 0
                    && let Some(f) = function_named(word)
                {
                    function = Some(f);
                    continue;
                }
                args.push(parse_operand(word)?);
            }
        }
    }
    Ok(Command { function, args })
}

fn function_named(word: &str) -> Option<Function> {
    Some(match word {
        "humanize" => Function::Humanize,
        "humanize1024" => Function::Humanize1024,
        "humanizePercentage" => Function::HumanizePercentage,
        "humanizeDuration" => Function::HumanizeDuration,
        "printf" => Function::Printf,
        "toUpper" => Function::ToUpper,
        "toLower" => Function::ToLower,
        "title" => Function::Title,
        "reReplaceAll" => Function::ReReplaceAll,
        _ => return None,
    })
}

fn parse_operand(word: &str) -> Result<Operand, String> {
    let (base, field) = match word.split_once('.') {
        Some(("", rest)) => match rest.split_once('.') {
            Some((b, f)) => (format!(".{b}"), Some(f.to_owned())),
            None => (format!(".{rest}"), None),
        },
        Some((b, f)) if b.starts_with('$') => (b.to_owned(), Some(f.to_owned())),
        _ => (word.to_owned(), None),
    };
    match (base.as_str(), field) {
        ("$labels" | ".Labels", field) => Ok(Operand::Labels(field)),
        ("$externalLabels" | ".ExternalLabels", field) => Ok(Operand::ExternalLabels(field)),
        ("$value" | ".Value", None) => Ok(Operand::Value),
        ("$externalURL" | ".ExternalURL", None) => Ok(Operand::ExternalUrl),
        _ => match word.parse::<f64>() {
            Ok(v) => Ok(Operand::Number(v)),
            Err(_) if word.chars().all(|c| c.is_ascii_alphanumeric()) => Err(format!(
                "function {word:?} is not supported (supported: humanize, humanize1024, humanizePercentage, humanizeDuration, printf, toUpper, toLower, title, reReplaceAll)"
            )),
            Err(_) => Err(format!("undefined variable or field {word:?}")),
        },
    }
}

fn operand(op: &Operand, data: &TemplateData<'_>) -> Val {
    let label = |labels: &Labels, field: &Option<String>| match field {
        Some(name) => Val::Str(labels.get_or_empty(name).to_owned()),
        None => Val::Map(labels.clone()),
    };
    match op {
        Operand::Labels(field) => label(data.labels, field),
        Operand::ExternalLabels(field) => label(data.external_labels, field),
        Operand::Value => Val::Num(data.value),
        Operand::ExternalUrl => Val::Str(data.external_url.to_owned()),
        Operand::String(s) => Val::Str(s.clone()),
        Operand::Number(v) => Val::Num(*v),
    }
}

fn run(command: &Command, piped: Option<Val>, data: &TemplateData<'_>) -> Result<Val, String> {
    let mut args: Vec<Val> = command.args.iter().map(|a| operand(a, data)).collect();
    args.extend(piped);
    let Some(function) = command.function else {
        return match args.len() {
            1 => Ok(args.remove(0)),
            _ => Err("can't give argument to non-function".into()),
        };
    };
    let one = |args: &[Val]| -> Result<Val, String> {
        match args {
            [v] => Ok(v.clone()),
            _ => Err(format!("wrong number of args: want 1 got {}", args.len())),
        }
    };
    Ok(match function {
        Function::Humanize => Val::Str(humanize(one(&args)?.number()?)),
        Function::Humanize1024 => Val::Str(humanize1024(one(&args)?.number()?)),
        Function::HumanizePercentage => Val::Str(format!(
            "{}%",
            go_float(one(&args)?.number()? * 100.0, 'g', Some(4))
        )),
        Function::HumanizeDuration => Val::Str(humanize_duration(one(&args)?.number()?)),
        Function::ToUpper => Val::Str(one(&args)?.print().to_uppercase()),
        Function::ToLower => Val::Str(one(&args)?.print().to_lowercase()),
        Function::Title => Val::Str(title(&one(&args)?.print())),
        Function::ReReplaceAll => {
            let [pattern, replacement, text] = args.as_slice() else {
                return Err("reReplaceAll wants 3 arguments".into());
            };
            let re = regex::Regex::new(&pattern.print()).map_err(|e| e.to_string())?;
            Val::Str(
                re.replace_all(&text.print(), replacement.print().as_str())
                    .into_owned(),
            )
        }
        Function::Printf => {
            let Some((format, rest)) = args.split_first() else {
                return Err("printf wants a format".into());
            };
            Val::Str(printf(&format.print(), rest))
        }
    })
}

fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric() && c != '_' && c != '\'';
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %g %e %q %%`, with a
/// precision (`%.2f`).
fn printf(format: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            precision = Some(digits.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        let text = match (verb, arg) {
            ('s' | 'v', v) => match (v, precision) {
                (Val::Num(n), p) if verb == 'v' => go_float(*n, 'v', p),
                (v, Some(p)) => v.print().chars().take(p).collect(),
                (v, None) => v.print(),
            },
            ('q', v) => format!("{:?}", v.print()),
            ('f' | 'F' | 'g' | 'e', v) => match v.number() {
                Ok(n) => go_float(n, verb.to_ascii_lowercase(), precision),
                Err(_) => format!("%!{verb}(string={})", v.print()),
            },
            ('d', Val::Num(n)) if n.fract() == 0.0 => {
                format!("%!d(float64={})", go_float(*n, 'v', None))
            }
            ('d', Val::Str(s)) if s.parse::<i64>().is_ok() => format!("%!d(string={s})"),
            (other, v) => format!("%!{other}({})", v.print()),
        };
        out.push_str(&text);
    }
    if args.next().is_some() {
        out.push_str("%!(EXTRA)");
    }
    out
}

/// Prometheus' `humanize`: SI prefixes, 4 significant digits.
fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_float(v, 'g', Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_float(v, 'g', Some(4)))
}

/// Prometheus' `humanize1024`: binary prefixes.
fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_float(v, 'g', Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_float(v, 'g', Some(4)))
}

/// Prometheus' `humanizeDuration`: seconds as `1d 2h 3m 4s`, or with SI prefixes below 1 s.
fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return go_float(v, 'g', Some(4));
    }
    if v == 0.0 {
        return format!("{}s", go_float(v, 'g', Some(4)));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (seconds, minutes, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86_400);
        return if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", go_float(v, 'g', Some(4)))
        };
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_float(v, 'g', Some(4)))
}

/// Formats `v` as Go's `fmt` does with verb `f`, `e`, `g` or `v` (`%v` is the shortest
/// `%g`), with an optional precision.
pub(crate) fn go_float(v: f64, verb: char, precision: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    match verb {
        'f' => format!("{:.*}", precision.unwrap_or(6), v),
        'e' => exponent_form(v, precision.unwrap_or(6)),
        _ => {
            // The significant digits (without trailing zeros) and the decimal exponent.
            let shortest = precision.is_none();
            let sci = match precision {
                Some(p) => format!("{:.*e}", p.max(1) - 1, v),
                None => format!("{v:e}"),
            };
            let (mantissa, exp) = sci.split_once('e').expect("exponent form");
            let exp: i32 = exp.parse().expect("an integer exponent");
            let negative = mantissa.starts_with('-');
            let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
            let digits = digits.trim_end_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            let nd = digits.len() as i32;
            let dp = exp + 1;
            let mut prec = precision.map_or(nd, |p| p.max(1) as i32);
            let mut eprec = prec;
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let sign = if negative { "-" } else { "" };
            if exp < -4 || exp >= eprec {
                prec = prec.min(nd);
                let (first, rest) = digits.split_at(1);
                let mut out = format!("{sign}{first}");
                if prec > 1 {
                    out.push('.');
                    out.push_str(rest);
                    for _ in rest.len() as i32..prec - 1 {
                        out.push('0');
                    }
                }
                let (es, ea) = if exp < 0 { ('-', -exp) } else { ('+', exp) };
                return format!("{out}e{es}{ea:02}");
            }
            if prec > dp {
                prec = nd;
            }
            let decimals = (prec - dp).max(0) as usize;
            format!("{:.*}", decimals, v)
        }
    }
}

/// Go's `%e`: `d.dddddde±dd`.
fn exponent_form(v: f64, precision: usize) -> String {
    let sci = format!("{:.*e}", precision, v);
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let (es, ea) = if exp < 0 { ('-', -exp) } else { ('+', exp) };
    format!("{mantissa}e{es}{ea:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_go_prints_them() {
        let cases = [
            (1.0, 'v', None, "1"),
            (0.5, 'v', None, "0.5"),
            (123456.0, 'v', None, "123456"),
            (1e6, 'v', None, "1e+06"),
            (1234567.0, 'v', None, "1.234567e+06"),
            (0.0001, 'v', None, "0.0001"),
            (0.00001, 'v', None, "1e-05"),
            (2.5, 'g', Some(4), "2.5"),
            (1234.5, 'g', Some(4), "1234"),
            (12345.0, 'g', Some(4), "1.234e+04"),
            (100.0, 'g', Some(4), "100"),
            (0.0, 'g', Some(4), "0"),
            (1.0, 'e', None, "1.000000e+00"),
            (1.23456, 'f', Some(2), "1.23"),
        ];
        for (v, verb, p, want) in cases {
            assert_eq!(go_float(v, verb, p), want, "{v} {verb} {p:?}");
        }
        assert_eq!(humanize(1234567.0), "1.235M");
        assert_eq!(humanize(0.012), "12m");
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize1024(2048.0), "2ki");
        assert_eq!(humanize_duration(3725.0), "1h 2m 5s");
        assert_eq!(humanize_duration(0.5), "500ms");
    }

    #[test]
    fn templates_expand_as_prometheus_expands_them() {
        let labels = Labels::new([("node".to_owned(), "n01".to_owned())]);
        let external = Labels::new([("cluster".to_owned(), "c1".to_owned())]);
        let data = TemplateData {
            labels: &labels,
            value: 0.8765,
            external_labels: &external,
            external_url: "http://x",
        };
        let cases = [
            ("{{ $labels.node }} is hot", "n01 is hot"),
            ("{{$value}}", "0.8765"),
            ("{{ humanize $value }}", "876.5m"),
            ("{{ $value | humanizePercentage }}", "87.65%"),
            ("{{ printf \"%.2f\" $value }}", "0.88"),
            ("{{ $externalLabels.cluster }}/{{ .Labels.node }}", "c1/n01"),
            ("{{ $labels.missing }}x", "x"),
            ("{{ toUpper $labels.node }}", "N01"),
            ("a {{- \" b\" -}} c", "a bc"),
        ];
        for (text, want) in cases {
            let template = Template::parse(text).unwrap();
            assert_eq!(template.expand(&data).unwrap(), want, "{text}");
        }
        for bad in [
            "{{ if $value }}x{{ end }}",
            "{{ query \"up\" }}",
            "{{ $value",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
