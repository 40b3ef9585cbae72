// The Grafana dashboard, rendered to grafana/qonto-payment-links.json.
//
// It follows grafana/dashboard-linter's rules, which scripts/check-deploy enforces: a templated
// datasource used by every panel and target, job/instance variables and matchers in every
// selector, $__rate_interval in every range, a title, a description and a unit on every panel.
// Stat, bar-gauge and table panels use instant queries: a series that stopped being scraped (dead
// exporter, vanished target) shows as "No data", never as its last value.
//
// Organisations: every query of a per-organisation metric (all but the process-wide ones below)
// matches organization=~"$organization" and keeps `organization` in its result (by clause,
// legend), so figures are never added up across organisations (the money of different companies),
// nor across currencies. The process-wide series have no `organization` and their queries no
// matcher for it: up (per scrape target), process_*, qonto_exporter_build_info, the request budget
// (qonto_exporter_api_requests_10m, qonto_exporter_api_budget_10m_usage_ratio: per IP, shared by
// the organisations of a process), qonto_exporter_organizations, qonto_exporter_shard_info and the
// configuration reload metrics. tests/mixin.rs and scripts/check-deploy check both rules.
// docs/runbook.md names panels as `panel "Title"` and rows as `row "Title"`; tests/mixin.rs
// checks that each such name is a title of this dashboard.
{
  local c = $._config,
  local ds = { type: 'prometheus', uid: '${datasource}' },
  // Matchers: process-wide series (m), per-organisation series (mo), and those with a currency (mc).
  local m = 'job=~"$job", instance=~"$instance"',
  local mo = m + ', organization=~"$organization"',
  local mc = mo + ', currency=~"$currency"',
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
  // Every amount legend ends with the currency, which the regex anchors on (an organisation named
  // "eur-holdings" or "ACME EUR" must not turn its USD amounts into euros).
  local currencyOverrides = [
    {
      matcher: { id: 'byRegexp', options: '^(.* )?%s$' % code },
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
  // stack: the series stacked on each other (only ever series of one organisation and, for
  // amounts, one currency: the panel, or its row, repeats per value of those variables).
  local timeseries(title, description, unit, targets, decimals=null, overrides=[], min=null, stack=false) =
    base('timeseries', title, description, unit, targets) + {
      fieldConfig: {
        defaults: {
          unit: unit,
          thresholds: green,
          color: { mode: 'palette-classic' },
          custom: {
            drawStyle: 'line',
            lineWidth: 1,
            fillOpacity: if stack then 60 else 10,
            showPoints: 'never',
            spanNulls: false,
            thresholdsStyle: { mode: 'off' },
          } + (if stack then { stacking: { mode: 'normal', group: 'A' } } else {}),
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
  local table(title, description, unit, targets, transformations, options={}, overrides=[]) =
    base('table', title, description, unit, targets) + {
      fieldConfig: {
        defaults: { unit: unit, thresholds: green, color: { mode: 'palette-classic' } },
        overrides: overrides,
      },
      options: { showHeader: true } + options,
      transformations: transformations,
    },
  // A table column's settings, by its name after the organize transformation's renaming.
  local column(name, properties) = { matcher: { id: 'byName', options: name }, properties: properties },
  // A column whose values map to coloured words.
  local mappedColumn(name, mappings, thresholds) = column(name, [
    { id: 'mappings', value: mappings },
    { id: 'thresholds', value: thresholds },
    { id: 'custom.cellOptions', value: { type: 'color-text' } },
  ]),
  // A row repeated per value of `repeat` (a variable name), or not repeated.
  local row(title, repeat=null) = { type: 'row', title: title, collapsed: false, panels: [] }
                                  + (if repeat == null then {} else { repeat: repeat }),
  // A panel repeated side by side per value of variable `name`, at most `perRow` on a line.
  local repeated(name, perRow=2) = { repeat: name, repeatDirection: 'h', maxPerRow: perRow },

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
        panels: state.panels + [row(r.title, std.get(r, 'repeat')) { id: state.id, gridPos: { h: 1, w: 24, x: 0, y: top } }],
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

  // The "Last poll" state per organisation: 0 failed, 1 ok, 2 not yet. 2 only while no poll of
  // this organisation has ended, well or badly: qonto_exporter_last_poll_duration_seconds is 0 from
  // the poller's start until its first poll ends and is set at the end of every poll, failed ones
  // included (src/poller.rs). Not the timestamp of the last success (0 for an organisation whose
  // polls all fail, and the saved poll's end when one was restored from --storage.path), nor
  // poll_failures_total > 0 (a counter outside rate() breaks the dashboard lint).
  local lastPoll = 'max by (organization, instance) (qonto_up{%(mo)s} + 2 * (qonto_exporter_last_poll_duration_seconds{%(mo)s} == bool 0))' % { mo: mo },
  local lastPollMappings = valueMap([['0', 'failed', 'red'], ['1', 'ok', 'green'], ['2', 'not yet', 'blue']]),
  local lastPollThresholds = steps([{ color: 'red', value: null }, { color: 'green', value: 1 }, { color: 'blue', value: 2 }]),
  local refusedMappings = valueMap([['0', 'no', 'green'], ['1', 'REFUSED', 'red']]),
  local redAtOne = steps([{ color: 'green', value: null }, { color: 'red', value: 1 }]),
  local dataAgeThresholds = steps([{ color: 'green', value: null }, { color: 'orange', value: c.dataStaleAfterSeconds / 3 }, { color: 'red', value: c.dataStaleAfterSeconds }]),
  // The connection status (qonto_payment_links_connection_status, a state set: 1 for the current
  // status) as one number per organisation, for the value mappings: 1 enabled, 2 pending,
  // 3 disabled, 4 not_connected, 5 a status Qonto added since. No value before the organisation's
  // first successful check.
  local connectionStatuses = ['enabled', 'pending', 'disabled', 'not_connected'],
  local connectionStatus = 'max by (organization, instance) (%s)' % std.join(' or ', [
    '%d * (qonto_payment_links_connection_status{%s, status="%s"} == 1)' % [i + 1, mo, connectionStatuses[i]]
    for i in std.range(0, std.length(connectionStatuses) - 1)
  ] + ['%d * (qonto_payment_links_connection_status{%s, status!~"%s"} == 1)' % [std.length(connectionStatuses) + 1, mo, std.join('|', connectionStatuses)]]),
  local connectionMappings = valueMap([
    ['1', 'enabled', 'green'],
    ['2', 'pending', 'orange'],
    ['3', 'disabled', 'red'],
    ['4', 'not_connected', 'red'],
    ['5', 'other status', 'text'],
  ]),
  // The default --aging.buckets' labels, coloured from young (green) to old (dark red); the
  // buckets of another --aging.buckets take the palette's colours. Legends end with the age, or
  // with the age and the currency.
  local ageOverrides = [
    {
      matcher: { id: 'byRegexp', options: '^.* %s( \\S+)?$' % a[0] },
      properties: [{ id: 'color', value: { mode: 'fixed', fixedColor: a[1] } }],
    }
    for a in [['<=7d', 'green'], ['7d-30d', 'yellow'], ['30d-60d', 'orange'], ['60d-90d', 'red'], ['>90d', 'dark-red'], ['unknown', 'gray']]
  ],

  // Per-organisation legends: the organisation, and the exporter process that polls it (two
  // exporters may each have an organisation named "default").
  local orgLegend = '{{organization}} {{instance}}',

  local rows = [
    {
      title: 'Exporter health',
      panels: [
        [stat(
          'Scrape target up',
          "Prometheus's own scrape health of each exporter target (up), one per process whatever the number of organisations it polls: DOWN means Prometheus cannot scrape it, so every other panel shows nothing new for it (stat panels: no data).",
          'none',
          [instant('up{%s}' % m, '{{instance}}')],
          thresholds=steps([{ color: 'red', value: null }, { color: 'green', value: 1 }]),
          mappings=valueMap([['0', 'DOWN', 'red'], ['1', 'up', 'green']]),
          noValue='no target',
        ), 4, 5],
        [stat(
          'Last poll',
          "Outcome of the last poll of the Qonto API, per organisation (qonto_up): failed means its last poll failed (its previous complete snapshot, if any, is still served; an organisation whose polls have all failed since the exporter started polling it shows failed too); not yet means no poll of it has completed or failed since the exporter started polling it (the first one is still running).",
          'none',
          [instant(lastPoll, orgLegend)],
          thresholds=lastPollThresholds,
          mappings=lastPollMappings,
          noValue='no data',
        ), 4, 5],
        [stat(
          'Data age',
          'Time since the last complete poll of each organisation ended. Red beyond the QontoDataStale threshold. No data while no poll of it has completed since the exporter started polling it, or while Prometheus cannot scrape the exporter.',
          's',
          [instant('max by (organization, instance) (time() - (qonto_exporter_last_success_timestamp_seconds{%s} > 0))' % mo, orgLegend)],
          decimals=0,
          thresholds=dataAgeThresholds,
          noValue='no data',
        ), 4, 5],
        [stat(
          'Refresh token saved',
          "Whether the exporter could write each organisation's rotated OAuth refresh token to its file (refresh_token_file of the organisation in --config.file, or --qonto.oauth.refresh-token-file). NOT SAVED: the only valid token is in memory; do not restart the exporter (runbook: QontoRefreshTokenNotSaved). Always saved with API-key or static-token auth.",
          'none',
          [instant('max by (organization, instance) (qonto_exporter_oauth_refresh_token_unsaved{%s})' % mo, orgLegend)],
          thresholds=redAtOne,
          mappings=valueMap([['0', 'saved', 'green'], ['1', 'NOT SAVED', 'red']]),
          noValue='no data',
        ), 4, 5],
        [stat(
          'Credentials refused',
          "Whether Qonto (or its OAuth server) refuses the credentials configured for each organisation (qonto_exporter_credentials_refused).",
          'none',
          [instant('max by (organization, instance) (qonto_exporter_credentials_refused{%s})' % mo, orgLegend)],
          thresholds=redAtOne,
          mappings=refusedMappings,
          noValue='no data',
        ), 4, 5],
        [stat(
          'API budget used',
          "Requests each exporter process sent in the last 10 minutes, all its organisations together, over its share of Qonto's per-IP 10,000 requests per 10 minutes (--qonto.budget-share, default 0.5), measured. At most 1: the budget holds polls back rather than going over.",
          'percentunit',
          [instant('max by (instance) (qonto_exporter_api_budget_10m_usage_ratio{%s})' % m, '{{instance}}')],
          thresholds=steps([{ color: 'green', value: null }, { color: 'orange', value: 0.5 }, { color: 'red', value: 0.9 }]),
          noValue='no data',
        ), 4, 5],
      ],
    },
    {
      title: 'Organisations',
      panels: [
        [table(
          'Organisations',
          "One row per organisation and currency of its open links (an organisation without any link has one row without currency): the outcome of its last poll (failed, ok, not yet), whether Qonto refuses its credentials, the age of its data, the requests its last poll sent, and its open links and their gross amount in that currency. Amounts are never added across currencies nor organisations.",
          'none',
          [
            // The queries with a currency come first: the merge then copies each organisation's
            // other columns into every currency row of it.
            instant('sum by (organization, instance, currency) (qonto_payment_links_amount{%s, status="open"})' % mc, '', 'A', 'table'),
            instant('sum by (organization, instance, currency) (qonto_payment_links{%s, status="open"})' % mc, '', 'B', 'table'),
            instant(lastPoll, '', 'C', 'table'),
            instant('max by (organization, instance) (qonto_exporter_credentials_refused{%s})' % mo, '', 'D', 'table'),
            instant('max by (organization, instance) (time() - (qonto_exporter_last_success_timestamp_seconds{%s} > 0))' % mo, '', 'E', 'table'),
            instant('max by (organization, instance) (qonto_exporter_last_poll_requests{%s})' % mo, '', 'F', 'table'),
          ],
          [
            { id: 'merge', options: {} },
            {
              id: 'organize',
              options: {
                excludeByName: { Time: true },
                indexByName: {
                  organization: 0,
                  instance: 1,
                  'Value #C': 2,
                  'Value #D': 3,
                  'Value #E': 4,
                  'Value #F': 5,
                  currency: 6,
                  'Value #B': 7,
                  'Value #A': 8,
                },
                renameByName: {
                  'Value #A': 'open amount',
                  'Value #B': 'open links',
                  'Value #C': 'last poll',
                  'Value #D': 'credentials refused',
                  'Value #E': 'data age',
                  'Value #F': 'requests of the last poll',
                },
              },
            },
          ],
          { sortBy: [{ displayName: 'organization', desc: false }] },
          [
            mappedColumn('last poll', lastPollMappings, lastPollThresholds),
            mappedColumn('credentials refused', refusedMappings, redAtOne),
            column('data age', [
              { id: 'unit', value: 's' },
              { id: 'decimals', value: 0 },
              { id: 'thresholds', value: dataAgeThresholds },
              { id: 'custom.cellOptions', value: { type: 'color-text' } },
            ]),
            column('requests of the last poll', [{ id: 'unit', value: 'short' }, { id: 'decimals', value: 0 }]),
            column('open links', [{ id: 'unit', value: 'short' }, { id: 'decimals', value: 0 }]),
            column('open amount', [{ id: 'decimals', value: 2 }]),
          ],
        ), 24, 9],
        [table(
          'Exporter processes',
          'One row per exporter process: its shard (--shard.index of --shard.count; 0 of 1 without sharding), how many organisations it polls after sharding, whether its last configuration reload (SIGHUP, POST /-/reload) succeeded, and when a configuration was last loaded (at start, or by a reload). FAILED: it runs with the last file it accepted (runbook: QontoConfigReloadFailed).',
          'none',
          [
            instant('max by (instance, shard_index, shard_count) (qonto_exporter_shard_info{%s})' % m, '', 'A', 'table'),
            instant('max by (instance) (qonto_exporter_organizations{%s})' % m, '', 'B', 'table'),
            instant('max by (instance) (qonto_exporter_config_last_reload_successful{%s})' % m, '', 'C', 'table'),
            instant('max by (instance) (qonto_exporter_config_last_reload_success_timestamp_seconds{%s}) * 1000' % m, '', 'D', 'table'),
          ],
          [
            { id: 'merge', options: {} },
            {
              id: 'organize',
              options: {
                excludeByName: { Time: true, 'Value #A': true },
                indexByName: { instance: 0, shard_index: 1, shard_count: 2, 'Value #B': 3, 'Value #C': 4, 'Value #D': 5 },
                renameByName: {
                  shard_index: 'shard',
                  shard_count: 'of shards',
                  'Value #B': 'organisations',
                  'Value #C': 'last reload',
                  'Value #D': 'configuration loaded',
                },
              },
            },
          ],
          { sortBy: [{ displayName: 'shard', desc: false }] },
          [
            column('organisations', [{ id: 'unit', value: 'short' }, { id: 'decimals', value: 0 }]),
            mappedColumn('last reload', valueMap([['0', 'FAILED', 'red'], ['1', 'ok', 'green']]), steps([{ color: 'red', value: null }, { color: 'green', value: 1 }])),
            column('configuration loaded', [{ id: 'unit', value: 'dateTimeFromNow' }]),
          ],
        ), 24, 5],
      ],
    },
    {
      title: 'Overview',
      panels: [
        [stat(
          'Open links',
          "Payment links currently in status open (awaiting payment), per organisation, from the exporter's last complete poll of it.",
          'short',
          [instant('sum by (organization) (qonto_payment_links{%s, status="open"})' % mc, '{{organization}}')],
          decimals=0,
        ), 4, 5],
        [stat(
          'Open amount',
          "Gross amount (VAT included) of open payment links, per organisation and currency. Amounts are in units of each link's currency.",
          'none',
          [instant('sum by (organization, currency) (qonto_payment_links_amount{%s, status="open"})' % mc, '{{organization}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 5, 5],
        [stat(
          'Paid amount',
          'Gross amount of payment links in status paid that Qonto still lists, per organisation and currency. A level, not a rate: it drops when Qonto stops listing old links.',
          'none',
          [instant('sum by (organization, currency) (qonto_payment_links_amount{%s, status="paid"})' % mc, '{{organization}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 5, 5],
        [stat(
          'Links expiring within %s' % window,
          'Open links whose expiration falls in the next %s, per organisation (the within="%s" window, _config.expiringWindow in the mixin). No data when %s is not one of the exporter\'s --expiry.windows (alert QontoExpiryWindowNotExported).' % [window, window, window],
          'short',
          [instant('sum by (organization) (qonto_payment_links_expiring{%s, within="%s"})' % [mc, window], '{{organization}}')],
          decimals=0,
        ), 3, 5],
        [stat(
          'Money expiring within %s' % window,
          'Gross amount of open links expiring in the next %s, per organisation and currency: money that will not be collected unless the links are paid in time. QontoMoneyExpiringSoon compares it with each currency\'s threshold.' % window,
          'none',
          [instant('sum by (organization, currency) (qonto_payment_links_expiring_amount{%s, within="%s"})' % [mc, window], '{{organization}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 4, 5],
        [stat(
          'Open past expiry',
          'Links still open although their expiration date has passed (Qonto has not moved them to expired yet), per organisation.',
          'short',
          [instant('sum by (organization) (qonto_payment_links_open_past_expiration{%s})' % mc, '{{organization}}')],
          decimals=0,
        ), 3, 5],
      ],
    },
    {
      title: 'Connection',
      panels: [
        [stat(
          'Connection status',
          "Whether customers can pay each organisation's payment links at all: the status of its payment links connection (GET /v2/payment_links/connections, checked once after each poll; qonto_payment_links_connection_status). enabled: they can; pending (onboarding not finished), disabled, not_connected: they cannot (alert QontoPaymentLinksConnectionNotEnabled); other status: a value Qonto added since, shown on the exporter's /metrics. No data until the organisation's first successful check; a failed check keeps the last known status.",
          'none',
          [instant(connectionStatus, orgLegend)],
          thresholds=steps([{ color: 'text', value: null }]),
          mappings=connectionMappings,
          noValue='not checked yet',
        ), 8, 5],
        [timeseries(
          'Connection checks',
          'Connection status checks and the checks that failed (the API did not answer, or answered a status unusable as a label value), per organisation and hour (a rate: 60 /h is one check a minute, one after each poll; none while the credentials are refused). A failed check never fails the poll and keeps the last known status in panel "Connection status".',
          perHour,
          [
            range('sum by (organization, instance) (rate(qonto_exporter_connection_checks_total{%s}[$__rate_interval])) * 3600' % mo, 'checks ' + orgLegend),
            range('sum by (organization, instance) (rate(qonto_exporter_connection_check_failures_total{%s}[$__rate_interval])) * 3600' % mo, 'failures ' + orgLegend, 'B'),
          ],
          min=0,
        ), 16, 5],
      ],
    },
    {
      // One row per organisation (and the amounts one panel per currency): the stacks add up age
      // buckets of one organisation, and amounts of one currency, only.
      title: 'Aging: $organization',
      repeat: 'organization',
      panels: [
        [timeseries(
          'Open links by age',
          "The organisation's open payment links, all currencies together, stacked by age since their creation at the exporter's last complete poll, in the buckets of --aging.buckets (unknown: no usable created_at). The stack's top is the number of open links.",
          'short',
          [range('sum by (organization, age) (qonto_payment_links_open_by_age{%s})' % mc, '{{organization}} {{age}}')],
          decimals=0,
          overrides=ageOverrides,
          min=0,
          stack=true,
        ), 16, 8],
        [stat(
          'Oldest open link',
          "Age of the organisation's oldest open payment link in each currency: now minus the earliest created_at among its open links at the exporter's last complete poll. Orange from 30 days, red from 90 days. No data for a currency without open links (or none with a usable created_at).",
          's',
          [instant('time() - min by (organization, currency) (qonto_payment_links_oldest_open_created_timestamp_seconds{%s})' % mc, '{{organization}} {{currency}}')],
          decimals=0,
          thresholds=steps([{ color: 'green', value: null }, { color: 'orange', value: 30 * 86400 }, { color: 'red', value: 90 * 86400 }]),
          noValue='no open link',
        ), 8, 8],
        [timeseries(
          'Open amount by age, $currency',
          "Accounts-receivable aging: the gross amount of the organisation's open payment links in one currency, stacked by age since their creation (created_at) at the exporter's last complete poll, in the buckets of --aging.buckets (default <=7d, 7d-30d, 30d-60d, 60d-90d, >90d; unknown: no usable created_at). The stack's top is the open amount in that currency. One panel per currency, one row per organisation: never added across currencies nor organisations.",
          'none',
          [range('sum by (organization, currency, age) (qonto_payment_links_open_by_age_amount{%s})' % mc, '{{organization}} {{age}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides + ageOverrides,
          min=0,
          stack=true,
        ) + repeated('currency'), 24, 8],
      ],
    },
  ] + $._dashboardExtraRows + [
    {
      title: 'Trends by status',
      panels: [
        [timeseries(
          'Links by status',
          'Number of payment links per organisation and status (open, processing, paid, expired, canceled, and any status Qonto adds), over time.',
          'short',
          [range('sum by (organization, status) (qonto_payment_links{%s})' % mc, '{{organization}} {{status}}')],
          decimals=0,
        ), 12, 8],
        [timeseries(
          'Amount by status',
          'Gross amount of payment links per organisation, status and currency, over time.',
          'none',
          [range('sum by (organization, status, currency) (qonto_payment_links_amount{%s})' % mc, '{{organization}} {{status}} {{currency}}')],
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
          'Open links whose expiration falls in (now, now + window], per organisation, for each window of --expiry.windows. Windows are cumulative: 24h includes 1h.',
          'short',
          [instant('sum by (organization, within) (qonto_payment_links_expiring{%s})' % mc, '{{organization}} {{within}}')],
          decimals=0,
        ), 6, 8],
        [bargauge(
          'Money expiring, by window',
          'Gross amount of open links expiring within each window, per organisation and currency.',
          'none',
          [instant('sum by (organization, within, currency) (qonto_payment_links_expiring_amount{%s})' % mc, '{{organization}} {{within}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 6, 8],
        [timeseries(
          'Money expiring within %s vs alert threshold' % window,
          'Gross amount of open links expiring within %s, per organisation and currency, and the threshold above which QontoMoneyExpiringSoon fires for that organisation and currency (recording rule qonto:expiring_amount_threshold; no threshold line where the rules are not loaded).' % window,
          'none',
          [
            range('sum by (organization, currency) (qonto_payment_links_expiring_amount{%s, within="%s"})' % [mc, window], '{{organization}} {{currency}}'),
            range('max by (organization, currency) (qonto:expiring_amount_threshold{%s})' % mc, 'threshold {{organization}} {{currency}}', 'B'),
          ],
          decimals=2,
          overrides=currencyOverrides + [{
            matcher: { id: 'byRegexp', options: '^threshold .*' },
            properties: [{ id: 'custom.lineStyle', value: { fill: 'dash', dash: [10, 10] } }, { id: 'custom.fillOpacity', value: 0 }],
          }],
        ), 8, 8],
        [stat(
          'Next expiration',
          'When the earliest open payment link expires, per organisation and currency.',
          'dateTimeFromNow',
          [instant('min by (organization, currency) (qonto_payment_links_next_expiration_timestamp_seconds{%s}) * 1000' % mc, '{{organization}} {{currency}}')],
        ) + { options+: { colorMode: 'none' } }, 4, 8],
        [timeseries(
          'Money expiring over time, by window',
          'Gross amount of open links expiring within each window, per organisation and currency, over time.',
          'none',
          [range('sum by (organization, within, currency) (qonto_payment_links_expiring_amount{%s})' % mc, '{{organization}} {{within}} {{currency}}')],
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
          'Open payment links per organisation and resource type (Basket, Invoice, ...), over time.',
          'short',
          [range('sum by (organization, resource_type) (qonto_payment_links{%s, status="open"})' % mc, '{{organization}} {{resource_type}}')],
          decimals=0,
        ), 8, 8],
        [timeseries(
          'Open amount by resource type',
          'Gross amount of open payment links per organisation, resource type and currency, over time.',
          'none',
          [range('sum by (organization, resource_type, currency) (qonto_payment_links_amount{%s, status="open"})' % mc, '{{organization}} {{resource_type}} {{currency}}')],
          decimals=2,
          overrides=currencyOverrides,
        ), 8, 8],
        [table(
          'Links by resource type and status',
          'Current number of payment links per organisation, resource type and status.',
          'short',
          [instant('sum by (organization, resource_type, status) (qonto_payment_links{%s})' % mc, '', format='table')],
          [{ id: 'organize', options: { excludeByName: { Time: true }, renameByName: { Value: 'links' } } }],
          { sortBy: [{ displayName: 'organization', desc: false }] },
        ), 8, 8],
      ],
    },
    {
      title: 'Polling',
      panels: [
        [timeseries(
          'Data age over time',
          'Time since the last complete poll of each organisation ended. No line while no poll of it has completed since the exporter started polling it.',
          's',
          [range('time() - (qonto_exporter_last_success_timestamp_seconds{%s} > 0)' % mo, orgLegend)],
          min=0,
        ), 8, 8],
        [timeseries(
          'Poll duration',
          'How long the last poll of each organisation took, and the 95th percentile of its single API requests.',
          's',
          [
            range('qonto_exporter_last_poll_duration_seconds{%s}' % mo, 'poll ' + orgLegend),
            range('histogram_quantile(0.95, sum by (le, organization, instance) (rate(qonto_exporter_api_request_duration_seconds_bucket{%s}[$__rate_interval])))' % mo, 'p95 request ' + orgLegend, 'B'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'Polls',
          'Polls started and polls failed, per organisation and hour (a rate: 60 /h is one poll a minute), and HTTP 429 answers whose Retry-After asked for a longer wait than --qonto.max-retry-after (each failed its poll at once instead of waiting).',
          perHour,
          [
            range('sum by (organization, instance) (rate(qonto_exporter_polls_total{%s}[$__rate_interval])) * 3600' % mo, 'polls ' + orgLegend),
            range('sum by (organization, instance) (rate(qonto_exporter_poll_failures_total{%s}[$__rate_interval])) * 3600' % mo, 'failures ' + orgLegend, 'B'),
            range('sum by (organization, instance) (rate(qonto_exporter_retry_after_over_ceiling_total{%s}[$__rate_interval])) * 3600' % mo, 'Retry-After over ceiling ' + orgLegend, 'C'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'API requests by code',
          "Requests sent to the Qonto API per second, per organisation, by HTTP status code (error: no response). Qonto's rate limits (429) are per IP: they count the requests of all the organisations of the exporter, and of other integrations on the same IP.",
          'reqps',
          [range('sum by (organization, code) (rate(qonto_exporter_api_requests_total{%s}[$__rate_interval]))' % mo, '{{organization}} {{code}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'API budget usage',
          "Requests each exporter process sent in the last 10 minutes, all its organisations together, over its share of Qonto's per-IP 10,000 requests per 10 minutes (--qonto.budget-share), measured; at most 1. Above 0.7 for 30 minutes fires QontoApiBudgetHigh.",
          'percentunit',
          [range('qonto_exporter_api_budget_10m_usage_ratio{%s}' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Invalid links found',
          'Payment links newly found with unusable data, per hour, by organisation and reason. Each link counts once per reason and exporter process (a restart counts the still-unusable ones again). All but invalid_expiration_date are left out of the figures.',
          perHour,
          [range('sum by (organization, reason) (rate(qonto_exporter_invalid_links_total{%s}[$__rate_interval])) * 3600' % mo, '{{organization}} {{reason}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Links left out',
          'Payment links the API counts that the last complete poll of each organisation left out of the figures because their data was unusable (qonto_exporter_excluded_links); the panel "Invalid links found" says why. Open links without a usable expiration date are not among them: they count in their status.',
          'short',
          [range('max by (organization, instance) (qonto_exporter_excluded_links{%s})' % mo, orgLegend)],
          decimals=0,
          min=0,
        ), 8, 8],
        [timeseries(
          'Full walks',
          'Polls that walked every payment link of an organisation instead of only the links that can still change, per organisation and hour (the first poll, the periodic resync, and polls whose counts did not add up).',
          perHour,
          [range('sum by (organization, instance) (rate(qonto_exporter_full_walks_total{%s}[$__rate_interval])) * 3600' % mo, orgLegend)],
          min=0,
        ), 8, 8],
        [timeseries(
          'Pagination drift',
          'Walks of the listing that saw it change while paging, per organisation and hour.',
          perHour,
          [range('sum by (organization, instance) (rate(qonto_exporter_pagination_drift_total{%s}[$__rate_interval])) * 3600' % mo, orgLegend)],
          min=0,
        ), 8, 8],
        [timeseries(
          'Resync corrections',
          'Times the links of a terminal status (paid, expired, canceled) were found changed although incremental polls take them as final, per organisation and hour, by status; the status was then walked in full. And full resyncs that checked the carried figures. Corrections above 0: Qonto changed links the exporter assumed final.',
          perHour,
          [
            range('sum by (organization, status) (rate(qonto_exporter_resync_corrections_total{%s}[$__rate_interval])) * 3600' % mo, 'corrections {{organization}} {{status}}'),
            range('sum by (organization, instance) (rate(qonto_exporter_resync_checks_total{%s}[$__rate_interval])) * 3600' % mo, 'checks ' + orgLegend, 'B'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'Normalized values',
          "Status, currency and resource type values the API sent in another letter case, folded into the spec's spelling (e.g. OPEN to open), per organisation and hour, by field. Counted once per link read: a link read by several polls counts at each.",
          perHour,
          [range('sum by (organization, field) (rate(qonto_exporter_normalized_values_total{%s}[$__rate_interval])) * 3600' % mo, '{{organization}} {{field}}')],
          min=0,
        ), 8, 8],
      ],
    },
    {
      title: 'OAuth and process',
      panels: [
        [timeseries(
          'OAuth refreshes',
          'OAuth access-token refreshes, failed refreshes and rotated refresh tokens that could not be written to their file, per organisation and hour.',
          perHour,
          [
            range('sum by (organization, instance) (rate(qonto_exporter_oauth_refreshes_total{%s}[$__rate_interval])) * 3600' % mo, 'refreshes ' + orgLegend),
            range('sum by (organization, instance) (rate(qonto_exporter_oauth_refresh_failures_total{%s}[$__rate_interval])) * 3600' % mo, 'refresh failures ' + orgLegend, 'B'),
            range('sum by (organization, instance) (rate(qonto_exporter_oauth_refresh_token_write_failures_total{%s}[$__rate_interval])) * 3600' % mo, 'token write failures ' + orgLegend, 'C'),
          ],
          min=0,
        ), 8, 8],
        [timeseries(
          'Process CPU',
          'CPU time each exporter process uses per second, all its organisations together (1 = 100% of one core).',
          'percentunit',
          [range('rate(process_cpu_seconds_total{%s}[$__rate_interval])' % m, '{{instance}}')],
          min=0,
        ), 8, 8],
        [timeseries(
          'Process memory',
          'Resident memory of each exporter process, all its organisations together.',
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

  // Rows that other files of the mixin add (placed after the Aging row), built with the
  // helpers below, e.g. `{ _dashboardExtraRows+:: [{ title: 'T', panels: [[$._dashboard.stat(...), 8, 5]] }] }`.
  _dashboardExtraRows:: [],
  _dashboard:: {
    range: range,
    instant: instant,
    stat: stat,
    timeseries: timeseries,
    steps: steps,
    currencyOverrides: currencyOverrides,
    perHour: perHour,
    orgLegend: orgLegend,
    m: m,
    mo: mo,
    mc: mc,
  },

  grafanaDashboards+:: {
    'qonto-payment-links.json': {
      __inputs: [],
      title: c.dashboardTitle,
      uid: c.dashboardUid,
      description: "Qonto payment links seen by qonto-exporter, per organisation: open, paid and expiring money, and the exporter's own health. Figures come from the exporter's last complete background poll of each organisation in the Qonto API, and are never added up across organisations nor currencies.",
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
          // From qonto_up, which every organisation of a running exporter has from its poller's
          // start, before any payment link is known.
          variable('organization', 'label_values(qonto_up{%s}, organization)' % m),
          variable('currency', 'label_values(qonto_payment_links{%s}, currency)' % mo),
        ],
      },
      panels: layout(rows),
    },
  },
}
