// Alerts over Application Insights, each a log search alert rule, and the action group they notify.
// Every table, metric name and customDimensions key a query reads is emitted by the app
// (shared/telemetry.py EMITTED, the Functions host's `requests`); tests/test_infra.py checks that.
//  - failed runs: the `run_duration_seconds` histogram with status "failed" (one data point per
//    run), and failed function invocations (table requests: timer, queue functions, HTTP API);
//  - partial failure: a run that ended with more than maxBadSharePercent of its rows rejected
//    (`run_rejected_share`) or of its sent contacts refused by ActiveCampaign (`run_failed_share`),
//    even though it succeeded;
//  - stale export: an enabled export whose segment has a snapshot it has not exported, and that has
//    not succeeded for more than staleAfterHours (`export_hours_since_success`, from the timer);
//  - poison messages: any message in export-runs-poison or segment-events-poison. A function reads
//    each of those queues (export_worker_poison, segment_events_poison), so every message there is
//    one invocation of it in `requests`.
// With emails or a webhook in `notify`, an action group is created and every rule notifies it.

@description('Prefix of the rule names.')
param namePrefix string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource id of the Application Insights component.')
param appInsightsId string

@description('Who the alerts notify: {"emails": ["ops@example.com"], "webhookUrl": "https://..."}, both optional. Neither: the alerts only show in the portal.')
@secure()
param notify object = {}

@description('A run whose rejected share (of rows read) or failed share (of contacts sent) is above this percentage alerts.')
@minValue(0)
@maxValue(100)
param maxBadSharePercent int = 10

@description('An enabled export with an unexported snapshot that has not succeeded for more than this many hours alerts.')
@minValue(1)
@maxValue(720)
param staleAfterHours int = 24

@description('How often the rules run (ISO 8601 duration).')
param evaluationFrequency string = 'PT15M'

@description('Period each evaluation looks back over (ISO 8601 duration).')
param windowSize string = 'PT15M'

var emails = contains(notify, 'emails') ? notify.emails : []
var webhookUrl = contains(notify, 'webhookUrl') ? notify.webhookUrl : ''
var notifies = !empty(emails) || !empty(webhookUrl)
var webhookReceiver = [
  {
    name: 'webhook'
    serviceUri: webhookUrl
    useCommonAlertSchema: true
  }
]

var failedRunsQuery = 'let runs = customMetrics | where name == "run_duration_seconds" and tostring(customDimensions["status"]) == "failed" | summarize failures = sum(valueCount); let invocations = requests | where success == false | summarize failures = count(); union runs, invocations | summarize failures = sum(failures)'
var badShareQuery = 'customMetrics | where name in ("run_rejected_share", "run_failed_share") | summarize worst = max(valueMax) by export = tostring(customDimensions["export"]), name | where worst * 100 > ${maxBadSharePercent}'
var poisonQuery = 'requests | where name in ("export_worker_poison", "segment_events_poison") | summarize messages = count()'
var staleQuery = 'customMetrics | where name == "export_hours_since_success" | summarize hours = max(valueMax) by export = tostring(customDimensions["export"]), trigger = tostring(customDimensions["trigger"]) | where hours > ${staleAfterHours}'

var rules = [
  {
    name: '${namePrefix}-failed-runs'
    displayName: 'ActiveCampaign export: failed runs'
    description: 'An export run failed, or a function invocation (timer, queue functions, HTTP API) failed. See the run record (GET /api/exports/{name}/runs) and the traces in Application Insights.'
    severity: 2
    query: failedRunsQuery
    measure: 'failures'
  }
  {
    name: '${namePrefix}-bad-share'
    displayName: 'ActiveCampaign export: rejected or refused rows above ${maxBadSharePercent}%'
    description: 'A run ended with more than ${maxBadSharePercent}% of its rows rejected (bad or missing emails, ragged rows: rejected.csv of the run) or of its sent contacts refused by ActiveCampaign (the run report\'s failures), even if it succeeded. One row per export and share.'
    severity: 3
    query: badShareQuery
    measure: ''
  }
  {
    name: '${namePrefix}-stale-export'
    displayName: 'ActiveCampaign export: no successful run for ${staleAfterHours} h'
    description: 'An enabled export has not succeeded for more than ${staleAfterHours} hours although its segment has a newer snapshot. GET /api/exports shows its lastDecision and lastRun.'
    severity: 2
    query: staleQuery
    measure: ''
  }
  {
    name: '${namePrefix}-poison-messages'
    displayName: 'ActiveCampaign export: messages in a poison queue'
    description: 'A message reached export-runs-poison (a run failed all its deliveries: its run record says why) or segment-events-poison (a refresh event the host gave up on; the timer catches up). The traces of the functions export_worker_poison and segment_events_poison name the message.'
    severity: 2
    query: poisonQuery
    measure: 'messages'
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notifies) {
  name: '${namePrefix}-notify'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'acexport'
    enabled: true
    emailReceivers: [
      for (email, i) in emails: {
        name: 'email-${i}'
        emailAddress: email
        useCommonAlertSchema: true
      }
    ]
    webhookReceivers: empty(webhookUrl) ? [] : webhookReceiver
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = [
  for rule in rules: {
    name: rule.name
    location: location
    tags: tags
    properties: {
      displayName: rule.displayName
      description: rule.description
      severity: rule.severity
      enabled: true
      scopes: [
        appInsightsId
      ]
      evaluationFrequency: evaluationFrequency
      windowSize: windowSize
      criteria: {
        allOf: [
          {
            query: rule.query
            // A number column is summed; otherwise each row the query returns counts as one.
            timeAggregation: empty(rule.measure) ? 'Count' : 'Total'
            metricMeasureColumn: empty(rule.measure) ? null : rule.measure
            operator: 'GreaterThan'
            threshold: 0
            failingPeriods: {
              numberOfEvaluationPeriods: 1
              minFailingPeriodsToAlert: 1
            }
          }
        ]
      }
      autoMitigate: true
      actions: {
        actionGroups: notifies ? [actionGroup.id] : []
      }
    }
  }
]

output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
output actionGroupId string = notifies ? actionGroup.id : ''
