// qonto-exporter's monitoring mixin: alerts, recording rules and the Grafana dashboard, all
// configured by `_config` (config.libsonnet). Objects, as in the other monitoring mixins:
//   prometheusAlerts   {groups: [...]}   the alerting rules
//   prometheusRules    {groups: [...]}   the recording rules (per-currency thresholds)
//   grafanaDashboards  {'qonto-payment-links.json': {...}}
// scripts/render-mixin renders them into deploy/prometheus/rules.yml,
// deploy/kubernetes/prometheusrule.yaml and grafana/qonto-payment-links.json.
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
+ (import 'dashboards.libsonnet')
+ (import 'flows.libsonnet')
+ (import 'payments.libsonnet')
+ (import 'webhooks.libsonnet')
