//! One Prometheus text for the whole server: every worker's metrics with a
//! `worker` label, grouped by metric as the format requires.

use std::collections::HashMap;

/// One metric family: its `# HELP` and `# TYPE` lines and its samples.
#[derive(Debug, Default)]
struct Family {
    head: Vec<String>,
    samples: Vec<String>,
}

/// Families in the order they were first named.
#[derive(Debug, Default)]
struct Families {
    list: Vec<Family>,
    by_name: HashMap<String, usize>,
}

impl Families {
    fn named(&mut self, name: &str) -> &mut Family {
        let list = &mut self.list;
        let at = *(self.by_name.entry(name.to_string())).or_insert_with(|| {
            list.push(Family::default());
            list.len() - 1
        });
        &mut self.list[at]
    }
}

/// The families of every worker's exposition (worker index, its text), in
/// the order they first appear, each sample labelled `worker="I"` ahead of
/// its own labels; then `own`, the supervisor's text, unchanged.
///
/// ```
/// use sockloop::supervisor::merge;
///
/// let worker = "# TYPE sockloop_up gauge\nsockloop_up{shard=\"0\"} 1\nsockloop_bans 0\n";
/// let text = merge(&[(0, worker), (1, worker)], "sockloop_workers 2\n");
/// assert_eq!(
///     text,
///     "# TYPE sockloop_up gauge\n\
///      sockloop_up{worker=\"0\",shard=\"0\"} 1\n\
///      sockloop_up{worker=\"1\",shard=\"0\"} 1\n\
///      sockloop_bans{worker=\"0\"} 0\n\
///      sockloop_bans{worker=\"1\"} 0\n\
///      sockloop_workers 2\n"
/// );
/// ```
pub fn merge(workers: &[(usize, &str)], own: &str) -> String {
    let mut families = Families::default();
    for &(worker, text) in workers {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(comment) = line.strip_prefix("# ") {
                // `# HELP name ...` or `# TYPE name ...`: kept once per family.
                let mut words = comment.split_whitespace();
                if let (Some("HELP" | "TYPE"), Some(name)) = (words.next(), words.next()) {
                    let head = &mut families.named(name).head;
                    if !head.iter().any(|h| h == line) {
                        head.push(line.to_string());
                    }
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let (name, rest) = line.split_at(name_end);
            let labelled = match rest.strip_prefix('{') {
                Some(labels) => format!("{name}{{worker=\"{worker}\",{labels}"),
                None => format!("{name}{{worker=\"{worker}\"}}{rest}"),
            };
            families.named(name).samples.push(labelled);
        }
    }
    let mut out = String::with_capacity(own.len() + 64 * families.list.len());
    for family in &families.list {
        for line in family.head.iter().chain(&family.samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(own);
    out
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn families_stay_together_whatever_order_workers_answer_in() {
        let a = "# HELP x X.\n# TYPE x counter\nx{shard=\"0\"} 1\nx{shard=\"1\"} 2\n\
                 # TYPE y gauge\ny 5\n";
        let b = "# TYPE y gauge\ny 7\n# HELP x X.\n# TYPE x counter\nx{shard=\"0\"} 3\n";
        let text = merge(&[(0, a), (3, b)], "");
        assert_eq!(
            text,
            "# HELP x X.\n# TYPE x counter\nx{worker=\"0\",shard=\"0\"} 1\n\
             x{worker=\"0\",shard=\"1\"} 2\nx{worker=\"3\",shard=\"0\"} 3\n\
             # TYPE y gauge\ny{worker=\"0\"} 5\ny{worker=\"3\"} 7\n"
        );
    }

    #[test]
    fn no_workers_leaves_the_supervisors_own_text() {
        assert_eq!(merge(&[], "a 1\n"), "a 1\n");
    }
}
