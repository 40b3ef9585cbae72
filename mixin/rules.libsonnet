// Recording rules: the per-currency thresholds of QontoMoneyExpiringSoon, from
// _config.expiringAmountThresholds, recorded for every organisation (`organization`) and currency
// the exporters report.
{
  local c = $._config,
  local thresholds = c.expiringAmountThresholds,
  local currencies = [k for k in std.objectFields(thresholds) if k != 'default'],
  local isCode(s) = std.length(s) == 3 && std.all([std.member('ABCDEFGHIJKLMNOPQRSTUVWXYZ', ch) for ch in std.stringChars(s)]),
  local number(v) =
    assert std.isNumber(v) && v >= 0 : 'expiringAmountThresholds values must be numbers >= 0, got %s' % std.toString(v);
    std.toString(v),
  local amounts = 'qonto_payment_links_expiring_amount{%s}' % c.qontoSelector,

  assert std.objectHas(thresholds, 'default') : '_config.expiringAmountThresholds needs a `default` entry',
  assert std.all([isCode(k) for k in currencies]) :
         '_config.expiringAmountThresholds keys must be ISO 4217 codes in upper case (as the exporter labels them) or `default`, got %s' % std.toString(currencies),

  prometheusRules+:: {
    groups+: [
      {
        name: 'qonto-exporter-thresholds',
        rules: [
          {
            record: 'qonto:expiring_amount_threshold:default',
            expr: 'vector(%s)' % number(thresholds.default),
          },
        ] + [
          {
            record: 'qonto:expiring_amount_threshold:per_currency',
            expr: 'vector(%s)' % number(thresholds[k]),
            labels: { currency: k },
          }
          for k in currencies
        ] + [
          {
            // The threshold in force for every job, instance, organisation and currency the
            // exporters report: the currency's own entry, else the default. An organisation a
            // reload removes loses its thresholds with its series.
            record: 'qonto:expiring_amount_threshold',
            expr: (if currencies == [] then '' else |||
                     group by (job, instance, organization, currency) (%(amounts)s)
                       * on (currency) group_left () qonto:expiring_amount_threshold:per_currency
                     or
                   ||| % { amounts: amounts }) + |||
              group by (job, instance, organization, currency) (%(amounts)s)
                * on () group_left () qonto:expiring_amount_threshold:default
            ||| % { amounts: amounts },
          },
        ],
      },
    ],
  },
}
