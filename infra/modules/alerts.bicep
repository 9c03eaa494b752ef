// Alert on failed export runs: a log search alert over Application Insights that counts
//  - runs the app reported as failed: the `run_duration_seconds` histogram of shared/telemetry.py
//    with status "failed" (table customMetrics, one data point per run), and
//  - failed function invocations (table requests: timer, queue worker and HTTP API).
// Fires when the count over the window is above zero; with an action group it notifies.

@description('Alert rule name.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource id of the Application Insights component.')
param appInsightsId string

@description('Resource id of an action group to notify (e-mail, webhook...). Empty: the alert only shows in the portal.')
param actionGroupId string = ''

@description('How often the rule runs (ISO 8601 duration).')
param evaluationFrequency string = 'PT15M'

@description('Period each evaluation looks back over (ISO 8601 duration).')
param windowSize string = 'PT15M'

var failedRunsQuery = 'let runs = customMetrics | where name == "run_duration_seconds" and tostring(customDimensions["status"]) == "failed" | summarize failures = sum(valueCount); let invocations = requests | where success == false | summarize failures = count(); union runs, invocations | summarize failures = sum(failures)'

resource failedRuns 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    displayName: 'ActiveCampaign export: failed runs'
    description: 'An export run failed, or a function invocation (timer, queue worker, HTTP API) failed. See the run record (GET /api/exports/{name}/runs) and the traces in Application Insights.'
    severity: 2
    enabled: true
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: evaluationFrequency
    windowSize: windowSize
    criteria: {
      allOf: [
        {
          query: failedRunsQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'failures'
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
      actionGroups: empty(actionGroupId) ? [] : [
        actionGroupId
      ]
    }
  }
}

output id string = failedRuns.id
