//! Parse + aggregate throughput of realistic list pages, in links per second.
//!
//! The pages are the simulator's own HTTP responses (`GET /v2/payment_links?per_page=100`),
//! byte for byte what the exporter receives: a mix of open, processing, paid, expired and
//! canceled links, Invoice links with invoice fields and Basket links with their items, four
//! currencies. They are fetched once over loopback before measuring; only CPU work is timed.
//!
//! - `parse`: [`parse_page`] of every page (the strict fast path).
//! - `aggregate`: [`Aggregator::add`] of every already-parsed link, one fresh aggregator per
//!   iteration, then [`Aggregator::finish`].
//! - `parse_aggregate`: both, page by page, as a poll does (the figure of issue 5's target).
//!
//! `cargo bench --bench parse_aggregate` uses 100,000 distinct links (1,000 pages), so the id
//! dedup set is as large as a real poll's would be at that size; under `cargo test` (no
//! `--bench` argument) it uses 1,000 so the run stays instant.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use qonto_exporter::aggregate::{Aggregator, Limits, Window};
use qonto_exporter::qonto::model::parse_page;
use qonto_exporter::simulator::{SimConfig, Simulator};
use time::OffsetDateTime;

/// Links per page, the API's maximum and what the exporter asks for.
const PER_PAGE: usize = 100;

fn links_to_measure() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        1_000
    }
}

/// Every page of a simulated organisation of `links` links, as response bodies.
fn fetch_pages(links: usize) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sim = Simulator::new(SimConfig {
        links,
        ..SimConfig::default()
    });
    let running = rt
        .block_on(sim.start(([127, 0, 0, 1], 0).into()))
        .expect("simulator starts on loopback");
    let addr = running.addr;
    // The simulator serves from the runtime's tasks; drive it from a thread while this one
    // does blocking HTTP/1.0 requests (one per connection, so the body ends at EOF).
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        rt.block_on(async move {
            tokio::task::spawn_blocking(move || wait.recv()).await.ok();
            running.shutdown().await;
        })
    });
    let pages = links.div_ceil(PER_PAGE);
    let bodies = (1..=pages)
        .map(|page| {
            let mut s = TcpStream::connect(addr).expect("connect to the simulator");
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            write!(
                s,
                "GET /v2/payment_links?page={page}&per_page={PER_PAGE} HTTP/1.0\r\nHost: bench\r\nAuthorization: Bearer bench\r\n\r\n"
            )
            .expect("send request");
            let mut resp = Vec::new();
            s.read_to_end(&mut resp).expect("read response");
            let split = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("HTTP response has a header block");
            assert!(resp.starts_with(b"HTTP/1.0 200") || resp.starts_with(b"HTTP/1.1 200"));
            resp.split_off(split + 4)
        })
        .collect();
    let _ = done.send(());
    server.join().expect("simulator thread");
    bodies
}

fn windows() -> Vec<Window> {
    ["1h", "24h", "7d", "30d"]
        .iter()
        .map(|l| Window {
            label: (*l).to_owned(),
            duration: humantime::parse_duration(l).expect("valid window"),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let links = links_to_measure();
    let bodies = fetch_pages(links);
    let windows = windows();
    let now = OffsetDateTime::now_utc();

    // Sanity: every link parses on the fast path and counts once.
    let mut agg = Aggregator::new(now, &windows, Limits::default());
    for body in &bodies {
        let page = parse_page(body).expect("simulator page parses");
        assert!(page.malformed.is_empty());
        for link in &page.links {
            agg.add(link);
        }
    }
    assert_eq!(agg.finish().unique_links as usize, links);

    let mut group = c.benchmark_group("links");
    group.throughput(Throughput::Elements(links as u64));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("parse", links), |b| {
        b.iter(|| {
            for body in &bodies {
                std::hint::black_box(parse_page(std::hint::black_box(body)).expect("parses"));
            }
        })
    });
    let parsed: Vec<_> = bodies
        .iter()
        .map(|b| parse_page(b).expect("parses"))
        .collect();
    group.bench_function(BenchmarkId::new("aggregate", links), |b| {
        b.iter(|| {
            let mut agg = Aggregator::new(now, &windows, Limits::default());
            for page in &parsed {
                for link in &page.links {
                    agg.add(std::hint::black_box(link));
                }
            }
            std::hint::black_box(agg.finish())
        })
    });
    group.bench_function(BenchmarkId::new("parse_aggregate", links), |b| {
        b.iter(|| {
            let mut agg = Aggregator::new(now, &windows, Limits::default());
            for body in &bodies {
                let page = parse_page(std::hint::black_box(body)).expect("parses");
                for link in &page.links {
                    agg.add(link);
                }
            }
            std::hint::black_box(agg.finish())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
