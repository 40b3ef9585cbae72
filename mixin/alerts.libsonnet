// Alerting rules. Every alert has severity, summary, description and a runbook_url into
// docs/runbook.md (section = alert name); deploy/prometheus/rules.test.yml tests each one firing,
// not firing, on a fresh start and across a restart of the exporter, and the per-organisation ones
// with two organisations, one failing and one healthy.
//
// One exporter process polls one or more Qonto organisations (--config.file, or the single one of
// the --qonto.* flags, named by --qonto.organization, default "default"); replicas may shard them.
// Every per-organisation series carries the label `organization`, and every alert over them keeps
// it (in its by, without and on clauses), so that it fires per organisation and names it. The
// process-wide series have no `organization`: up (per scrape target), process_*,
// qonto_exporter_build_info, the request budget (qonto_exporter_api_requests_10m,
// qonto_exporter_api_budget_10m_usage_ratio: Qonto's limits are per IP, shared by all the
// organisations of the process), qonto_exporter_organizations, qonto_exporter_shard_info and the
// configuration reload metrics. The alerts over them (QontoExporterDown, QontoApiRateLimited,
// QontoApiBudgetHigh, QontoConfigReloadFailed) are process-wide.
//
// Exporter facts the expressions rely on (src/metrics.rs, src/poller.rs):
// - an organisation's series appear when its poller starts (with the process, or when a reload adds
//   the organisation) and vanish when a reload removes it (or a new shard assignment moves it to
//   another replica); nothing fires for series that vanish, and every "since when" is taken per
//   organisation;
// - qonto_up and qonto_exporter_last_success_timestamp_seconds are 0 from the poller's start until
//   its first poll completes (up to --poll.timeout, default 2h, on a large organisation); with
//   --storage.path, a restored snapshot sets the timestamp to the saved poll's end at once (its
//   true age: figures older than the threshold are stale, and QontoDataStale says so), while
//   qonto_up stays 0 until this process completes a poll;
// - qonto_exporter_poll_failures_total counts polls that ended in failure;
// - counters restart from 0 with the process (and with an organisation added again), and the
//   business gauges are absent until the organisation's first complete poll;
// - process_start_time_seconds is the process's start (the process collector, on Linux, which is
//   what the image runs);
// - qonto_payment_links_connection_status{status} is a state set per organisation, absent until
//   the organisation's first successful connection check (once after each poll), then 1 for the
//   current status and 0 for the others; a failed check keeps the last known status;
// - qonto_exporter_config_last_reload_successful is 1 from the start (a bad file at start exits 2)
//   and 0 after a reload that refused the file, until a reload succeeds.
{
  local c = $._config,
  local sel = c.qontoSelector,
  // The labels that tell one organisation's series from another's: every join of two
  // per-organisation series matches on them.
  local perOrg = 'job, instance, organization',
  // Aggregates away the labels that change when the exporter's process is replaced (organization
  // stays).
  local acrossProcesses = 'without (%s)' % std.join(', ', c.processLabels),
  local runbook(name) = '%s#%s' % [c.runbookUrlBase, std.asciiLower(name)],
  local alert(name, severity, expr, summary, description, pending=null) = {
    alert: name,
    expr: expr,
  } + (if pending == null then {} else { 'for': pending }) + {
    labels: { severity: severity },
    annotations: {
      summary: summary,
      description: description,
      runbook_url: runbook(name),
    },
  },
  // 900 -> '15m', 3600 -> '1h', 90 -> '90s'.
  local duration(seconds) =
    if seconds % 3600 == 0 then '%dh' % (seconds / 3600)
    else if seconds % 60 == 0 then '%dm' % (seconds / 60)
    else '%ds' % seconds,

  assert std.isNumber(c.dataStaleAfterSeconds) && c.dataStaleAfterSeconds > 0 && c.dataStaleAfterSeconds == std.floor(c.dataStaleAfterSeconds) :
         '_config.dataStaleAfterSeconds must be a positive whole number of seconds',
  local isDuration(d) = std.isString(d) && std.length(d) > 1 && std.member(['s', 'm', 'h', 'd'], d[std.length(d) - 1])
                        && std.all([std.member('0123456789', ch) for ch in std.stringChars(d[:std.length(d) - 1])]),
  assert isDuration(c.connectionNotEnabledFor) && isDuration(c.connectionStatusKeptFor) :
         '_config.connectionNotEnabledFor and connectionStatusKeptFor must be durations such as 5m, 15m, 1h',
  assert std.isArray(c.processLabels) && std.length(c.processLabels) > 0 && std.all([std.isString(l) && !std.member(['job', 'reason', 'organization'], l) for l in c.processLabels]) :
         '_config.processLabels must be a non-empty list of label names, without job, reason and organization',

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'qonto-exporter',
        rules: [
          alert(
            'QontoExporterDown',
            'critical',
            // Per scrape target (Prometheus's own `up`), not per organisation. The absent() branch
            // fires when no target matches at all (service discovery lost it), where "up == 0"
            // alone would stay silent.
            'up{%(s)s} == 0 or absent(up{%(s)s})' % { s: sel },
            'Prometheus cannot scrape the Qonto exporter.',
            '{{ if $labels.instance }}Target {{ $labels.instance }} of job {{ $labels.job }} has been down for 5 minutes.{{ else }}No scrape target matching up{%s} exists in Prometheus.{{ end }} No payment-link metric is collected, for any organisation it polls, and every other Qonto alert is blind.' % sel,
            pending='5m',
          ),

          alert(
            'QontoPollsFailing',
            'warning',
            // qonto_up is also 0 while the organisation's first poll after a start (or after a
            // reload added it) is still running: only an organisation with at least one failed
            // poll counts (a first poll that hangs ends as a failure at --poll.timeout).
            |||
              qonto_up{%(s)s} == 0
              and on (%(o)s) qonto_exporter_poll_failures_total{%(s)s} > 0
            ||| % { s: sel, o: perOrg },
            'Polls of Qonto organisation {{ $labels.organization }} keep failing.',
            'The last poll of organisation {{ $labels.organization }} by {{ $labels.instance }} (job {{ $labels.job }}) failed, and no poll of it has completed for 10 minutes. Its payment-link figures, if any are published, are those of its last complete poll. The other organisations of the exporter are polled on their own.',
            pending='10m',
          ),

          alert(
            'QontoDataStale',
            'critical',
            // First branch: the data's age. "> 0": the timestamp is 0 until the organisation's
            // first poll completes (or a restored snapshot sets it), and would read as 54 years.
            // Second branch: an organisation that has completed no poll since this process began
            // polling it longer ago than the threshold, and whose polls fail. "Longer ago" is both
            // the process's age (a restart begins again) and the organisation's series having
            // existed one threshold ago (an organisation a reload added later begins again). A
            // healthy first poll that takes long is still running and has failed no poll
            // (poll_failures_total == 0): silent; a first poll that hangs fails at --poll.timeout
            // and counts. The value is the process's age: process_start_time_seconds has no
            // `organization`, so it joins each organisation of its target (group_left).
            |||
              time() - (qonto_exporter_last_success_timestamp_seconds{%(s)s} > 0) > %(t)d
              or
              (
                (
                  (qonto_exporter_last_success_timestamp_seconds{%(s)s} == 0)
                  + on (job, instance) group_left ()
                  (time() - process_start_time_seconds{%(s)s})
                ) > %(t)d
                and on (%(o)s) qonto_exporter_poll_failures_total{%(s)s} > 0
                and on (%(o)s) (qonto_up{%(s)s} offset %(d)s)
              )
            ||| % { s: sel, t: c.dataStaleAfterSeconds, d: duration(c.dataStaleAfterSeconds), o: perOrg },
            'Qonto payment-link data of organisation {{ $labels.organization }} is stale.',
            '{{ with printf "qonto_exporter_last_success_timestamp_seconds{job=%%q, instance=%%q, organization=%%q} == 0" $labels.job $labels.instance $labels.organization | query }}No poll of organisation {{ $labels.organization }} by {{ $labels.instance }} (job {{ $labels.job }}) has completed since the exporter began polling it, more than %(d)s ago (threshold %(d)s; the process started {{ $value | humanizeDuration }} ago), and its polls fail: it publishes no payment-link figures for this organisation, and the business alerts are blind to it.{{ else }}The last complete poll of organisation {{ $labels.organization }} by {{ $labels.instance }} (job {{ $labels.job }}) ended {{ $value | humanizeDuration }} ago (threshold %(d)s). Dashboards and business alerts show old figures for it.{{ end }}' % { d: duration(c.dataStaleAfterSeconds) },
            pending='5m',
          ),

          alert(
            'QontoCredentialsRefused',
            'critical',
            // No "for": the exporter only sets the gauge once Qonto refused the credentials, and
            // then tries them again slowly (a refused refresh token not for 10 minutes, unless its
            // file changes). Only a person can fix it.
            'qonto_exporter_credentials_refused{%s} == 1' % sel,
            'Qonto refuses the credentials of organisation {{ $labels.organization }}.',
            'Qonto answered 401 or 403 to {{ $labels.instance }} (job {{ $labels.job }}) for organisation {{ $labels.organization }}, or 400 about the Authorization header: the OAuth tokens, client secret or API key of that organisation (its entry in --config.file, or the --qonto.* flags of a single organisation) are missing, invalid, revoked or lack the payment_link.read scope. The exporter serves its last good figures for it and keeps trying, slowly, until the credentials are fixed; its other organisations are not affected.',
          ),

          alert(
            'QontoRefreshTokenNotSaved',
            'critical',
            'qonto_exporter_oauth_refresh_token_unsaved{%s} == 1' % sel,
            'The exporter could not save the rotated OAuth refresh token of organisation {{ $labels.organization }}: do not restart it.',
            "{{ $labels.instance }} (job {{ $labels.job }}) holds a rotated OAuth refresh token of organisation {{ $labels.organization }} that it could not write to that organisation's refresh-token file (refresh_token_file of its entry in --config.file, or --qonto.oauth.refresh-token-file). The token in the file no longer works: if the exporter restarts now, access to that organisation is lost until someone runs oauth-login for it again. Free space or fix permissions on the token volume; the exporter retries the write at most every 30 s, at its next request to Qonto for that organisation.",
            pending='2m',
          ),

          alert(
            'QontoApiRateLimited',
            'warning',
            // Process-wide: Qonto's limits are per IP, so a 429 says nothing about the organisation
            // whose request received it; the 429s of all the process's organisations add up.
            |||
              sum by (job, instance) (rate(qonto_exporter_api_requests_total{%s, code="429"}[5m]))
                > 0
            ||| % sel,
            'Qonto has been rate-limiting the exporter for 15 minutes.',
            '{{ $labels.instance }} (job {{ $labels.job }}) receives {{ $value | humanize }} HTTP 429 responses per second from the Qonto API, all its organisations together. The rate limit is per IP and shared with every other integration calling from the same address.',
            pending='15m',
          ),

          alert(
            'QontoApiBudgetHigh',
            'warning',
            // Process-wide: the budget is per IP, shared by all the organisations of the process.
            // The ratio is measured: requests of the last 10 minutes over the exporter's share of
            // them (--qonto.budget-share × 10,000). Within one process the budget keeps it at 1
            // at most, and a poll it holds back runs at 0.78 of the share once the burst is spent,
            // so above 0.7 for 30 minutes means steady polling needs (nearly) all of the share. A
            // first poll that starts with a full bucket passes 0.7 about 7 minutes in (the 1,000
            // burst requests, then 6.5/s), so it fires this once if it lasts more than ~37
            // minutes: an organisation of more than about 1.5M links (1M takes ~23 minutes). The
            // longest first poll the default --poll.timeout (2h) lets finish is ~4.7M links.
            'qonto_exporter_api_budget_10m_usage_ratio{%s} > 0.7' % sel,
            "The exporter's polling needs most of its share of Qonto's API budget.",
            "{{ $labels.instance }} (job {{ $labels.job }}) has spent {{ $value | humanizePercentage }} of its share of Qonto's 10,000 requests per 10 minutes per IP (--qonto.budget-share) in the last 10 minutes, all its organisations together, for 30 minutes: the budget holds its polls back, or soon will as links grow.",
            pending='30m',
          ),

          alert(
            'QontoInvalidLinks',
            'warning',
            // The counter counts each unusable link once per process, so a restart counts the
            // links that are still unusable again from 0. Comparing with the highest count of the
            // hour before last (rather than increase(), which would add the recount to the old
            // total) keeps a restart silent, the restart's zeros included; the second branch covers
            // a counter that did not exist then (a new deployment, or an organisation a reload
            // added). Both sides are taken across processes (without _config.processLabels), per
            // organisation: a replaced Kubernetes pod, or a replica that takes an organisation
            // over from another shard, has a new `instance` and `pod`, and compared series by
            // series its recount would match nothing an hour ago and fire through the second
            // branch at every rollout.
            |||
              (
                max %(w)s (qonto_exporter_invalid_links_total{%(s)s})
                - max %(w)s (max_over_time(qonto_exporter_invalid_links_total{%(s)s}[1h] offset 1h))
              ) > 0
              or
              (
                max %(w)s (qonto_exporter_invalid_links_total{%(s)s}) > 0
                unless max %(w)s (max_over_time(qonto_exporter_invalid_links_total{%(s)s}[1h] offset 1h))
              )
            ||| % { s: sel, w: acrossProcesses },
            'The exporter met payment links of organisation {{ $labels.organization }} whose data it cannot use.',
            'Job {{ $labels.job }} counts {{ $value | humanize }} more payment link(s) of organisation {{ $labels.organization }} with unusable data for reason "{{ $labels.reason }}" than its highest count between two hours and one hour ago (counted over its targets, so that a restarted or replaced exporter counting the same links again stays silent). {{ if eq $labels.reason "invalid_expiration_date" }}These open links count in their status but in no expiry figure.{{ else }}These links are missing from the counts and amounts (qonto_exporter_excluded_links: how many the last complete poll left out).{{ end }}',
            // A data-quality warning needs no haste; it stays active for an hour after the count
            // last grew.
            pending='10m',
          ),

          alert(
            'QontoOpenLinksPastExpiration',
            'warning',
            |||
              sum by (%(o)s, currency) (qonto_payment_links_open_past_expiration{%(s)s})
                > 0
            ||| % { s: sel, o: perOrg },
            'Payment links of organisation {{ $labels.organization }} are still open after their expiration date.',
            '{{ $value | humanize }} {{ $labels.currency }} payment link(s) of organisation {{ $labels.organization }} (reported by {{ $labels.instance }}) have been open past their expiration date for at least an hour.',
            pending='1h',
          ),

          alert(
            'QontoMoneyExpiringSoon',
            'warning',
            // qonto:expiring_amount_threshold (rules.libsonnet) holds each currency's threshold,
            // per organisation.
            |||
              sum by (%(o)s, currency) (qonto_payment_links_expiring_amount{%(s)s, within="%(w)s"})
                > on (%(o)s, currency) qonto:expiring_amount_threshold
            ||| % { s: sel, w: c.expiringWindow, o: perOrg },
            'A large amount of unpaid payment links of organisation {{ $labels.organization }} expires within %s.' % c.expiringWindow,
            '{{ printf "%%.2f" $value }} {{ $labels.currency }} of open payment links of organisation {{ $labels.organization }} (reported by {{ $labels.instance }}) expire within the next %s, above the {{ $labels.currency }} threshold of {{ with printf "qonto:expiring_amount_threshold{job=%%q, instance=%%q, organization=%%q, currency=%%q}" $labels.job $labels.instance $labels.organization $labels.currency | query }}{{ . | first | value | printf "%%.2f" }}{{ end }} (_config.expiringAmountThresholds in the mixin).' % c.expiringWindow,
            pending='5m',
          ),

          alert(
            'QontoExpiryWindowNotExported',
            'warning',
            // The exporter publishes qonto_payment_links_expiring for every --expiry.windows value
            // and every currency it has seen, whenever it publishes qonto_payment_links: payment
            // links without the configured window mean the window is not one of the flag's.
            |||
              group by (%(o)s) (qonto_payment_links{%(s)s})
                unless on (%(o)s) qonto_payment_links_expiring{%(s)s, within="%(w)s"}
            ||| % { s: sel, w: c.expiringWindow, o: perOrg },
            'The expiry window of the alerts and dashboard is not one the exporter computes for organisation {{ $labels.organization }}.',
            '{{ $labels.instance }} (job {{ $labels.job }}) publishes payment links of organisation {{ $labels.organization }} but no qonto_payment_links_expiring{within="%(w)s"}: "%(w)s" (_config.expiringWindow in the mixin) is not one of its --expiry.windows, so QontoMoneyExpiringSoon cannot fire for it and the dashboard\'s %(w)s panels are empty. Add %(w)s to --expiry.windows, or set expiringWindow to one of them and render the mixin.' % { w: c.expiringWindow },
            pending='10m',
          ),

          alert(
            'QontoProcessingLinksStuck',
            'warning',
            // A count, not link identities: a steady flow of payments can keep it above 0 without
            // any single link being stuck (see the runbook).
            |||
              sum by (%(o)s, currency) (qonto_payment_links{%(s)s, status="processing"})
                > 0
            ||| % { s: sel, o: perOrg },
            'Payment links of organisation {{ $labels.organization }} have been in "processing" for 2 hours.',
            '{{ $value | humanize }} {{ $labels.currency }} payment link(s) of organisation {{ $labels.organization }} (reported by {{ $labels.instance }}) are processing, and the count has not dropped to 0 for 2 hours.',
            pending='2h',
          ),

          alert(
            'QontoPaymentLinksConnectionNotEnabled',
            'critical',
            // The state set is absent until the organisation's first successful check (after its
            // first poll): absent is not "not enabled", so a fresh start is silent. A restart
            // empties it again until the new process's first check: last_over_time carries the
            // last known status over that gap (and a firing alert stays firing rather than
            // resolving and paging again), while a status the new process reports replaces it at
            // once. The `enabled` series is there whenever the state set is (the documented
            // statuses are all published, 0 but for the current one); its `status` label is dropped,
            // since the alert is about the status not being enabled.
            'max without (status) (last_over_time(qonto_payment_links_connection_status{%(s)s, status="enabled"}[%(k)s])) == 0' % { s: sel, k: c.connectionStatusKeptFor },
            'Customers cannot pay the payment links of organisation {{ $labels.organization }}: its connection is not enabled.',
            'The payment links connection of organisation {{ $labels.organization }}, checked by {{ $labels.instance }} (job {{ $labels.job }}) with GET /v2/payment_links/connections, has not been enabled for at least %(f)s: its status is {{ with printf "qonto_payment_links_connection_status{job=%%q, instance=%%q, organization=%%q} == 1" $labels.job $labels.instance $labels.organization | query }}{{ . | first | label "status" }}{{ else }}not known to the exporter right now (it restarted, or stopped publishing it, within the last %(k)s; the last status it reported was not enabled){{ end }}. While it is not enabled, no customer can pay a payment link of this organisation, new or open. The other organisations have their own connections.' % { f: c.connectionNotEnabledFor, k: c.connectionStatusKeptFor },
            pending=c.connectionNotEnabledFor,
          ),

          alert(
            'QontoConfigReloadFailed',
            'warning',
            // Process-wide, like the prometheus-mixin's PrometheusBadConfig: max_over_time so that
            // a failed scrape does not restart the pending period. The gauge is 1 from the start
            // (a bad file at start exits 2: QontoExporterDown), so neither a fresh start nor a
            // restart fires; a reload that succeeds resolves it.
            'max_over_time(qonto_exporter_config_last_reload_successful{%s}[5m]) == 0' % sel,
            'The Qonto exporter could not reload its configuration file.',
            '{{ $labels.instance }} (job {{ $labels.job }}) refused its --config.file at its last reload (SIGHUP, or POST /-/reload with --web.enable-lifecycle), and no reload has succeeded for 10 minutes since: it keeps polling the organisations of the last file it accepted, so organisations added to the file are not polled and removed ones still are. A restart with this file would exit with status 2.',
            pending='10m',
          ),
        ],
      },
    ],
  },
}
