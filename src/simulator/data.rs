//! The simulated organisation: its payment links, how they are generated, how they evolve, and how
//! a page of them is selected.
//!
//! Links are stored in creation order (oldest first), and a new link is never created before an
//! existing one, so the API's default order (newest `created_at` first) is the storage order read
//! backwards and needs no index. The two other sort keys (amount, expiration date) keep one index
//! vector each over all links. A filtered view (a set of statuses in one order) is built on first
//! use by one pass over the matching index and cached until the next mutation, so walking all pages
//! of a view costs one O(n) pass plus O(per_page) per page.
//!
//! Determinism: the same seed and start time give the same links (ids, amounts, statuses, dates).
//! `SmallRng` is used for speed (a million links in well under a second in release builds); its
//! stream is stable within one build of the crate, which is all tests and benchmarks need.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::render::LinkJson;
use super::variants::{SpecVariants, Variants};

/// The status of a payment link; [`as_str`](Status::as_str) is the API's spelling, and JSON
/// (`/_sim/mutate`) uses the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Processing,
    Paid,
    Expired,
    Canceled,
    /// A status outside the spec's enum (enums are open sets): never generated, reached only
    /// through `Recast`; served by the unfiltered listing, and no `status[]` filter names it.
    Settling,
}

impl Status {
    pub(crate) const ALL: [Status; 5] = [
        Status::Open,
        Status::Processing,
        Status::Paid,
        Status::Expired,
        Status::Canceled,
    ];

    /// The spec's spelling (`open`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Processing => "processing",
            Status::Paid => "paid",
            Status::Expired => "expired",
            Status::Canceled => "canceled",
            Status::Settling => "settling",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The bit of this status in a [`StatusMask`].
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Paid, expired and canceled: links that the simulator's own evolution never changes again,
    /// unless [`SpecVariants::terminal_moves_per_step`](super::SpecVariants) or the `Reopen`,
    /// `Recast` and `Remove` mutations say otherwise (the spec does not promise it either way).
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Paid | Status::Expired | Status::Canceled)
    }
}

/// A set of statuses, one bit per [`Status`].
pub(crate) type StatusMask = u8;
/// Every status: the mask of a request without a `status[]` filter.
pub(crate) const ALL_STATUSES: StatusMask = 0b11_1111;

/// ISO 4217 currencies the simulated organisation invoices in. JPY and KWD only appear with
/// [`SpecVariants::minor_unit_currency_share`](super::SpecVariants::minor_unit_currency_share).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Currency {
    Eur,
    Usd,
    Gbp,
    Chf,
    /// Yen: no minor unit, amounts like `"1500"`.
    Jpy,
    /// Kuwaiti dinar: three decimals (fils), amounts like `"12.345"`.
    Kwd,
}

impl Currency {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Currency::Eur => "EUR",
            Currency::Usd => "USD",
            Currency::Gbp => "GBP",
            Currency::Chf => "CHF",
            Currency::Jpy => "JPY",
            Currency::Kwd => "KWD",
        }
    }

    /// Decimals of the currency's minor unit (ISO 4217).
    pub(crate) fn exponent(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            Currency::Kwd => 3,
            _ => 2,
        }
    }

    /// An amount drawn in cents, in this currency's minor units at a plausible rate: the same
    /// number for the two-decimal currencies, ×1.6 for yen (about 160 JPY to 1 EUR), ×10/3 for
    /// fils (about 1 KWD to 3 EUR).
    fn minor_from_cents(self, cents: i64) -> i64 {
        match self {
            Currency::Jpy => cents * 8 / 5,
            Currency::Kwd => cents * 10 / 3,
            _ => cents,
        }
    }
}

/// What a payment link is for: an invoice, or a basket of items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResourceType {
    Invoice,
    Basket,
}

impl ResourceType {
    /// The spec's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ResourceType::Invoice => "Invoice",
            ResourceType::Basket => "Basket",
        }
    }
}

/// Payment methods, as bits of [`Link::methods`], in the order they are rendered.
/// `bank_transfer` is not in the list endpoint's enum but appears in the wild (FACTS.md).
pub(crate) const METHODS: [&str; 5] = [
    "credit_card",
    "apple_pay",
    "paypal",
    "ideal",
    "bank_transfer",
];

/// One payment link, compactly (about 80 bytes, so a million fit in memory comfortably).
/// Basket items are not stored: they are regenerated from `detail_seed` when rendered.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub(crate) id: u128,
    pub(crate) resource_id: u128,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds.
    pub(crate) expiration: i64,
    /// Gross amount (VAT included) in minor units of `currency` (cents; yen; fils).
    pub(crate) amount_minor: i64,
    /// Seed of the basket items (see [`basket_items`]).
    pub(crate) detail_seed: u64,
    pub(crate) invoice_number: u32,
    pub(crate) status: Status,
    pub(crate) currency: Currency,
    pub(crate) resource_type: ResourceType,
    pub(crate) methods: u8,
    pub(crate) reusable: bool,
    pub(crate) debitor: u8,
}

