// Payments (issue 12 §4): the payments of the links seen becoming paid, read by the exporter only
// with --collect.payments N (off by default), and QontoPaymentsFailing, over:
//   qonto_payment_links_payments_total{status, payment_method}   per organisation (`organization`)
//   qonto_exporter_payment_reads_total, qonto_exporter_payment_read_failures_total,
//   qonto_exporter_payment_reads_skipped_total                   per organisation, always exported
// Facts the expressions rely on:
// - without --collect.payments no payments series exists at all (the read counters stay at 0):
//   the panels are empty and the alert cannot fire;
// - a payments series appears at the first payment of its status and method in a process (with
//   its value: one poll may read several payments), and all reset on restart (not saved in the
//   state file). Counting a window's payments therefore takes increase() (which adds what a
//   restarted process counted after the reset) for the series that existed in the window before,
//   and the whole value for a series that did not (increase() alone misses a series' first
//   payments, all of them when it has one sample in the window).
//
// Enabled by `+ (import 'payments.libsonnet')` in mixin.libsonnet.
{
  local c = $._config,
  local sel = c.qontoSelector,
  local d = $._dashboard,
  local processes = std.join(', ', c.processLabels),
  local isDuration(x) = std.isString(x) && std.length(x) > 1 && std.member(['m', 'h', 'd'], x[std.length(x) - 1])
                        && std.all([std.member('0123456789', ch) for ch in std.stringChars(x[:std.length(x) - 1])]),
  local runbook(name) = '%s#%s' % [c.runbookUrlBase, std.asciiLower(name)],
  local w = c.failedPaymentsWindow,
  // The payments counted in the window `w` before each evaluation, per series of the counter
  // selected by `matchers`: the increase of the series that existed in the window before (so a
  // restart's reset counts the new process's payments, not a negative jump), plus the whole value
  // of a series that did not (a new series: its first payments; the series of a replaced pod).
  // A series with a single sample in the window that existed before counts nothing (increase()
  // needs two): never the cumulative value of an old process.
  local payments(matchers) =
    local s = 'qonto_payment_links_payments_total{%s}' % matchers;
    '(increase(%(s)s[%(w)s]) and max_over_time(%(s)s[%(w)s] offset %(w)s)) or (max_over_time(%(s)s[%(w)s]) unless max_over_time(%(s)s[%(w)s] offset %(w)s))' % { s: s, w: w },
  local recorded = 'qonto:payment_links_payments:increase%s' % w,

  _config+:: {
    // QontoPaymentsFailing fires for an organisation when, over the last failedPaymentsWindow,
    // its failed payments exceed this share of its failed and paid ones (0 to 1) ...
    failedPaymentsRatio: 0.25,
    // ... over this window (a Prometheus duration: m, h or d; also the dashboard's failed share
    // window) ...
    failedPaymentsWindow: '1h',
    // ... and at least this many failed and paid payments were counted in it, so that one failed
    // attempt among few payments does not page.
    failedPaymentsMin: 5,
  },

  assert isDuration(c.failedPaymentsWindow) : '_config.failedPaymentsWindow must be a duration such as 1h, 30m',
  assert std.isNumber(c.failedPaymentsRatio) && c.failedPaymentsRatio >= 0 && c.failedPaymentsRatio < 1 : '_config.failedPaymentsRatio must be a number from 0 up to (not including) 1',
  assert std.isNumber(c.failedPaymentsMin) && c.failedPaymentsMin >= 1 : '_config.failedPaymentsMin must be a number, at least 1',

  prometheusRules+:: {
    groups+: [
      {
        name: 'qonto-exporter-payments',
        rules: [
          {
            // Payments counted over _config.failedPaymentsWindow, per target, organisation and
            // payment status (all methods together): what QontoPaymentsFailing and the
            // dashboard's failed share read. No series without --collect.payments.
            record: recorded,
            expr: 'sum without (payment_method) (%s)' % payments(sel),
          },
        ],
      },
    ],
  },

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'qonto-exporter-payments-alerts',
        rules: [
          {
            alert: 'QontoPaymentsFailing',
            // Per organisation (labels without _config.processLabels, so that a replaced pod
            // continues its predecessor): failed / (failed + paid) payments over the window (the
            // recording rule above) above the ratio, with at least the minimum of failed + paid
            // payments. No payments series (--collect.payments off, fresh start, no failed
            // payment in the window) gives no result. The recording rule is in another group,
            // evaluated concurrently: the alert may read its previous evaluation (one
            // evaluation_interval late).
            expr: |||
              sum without (%(p)s, status) (%(r)s{%(s)s, status="failed"})
                / sum without (%(p)s, status) (%(r)s{%(s)s, status=~"failed|paid"})
                > %(ratio)s
              and
                sum without (%(p)s, status) (%(r)s{%(s)s, status=~"failed|paid"}) >= %(min)s
            ||| % { p: processes, r: recorded, s: sel, ratio: c.failedPaymentsRatio, min: c.failedPaymentsMin },
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Many payments of organisation {{ $labels.organization }} fail.',
              description: '{{ $value | humanizePercentage }} of the payments of organisation {{ $labels.organization }} (job {{ $labels.job }}) read in the last %(w)s failed, over the %(pct)s%% allowed (_config.failedPaymentsRatio in the mixin; at least %(min)s failed and paid payments). Customers try to pay its payment links and their payments are refused.' % { w: w, pct: std.round(c.failedPaymentsRatio * 10000) / 100, min: c.failedPaymentsMin },
              runbook_url: runbook('QontoPaymentsFailing'),
            },
          },
        ],
      },
    ],
  },

  _dashboardExtraRows+:: [
    {
      title: 'Payments',
      panels: [
        [d.timeseries(
          'Payments per hour by status',
          'Payments of the payment links seen becoming paid, per organisation and payment status (paid, failed, authorized, canceled, expired, pending, open, other), per hour (a rate of qonto_payment_links_payments_total). Counted when a poll sees the link paid, so late by up to one poll interval. Empty without --collect.payments (off by default).',
          d.perHour,
          [d.range('sum by (organization, status) (rate(qonto_payment_links_payments_total{%s}[$__rate_interval])) * 3600' % d.mo, '{{organization}} {{status}}')],
          min=0,
        ), 8, 8],
        [d.timeseries(
          'Payments per hour by method',
          'Payments of the payment links seen becoming paid, per organisation and payment method (credit_card, apple_pay, paypal, ideal, bank_transfer, none when the API gives none, other), all statuses together, per hour (a rate of qonto_payment_links_payments_total). Empty without --collect.payments (off by default).',
          d.perHour,
          [d.range('sum by (organization, payment_method) (rate(qonto_payment_links_payments_total{%s}[$__rate_interval])) * 3600' % d.mo, '{{organization}} {{payment_method}}')],
          min=0,
        ), 8, 8],
        [d.timeseries(
          'Failed payment share over %s' % w,
          'Share of the payments counted in the %(w)s before each point that failed: failed / (failed + paid), per organisation (recording rule %(r)s). QontoPaymentsFailing fires above the red line (_config.failedPaymentsRatio) when at least %(min)s failed and paid payments were counted. No value before a payment was paid or failed; empty without --collect.payments (off by default), or where the rules are not loaded.' % { w: w, r: recorded, min: c.failedPaymentsMin },
          'percentunit',
          [d.range('(sum by (organization) (%(r)s{%(mo)s, status="failed"}) or 0 * sum by (organization) (%(r)s{%(mo)s, status="paid"})) / sum by (organization) (%(r)s{%(mo)s, status=~"failed|paid"})' % { r: recorded, mo: d.mo }, '{{organization}}')],
          min=0,
        ) + { fieldConfig+: { defaults+: {
          max: 1,
          thresholds: d.steps([{ color: 'green', value: null }, { color: 'red', value: c.failedPaymentsRatio }]),
          custom+: { thresholdsStyle: { mode: 'line' } },
        } } }, 8, 8],
        [d.timeseries(
          'Payment reads per hour',
          "Links whose payments the exporter read (GET /v2/payment_links/{id}/payments, one request or more each), reads that failed (the link's time to pay is then the poll's; never a failed poll), and links seen becoming paid whose payments were not read because the poll's --collect.payments cap was reached, per organisation and hour. All 0 without --collect.payments (off by default); skipped reads mean the cap is below the links paid per poll.",
          d.perHour,
          [
            d.range('sum by (organization, instance) (rate(qonto_exporter_payment_reads_total{%s}[$__rate_interval])) * 3600' % d.mo, 'reads ' + d.orgLegend),
            d.range('sum by (organization, instance) (rate(qonto_exporter_payment_read_failures_total{%s}[$__rate_interval])) * 3600' % d.mo, 'failures ' + d.orgLegend, 'B'),
            d.range('sum by (organization, instance) (rate(qonto_exporter_payment_reads_skipped_total{%s}[$__rate_interval])) * 3600' % d.mo, 'skipped ' + d.orgLegend, 'C'),
          ],
          min=0,
        ), 24, 8],
      ],
    },
  ],
}
