//! The Prometheus text format (0.0.4) of the node's metrics, for scrapers
//! and tools that do not ask for OpenMetrics (`promtool check metrics`,
//! `curl`). prometheus-client writes only OpenMetrics, where a counter family
//! `x` has samples `x_total`; in the older format the family must carry the
//! sample's name, `_created` samples and `# EOF` do not exist, and `unknown`
//! is `untyped`.
//!
//! Owns only the rewrite of encoded text; it must not define metrics.

/// Rewrites OpenMetrics text as Prometheus 0.0.4 text.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut counter: Option<String> = None;
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.splitn(2, ' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            counter = (kind == "counter").then(|| name.to_string());
            let line = match kind {
                "counter" => format!("# TYPE {} counter", total_name(name)),
                "unknown" => format!("# TYPE {name} untyped"),
                "info" => format!("# TYPE {name}_info gauge"),
                "gaugehistogram" | "stateset" => format!("# TYPE {name} untyped"),
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let mut parts = rest.splitn(2, ' ');
            let (name, help) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            // A counter's HELP is renamed once its TYPE is known (fix_counter_help).
            out.push_str(&format!("# HELP {name} {help}\n"));
            continue;
        }
        if let Some(name) = &counter
            && line.starts_with(&format!("{name}_created"))
        {
            continue;
        }
        // Exemplars (` # {...} value`) are OpenMetrics only.
        let sample = match line.find(" # {") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    fix_counter_help(&out)
}

/// `x` → `x_total` (a name that already ends in `_total` stays).
fn total_name(name: &str) -> String {
    if name.ends_with("_total") {
        name.to_string()
    } else {
        format!("{name}_total")
    }
}

/// Renames each `# HELP x` line followed by `# TYPE x_total counter`.
fn fix_counter_help(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("# HELP ")
            && let Some(next) = lines.get(i + 1)
            && let Some(ty) = next.strip_prefix("# TYPE ")
            && ty.ends_with(" counter")
        {
            let mut parts = rest.splitn(2, ' ');
            let (name, help) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            out.push_str(&format!("# HELP {} {help}\n", total_name(name)));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    #[test]
    fn counters_carry_their_sample_name_and_openmetrics_only_lines_go() {
        let mut registry = Registry::default();
        let c: Counter = Counter::default();
        registry.register("strew_things", "Things done", c.clone());
        let g: Gauge = Gauge::default();
        registry.register("strew_level", "A level", g.clone());
        c.inc_by(3);
        g.set(5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let plain = openmetrics_to_prometheus(&text);
        assert!(
            plain.contains("# HELP strew_things_total Things done"),
            "{plain}"
        );
        assert!(
            plain.contains("# TYPE strew_things_total counter\n"),
            "{plain}"
        );
        assert!(plain.contains("strew_things_total 3\n"), "{plain}");
        assert!(plain.contains("# TYPE strew_level gauge\n"), "{plain}");
        assert!(!plain.contains("# EOF"), "{plain}");
        assert!(!plain.contains("_created"), "{plain}");
    }
}
