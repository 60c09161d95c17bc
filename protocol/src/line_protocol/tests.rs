use super::*;

use crate::Sample;

fn parse(body: &str) -> (Vec<Sample>, Vec<LineError>) {
    let mut out = Batch::new();
    let errors = parse_lines(body, Precision::Nanoseconds, 42, &mut out);
    (out.samples().collect(), errors)
}

fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_telegraf_cpu_line() {
    let (samples, errors) = parse(
        "cpu,cpu=cpu0,host=n01 usage_user=12.5,usage_system=3i,online=true 1700000000000000000",
    );
    assert!(errors.is_empty());
    let metrics: Vec<&str> = samples.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        ["cpu_usage_user", "cpu_usage_system", "cpu_online"]
    );
    assert_eq!(samples[0].tags, tags(&[("cpu", "cpu0"), ("host", "n01")]));
    assert_eq!(samples[0].time_ns, 1_700_000_000_000_000_000);
    let values: Vec<&Value> = samples.iter().map(|s| &s.value).collect();
    assert_eq!(
        values,
        [&Value::Float(12.5), &Value::Float(3.0), &Value::Float(1.0)]
    );
}

#[test]
fn value_kinds() {
    let cases: &[(&str, Value)] = &[
        ("m v=1", Value::Float(1.0)),
        ("m v=-1.5e3", Value::Float(-1500.0)),
        (
            "m v=18446744073709551615u",
            Value::Float(18446744073709551615.0),
        ),
        ("m v=-9i", Value::Float(-9.0)),
        ("m v=F", Value::Float(0.0)),
        (
            "m v=\"hello, \\\"world\\\" a=b\"",
            Value::Text("hello, \"world\" a=b".into()),
        ),
        ("m v=\"back\\\\slash\"", Value::Text("back\\slash".into())),
    ];
    for (line, value) in cases {
        let (samples, errors) = parse(line);
        assert!(errors.is_empty(), "{line}: {errors:?}");
        assert_eq!(&samples[0].value, value, "{line}");
        assert_eq!(samples[0].time_ns, 42, "no timestamp: the default");
    }
}

#[test]
fn escapes_in_names() {
    let (samples, errors) = parse(r"disk\ io,path=/var/lib\,x,label\=k=a\ b read\ bytes=1 5");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(samples[0].metric, "disk io_read bytes");
    assert_eq!(
        samples[0].tags,
        tags(&[("label=k", "a b"), ("path", "/var/lib,x")])
    );
    assert_eq!(samples[0].time_ns, 5);
}

#[test]
fn precision_scales_timestamps() {
    for (precision, ns) in [
        (Precision::Seconds, 1_700_000_000_000_000_000),
        (Precision::Milliseconds, 1_700_000_000_000_000),
        (Precision::Hours, 0),
    ] {
        let mut out = Batch::new();
        let errors = parse_lines("m v=1 1700000000", precision, 0, &mut out);
        if ns == 0 {
            assert!(
                errors[0].message.contains("in range"),
                "hours overflow: {errors:?}"
            );
        } else {
            assert_eq!(out.points()[0].time_ns, ns, "{precision:?}");
        }
    }
    assert_eq!(Precision::parse("ms"), Some(Precision::Milliseconds));
    assert_eq!(Precision::parse("n"), Some(Precision::Nanoseconds));
    assert_eq!(Precision::parse("week"), None);
}

#[test]
fn bad_lines_are_reported_and_good_ones_kept() {
    let body = "# a comment\n\
                good v=1 1\n\
                nofields\n\
                m,host v=1\n\
                m v=abc\n\
                m v=\"open\n\
                m,time=x v=1\n\
                m,a=1,a=2 v=1\n\
                m v=1 12:00\n\
                m v=1,w= 3\n\
                m v=1,,w=2 3\n\
                m,a,b=1 v=1 3\n\
                \n\
                also,ok=yes v=2,w=3 2\n";
    let (samples, errors) = parse(body);
    assert_eq!(samples.len(), 3, "{samples:?}");
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert!(errors[4].message.contains("reserved"), "{}", errors[4]);
    assert_eq!(
        errors[0].to_string(),
        "line 3: expected a space and the fields after the tags"
    );
}

#[test]
fn never_panics_on_odd_input() {
    for line in [
        "\\", "m\\", "m v=1\\", "m,=x v=1", ",", "=", " v=1", "m v=\"\\", "m v=1 -", "m v=1i1",
    ] {
        let _ = parse(line);
    }
}

