// Webhooks (issue 13 §5): QontoWebhookBadSignatures, QontoWebhooksSilent and the dashboard's
// Webhooks row, over the receiver's and the poller's self-metrics:
//   qonto_exporter_webhook_events_total{type, outcome}      outcome: applied, ignored, duplicate,
//                                                           bad_signature, stale, malformed, queue_full
//   qonto_exporter_webhook_enabled                          1 when the receiver routes the organisation
//   qonto_exporter_webhook_last_event_timestamp_seconds     receipt time of the last event queued
//   qonto_exporter_webhook_delivery_lag_seconds             histogram: receipt minus the event's created_at
//   qonto_exporter_webhook_polls_settled_total              incremental polls whose terminal newcomers all
//                                                           came from events
// all per organisation (`organization`). Facts the expressions rely on:
// - without --webhook.listen-address none of these series exists, and neither alert can fire;
// - with it, the events_total series are created at 0 when the process starts (counters reset
//   on restart, like every counter of the exporter);
// - the flow counters (qonto_payment_links_created_total, qonto_payment_links_transitions_total)
//   move at polls only, each change counted once (also one only an event told of); they exist at 0 from the
//   first complete poll, and the first poll of a process started from --storage.path counts the
//   moves of the downtime (no event of which this process may have received yet);
// - process_start_time_seconds is the process's start (per target, no `organization`).
//
// Enabled by `+ (import 'webhooks.libsonnet')` in mixin.libsonnet.
{
  local c = $._config,
  local sel = c.qontoSelector,
  local d = $._dashboard,
  local processes = std.join(', ', c.processLabels),
  local units = { s: 1, m: 60, h: 3600, d: 86400 },
  local isDuration(x) = std.isString(x) && std.length(x) > 1 && std.objectHas(units, x[std.length(x) - 1])
                        && std.all([std.member('0123456789', ch) for ch in std.stringChars(x[:std.length(x) - 1])]),
  local seconds(x) = std.parseInt(x[:std.length(x) - 1]) * units[x[std.length(x) - 1]],
  local runbook(name) = '%s#%s' % [c.runbookUrlBase, std.asciiLower(name)],
  local events = 'qonto_exporter_webhook_events_total',

  _config+:: {
    // QontoWebhookBadSignatures fires for an organisation when at least this many deliveries
    // were refused for a bad signature (outcome="bad_signature") ...
    webhookBadSignaturesMin: 5,
    // ... within this window (a Prometheus duration).
    webhookBadSignaturesWindow: '15m',
    // QontoWebhooksSilent fires for an organisation with webhooks enabled when, over this window
    // (a Prometheus duration), polls saw links created or changing status but no event was
    // applied, ignored or counted as a duplicate. It also waits this long after the exporter's
    // process starts, and after the organisation's webhooks are enabled: the first poll of a
    // restarted process counts the changes made while it was down, before Qonto retries the
    // deliveries it missed. Keep it well above --poll.interval.
    webhookSilentWindow: '30m',
    // ... for this long (the alert's `for`).
    webhookSilentFor: '15m',
  },

  assert isDuration(c.webhookBadSignaturesWindow) && isDuration(c.webhookSilentWindow) && isDuration(c.webhookSilentFor) :
         '_config.webhookBadSignaturesWindow, webhookSilentWindow and webhookSilentFor must be durations such as 15m, 1h',
  assert std.isNumber(c.webhookBadSignaturesMin) && c.webhookBadSignaturesMin >= 1 : '_config.webhookBadSignaturesMin must be a number, at least 1',

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'qonto-exporter-webhooks-alerts',
        rules: [
          {
            alert: 'QontoWebhookBadSignatures',
            // Per organisation, across processes (labels without _config.processLabels) and
            // event types. Per series: the increase over the window of a series that existed
            // before it (increase() counts a restarted process's refusals after the reset, not
            // a negative jump), plus the whole value of one that did not (a replaced pod's new
            // series, or one created at its first refusal). A fresh start's series are at 0.
            expr: |||
              sum without (%(p)s, type, outcome) (
                (increase(%(e)s[%(w)s]) and max_over_time(%(e)s[%(w)s] offset %(w)s))
                or
                (max_over_time(%(e)s[%(w)s]) unless max_over_time(%(e)s[%(w)s] offset %(w)s))
              ) >= %(min)s
            ||| % { p: processes, e: '%s{%s, outcome="bad_signature"}' % [events, sel], w: c.webhookBadSignaturesWindow, min: c.webhookBadSignaturesMin },
            'for': '5m',
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Webhook deliveries for organisation {{ $labels.organization }} keep failing their signature check.',
              description: 'The webhook receiver (job {{ $labels.job }}) refused {{ $value | humanize }} deliveries for organisation {{ $labels.organization }} in the last %(w)s because their X-Qonto-Signature did not match any of its secrets (at least %(min)s: _config.webhookBadSignaturesMin in the mixin). Someone is posting forged or mis-signed events to the webhook URL, or the secret was rotated on one side only (Qonto\'s subscription and --webhook.secret-file / QONTO_WEBHOOK_SECRET differ): Qonto\'s real events are then refused too, and the figures move only at polls.' % { w: c.webhookBadSignaturesWindow, min: c.webhookBadSignaturesMin },
              runbook_url: runbook('QontoWebhookBadSignatures'),
            },
          },
          {
            alert: 'QontoWebhooksSilent',
            // Per organisation, across processes. Three parts:
            // - webhooks enabled now and already a window ago (an organisation a reload adds, or
            //   whose webhooks are turned on, waits a window), by a process up for longer than
            //   the window (process_start_time_seconds joined per target): the first poll of a
            //   restarted process counts the downtime's changes, whose events Qonto delivers
            //   only at its next retry, so a restart, like a fresh start, waits a whole window;
            // - polls saw changes in the window: an increase of the transitions (expiries left
            //   out: they happen by time, and whether Qonto sends an event for them is not
            //   documented) or created counters;
            // - no event applied, ignored or duplicate in the window (absent series count as
            //   none: bad signatures, stale or malformed deliveries are not events received).
            expr: |||
              max without (%(p)s) (
                  (qonto_exporter_webhook_enabled{%(s)s} == 1 and qonto_exporter_webhook_enabled{%(s)s} offset %(w)s)
                + on (job, instance) group_left ()
                  (0 * (time() - process_start_time_seconds{%(s)s} > %(ws)d))
              )
              and
              (
                  sum without (%(p)s, from, to, currency, resource_type) (increase(qonto_payment_links_transitions_total{%(s)s, to!="expired"}[%(w)s])) > 0
                or
                  sum without (%(p)s, currency, resource_type) (increase(qonto_payment_links_created_total{%(s)s}[%(w)s])) > 0
              )
              unless
                sum without (%(p)s, type, outcome) (increase(%(e)s{%(s)s, outcome=~"applied|ignored|duplicate"}[%(w)s])) > 0
            ||| % { p: processes, s: sel, e: events, w: c.webhookSilentWindow, ws: seconds(c.webhookSilentWindow) },
            'for': c.webhookSilentFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Webhooks of organisation {{ $labels.organization }} are enabled but no event arrives.',
              description: 'The exporter (job {{ $labels.job }}) routes webhooks for organisation {{ $labels.organization }}, and its polls saw payment links created or changing status in the last %(w)s, but no webhook event for it was applied, ignored or recognised as a duplicate in that time (_config.webhookSilentWindow in the mixin). Figures still heal at every poll, but move only at polls, and polls cost more requests. The subscription may be missing or deleted, point to another URL, or deliveries may not reach the receiver (Ingress, TLS, NetworkPolicy), or all be refused (bad signature, stale timestamp, full queue).' % { w: c.webhookSilentWindow },
              runbook_url: runbook('QontoWebhooksSilent'),
            },
          },
        ],
      },
    ],
  },

  _dashboardExtraRows+:: [
    {
      // One row per organisation: the events panel stacks outcomes, which only ever adds up the
      // series of one organisation.
      title: 'Webhooks: $organization',
      repeat: 'organization',
      panels: [
        [d.timeseries(
          'Webhook events by outcome',
          'Webhook deliveries and events of the organisation per second, stacked by event type and outcome (qonto_exporter_webhook_events_total): applied and ignored by the event ledger; duplicate, bad_signature, stale, malformed and queue_full counted by the receiver. Empty without --webhook.listen-address.',
          'ops',
          [d.range('sum by (organization, type, outcome) (rate(%s{%s}[$__rate_interval]))' % [events, d.mo], '{{organization}} {{type}} {{outcome}}')],
          min=0,
          stack=true,
        ), 12, 8],
        [d.timeseries(
          'Webhook delivery lag, p50 and p99',
          "Median and 99th percentile of the time from an event's created_at (Qonto's clock) to its receipt by the exporter, per organisation (histogram qonto_exporter_webhook_delivery_lag_seconds; clamped at 0, so a Qonto clock ahead of ours shows as 0). Retries after a refused or failed delivery show as long lags.",
          's',
          [
            d.range('histogram_quantile(0.5, sum by (le, organization) (rate(qonto_exporter_webhook_delivery_lag_seconds_bucket{%s}[$__rate_interval])))' % d.mo, 'p50 {{organization}}'),
            d.range('histogram_quantile(0.99, sum by (le, organization) (rate(qonto_exporter_webhook_delivery_lag_seconds_bucket{%s}[$__rate_interval])))' % d.mo, 'p99 {{organization}}', 'B'),
          ],
          min=0,
        ), 12, 8],
        [d.stat(
          'Last webhook event',
          'Time since the exporter last queued a webhook event of the organisation (qonto_exporter_webhook_last_event_timestamp_seconds). No data without --webhook.listen-address, or while no event has arrived since the exporter started. A long time while links change: see QontoWebhooksSilent.',
          's',
          [d.instant('time() - max by (organization, instance) (qonto_exporter_webhook_last_event_timestamp_seconds{%s} > 0)' % d.mo, d.orgLegend)],
          decimals=0,
          noValue='no event',
        ), 6, 8],
        [d.timeseries(
          'Polls settled by events',
          'Incremental polls per hour whose links newly in a final status all came from webhook events, so that no listing of final statuses was read (qonto_exporter_webhook_polls_settled_total), against all polls started (qonto_exporter_polls_total), per organisation. Close to each other: events spare the polls most of their requests.',
          d.perHour,
          [
            d.range('sum by (organization, instance) (rate(qonto_exporter_webhook_polls_settled_total{%s}[$__rate_interval])) * 3600' % d.mo, 'settled by events ' + d.orgLegend),
            d.range('sum by (organization, instance) (rate(qonto_exporter_polls_total{%s}[$__rate_interval])) * 3600' % d.mo, 'all polls ' + d.orgLegend, 'B'),
          ],
          min=0,
        ), 18, 8],
      ],
    },
  ],
}