impl Link {
    /// The amount in thousandths of the currency's unit: the order of `sort_by=amount`, by
    /// value whatever the currency's decimals.
    pub(crate) fn amount_thousandths(&self) -> i64 {
        self.amount_minor * 10i64.pow(3 - self.currency.exponent())
    }
}

/// Customers of the simulated organisation (invoice links' `debitor_name`).
pub(crate) const DEBITORS: [&str; 16] = [
    "John Doe",
    "Marie Dupont",
    "Atelier Moreau SARL",
    "Boulangerie Petit",
    "Lefebvre & Fils",
    "Nordwind GmbH",
    "Camille Martin",
    "Studio Bernard",
    "Acme Corp",
    "Hugo Garcia",
    "Transports Roux",
    "Léa Fontaine",
    "Brighton Supplies Ltd",
    "Zürich Consulting AG",
    "Chloé Lambert",
    "Garage Mercier",
];

/// One basket item, as the API renders it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Item {
    pub(crate) title: &'static str,
    pub(crate) item_type: &'static str,
    pub(crate) description: &'static str,
    /// Quantity in halves (3 = 1.5), so service hours can be fractional.
    pub(crate) quantity_halves: u32,
    pub(crate) measure_unit: &'static str,
    /// In minor units of the link's currency.
    pub(crate) unit_price_minor: i64,
    /// VAT rate in per mille (55 = 5.5 %).
    pub(crate) vat_permille: i64,
}

/// (title, type, description, measure unit)
const CATALOG: [(&str, &str, &str, &str); 8] = [
    ("Consulting", "service", "Consulting, per hour", "hour"),
    ("Design workshop", "service", "Half-day workshop", "day"),
    ("Maintenance", "service", "Monthly maintenance", "unit"),
    ("Notebook", "good", "A5 dotted notebook", "unit"),
    ("Coffee beans", "good", "Single-origin, 1 kg bag", "kg"),
    ("Delivery", "service", "Express delivery", "unit"),
    ("T-shirt", "good", "Organic cotton, size M", "unit"),
    ("Licence", "service", "Annual software licence", "unit"),
];

/// A small, portable generator (SplitMix64) for deriving a link's details from its seed.
pub(crate) struct Mix(pub(crate) u64);

impl Mix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The items of a basket link and their gross total in minor units of `currency`.
/// Each line is at least 5.00 and at most about 6,000.00 gross, so totals stay in 5.00–20,000.00
/// (two-decimal currencies; yen and dinars at the rates of [`Currency::minor_from_cents`]).
pub(crate) fn basket_items(seed: u64, currency: Currency) -> (Vec<Item>, i64) {
    let mut m = Mix(seed);
    let n = 1 + m.below(3) as usize;
    let mut items = Vec::with_capacity(n);
    let mut total = 0;
    for _ in 0..n {
        let (title, item_type, description, measure_unit) =
            CATALOG[m.below(CATALOG.len() as u64) as usize];
        let vat_permille = match currency {
            Currency::Eur => [200, 200, 200, 100, 55, 0][m.below(6) as usize],
            Currency::Chf => 81,
            Currency::Gbp => 200,
            Currency::Usd | Currency::Kwd => 0,
            Currency::Jpy => 100,
        };
        let quantity_halves = if item_type == "service" && measure_unit == "hour" {
            2 + m.below(15) as u32 // 1 to 8 hours, by half hours
        } else {
            2 * (1 + m.below(5) as u32)
        };
        // Log-uniform unit price from 5.00 to 2,000.00, capped so the line stays under 6,000.00.
        let ln = (500f64).ln() + m.unit() * ((200_000f64).ln() - (500f64).ln());
        let cap = 600_000 * 2000 / (i64::from(quantity_halves) * (1000 + vat_permille));
        let unit_price_cents = (ln.exp().round() as i64).clamp(500, cap.max(500));
        let unit_price_minor = currency.minor_from_cents(unit_price_cents);
        total += line_gross_minor(unit_price_minor, quantity_halves, vat_permille);
        items.push(Item {
            title,
            item_type,
            description,
            quantity_halves,
            measure_unit,
            unit_price_minor,
            vat_permille,
        });
    }
    (items, total)
}

/// unit price × quantity × (1 + VAT), rounded half up to the minor unit.
fn line_gross_minor(unit_price_minor: i64, quantity_halves: u32, vat_permille: i64) -> i64 {
    let num = unit_price_minor * i64::from(quantity_halves) * (1000 + vat_permille);
    (num + 1000) / 2000
}

/// A random version-4 UUID.
fn uuid_v4(rng: &mut SmallRng) -> u128 {
    let v: u128 = rng.random();
    let v = (v & !(0xF << 76)) | (0x4 << 76);
    (v & !(0x3 << 62)) | (0x2 << 62)
}

/// Formats a UUID in its hyphenated lower-case form.
pub(crate) fn format_uuid(v: u128) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (v >> 96) as u32,
        (v >> 80) as u16,
        (v >> 64) as u16,
        (v >> 48) as u16,
        v & 0xFFFF_FFFF_FFFF
    )
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
/// How far back the generated history reaches.
const HISTORY: i64 = 365 * DAY;

