//! The exposition formats: OpenMetrics as prometheus-client writes it, the
//! Prometheus 0.0.4 text format derived from it, and the last guard against
//! control characters in either.

use super::kit::unsafe_in_label;

/// An exposition with every control character but the line breaks replaced
/// by U+FFFD. prometheus-client escapes newlines inside label values and
/// help texts, so a raw one is always a line break; any other control
/// character came from a label value or a help text (configuration names,
/// MongoDB documents, Redis names) and would reach the scraper raw.
pub fn scrub_controls(text: String) -> String {
    let clean = |c: char| c == '\n' || !unsafe_in_label(c);
    // Almost always clean: one scan, no copy.
    if text.chars().all(clean) {
        return text;
    }
    text.chars()
        .map(|c| if clean(c) { c } else { '\u{FFFD}' })
        .collect()
}

/// Rewrites OpenMetrics text into the Prometheus 0.0.4 text format: counter
/// families are named with `_total`, `info` becomes a gauge, `# UNIT` and
/// `# EOF` go.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut pending_help: Option<&str> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            pending_help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, ty): (String, &str) = match ty {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" | "stateset" | "gaugehistogram" => (name.to_string(), "untyped"),
                t => (name.to_string(), t),
            };
            if let Some(help) = pending_help.take() {
                let text = help.split_once(' ').map_or("", |(_, t)| t);
                out.push_str("# HELP ");
                out.push_str(&name);
                out.push(' ');
                out.push_str(text);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(ty);
            out.push('\n');
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
