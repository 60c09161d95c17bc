//! `exawatch query`: SQL against a running server, printed as a table, CSV or JSON.

use std::io::Write;

use anyhow::{Context, Result, bail};

/// Output formats of `exawatch query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of row objects.
    Json,
}

/// Sends `sql` to `url` and prints the answer; a refused query is an error with the server's
/// reason.
pub(crate) fn run(url: &str, format: Format, sql: &str) -> Result<()> {
    let wire = if format == Format::Json {
        "json"
    } else {
        "csv"
    };
    let endpoint = format!("{}/api/v1/sql?format={wire}", url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&endpoint)
        .header("Content-Type", "text/plain")
        .send(sql)
        .with_context(|| format!("cannot reach the exawatch server at {url}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .context("reading the answer")?;
    if !status.is_success() {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(body);
        bail!("the server refused the query ({status}): {reason}");
    }
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json | Format::Csv => out.write_all(body.as_bytes())?,
        Format::Table => out.write_all(table(&body)?.as_bytes())?,
    }
    if !body.ends_with('\n') {
        writeln!(out)?;
    }
    Ok(())
}

/// Renders CSV as a table with aligned columns and a row count.
fn table(csv: &str) -> Result<String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv.as_bytes());
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.map(|r| r.iter().map(str::to_owned).collect()))
        .collect::<Result<_, _>>()
        .context("the server's CSV does not parse")?;
    let Some(header) = rows.first() else {
        return Ok(String::new());
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String]| -> String {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        cells.join(" | ").trim_end().to_owned() + "\n"
    };
    let mut text = line(header);
    text += &(widths
        .iter()
        .map(|w| "-".repeat(*w))
        .collect::<Vec<_>>()
        .join("-+-")
        + "\n");
    for row in &rows[1..] {
        text += &line(row);
    }
    let n = rows.len() - 1;
    text += &format!("({n} row{})\n", if n == 1 { "" } else { "s" });
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_aligns_columns() {
        let text = super::table("node,value\nn1,40.5\nnode-long,\"1,5\"\n").unwrap();
        assert_eq!(
            text,
            "node      | value\n----------+------\nn1        | 40.5\nnode-long | 1,5\n(2 rows)\n"
        );
    }
}