#[test]
fn each_series_is_named_once_per_body() {
    let body = "cpu,host=a u=1,s=2 10\n\
                cpu,host=a u=3,s=4 20\n\
                cpu,host=b u=5 30\n\
                cpu,host=a u=x 40\n\
                cpu,host=a s=6,u=7 50\n";
    let mut out = Batch::new();
    let errors = parse_lines(body, Precision::Nanoseconds, 0, &mut out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].line, 4);
    let names: Vec<String> = out
        .series()
        .iter()
        .map(|k| format!("{}{{host={}}}", k.metric, k.tag("host").unwrap()))
        .collect();
    assert_eq!(names, ["cpu_u{host=a}", "cpu_s{host=a}", "cpu_u{host=b}"]);
    let points: Vec<(u32, i64, Value)> = out
        .points()
        .iter()
        .map(|p| (p.series, p.time_ns, p.value.clone()))
        .collect();
    let f = Value::Float;
    assert_eq!(
        points,
        [
            (0, 10, f(1.0)),
            (1, 10, f(2.0)),
            (0, 20, f(3.0)),
            (1, 20, f(4.0)),
            (2, 30, f(5.0)),
            (1, 50, f(6.0)),
            (0, 50, f(7.0)),
        ]
    );
}

#[test]
fn a_cache_gives_later_requests_the_keys_of_earlier_ones() {
    let cache = SeriesCache::default();
    let first = "cpu,host=a u=1,s=2 10\ncpu,host=b u=3 10\nbad,host=a 10\n";
    // Same texts (one with a field not seen before), a new text, a bad line, an escaped field.
    let second = "cpu,host=a u=5 20\ncpu,host=b u=6,s=7 20\nmem,host=a used=8 20\n\
                  cpu,host=a u=oops 20\ncpu,host=a my\\ field=9 20\n";
    let parse_with = |body: &str, cache: Option<&SeriesCache>| {
        let mut out = Batch::new();
        let errors = match cache {
            Some(cache) => cache.parse_lines(body, Precision::Nanoseconds, 0, &mut out),
            None => parse_lines(body, Precision::Nanoseconds, 0, &mut out),
        };
        (out, errors)
    };
    let (cached_first, first_errors) = parse_with(first, Some(&cache));
    let (cached_second, second_errors) = parse_with(second, Some(&cache));
    // The same samples and errors as without a cache.
    assert_eq!(
        (cached_first.clone(), first_errors),
        parse_with(first, None)
    );
    assert_eq!(
        (cached_second.clone(), second_errors.clone()),
        parse_with(second, None)
    );
    assert_eq!(second_errors.len(), 1);
    assert_eq!(second_errors[0].line, 4);
    let names: Vec<String> = cached_second
        .series()
        .iter()
        .map(|k| format!("{}{{host={}}}", k.metric, k.tag("host").unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            "cpu_u{host=a}",
            "cpu_u{host=b}",
            "cpu_s{host=b}",
            "mem_used{host=a}",
            "cpu_my field{host=a}"
        ]
    );
    // Keys seen before are the very keys built the first time.
    let shared =
        |a: usize, b: usize| Arc::ptr_eq(&cached_first.series()[a], &cached_second.series()[b]);
    assert!(shared(0, 0), "cpu_u{{host=a}}");
    assert!(shared(2, 1), "cpu_u{{host=b}}");
    // A third request finds the keys the second one added.
    let (third, _) = parse_with("cpu,host=b s=1 30\nmem,host=a used=2 30\n", Some(&cache));
    assert!(Arc::ptr_eq(&third.series()[0], &cached_second.series()[2]));
    assert!(Arc::ptr_eq(&third.series()[1], &cached_second.series()[3]));
}

#[test]
fn a_full_cache_shard_starts_over() {
    let cache = SeriesCache::default();
    let body: String = (0..SeriesCache::CAPACITY + SeriesCache::CAPACITY / 4)
        .map(|i| format!("m,host=h{i} v=1 1\n"))
        .collect();
    let mut out = Batch::new();
    assert!(
        cache
            .parse_lines(&body, Precision::Nanoseconds, 0, &mut out)
            .is_empty()
    );
    let held: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
    assert!(
        held > 0 && held <= SeriesCache::CAPACITY,
        "{held} texts held"
    );
    assert_eq!(out.len(), SeriesCache::CAPACITY + SeriesCache::CAPACITY / 4);
}
