//! PromQL: parsing and evaluating any text against a small fixed data set never panics; the
//! answer is a result or an error (with the engine's own sample and time limits).
#![no_main]

use std::sync::{Arc, OnceLock};

use exawatch_promql::{
    Engine, EngineOptions, Labels, Point, Series, SeriesSource, SourceError, Steps,
};
use libfuzzer_sys::fuzz_target;
use promql_parser::label::Matcher;

/// Two counters and a gauge over ten minutes.
#[derive(Debug)]
struct Fixed(Vec<Series>);

#[async_trait::async_trait]
impl SeriesSource for Fixed {
    async fn select(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64, _steps: Option<Steps>) -> Result<Vec<Series>, SourceError> {
        Ok(self
            .0
            .iter()
            .filter(|s| matchers.iter().all(|m| m.is_match(s.labels.get(&m.name).unwrap_or(""))))
            .map(|s| Series {
                labels: s.labels.clone(),
                points: s.points.iter().copied().filter(|p| p.t >= start_ms && p.t <= end_ms).collect(),
            })
            .collect())
    }

    async fn series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Result<Vec<Labels>, SourceError> {
        Ok(self.select(matchers, start_ms, end_ms, None).await?.into_iter().map(|s| s.labels).collect())
    }
}

fn engine() -> &'static (tokio::runtime::Runtime, Engine) {
    static ENGINE: OnceLock<(tokio::runtime::Runtime, Engine)> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let series = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, job)| Series {
                labels: Labels::new([
                    ("__name__".to_owned(), if i < 2 { "requests_total" } else { "temp" }.to_owned()),
                    ("job".to_owned(), (*job).to_owned()),
                ]),
                points: (0..40).map(|k| Point { t: k * 15_000, v: (k * (i as i64 + 1)) as f64 }).collect(),
            })
            .collect();
        let options = EngineOptions {
            max_samples: 100_000,
            timeout: Some(std::time::Duration::from_secs(1)),
            ..EngineOptions::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        (runtime, Engine::new(Arc::new(Fixed(series)), options))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    if exawatch_promql::parse(query).is_err() {
        return;
    }
    let (runtime, engine) = engine();
    let _ = runtime.block_on(engine.instant(query, 300_000));
    let _ = runtime.block_on(engine.range(query, 0, 600_000, 60_000));
});