/// A deterministic change to the organisation, applied by [`crate::simulator::Simulator::mutate`]
/// and `POST /_sim/mutate`. Counts are upper bounds: there may be fewer links than asked for.
/// Only `Reopen`, `Recast` and `Remove` (and `Step` with
/// [`SpecVariants::terminal_moves_per_step`](super::SpecVariants::terminal_moves_per_step))
/// change or remove a paid, expired or canceled link; every other mutation leaves them as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// One realistic tick, as the background evolution does: due links expire, some open links
    /// are paid (some through processing), a few are canceled, new open links are created.
    Step,
    /// Create N new open links (they come first in the default order).
    Create(usize),
    /// N open or processing links become paid.
    Pay(usize),
    /// N open links become expired (their expiration date is moved to now if it was later).
    Expire(usize),
    /// N open links become canceled.
    Cancel(usize),
    /// N open links become processing.
    Process(usize),
    /// N open links get an expiration date in (now, now + within].
    ExpireSoon { count: usize, within: Duration },
    /// N reusable paid links become open again (a reusable link can be paid more than once); one
    /// whose expiration date has passed gets a new one 1 to 30 days ahead.
    Reopen(usize),
    /// N links of status `from` take status `to` (e.g. canceled → expired); a link becoming
    /// expired has its expiration date moved to now if it was later.
    Recast {
        count: usize,
        from: Status,
        to: Status,
    },
    /// N links of `status` disappear from the listing.
    Remove { count: usize, status: Status },
    /// Several mutations applied at once: no request sees some applied and others not (e.g. a
    /// paid link removed and an open one paid, so the count of paid links never moves).
    Batch(Vec<Mutation>),
}

/// A sort order of the list endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Order {
    /// Newest `created_at` first: the API's default.
    CreatedDesc,
    AmountAsc,
    AmountDesc,
    ExpirationAsc,
    ExpirationDesc,
}

impl Order {
    pub(crate) fn parse(s: &str) -> Option<Order> {
        Some(match s {
            "amount:asc" => Order::AmountAsc,
            "amount:desc" => Order::AmountDesc,
            "expiration_date:asc" => Order::ExpirationAsc,
            "expiration_date:desc" => Order::ExpirationDesc,
            _ => return None,
        })
    }
}

/// Filtered views by (statuses, order): link positions in that order.
type ViewCache = HashMap<(StatusMask, Order), Arc<Vec<u32>>>;

/// All links of the organisation and the indexes that make a page O(per_page).
pub(crate) struct Store {
    links: Vec<Link>,
    /// Link positions by (amount, position) ascending.
    by_amount: Vec<u32>,
    /// Link positions by (expiration, position) ascending.
    by_expiration: Vec<u32>,
    /// Filtered views built on demand; cleared by every mutation.
    views: Mutex<ViewCache>,
    rng: SmallRng,
    next_invoice_number: u32,
    /// How links are written, and which spec-valid variations are switched on.
    variants: Variants,
    /// During one [`Store::mutate`]: the links changed so far, by position, with their status
    /// before it (`None` for links it created).
    touched: BTreeMap<u32, Option<Status>>,
}

/// A link a mutation created or changed, as it is after it, with its status before (`None`
/// for a link created).
pub(crate) type Observed = (Option<Status>, Link);

/// The net change of one link across one [`Store::mutate`] (which no request sees half done):
/// what a client reading before and after it can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    /// `None` for a link the mutation created.
    pub(crate) from: Option<Status>,
    pub(crate) to: Status,
    pub(crate) currency: Currency,
    pub(crate) resource_type: ResourceType,
    pub(crate) amount_minor: i64,
    /// Unix seconds.
    pub(crate) created_at: i64,
}

impl Store {
    /// Generates `n` links created over the year before `now` (Unix seconds). With the default
    /// [`SpecVariants`], the links are those of earlier releases for the same seed; the switches
    /// only re-spell links or change their currency, they do not change which links exist.
    pub(crate) fn generate(n: usize, seed: u64, now: i64, spec: SpecVariants) -> Store {
        let mut store = Store {
            links: Vec::with_capacity(n),
            by_amount: Vec::new(),
            by_expiration: Vec::new(),
            views: Mutex::new(HashMap::new()),
            rng: SmallRng::seed_from_u64(seed),
            next_invoice_number: 1,
            variants: Variants::new(spec, seed),
            touched: BTreeMap::new(),
        };
        let start = now - HISTORY;
        for i in 0..n {
            // Evenly spread, non-decreasing creation times, so storage order is creation order.
            let u: f64 = store.rng.random();
            let created_at = start + ((i as f64 + u) * HISTORY as f64 / n as f64) as i64;
            let status = match store.rng.random_range(0..100) {
                0..15 => Status::Open,
                15..17 => Status::Processing,
                17..72 => Status::Paid,
                72..92 => Status::Expired,
                _ => Status::Canceled,
            };
            let link = store.new_link(created_at, status, now);
            store.links.push(link);
        }
        // Evolution must not replay the generation stream: reseed it from the seed.
        store.rng = SmallRng::seed_from_u64(seed ^ 0x05EE_D0FE_701E);
        store.rebuild_sorted();
        store
    }

