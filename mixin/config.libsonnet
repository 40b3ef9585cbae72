// The one place to configure qonto-exporter's alerts, recording rules and dashboard.
//
// Override any field from your own jsonnet, as with node_exporter's or kube-state-metrics' mixins:
//
//   local qonto = (import 'qonto-exporter/mixin/mixin.libsonnet') + {
//     _config+:: {
//       qontoSelector: 'job="payments/qonto-exporter"',
//       expiringAmountThresholds+: { EUR: 25000 },
//     },
//   };
//
// or edit the values below and run scripts/render-mixin, which rewrites
// deploy/prometheus/rules.yml, deploy/kubernetes/prometheusrule.yaml and
// grafana/qonto-payment-links.json from this mixin (a test fails when they differ from a render).
{
  _config+:: {
    // Label matchers that select the exporter's scrape targets, and nothing else. Used in every
    // rule (`up{...}`, the absent() branch of QontoExporterDown, every exporter metric), and by the
    // dashboard's Job and Instance variables. The default is the job both bundled setups produce:
    // deploy/prometheus/prometheus.yml's `job_name: qonto-exporter`, and the ServiceMonitor's
    // (prometheus-operator names the job after the Service, `qonto-exporter`). It is exact on
    // purpose: a regex such as job=~".*qonto.*" would also select another team's "qonto-webhook"
    // job on a shared Prometheus and page for it. If your scrape job has another name, or several
    // namespaces run one, set it here, e.g. 'job="payments-qonto"' or
    // 'job="qonto-exporter", namespace="payments"'.
    qontoSelector: 'job="qonto-exporter"',

    // The target labels that change when the exporter's process is replaced, though it is the same
    // exporter: with the ServiceMonitor, every rollout gives the new pod a new `instance` (pod IP)
    // and `pod`. QontoInvalidLinks compares a process's counts with its predecessor's, so it
    // aggregates them away (`max without (...)`), per organisation: a replica that takes an
    // organisation over from another shard is such a replacement too. Add any label your service
    // discovery sets per process; never one that tells two exporters or organisations apart (job,
    // namespace, organization: the mixin refuses `organization` here).
    processLabels: ['instance', 'pod'],

    // The horizon of "money expiring soon": the `within` label the rules and the dashboard read
    // from qonto_payment_links_expiring{,_amount}. It must be one of the exporter's
    // --expiry.windows values, spelled the same way (default windows: 1h,24h,7d,30d): with any
    // other value QontoMoneyExpiringSoon and the dashboard's expiring panels see no data, which
    // the alert QontoExpiryWindowNotExported reports.
    expiringWindow: '24h',

    // QontoMoneyExpiringSoon fires when the open links of one currency expiring within
    // `expiringWindow` add up to more than this amount, in units of that currency. `default`
    // applies to every currency without its own entry (10,000 suits EUR, USD, GBP and CHF). The
    // other entries are worth roughly 8,500 to 10,000 EUR each at early-2025 exchange rates
    // (10,000 JPY would be about 60 EUR): set amounts that matter to your business.
    // Rendered as the recording rules qonto:expiring_amount_threshold:default and
    // qonto:expiring_amount_threshold:per_currency, and per job, instance, organization and
    // currency as qonto:expiring_amount_threshold (what the alert compares with, and the dashboard
    // draws). The same thresholds apply to every organisation; the alert fires per organisation.
    expiringAmountThresholds: {
      default: 10000,
      CZK: 250000,
      DKK: 75000,
      HUF: 4000000,
      JPY: 1500000,
      KWD: 3000,
      NOK: 100000,
      PLN: 40000,
      SEK: 100000,
    },

    // QontoDataStale fires when the last complete poll of an organisation ended longer ago than
    // this, in seconds (a whole number).
    // 900 s is 3 poll intervals at --poll.interval=5m (15 at the default 1m): keep it above 2 poll
    // intervals plus the usual poll duration.
    dataStaleAfterSeconds: 900,

    // QontoPaymentLinksConnectionNotEnabled fires when an organisation's connection status
    // (qonto_payment_links_connection_status, checked once after each poll) has not been `enabled`
    // for this long: no customer can pay its links. A Prometheus duration.
    connectionNotEnabledFor: '5m',
    // How long the alert keeps an organisation's last known connection status while the exporter
    // reports none: across a restart of the exporter, whose new process publishes the state set
    // only once its first poll and check have ended (minutes on a large organisation), a firing
    // alert stays firing instead of resolving and paging again. Keep it above the first poll's
    // duration plus the scrape interval. A Prometheus duration.
    connectionStatusKeptFor: '15m',

    // Every alert's runbook_url is this, then '#' and the alert name in lower case.
    runbookUrlBase: 'https://github.com/qonto-exporter/qonto-exporter/blob/main/docs/runbook.md',

    // The dashboard's identity in Grafana.
    dashboardUid: 'qonto-payment-links',
    dashboardTitle: 'Qonto payment links',
  },
}
