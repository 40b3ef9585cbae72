// The Grafana dashboard, rendered to grafana/qonto-payment-links.json.
//
// It follows grafana/dashboard-linter's rules, which scripts/check-deploy enforces: a templated
// datasource used by every panel and target, job/instance variables and matchers in every
// selector, $__rate_interval in every range, a title, a description and a unit on every panel.
// Stat, bar-gauge and table panels use instant queries: a series that stopped being scraped (dead
// exporter, vanished target) shows as "No data", never as its last value.
// docs/runbook.md names panels as `panel "Title"` and rows as `row "Title"`; tests/mixin.rs
// checks that each such name is a title of this dashboard.
{
  local c = $._config,
  local ds = { type: 'prometheus', uid: '${datasource}' },
  local m = 'job=~"$job", instance=~"$instance"',
  local mc = m + ', currency=~"$currency"',
  local window = c.expiringWindow,

  // ------------------------------------------------------------------ targets
  local range(expr, legend, ref='A') = {
    datasource: ds,
    expr: expr,
    legendFormat: legend,
    refId: ref,
    range: true,
  },
  local instant(expr, legend, ref='A', format='time_series') = {
    datasource: ds,
    expr: expr,
    legendFormat: legend,
    refId: ref,
    instant: true,
    range: false,
    format: format,
  },

  // ------------------------------------------------------------------ field config pieces
  local steps(list) = { mode: 'absolute', steps: list },
  local green = steps([{ color: 'green', value: null }]),
  // Amounts are in units of each series' currency: a unit per currency Grafana knows, by legend.
  local currencyOverrides = [
    {
      matcher: { id: 'byRegexp', options: '.*\\b%s\\b.*' % code },
      properties: [{ id: 'unit', value: 'currency' + code }],
    }
    for code in ['EUR', 'USD', 'GBP', 'CHF', 'PLN', 'SEK', 'DKK', 'NOK', 'CZK', 'JPY']
  ],
  // [[value, text, color], ...] -> a value mapping.
  local valueMap(list) = [{
    type: 'value',
    options: {
      [list[i][0]]: { text: list[i][1], color: list[i][2], index: i }
      for i in std.range(0, std.length(list) - 1)
    },
  }],
  // A rate of a counter shown per hour: with a 1 m poll interval, polls read 60 /h.
  local perHour = 'suffix:/h',

  // ------------------------------------------------------------------ panels
  local base(type, title, description, unit, targets) = {
    type: type,
    title: title,
    description: description,
    datasource: ds,
    fieldConfig: { defaults: { unit: unit, thresholds: green }, overrides: [] },
    targets: targets,
  },
  local stat(title, description, unit, targets, decimals=null, thresholds=green, mappings=[], noValue=null, textMode='value_and_name', overrides=[]) =
    base('stat', title, description, unit, targets) + {
      fieldConfig: {
        defaults: { unit: unit, thresholds: thresholds, color: { mode: 'thresholds' } }
                  + (if decimals == null then {} else { decimals: decimals })
                  + (if mappings == [] then {} else { mappings: mappings })
                  + (if noValue == null then {} else { noValue: noValue }),
        overrides: overrides,
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        colorMode: 'value',
        graphMode: 'none',
        justifyMode: 'auto',
        orientation: 'auto',
        textMode: textMode,
      },
    },
  local timeseries(title, description, unit, targets, decimals=null, overrides=[], min=null) =
    base('timeseries', title, description, unit, targets) + {
      fieldConfig: {
        defaults: {
          unit: unit,
          thresholds: green,
          color: { mode: 'palette-classic' },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: 10,
            showPoints: 'never',
            spanNulls: false,
            thresholdsStyle: { mode: 'off' },
          },
        } + (if decimals == null then {} else { decimals: decimals })
          + (if min == null then {} else { min: min }),
        overrides: overrides,
      },
      options: {
        legend: { displayMode: 'table', placement: 'right', showLegend: true, calcs: ['lastNotNull', 'max'] },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
    },
  local bargauge(title, description, unit, targets, decimals=null, overrides=[]) =
    base('bargauge', title, description, unit, targets) + {
      fieldConfig: {
        defaults: { unit: unit, thresholds: green, color: { mode: 'thresholds' } }
                  + (if decimals == null then {} else { decimals: decimals }),
        overrides: overrides,
      },
      options: {
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        displayMode: 'gradient',
        orientation: 'horizontal',
        showUnfilled: true,
      },
    },
  local table(title, description, unit, targets, transformations, options={}) =
    base('table', title, description, unit, targets) + {
      fieldConfig: {
        defaults: { unit: unit, thresholds: green, color: { mode: 'palette-classic' } },
        overrides: [],
      },
      options: { showHeader: true } + options,
      transformations: transformations,
    },
  local row(title) = { type: 'row', title: title, collapsed: false, panels: [] },

  // Lays rows of [panel, width, height] out on Grafana's 24-column grid, numbering panels from 1.
  local layout(rows) =
    local place(state, item) =
      local p = item[0];
      local w = item[1];
      local h = item[2];
      local wrap = state.x + w > 24;
      local x = if wrap then 0 else state.x;
      local y = if wrap then state.y + state.rowHeight else state.y;
      {
        x: x + w,
        y: y,
        rowHeight: if wrap then h else std.max(state.rowHeight, h),
        id: state.id + 1,
        panels: state.panels + [p { id: state.id, gridPos: { h: h, w: w, x: x, y: y } }],
      };
    local addRow(state, r) =
      local top = state.y + state.rowHeight;
      local withRow = state {
        x: 0,
        y: top + 1,
        rowHeight: 0,
        id: state.id + 1,
        panels: state.panels + [row(r.title) { id: state.id, gridPos: { h: 1, w: 24, x: 0, y: top } }],
      };
      std.foldl(place, r.panels, withRow);
    std.foldl(addRow, rows, { x: 0, y: 0, rowHeight: 0, id: 1, panels: [] }).panels,

  local variable(name, query) = {
    name: name,
    label: std.asciiUpper(name[0]) + name[1:],
    type: 'query',
    datasource: ds,
    query: query,
    definition: query,
    refresh: 2,
    multi: true,
    includeAll: true,
    allValue: '.+',
    sort: 1,
    hide: 0,
    current: { selected: true, text: ['All'], value: ['$__all'] },
    options: [],
    regex: '',
  },

  local rows = [
    {
      title: 'Exporter health',
      panels: [
        [stat(
          'Scrape target up',
          "Prometheus's own scrape health of each exporter target (up): DOWN means Prometheus cannot scrape it, so every other panel shows nothing new for it (stat panels: no data).",
          'none',
          [instant('up{%s}' % m, '{{instance}}')],
          thresholds=steps([{ color: 'red', value: null }, { color: 'green', value: 1 }]),
          mappings=valueMap([['0', 'DOWN', 'red'], ['1', 'up', 'green']]),
          noValue='no target',
        ), 4, 5],
        [stat(
          'Last poll',
          "Outcome of each exporter's last poll of the Qonto API (qonto_up): failed means the last poll failed (the previous complete snapshot, if any, is still served; an exporter whose polls have all failed since it started shows failed too); not yet means no poll has completed or failed since the exporter started (the first one is still running).",
          'none',
          // 2 ("not yet") only while no poll of this process has ended, well or badly:
          // qonto_exporter_last_poll_duration_seconds is 0 from the start until the first poll
          // ends and is set at the end of every poll, failed ones included (src/poller.rs). Not
          // the timestamp of the last success (0 for an exporter whose polls all fail, and the
          // saved poll's end when one was restored from --storage.path), nor
          // poll_failures_total > 0 (a counter outside rate() breaks the dashboard lint).
          [instant('max by (instance) (qonto_up{%(m)s} + 2 * (qonto_exporter_last_poll_duration_seconds{%(m)s} == bool 0))' % { m: m }, '{{instance}}')],
          thresholds=steps([{ color: 'red', value: null }, { color: 'green', value: 1 }, { color: 'blue', value: 2 }]),
          mappings=valueMap([['0', 'failed', 'red'], ['1', 'ok', 'green'], ['2', 'not yet', 'blue']]),
          noValue='no data',
        ), 4, 5],
        [stat(
          'Data age',
          'Time since the last complete poll ended, per exporter. Red beyond the QontoDataStale threshold. No data while no poll has completed since the exporter started, or while Prometheus cannot scrape it.',
          's',
          [instant('max by (instance) (time() - (qonto_exporter_last_success_timestamp_seconds{%s} > 0))' % m, '{{instance}}')],
          decimals=0,
          thresholds=steps([{ color: 'green', value: null }, { color: 'orange', value: c.dataStaleAfterSeconds / 3 }, { color: 'red', value: c.dataStaleAfterSeconds }]),
          noValue='no data',
        ), 4, 5],
        [stat(
          'Refresh token saved',
          'Whether each exporter could write its rotated OAuth refresh token to --qonto.oauth.refresh-token-file. NOT SAVED: the only valid token is in memory; do not restart the exporter (runbook: QontoRefreshTokenNotSaved). Always saved with API-key or static-token auth.',
          'none',
          [instant('max by (instance) (qonto_exporter_oauth_refresh_token_unsaved{%s})' % m, '{{instance}}')],
          thresholds=steps([{ color: 'green', value: null }, { color: 'red', value: 1 }]),
          mappings=valueMap([['0', 'saved', 'green'], ['1', 'NOT SAVED', 'red']]),
          noValue='no data',
        ), 4, 5],
        [stat(
          'Credentials refused',
          'Whether Qonto (or its OAuth server) refuses the configured credentials (qonto_exporter_credentials_refused).',
          'none',
          [instant('max by (instance) (qonto_exporter_credentials_refused{%s})' % m, '{{instance}}')],
          thresholds=steps([{ color: 'green', value: null }, { color: 'red', value: 1 }]),
          mappings=valueMap([['0', 'no', 'green'], ['1', 'REFUSED', 'red']]),
          noValue='no data',
        ), 4, 5],
        [stat(
          'API budget used',
          "Requests sent in the last 10 minutes over the exporter's share of Qonto's per-IP 10,000 requests per 10 minutes (--qonto.budget-share, default 0.5), measured. At most 1: the budget holds polls back rather than going over.",
          'percentunit',
          [instant('max by (instance) (qonto_exporter_api_budget_10m_usage_ratio{%s})' % m, '{{instance}}')],
          thresholds=steps([{ color: 'green', value: null }, { color: 'orange', value: 0.5 }, { color: 'red', value: 0.9 }]),
          noValue='no data',
        ), 4, 5],
      ],
    },
    {
      title: 'Overview',
      panels: [
        [stat(
          'Open links',
          "Payment links currently in status open (awaiting payment), from the exporter's last complete poll of the Qonto API.",
          'short',
          [instant('sum(qonto_payment_links{%s, status="open"})' % mc, 'Open links')],
          decimals=0,
          textMode='value',
        ), 4, 5],
        [stat(
          'Open amount',
          "Gross amount (VAT included) of open payment links, per currency. Amounts are in units of each link's currency.",
          'none',
          [instant('sum by (currency) (qonto_payment_links_amount{%s, status="open"})' % mc, '{{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 5, 5],
        [stat(
          'Paid amount',
          'Gross amount of payment links in status paid that Qonto still lists, per currency. A level, not a rate: it drops when Qonto stops listing old links.',
          'none',
          [instant('sum by (currency) (qonto_payment_links_amount{%s, status="paid"})' % mc, '{{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 5, 5],
        [stat(
          'Links expiring within %s' % window,
          'Open links whose expiration falls in the next %s (the within="%s" window, _config.expiringWindow in the mixin). No data when %s is not one of the exporter\'s --expiry.windows (alert QontoExpiryWindowNotExported).' % [window, window, window],
          'short',
          [instant('sum(qonto_payment_links_expiring{%s, within="%s"})' % [mc, window], 'Expiring within %s' % window)],
          decimals=0,
          textMode='value',
        ), 3, 5],
        [stat(
          'Money expiring within %s' % window,
          'Gross amount of open links expiring in the next %s, per currency: money that will not be collected unless the links are paid in time. QontoMoneyExpiringSoon compares it with each currency\'s threshold.' % window,
          'none',
          [instant('sum by (currency) (qonto_payment_links_expiring_amount{%s, within="%s"})' % [mc, window], '{{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 4, 5],
        [stat(
          'Open past expiry',
          'Links still open although their expiration date has passed (Qonto has not moved them to expired yet).',
          'short',
          [instant('sum(qonto_payment_links_open_past_expiration{%s})' % mc, 'Open past expiry')],
          decimals=0,
          textMode='value',
        ), 3, 5],
      ],
    },
    {
      title: 'Trends by status',
      panels: [
        [timeseries(
          'Links by status',
          'Number of payment links per status (open, processing, paid, expired, canceled, and any status Qonto adds), over time.',
          'short',
          [range('sum by (status) (qonto_payment_links{%s})' % mc, '{{status}}')],
          decimals=0,
        ), 12, 8],
        [timeseries(
          'Amount by status',
          'Gross amount of payment links per status and currency, over time.',
          'none',
          [range('sum by (status, currency) (qonto_payment_links_amount{%s})' % mc, '{{status}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 12, 8],
      ],
    },
    {
      title: 'Expiry horizon',
      panels: [
        [bargauge(
          'Links expiring, by window',
          'Open links whose expiration falls in (now, now + window], for each window of --expiry.windows. Windows are cumulative: 24h includes 1h.',
          'short',
          [instant('sum by (within) (qonto_payment_links_expiring{%s})' % mc, '{{within}}')],
          decimals=0,
        ), 6, 8],
        [bargauge(
          'Money expiring, by window',
          'Gross amount of open links expiring within each window, per currency.',
          'none',
          [instant('sum by (within, currency) (qonto_payment_links_expiring_amount{%s})' % mc, '{{within}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 6, 8],
        [timeseries(
          'Money expiring within %s vs alert threshold' % window,
          'Gross amount of open links expiring within %s, per currency, and the threshold above which QontoMoneyExpiringSoon fires for that currency (recording rule qonto:expiring_amount_threshold; no threshold line where the rules are not loaded).' % window,
          'none',
          [
            range('sum by (currency) (qonto_payment_links_expiring_amount{%s, within="%s"})' % [mc, window], '{{currency}}'),
            range('max by (currency) (qonto:expiring_amount_threshold{%s})' % mc, 'threshold {{currency}}', 'B'),
          ],
          decimals=2,
          overrides=currencyOverrides + [{
            matcher: { id: 'byRegexp', options: '^threshold .*' },
            properties: [{ id: 'custom.lineStyle', value: { fill: 'dash', dash: [10, 10] } }, { id: 'custom.fillOpacity', value: 0 }],
          }],
        ), 8, 8],
        [stat(
          'Next expiration',
          'When the earliest open payment link expires, per currency.',
          'dateTimeFromNow',
          [instant('min by (currency) (qonto_payment_links_next_expiration_timestamp_seconds{%s}) * 1000' % mc, '{{currency}}')],
        ) + { options+: { colorMode: 'none' } }, 4, 8],
        [timeseries(
          'Money expiring over time, by window',
          'Gross amount of open links expiring within each window, per currency, over time.',
          'none',
          [range('sum by (within, currency) (qonto_payment_links_expiring_amount{%s})' % mc, '{{within}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 24, 8],
      ],
    },
    {
      title: 'By resource type',
      panels: [
        [timeseries(
          'Open links by resource type',
          'Open payment links per resource type (Basket, Invoice, ...), over time.',
          'short',
          [range('sum by (resource_type) (qonto_payment_links{%s, status="open"})' % mc, '{{resource_type}}')],
          decimals=0,
        ), 8, 8],
        [timeseries(
          'Open amount by resource type',
          'Gross amount of open payment links per resource type and currency, over time.',
          'none',
          [range('sum by (resource_type, currency) (qonto_payment_links_amount{%s, status="open"})' % mc, '{{resource_type}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 8, 8],
        [table(
          'Links by resource type and status',
          'Current number of payment links per resource type and status.',
          'short',
          [instant('sum by (resource_type, status) (qonto_payment_links{%s})' % mc, '', format='table')],
          [{ id: 'organize', options: { excludeByName: { Time: true }, renameByName: { Value: 'links' } } }],
          { sortBy: [{ displayName: 'resource_type', desc: false }] },
        ), 8, 8],
      ],
    },
    {
      title: 'Polling',
      panels: [
        [timeseries(
          'Data age over time',
          'Time since the last complete poll ended, per exporter. No line while no poll has completed since the exporter started.',
          's',
          [range('time() - (qonto_exporter_last_success_timestamp_seconds{%s} > 0)' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Poll duration',
          'How long the last poll took, and the 95th percentile of single API requests.',
          's',
          [
            range('qonto_exporter_last_poll_duration_seconds{%s}' % m, 'poll {{instance}}'),
            range('histogram_quantile(0.95, sum by (le, instance) (rate(qonto_exporter_api_request_duration_seconds_bucket{%s}[$__rate_interval])))' % m, 'p95 request {{instance}}', 'B'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'Polls',
          'Polls started and polls failed, per hour (a rate: 60 /h is one poll a minute), and HTTP 429 answers whose Retry-After asked for a longer wait than --qonto.max-retry-after (each failed its poll at once instead of waiting).',
          perHour,
          [
            range('sum by (instance) (rate(qonto_exporter_polls_total{%s}[$__rate_interval])) * 3600' % m, 'polls {{instance}}'),
            range('sum by (instance) (rate(qonto_exporter_poll_failures_total{%s}[$__rate_interval])) * 3600' % m, 'failures {{instance}}', 'B'),
            range('sum by (instance) (rate(qonto_exporter_retry_after_over_ceiling_total{%s}[$__rate_interval])) * 3600' % m, 'Retry-After over ceiling {{instance}}', 'C'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'API requests by code',
          'Requests sent to the Qonto API per second, by HTTP status code (error: no response).',
          'reqps',
          [range('sum by (code) (rate(qonto_exporter_api_requests_total{%s}[$__rate_interval]))' % m, '{{code}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'API budget usage',
          "Requests sent in the last 10 minutes over the exporter's share of Qonto's per-IP 10,000 requests per 10 minutes (--qonto.budget-share), measured; at most 1. Above 0.7 for 30 minutes fires QontoApiBudgetHigh.",
          'percentunit',
          [range('qonto_exporter_api_budget_10m_usage_ratio{%s}' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Invalid links found',
          'Payment links newly found with unusable data, per hour, by reason. Each link counts once per reason and exporter process (a restart counts the still-unusable ones again). All but invalid_expiration_date are left out of the figures.',
          perHour,
          [range('sum by (reason) (rate(qonto_exporter_invalid_links_total{%s}[$__rate_interval])) * 3600' % m, '{{reason}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Links left out',
          'Payment links the API counts that the last complete poll left out of the figures because their data was unusable (qonto_exporter_excluded_links); the panel "Invalid links found" says why. Open links without a usable expiration date are not among them: they count in their status.',
          'short',
          [range('max by (instance) (qonto_exporter_excluded_links{%s})' % m, '{{instance}}')],
          decimals=0,
          min=0,
        ), 8, 8],
        [timeseries(
          'Full walks',
          'Polls that walked every payment link instead of only the links that can still change, per hour (the first poll, the periodic resync, and polls whose counts did not add up).',
          perHour,
          [range('sum by (instance) (rate(qonto_exporter_full_walks_total{%s}[$__rate_interval])) * 3600' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Pagination drift',
          'Walks of the listing that saw it change while paging, per hour.',
          perHour,
          [range('sum by (instance) (rate(qonto_exporter_pagination_drift_total{%s}[$__rate_interval])) * 3600' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Resync corrections',
          'Times the links of a terminal status (paid, expired, canceled) were found changed although incremental polls take them as final, per hour, by status; the status was then walked in full. And full resyncs that checked the carried figures. Corrections above 0: Qonto changed links the exporter assumed final.',
          perHour,
          [
            range('sum by (status) (rate(qonto_exporter_resync_corrections_total{%s}[$__rate_interval])) * 3600' % m, 'corrections {{status}}'),
            range('sum by (instance) (rate(qonto_exporter_resync_checks_total{%s}[$__rate_interval])) * 3600' % m, 'checks {{instance}}', 'B'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'Normalized values',
          "Status, currency and resource type values the API sent in another letter case, folded into the spec's spelling (e.g. OPEN to open), per hour, by field. Counted once per link read: a link read by several polls counts at each.",
          perHour,
          [range('sum by (field) (rate(qonto_exporter_normalized_values_total{%s}[$__rate_interval])) * 3600' % m, '{{field}}')],
          min=0,
        ), 8, 8],
      ],
    },
    {
      title: 'OAuth and process',
      panels: [
        [timeseries(
          'OAuth refreshes',
          'OAuth access-token refreshes, failed refreshes and rotated refresh tokens that could not be written to their file, per hour.',
          perHour,
          [
            range('sum by (instance) (rate(qonto_exporter_oauth_refreshes_total{%s}[$__rate_interval])) * 3600' % m, 'refreshes {{instance}}'),
            range('sum by (instance) (rate(qonto_exporter_oauth_refresh_failures_total{%s}[$__rate_interval])) * 3600' % m, 'refresh failures {{instance}}', 'B'),
            range('sum by (instance) (rate(qonto_exporter_oauth_refresh_token_write_failures_total{%s}[$__rate_interval])) * 3600' % m, 'token write failures {{instance}}', 'C'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'Process CPU',
          'CPU time the exporter process uses per second (1 = 100% of one core).',
          'percentunit',
          [range('rate(process_cpu_seconds_total{%s}[$__rate_interval])' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Process memory',
          'Resident memory of the exporter process.',
          'bytes',
          [range('process_resident_memory_bytes{%s}' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [table(
          'Build',
          'Version and revision of the running exporter(s), from qonto_exporter_build_info.',
          'none',
          [instant('qonto_exporter_build_info{%s}' % m, '', format='table')],
          [{ id: 'organize', options: { excludeByName: { Time: true, Value: true, __name__: true } } }],
        ), 24, 5],
      ],
    },
  ],

  grafanaDashboards+:: {
    'qonto-payment-links.json': {
      __inputs: [],
      title: c.dashboardTitle,
      uid: c.dashboardUid,
      description: "Qonto payment links seen by qonto-exporter: open, paid and expiring money, and the exporter's own health. Figures come from the exporter's last complete background poll of the Qonto API.",
      tags: ['qonto', 'payments', 'qonto-exporter'],
      timezone: 'browser',
      editable: true,
      graphTooltip: 1,
      schemaVersion: 39,
      version: 1,
      refresh: '1m',
      time: { from: 'now-24h', to: 'now' },
      timepicker: {},
      fiscalYearStartMonth: 0,
      liveNow: false,
      annotations: {
        list: [{
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        }],
      },
      links: [{ title: 'Runbook', type: 'link', icon: 'doc', targetBlank: true, url: c.runbookUrlBase }],
      templating: {
        list: [
          {
            name: 'datasource',
            label: 'Data source',
            type: 'datasource',
            query: 'prometheus',
            current: {},
            hide: 0,
            includeAll: false,
            multi: false,
            options: [],
            refresh: 1,
            regex: '',
          },
          // From Prometheus's `up`, so a target that never answered a scrape is listed too.
          variable('job', 'label_values(up{%s}, job)' % c.qontoSelector),
          variable('instance', 'label_values(up{%s, job=~"$job"}, instance)' % c.qontoSelector),
          variable('currency', 'label_values(qonto_payment_links{%s}, currency)' % m),
        ],
      },
      panels: layout(rows),
    },
  },
}