    fn new_link(&mut self, created_at: i64, status: Status, now: i64) -> Link {
        let rng = &mut self.rng;
        let id = uuid_v4(rng);
        let resource_id = uuid_v4(rng);
        let drawn = match rng.random_range(0..100) {
            0..80 => Currency::Eur,
            80..88 => Currency::Usd,
            88..95 => Currency::Gbp,
            _ => Currency::Chf,
        };
        // Re-assigned from the id, not from the stream, so the switch changes no other field.
        let currency = self.variants.currency(id, drawn);
        let resource_type = if rng.random_bool(0.6) {
            ResourceType::Invoice
        } else {
            ResourceType::Basket
        };
        let detail_seed: u64 = rng.random();
        let amount_minor = match resource_type {
            ResourceType::Basket => basket_items(detail_seed, currency).1,
            ResourceType::Invoice => {
                let ln = rng.random_range((500f64).ln()..(2_000_000f64).ln());
                let cents = ln.exp().round() as i64;
                // A quarter of invoices are whole amounts, as people write them.
                let cents = if rng.random_bool(0.25) {
                    (cents / 100).max(5) * 100
                } else {
                    cents.clamp(500, 2_000_000)
                };
                currency.minor_from_cents(cents)
            }
        };
        let mut methods = 0u8;
        if rng.random_bool(0.95) {
            methods |= 1;
        }
        if rng.random_bool(0.6) {
            methods |= 2;
        }
        if rng.random_bool(0.3) {
            methods |= 4;
        }
        // iDEAL for euros only; drawn on the drawn currency so the stream does not depend on
        // the minor-unit switch.
        if drawn == Currency::Eur && rng.random_bool(0.25) && currency == Currency::Eur {
            methods |= 8;
        }
        if rng.random_bool(0.03) {
            methods |= 16;
        }
        if methods == 0 {
            methods = 1;
        }
        let reusable = resource_type == ResourceType::Basket && rng.random_bool(0.35);
        let debitor = rng.random_range(0..DEBITORS.len() as u8);
        let validity = rng.random_range(HOUR..60 * DAY);
        let expiration = match status {
            Status::Open => {
                let exp = match rng.random_range(0..100) {
                    // Open past expiration: Qonto leaves them open for a while.
                    0..8 => now - rng.random_range(60..5 * DAY),
                    8..13 => now + rng.random_range(60..HOUR),
                    13..25 => now + rng.random_range(HOUR..DAY),
                    25..55 => now + rng.random_range(DAY..30 * DAY),
                    _ => now + rng.random_range(30 * DAY..150 * DAY),
                };
                exp.max(created_at + 60)
            }
            Status::Processing | Status::Settling => now + rng.random_range(HOUR..30 * DAY),
            Status::Expired => {
                let lived = (now - created_at).max(61);
                (created_at + validity.min(lived - 1)).min(now)
            }
            Status::Paid | Status::Canceled => created_at + validity,
        };
        let invoice_number = self.next_invoice_number;
        if resource_type == ResourceType::Invoice {
            self.next_invoice_number += 1;
        }
        Link {
            id,
            resource_id,
            created_at,
            expiration,
            amount_minor,
            detail_seed,
            invoice_number,
            status,
            currency,
            resource_type,
            methods,
            reusable,
            debitor,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    pub(crate) fn link(&self, pos: u32) -> &Link {
        &self.links[pos as usize]
    }

    /// The link at `pos`, as the API writes it.
    pub(crate) fn render(&self, pos: u32) -> LinkJson {
        LinkJson::new(self.link(pos), &self.variants)
    }

    /// All links in the default order (newest first), as the API writes them.
    pub(crate) fn render_all(&self) -> Vec<LinkJson> {
        self.links
            .iter()
            .rev()
            .map(|l| LinkJson::new(l, &self.variants))
            .collect()
    }

    fn rebuild_sorted(&mut self) {
        let n = self.links.len() as u32;
        // Appending then stable-sorting is O(n) for an already sorted prefix plus a short tail.
        self.by_amount.extend(self.by_amount.len() as u32..n);
        let links = &self.links;
        self.by_amount
            .sort_by_key(|&p| (links[p as usize].amount_thousandths(), p));
        self.by_expiration
            .extend(self.by_expiration.len() as u32..n);
        let v = &self.variants;
        // A null date sorts as SQL's NULL does: after every date ascending, first descending.
        self.by_expiration.sort_by_key(|&p| {
            let l = &links[p as usize];
            (v.dateless(l), l.expiration, p)
        });
    }

    /// Forgets the indexes and builds them again (after links were removed).
    fn reindex(&mut self) {
        self.by_amount.clear();
        self.by_expiration.clear();
        self.rebuild_sorted();
    }

    /// Positions of the links matching `mask` in `order`, skipping `offset`, at most `limit`;
    /// plus the number of matching links.
    pub(crate) fn select(
        &self,
        mask: StatusMask,
        order: Order,
        offset: usize,
        limit: usize,
    ) -> (Vec<u32>, usize) {
        let n = self.links.len();
        if mask & ALL_STATUSES == ALL_STATUSES {
            let end = offset.saturating_add(limit).min(n);
            let range = offset.min(n)..end;
            let page = match order {
                Order::CreatedDesc => range.map(|i| (n - 1 - i) as u32).collect(),
                Order::AmountAsc => self.by_amount[range].to_vec(),
                Order::ExpirationAsc => self.by_expiration[range].to_vec(),
                Order::AmountDesc => range.map(|i| self.by_amount[n - 1 - i]).collect(),
                Order::ExpirationDesc => range.map(|i| self.by_expiration[n - 1 - i]).collect(),
            };
            return (page, n);
        }
        let view = self.view(mask, order);
        let end = offset.saturating_add(limit).min(view.len());
        (view[offset.min(end)..end].to_vec(), view.len())
    }

    /// The cached filtered view, built by one pass over the order's index.
    fn view(&self, mask: StatusMask, order: Order) -> Arc<Vec<u32>> {
        let key = (mask, order);
        if let Some(v) = self
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Arc::clone(v);
        }
        let keep = |p: &u32| mask & self.links[*p as usize].status.bit() != 0;
        let n = self.links.len() as u32;
        let view: Vec<u32> = match order {
            Order::CreatedDesc => (0..n).rev().filter(keep).collect(),
            Order::AmountAsc => self.by_amount.iter().copied().filter(keep).collect(),
            Order::AmountDesc => self.by_amount.iter().rev().copied().filter(keep).collect(),
            Order::ExpirationAsc => self.by_expiration.iter().copied().filter(keep).collect(),
            Order::ExpirationDesc => self
                .by_expiration
                .iter()
                .rev()
                .copied()
                .filter(keep)
                .collect(),
        };
        let view = Arc::new(view);
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&view));
        view
    }

    /// Positions of the links whose status is in `mask`, shuffled, at most `count`.
    fn pick(&mut self, mask: StatusMask, count: usize) -> Vec<u32> {
        let mut found: Vec<u32> = (0..self.links.len() as u32)
            .filter(|&p| mask & self.links[p as usize].status.bit() != 0)
            .collect();
        let (chosen, _) = found.partial_shuffle(&mut self.rng, count);
        chosen.to_vec()
    }

    /// Applies a mutation at `now` (Unix seconds); returns how many links were created, changed
    /// or removed, and the net change of each link whose status it changed or that it created
    /// (a link changed twice counts once, from its status before to its status after; a link
    /// removed counts nothing).
    #[cfg(test)]
    pub(crate) fn mutate(&mut self, m: &Mutation, now: i64) -> (usize, Vec<Change>) {
        let (n, changes, _) = self.mutate_observed(m, now, false);
        (n, changes)
    }

    /// [`Store::mutate`], and when `observe`, every link the mutation created or changed (its
    /// status or its expiration date), as it is after the mutation, with its status before
    /// (`None` for a link created): what the webhook deliveries report. Removed links are not
    /// reported (Qonto never removes a link; the simulator's removal has no event).
    pub(crate) fn mutate_observed(
        &mut self,
        m: &Mutation,
        now: i64,
        observe: bool,
    ) -> (usize, Vec<Change>, Vec<Observed>) {
        self.touched.clear();
        let n = self.apply_inner(m, now);
        let touched = std::mem::take(&mut self.touched);
        let observed = if observe {
            touched
                .iter()
                .map(|(&p, &before)| (before, self.links[p as usize].clone()))
                .collect()
        } else {
            Vec::new()
        };
        let changes = touched
            .into_iter()
            .filter_map(|(p, before)| {
                let l = &self.links[p as usize];
                (before != Some(l.status)).then_some(Change {
                    from: before,
                    to: l.status,
                    currency: l.currency,
                    resource_type: l.resource_type,
                    amount_minor: l.amount_minor,
                    created_at: l.created_at,
                })
            })
            .collect();
        (n, changes, observed)
    }

    /// Notes the status of the link at `p` before the first change of this mutation.
    fn touch(&mut self, p: usize) {
        let status = self.links[p].status;
        self.touched.entry(p as u32).or_insert(Some(status));
    }

    /// [`Store::mutate`] without the changes.
    #[cfg(test)]
    pub(crate) fn apply(&mut self, m: &Mutation, now: i64) -> usize {
        self.mutate(m, now).0
    }

    fn apply_inner(&mut self, m: &Mutation, now: i64) -> usize {
        let open = Status::Open.bit();
        let mut resort = false;
        let changed = match *m {
            Mutation::Batch(ref all) => {
                return all.iter().map(|m| self.apply_inner(m, now)).sum();
            }
            Mutation::Step => {
                let (n, created, moved) = self.step(now);
                resort = created > 0 || moved > 0;
                n
            }
            Mutation::Create(count) => {
                self.create(count, now);
                resort = count > 0;
                count
            }
            Mutation::Pay(count) => {
                self.set_status(open | Status::Processing.bit(), count, Status::Paid)
            }
            Mutation::Cancel(count) => self.set_status(open, count, Status::Canceled),
            Mutation::Process(count) => self.set_status(open, count, Status::Processing),
            Mutation::Expire(count) => {
                let chosen = self.pick(open, count);
                for &p in &chosen {
                    self.touch(p as usize);
                    let link = &mut self.links[p as usize];
                    link.status = Status::Expired;
                    link.expiration = link.expiration.min(now);
                }
                resort = !chosen.is_empty();
                chosen.len()
            }
            Mutation::ExpireSoon { count, within } => {
                let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX).max(1);
                let chosen = self.pick(open, count);
                for &p in &chosen {
                    let secs = self.rng.random_range(1..=within);
                    // Noted so the webhooks report the new date (no status change: no transition).
                    self.touch(p as usize);
                    self.links[p as usize].expiration = now.saturating_add(secs);
                }
                resort = !chosen.is_empty();
                chosen.len()
            }
            Mutation::Reopen(count) => {
                let n = self.reopen(count, now);
                resort = n > 0;
                n
            }
            Mutation::Recast { count, from, to } => {
                let n = self.recast(count, from, to, now);
                resort = n > 0;
                n
            }
            Mutation::Remove { count, status } => {
                let n = self.remove(status.bit(), count);
                if n > 0 {
                    self.reindex();
                }
                n
            }
        };
        // A change of status can turn a date into null (and back): the order moves with it.
        if resort || (changed > 0 && self.variants.any_dateless()) {
            self.rebuild_sorted();
        }
        if changed > 0 {
            self.views
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        changed
    }

    fn reopen(&mut self, count: usize, now: i64) -> usize {
        let mut found: Vec<u32> = (0..self.links.len() as u32)
            .filter(|&p| {
                let l = &self.links[p as usize];
                l.status == Status::Paid && l.reusable
            })
            .collect();
        let (chosen, _) = found.partial_shuffle(&mut self.rng, count);
        let chosen = chosen.to_vec();
        for &p in &chosen {
            let ahead = self.rng.random_range(DAY..30 * DAY);
            self.touch(p as usize);
            let link = &mut self.links[p as usize];
            link.status = Status::Open;
            if link.expiration <= now {
                link.expiration = now + ahead;
            }
        }
        chosen.len()
    }

    fn recast(&mut self, count: usize, from: Status, to: Status, now: i64) -> usize {
        let chosen = self.pick(from.bit(), count);
        for &p in &chosen {
            self.touch(p as usize);
            let link = &mut self.links[p as usize];
            link.status = to;
            if to == Status::Expired {
                link.expiration = link.expiration.min(now);
            }
        }
        chosen.len()
    }

    /// Removes at most `count` links whose status is in `mask`; the caller re-indexes.
    fn remove(&mut self, mask: StatusMask, count: usize) -> usize {
        let chosen = self.pick(mask, count);
        let mut gone = vec![false; self.links.len()];
        for &p in &chosen {
            gone[p as usize] = true;
        }
        // Links changed earlier in this mutation move down by the removed links before them;
        // removed ones are forgotten.
        let mut before = 0u32;
        let mut shift = Vec::with_capacity(gone.len());
        for g in &gone {
            shift.push(before);
            before += u32::from(*g);
        }
        self.touched = std::mem::take(&mut self.touched)
            .into_iter()
            .filter(|(p, _)| !gone[*p as usize])
            .map(|(p, s)| (p - shift[p as usize], s))
            .collect();
        let mut i = 0;
        // `retain` keeps the order, so storage order stays creation order.
        self.links.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
        chosen.len()
    }

    /// One terminal link moves: a reusable paid link reopens, a canceled link becomes expired,
    /// or a terminal link disappears, drawn from the stream. Returns the links affected.
    fn move_terminal(&mut self, now: i64) -> usize {
        let terminal = Status::Paid.bit() | Status::Expired.bit() | Status::Canceled.bit();
        match self.rng.random_range(0..3) {
            0 => self.reopen(1, now),
            1 => self.recast(1, Status::Canceled, Status::Expired, now),
            _ => {
                let n = self.remove(terminal, 1);
                if n > 0 {
                    self.reindex();
                }
                n
            }
        }
    }

    fn set_status(&mut self, from: StatusMask, count: usize, to: Status) -> usize {
        let chosen = self.pick(from, count);
        for &p in &chosen {
            self.touch(p as usize);
            self.links[p as usize].status = to;
        }
        chosen.len()
    }

    fn create(&mut self, count: usize, now: i64) {
        let last = self.links.last().map_or(i64::MIN, |l| l.created_at);
        let created_at = now.max(last);
        for _ in 0..count {
            let mut link = self.new_link(created_at, Status::Open, now);
            // New links expire in the future; one in ten within the hour, to move the gauges.
            link.expiration = if self.rng.random_bool(0.1) {
                now + self.rng.random_range(5 * 60..HOUR)
            } else {
                now + self.rng.random_range(HOUR..60 * DAY)
            };
            self.touched.insert(self.links.len() as u32, None);
            self.links.push(link);
        }
    }

    /// One tick of realistic life. Rates are per open link and tick, tuned so a 3,000-link demo
    /// sees about one payment and one new link every tick, and the number of open links stays
    /// stable; then `terminal_moves_per_step` terminal links move. Returns (links affected,
    /// created, terminal links moved).
    fn step(&mut self, now: i64) -> (usize, usize, usize) {
        let mut changed = 0;
        let mut open = 0usize;
        for i in 0..self.links.len() {
            let status = self.links[i].status;
            if status.is_terminal() {
                continue;
            }
            let next = match status {
                Status::Open => {
                    open += 1;
                    let due = self.links[i].expiration <= now;
                    let r: f64 = self.rng.random();
                    if due {
                        // Qonto expires due links lazily: some stay open past expiration a while.
                        (r < 0.3).then_some(Status::Expired)
                    } else if r < 0.0015 {
                        Some(Status::Paid)
                    } else if r < 0.002 {
                        Some(Status::Processing)
                    } else if r < 0.0023 {
                        Some(Status::Canceled)
                    } else {
                        None
                    }
                }
                Status::Processing => {
                    let r: f64 = self.rng.random();
                    if r < 0.6 {
                        Some(Status::Paid)
                    } else if r < 0.65 {
                        Some(Status::Open) // the payment failed; the link can be paid again
                    } else {
                        None
                    }
                }
                _ => None,
            };
            if let Some(next) = next {
                self.touch(i);
                self.links[i].status = next;
                changed += 1;
            }
        }
        let mean = open as f64 * 0.0025;
        let created = if mean < 1.0 {
            usize::from(self.rng.random_bool(mean.max(0.2)))
        } else {
            self.rng.random_range(0..=(2.0 * mean).round() as usize)
        };
        self.create(created, now);
        let mut moved = 0;
        for _ in 0..self.variants.spec.terminal_moves_per_step {
            moved += self.move_terminal(now);
        }
        (changed + created + moved, created, moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    #[test]
    fn same_seed_same_links() {
        let a = Store::generate(500, 7, NOW, SpecVariants::default());
        let b = Store::generate(500, 7, NOW, SpecVariants::default());
        let c = Store::generate(500, 8, NOW, SpecVariants::default());
        let ids = |s: &Store| s.links.iter().map(|l| l.id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&c));
    }

    #[test]
    fn generated_links_are_plausible() {
        let s = Store::generate(20_000, 1, NOW, SpecVariants::default());
        let count =
            |st: Status| s.links.iter().filter(|l| l.status == st).count() as f64 / 20_000.0;
        assert!((0.12..0.18).contains(&count(Status::Open)));
        assert!((0.50..0.60).contains(&count(Status::Paid)));
        assert!((0.17..0.23).contains(&count(Status::Expired)));
        for (i, l) in s.links.iter().enumerate() {
            assert!(
                (500..=2_000_000).contains(&l.amount_minor),
                "{}",
                l.amount_minor
            );
            assert!(l.created_at <= NOW);
            if i > 0 {
                assert!(s.links[i - 1].created_at <= l.created_at, "creation order");
            }
            if l.status == Status::Expired {
                assert!(l.expiration <= NOW);
            }
            let s = format_uuid(l.id);
            assert_eq!(s.len(), 36);
            assert_eq!(&s[14..15], "4");
            assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"));
        }
        let open = s.links.iter().filter(|l| l.status == Status::Open);
        let soon = open
            .clone()
            .filter(|l| l.expiration > NOW && l.expiration <= NOW + HOUR)
            .count();
        let past = open.filter(|l| l.expiration <= NOW).count();
        assert!(soon > 0 && past > 0);
    }

    #[test]
    fn basket_total_is_sum_of_lines() {
        for seed in 0..200 {
            let (items, total) = basket_items(seed, Currency::Eur);
            assert!((1..=3).contains(&items.len()));
            let sum: i64 = items
                .iter()
                .map(|i| line_gross_minor(i.unit_price_minor, i.quantity_halves, i.vat_permille))
                .sum();
            assert_eq!(sum, total);
            assert!((500..=2_000_000).contains(&total));
        }
    }

    #[test]
    fn select_matches_a_naive_sort() {
        let s = Store::generate(1000, 3, NOW, SpecVariants::default());
        let mask = Status::Open.bit() | Status::Paid.bit();
        for order in [
            Order::CreatedDesc,
            Order::AmountAsc,
            Order::AmountDesc,
            Order::ExpirationAsc,
            Order::ExpirationDesc,
        ] {
            for mask in [ALL_STATUSES, mask] {
                let (all, total) = s.select(mask, order, 0, usize::MAX);
                assert_eq!(all.len(), total);
                let key = |p: &u32| {
                    let l = s.link(*p);
                    match order {
                        Order::CreatedDesc => -l.created_at,
                        Order::AmountAsc => l.amount_minor,
                        Order::AmountDesc => -l.amount_minor,
                        Order::ExpirationAsc => l.expiration,
                        Order::ExpirationDesc => -l.expiration,
                    }
                };
                assert!(
                    all.windows(2).all(|w| key(&w[0]) <= key(&w[1])),
                    "{order:?}"
                );
                assert!(all.iter().all(|p| mask & s.link(*p).status.bit() != 0));
                let (page, _) = s.select(mask, order, 10, 7);
                assert_eq!(page, all[10..17]);
            }
        }
    }

    #[test]
    fn terminal_links_never_change() {
        let mut s = Store::generate(3000, 5, NOW, SpecVariants::default());
        let before: Vec<(u128, Status, i64)> = s
            .links
            .iter()
            .filter(|l| l.status.is_terminal())
            .map(|l| (l.id, l.status, l.expiration))
            .collect();
        let mut now = NOW;
        for _ in 0..200 {
            now += 5;
            s.apply(&Mutation::Step, now);
        }
        for m in [
            Mutation::Pay(50),
            Mutation::Cancel(50),
            Mutation::Expire(50),
            Mutation::Process(50),
            Mutation::ExpireSoon {
                count: 50,
                within: Duration::from_secs(60),
            },
            Mutation::Create(10),
        ] {
            s.apply(&m, now);
        }
        let by_id: HashMap<u128, &Link> = s.links.iter().map(|l| (l.id, l)).collect();
        for (id, status, exp) in before {
            let l = by_id[&id];
            assert_eq!((l.status, l.expiration), (status, exp));
        }
        assert!(s.len() > 3000, "steps create links");
    }

    /// The changes a mutation reports are the net change of each link between a reading
    /// before it and one after it, recounted here from two copies of the links.
    #[test]
    fn mutations_report_the_net_change_of_each_link() {
        let mut s = Store::generate(600, 4, NOW, SpecVariants::default());
        let state = |s: &Store| -> HashMap<u128, Status> {
            s.links.iter().map(|l| (l.id, l.status)).collect()
        };
        let batches = [
            Mutation::Batch(vec![
                Mutation::Create(5),
                Mutation::Pay(1_000_000),
                Mutation::Create(3),
            ]),
            Mutation::Batch(vec![
                Mutation::Process(4),
                Mutation::Recast {
                    count: 1_000,
                    from: Status::Processing,
                    to: Status::Open,
                },
            ]),
            Mutation::Batch(vec![
                Mutation::Cancel(2),
                Mutation::Remove {
                    count: 50,
                    status: Status::Paid,
                },
                Mutation::Expire(2),
            ]),
            Mutation::Step,
        ];
        let mut now = NOW;
        for m in batches {
            now += 60;
            let before = state(&s);
            let (_, changes) = s.mutate(&m, now);
            let after = state(&s);
            let mut want: Vec<(Option<Status>, Status)> = after
                .iter()
                .filter_map(|(id, to)| match before.get(id) {
                    None => Some((None, *to)),
                    Some(from) if from != to => Some((Some(*from), *to)),
                    Some(_) => None,
                })
                .collect();
            let mut got: Vec<(Option<Status>, Status)> =
                changes.iter().map(|c| (c.from, c.to)).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{m:?}");
        }
    }

    #[test]
    fn mutations_change_what_they_say() {
        let mut s = Store::generate(1000, 9, NOW, SpecVariants::default());
        let count = |s: &Store, st: Status| s.links.iter().filter(|l| l.status == st).count();
        let paid = count(&s, Status::Paid);
        assert_eq!(s.apply(&Mutation::Pay(10), NOW), 10);
        assert_eq!(count(&s, Status::Paid), paid + 10);
        let open = count(&s, Status::Open);
        assert_eq!(s.apply(&Mutation::Create(5), NOW), 5);
        assert_eq!(count(&s, Status::Open), open + 5);
        let (first, _) = s.select(ALL_STATUSES, Order::CreatedDesc, 0, 5);
        assert!(
            first.iter().all(|&p| p as usize >= 1000),
            "new links come first"
        );
        assert_eq!(
            s.apply(
                &Mutation::ExpireSoon {
                    count: 3,
                    within: Duration::from_secs(600)
                },
                NOW
            ),
            3
        );
        let soon = s
            .links
            .iter()
            .filter(|l| l.status == Status::Open && l.expiration > NOW && l.expiration <= NOW + 600)
            .count();
        assert!(soon >= 3);
        let open = count(&s, Status::Open);
        assert_eq!(
            s.apply(&Mutation::Cancel(1_000_000), NOW),
            open,
            "only open links"
        );
        assert_eq!(count(&s, Status::Open), 0);
        assert_eq!(s.apply(&Mutation::Expire(1), NOW), 0);
    }

    #[test]
    fn a_million_links_generate_quickly() {
        let t = std::time::Instant::now();
        let s = Store::generate(1_000_000, 1, NOW, SpecVariants::default());
        assert_eq!(s.len(), 1_000_000);
        let (page, total) = s.select(Status::Open.bit(), Order::ExpirationAsc, 100, 100);
        assert_eq!(page.len(), 100);
        assert!(total > 100_000);
        // Debug builds are ~10x slower than release; this bound only catches accidental O(n²).
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }
}
