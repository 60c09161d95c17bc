use super::*;

#[test]
fn times_are_unix_seconds_or_rfc3339() {
    assert_eq!(parse_time("4"), Some(4000));
    assert_eq!(parse_time("1435781451.781"), Some(1_435_781_451_781));
    assert_eq!(
        parse_time("2015-07-01T20:10:51.781Z"),
        Some(1_435_781_451_781)
    );
    assert_eq!(
        parse_time("2015-07-01T22:10:51.781+02:00"),
        Some(1_435_781_451_781)
    );
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_time("yesterday"), None);
    assert_eq!(parse_time("2015-13-01T00:00:00Z"), None);
}

#[test]
fn durations_are_float_seconds_or_prometheus_durations() {
    assert_eq!(parse_duration("15"), Some(15_000));
    assert_eq!(parse_duration("0.5"), Some(500));
    assert_eq!(parse_duration("1m30s"), Some(90_000));
    assert_eq!(parse_duration("1h"), Some(3_600_000));
    assert_eq!(parse_duration("100ms"), Some(100));
    assert_eq!(parse_duration("5x"), None);
    assert_eq!(parse_duration(""), None);
}
