//! Any bytes as a list response: parsing and aggregating must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qonto_exporter::aggregate::{Aggregator, Limits, Window};
use qonto_exporter::qonto::model::parse_page;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = parse_page(data) {
        let windows = [Window {
            label: "24h".into(),
            duration: std::time::Duration::from_secs(86_400),
        }];
        let mut agg = Aggregator::new(time::OffsetDateTime::UNIX_EPOCH, &windows, Limits::default());
        for link in &page.links {
            agg.add(link);
        }
        let snapshot = agg.finish();
        let _ = qonto_exporter::metrics::render_snapshot(&snapshot);
    }
});
