// Flows (issue 12 §1, §5): money collected, links created and moved to a final status, conversion,
// time to pay, and QontoCollectionsStalled, over the exporter's flow counters:
//   qonto_payment_links_created_total{currency, resource_type}
//   qonto_payment_links_created_amount_total{currency, resource_type}
//   qonto_payment_links_transitions_total{from, to, currency, resource_type}
//   qonto_payment_links_transitions_amount_total{from, to, currency, resource_type}
//   qonto_payment_links_time_to_pay_seconds{currency, resource_type} (histogram)
// all per organisation (`organization`), counted from what two consecutive complete polls saw
// (src/flows.rs). Facts the expressions rely on:
// - from a process's first complete poll, every currency and resource type of its figures has
//   the created and the terminal transition counters at 0 (and series of other labels appear at
//   their first event), so a series that appears with a value above 0 counted that value in the
//   process that made it, and one at 0 counted nothing;
// - they reset on restart (not saved in the state file); the transitions made during a downtime
//   are counted by the first poll after it when --storage.path restores the memory;
// - qonto_exporter_polls_total exists from the organisation's poller's start.
//
// Enabled by `+ (import 'flows.libsonnet')` in mixin.libsonnet, once the exporter exports the
// counters (scripts/check-deploy refuses names the binary does not export).
{
  local c = $._config,
  local sel = c.qontoSelector,
  local d = $._dashboard,
  // Aggregates away what changes when the exporter's process is replaced (organization stays).
  local processes = std.join(', ', c.processLabels),
  local isDuration(x) = std.isString(x) && std.length(x) > 1 && std.member(['m', 'h', 'd'], x[std.length(x) - 1])
                        && std.all([std.member('0123456789', ch) for ch in std.stringChars(x[:std.length(x) - 1])]),
  local runbook(name) = '%s#%s' % [c.runbookUrlBase, std.asciiLower(name)],
  local paid = 'qonto_payment_links_transitions_total{%s, to="paid"}' % sel,
  // The final statuses a link leaves open for (conversion's denominator).
  local outcomes = 'paid|expired|canceled',

  _config+:: {
    // QontoCollectionsStalled fires when no payment link of an organisation has been seen
    // becoming paid for this long while it has open links. A Prometheus duration (m, h or d).
    // 24h suits an organisation paid every day; one whose customers do not pay at weekends
    // needs 72h (Friday evening to Monday morning).
    collectionsStalledAfter: '24h',
  },

  assert isDuration(c.collectionsStalledAfter) : '_config.collectionsStalledAfter must be a duration such as 24h, 3d',

  prometheusRules+:: {
    groups+: [
      {
        name: 'qonto-exporter-flows',
        rules: [
          {
            // Money collected in the last hour and the last day: the gross amounts of the links
            // seen becoming paid, per organisation and currency (never added across currencies).
            record: 'qonto:payment_links_collected_amount:increase1h',
            expr: 'sum by (job, instance, organization, currency) (increase(qonto_payment_links_transitions_amount_total{%s, to="paid"}[1h]))' % sel,
          },
          {
            record: 'qonto:payment_links_collected_amount:increase1d',
            expr: 'sum by (job, instance, organization, currency) (increase(qonto_payment_links_transitions_amount_total{%s, to="paid"}[1d]))' % sel,
          },
          {
            // Links that reached a final status over 7 days, per organisation, currency and
            // status: conversion is the paid ones over all of them.
            record: 'qonto:payment_links_outcomes:increase7d',
            expr: 'sum by (job, instance, organization, currency, to) (increase(qonto_payment_links_transitions_total{%s, to=~"%s"}[7d]))' % [sel, outcomes],
          },
          {
            // The time-to-pay histogram of the links paid over the last day, per organisation,
            // currency and resource type: histogram_quantile() of it gives p50 and p90.
            record: 'qonto:payment_links_time_to_pay_seconds_bucket:increase1d',
            expr: 'sum by (job, instance, organization, currency, resource_type, le) (increase(qonto_payment_links_time_to_pay_seconds_bucket{%s}[1d]))' % sel,
          },
        ],
      },
    ],
  },

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'qonto-exporter-flows-alerts',
        rules: [
          {
            alert: 'QontoCollectionsStalled',
            // Fires for an organisation (labels without _config.processLabels, so that a
            // replaced pod continues its predecessor) that has open links now, fresh data, has
            // been polled since before the window began, and saw no paid transition in it.
            // - Activity is either an increase of a paid counter in the window (increase() adds
            //   the count after a reset: a restarted process's paid links count), or a paid
            //   series above 0 that was not there when the window began (its first events made
            //   it, with its value: increase() alone would miss them); a series a restarted
            //   process made at 0 is not activity.
            // - "Polled since before the window began": qonto_exporter_polls_total (there from
            //   the poller's start) existed in the hour before the window: a fresh deployment, or
            //   an organisation a reload added, waits the whole window; a restart does not begin
            //   again, since the previous process's counters still count in the window.
            // - Fresh data: while the last complete poll is older than _config.dataStaleAfterSeconds
            //   (polls failing, first poll running), the exporter sees no transition at all, and
            //   QontoDataStale or QontoPollsFailing speak instead.
            expr: |||
              sum without (%(p)s, status, currency, resource_type) (qonto_payment_links{%(s)s, status="open"}) > 0
              and
                max without (%(p)s) (qonto_exporter_last_success_timestamp_seconds{%(s)s}) > time() - %(stale)d
              and
                max without (%(p)s) (max_over_time(qonto_exporter_polls_total{%(s)s}[1h] offset %(w)s))
              unless
                sum without (%(p)s, from, to, currency, resource_type) (increase(%(paid)s[%(w)s])) > 0
              unless
                count without (%(p)s, from, to, currency, resource_type) ((max_over_time(%(paid)s[%(w)s]) > 0) unless %(paid)s offset %(w)s)
            ||| % { s: sel, p: processes, w: c.collectionsStalledAfter, stale: c.dataStaleAfterSeconds, paid: paid },
            'for': '15m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'No payment link of organisation {{ $labels.organization }} has been paid for %s.' % c.collectionsStalledAfter,
              description: 'The exporter has seen no payment link of organisation {{ $labels.organization }} (job {{ $labels.job }}) become paid in the last %(w)s, while {{ $value | humanize }} of its links are open (_config.collectionsStalledAfter in the mixin). Customers may be unable to pay (see QontoPaymentLinksConnectionNotEnabled), or may have stopped paying.' % { w: c.collectionsStalledAfter },
              runbook_url: runbook('QontoCollectionsStalled'),
            },
          },
        ],
      },
    ],
  },

  _dashboardExtraRows+:: [
    {
      title: 'Flows',
      panels: [
        [d.timeseries(
          'Money collected per hour',
          'Gross amount of the payment links seen becoming paid in the hour before each point, per organisation and currency (recording rule qonto:payment_links_collected_amount:increase1h over qonto_payment_links_transitions_amount_total{to="paid"}). Counted when a poll sees the link paid, so late by up to one poll interval. Empty where the rules are not loaded.',
          'none',
          [d.range('sum by (organization, currency) (qonto:payment_links_collected_amount:increase1h{%s})' % d.mc, '{{organization}} {{currency}}')],
          decimals=2,
          overrides=d.currencyOverrides,
          min=0,
        ), 12, 8],
        [d.timeseries(
          'Money collected per day',
          'Gross amount of the payment links seen becoming paid in the 24 hours before each point, per organisation and currency (recording rule qonto:payment_links_collected_amount:increase1d). An exporter restart loses nothing already counted; links paid while it was down count at its first poll when --storage.path keeps its memory.',
          'none',
          [d.range('sum by (organization, currency) (qonto:payment_links_collected_amount:increase1d{%s})' % d.mc, '{{organization}} {{currency}}')],
          decimals=2,
          overrides=d.currencyOverrides,
          min=0,
        ), 12, 8],
        [d.timeseries(
          'Links created, paid, expired, canceled',
          'Payment links created, and links seen reaching paid, expired or canceled (from open, processing, or created since the previous poll), per organisation and hour (a rate: counts of two polls apart, spread over the interval).',
          d.perHour,
          [
            d.range('sum by (organization) (rate(qonto_payment_links_created_total{%s}[$__rate_interval])) * 3600' % d.mc, 'created {{organization}}'),
            d.range('sum by (organization, to) (rate(qonto_payment_links_transitions_total{%s, to=~"%s"}[$__rate_interval])) * 3600' % [d.mc, outcomes], '{{to}} {{organization}}', 'B'),
          ],
          min=0,
        ), 8, 8],
        [d.timeseries(
          'Conversion over 7 days',
          'Share of the payment links that reached a final status over the 7 days before each point that were paid: paid / (paid + expired + canceled), per organisation, all currencies together (counts of links, not amounts). Recording rule qonto:payment_links_outcomes:increase7d; no value before a link reached a final status.',
          'percentunit',
          [d.range('sum by (organization) (qonto:payment_links_outcomes:increase7d{%(mc)s, to="paid"}) / sum by (organization) (qonto:payment_links_outcomes:increase7d{%(mc)s})' % { mc: d.mc }, '{{organization}}')],
          min=0,
        ) + { fieldConfig+: { defaults+: { max: 1 } } }, 8, 8],
        [d.timeseries(
          'Time to pay, p50 and p90',
          "Median and 90th percentile of the time from a payment link's creation to the poll that saw it paid (late by up to one poll interval), over the links paid in the 24 hours before each point, per organisation and resource type, all currencies together (histogram qonto_payment_links_time_to_pay_seconds, buckets 5m to 90d; recording rule qonto:payment_links_time_to_pay_seconds_bucket:increase1d).",
          's',
          [
            d.range('histogram_quantile(0.5, sum by (le, organization, resource_type) (qonto:payment_links_time_to_pay_seconds_bucket:increase1d{%s}))' % d.mc, 'p50 {{organization}} {{resource_type}}'),
            d.range('histogram_quantile(0.9, sum by (le, organization, resource_type) (qonto:payment_links_time_to_pay_seconds_bucket:increase1d{%s}))' % d.mc, 'p90 {{organization}} {{resource_type}}', 'B'),
          ],
          min=0,
        ), 8, 8],
      ],
    },
  ],
}
