// ActiveCampaign segment export on Azure Functions (Flex Consumption, Python 3.11).
//
// Scope: one resource group (targetScope resourceGroup). scripts/deploy.sh creates the group, then
// deploys this template into it; the segment storage account may live elsewhere (another group or
// subscription), in which case only a READ role assignment is made there.
//
//   az deployment group create -g <group> --template-file infra/main.bicep \
//     --parameters infra/main.parameters.json --parameters namePrefix=acexp
//
// Modules, one per concern: identity, storage (app), segment-storage (only when no existing account
// is given), keyvault, monitoring, functionapp, rbac (+ segment-rbac at the segment account), events
// (system topic + subscriptions at the segment account, events-rbac for its role), alerts.
targetScope = 'resourceGroup'

@description('Short prefix of every resource name (2-8 lowercase letters or digits).')
@minLength(2)
@maxLength(8)
param namePrefix string = 'acexp'

@description('Azure region of every resource (Flex Consumption must be available there).')
param location string = resourceGroup().location

@description('Resource id of an existing storage account holding the segment snapshots (e.g. /subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.Storage/storageAccounts/<name>); it may be in another resource group or subscription. Empty: a new, empty account is created here.')
param segmentStorageAccountId string = ''

@description('Container of the segment storage account that exports write their feedback folder into (an export\'s feedback.container; it must exist): the app gets Storage Blob Data Contributor on that container only. Empty: no feedback folders.')
param feedbackContainer string = ''

@description('Containers of the segment storage account that exports read: Event Grid sends their model.json and .csv BlobCreated events to the app, so onRefresh exports run seconds after a refresh.')
param segmentContainers array = [
  'customer-insights'
]

@description('Create the Event Grid system topic and subscriptions for refresh events. Azure allows one system topic per storage account: false when the segment account already has one (docs/deploy.md); onRefresh exports then run at the timer\'s next check.')
param enableRefreshEvents bool = true

@description('NCRONTAB schedule (with seconds, UTC) of the timer: how often it checks the exports (catching up on lost refresh events) and the schedule of scheduled exports that name none. Default: every 5 minutes.')
param exportSchedule string = '0 */5 * * * *'

@description('Seconds a plain CSV segment folder (no model.json) must get no new file before its snapshot counts as complete and onRefresh exports of it are queued.')
@minValue(1)
@maxValue(86400)
param csvQuietSeconds int = 300

@description('How the HTTP API authenticates callers: key (function keys) or entra (App Service Authentication with Entra ID).')
@allowed([
  'key'
  'entra'
])
param authMode string = 'key'

@description('Entra ID application (client) id of the API; required when authMode is entra.')
param entraClientId string = ''

@description('Entra ID tenant of the API application (default: the deployment tenant).')
param entraTenantId string = tenant().tenantId

@description('ActiveCampaign API requests per second, per account (ActiveCampaign allows 5).')
param requestsPerSecond string = '5'

@description('ActiveCampaign bulk imports per minute, per account.')
param bulkImportsPerMinute string = '100'

@description('Share (above 0, at most 1) of the request rate the app takes; the rest is left to the account\'s other integrations.')
param requestShare string = '0.8'

@description('Extra ActiveCampaign API host suffixes, comma-separated (e.g. ".api-us2.com"). Empty: the built-in list.')
param allowedHostSuffixes string = ''

@description('Seconds a run works before it checkpoints and continues in a new invocation. Must stay below functionTimeout in host.json (30 min).')
@minValue(60)
@maxValue(1680)
param runTimeBudgetSeconds int = 1500

@description('Seconds a secret read from Key Vault is cached (a rotated key is picked up after at most this long).')
@minValue(0)
@maxValue(86400)
param secretCacheSeconds int = 300

@description('Run records kept per export, with their reports and rejected rows (personal data); older ones are deleted.')
@minValue(1)
@maxValue(100000)
param runsKeptPerExport int = 100

@description('Days the rejected rows of a run (personal data) are kept; the timer deletes older ones.')
@minValue(1)
@maxValue(3650)
param rejectedRowsRetentionDays int = 30

@description('Upper bound of instances the app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Who the alerts notify: {"emails": ["ops@example.com"], "webhookUrl": "https://..."} (both optional; secure, since a webhook URL often carries a token). Neither: the alerts only show in the portal.')
@secure()
param alertNotify object = {}

@description('A run that ends with more than this percentage of its rows rejected, or of its sent contacts refused by ActiveCampaign, alerts.')
@minValue(0)
@maxValue(100)
param alertMaxBadSharePercent int = 10

@description('An enabled export with an unexported snapshot that has not succeeded for more than this many hours alerts.')
@minValue(1)
@maxValue(720)
param alertStaleAfterHours int = 24


@description('Object id of the deploying user or principal: granted Key Vault Secrets Officer (to store the first API key) and, on a new segment account, Storage Blob Data Contributor (to upload snapshots). Empty: no role for the deployer.')
param deployerPrincipalId string = ''

@description('Type of deployerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

@description('Tags for every resource.')
param tags object = {
  app: 'activecampaign-segment-export'
}

var token = toLower(uniqueString(subscription().id, resourceGroup().id, namePrefix))
var functionAppName = 'func-${namePrefix}-${token}'
var deploymentContainerName = 'deployment-package'
var createSegmentStorage = empty(segmentStorageAccountId)
// An existing account's id: /subscriptions/{0}/resourceGroups/{2}/providers/Microsoft.Storage/storageAccounts/{4}
// (indexes into the split below, whose first element is the empty string before the leading "/").
var segmentIdParts = split(segmentStorageAccountId, '/')
var newSegmentStorageName = take('st${namePrefix}seg${token}', 24)
var segmentSubscriptionId = createSegmentStorage ? subscription().subscriptionId : segmentIdParts[2]
var segmentResourceGroupName = createSegmentStorage ? resourceGroup().name : segmentIdParts[4]
var segmentStorageName = createSegmentStorage ? newSegmentStorageName : segmentIdParts[8]
var refreshEvents = enableRefreshEvents && !empty(segmentContainers)

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'id-${namePrefix}-${token}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: take('st${namePrefix}${token}', 24)
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module segmentStorage 'modules/segment-storage.bicep' = if (createSegmentStorage) {
  name: 'segment-storage'
  params: {
    name: newSegmentStorageName
    location: location
    tags: tags
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: take('kv-${namePrefix}-${token}', 24)
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${namePrefix}-${token}'
    appInsightsName: 'appi-${namePrefix}-${token}'
    location: location
    tags: tags
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

module segmentRbac 'modules/segment-rbac.bicep' = {
  name: 'segment-rbac'
  scope: resourceGroup(segmentSubscriptionId, segmentResourceGroupName)
  params: {
    storageAccountName: segmentStorageName
    principalId: identity.outputs.principalId
    feedbackContainerName: feedbackContainer
  }
  dependsOn: [
    segmentStorage
  ]
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: functionAppName
    planName: 'plan-${namePrefix}-${token}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    segmentsBlobEndpoint: 'https://${segmentStorageName}.blob.${environment().suffixes.storage}/'
    keyVaultUri: keyVault.outputs.uri
    appInsightsConnectionString: monitoring.outputs.connectionString
    exportSchedule: exportSchedule
    csvQuietSeconds: csvQuietSeconds
    authMode: authMode
    entraClientId: entraClientId
    entraTenantId: entraTenantId
    requestsPerSecond: requestsPerSecond
    bulkImportsPerMinute: bulkImportsPerMinute
    requestShare: requestShare
    allowedHostSuffixes: allowedHostSuffixes
    runTimeBudgetSeconds: runTimeBudgetSeconds
    secretCacheSeconds: secretCacheSeconds
    runsKeptPerExport: runsKeptPerExport
    rejectedRowsRetentionDays: rejectedRowsRetentionDays
    maximumInstanceCount: maximumInstanceCount
  }
  // The host starts as soon as the site exists: let it find its storage roles in place.
  dependsOn: [
    rbac
    segmentRbac
  ]
}

// Refresh events: topic on the segment account (its resource group), the role Event Grid needs on the
// event queue, then the subscriptions (after the role, or the first deliveries would be refused).
module eventsTopic 'modules/events.bicep' = if (refreshEvents) {
  name: 'events-topic'
  scope: resourceGroup(segmentSubscriptionId, segmentResourceGroupName)
  params: {
    storageAccountName: segmentStorageName
    topicName: 'evgt-${namePrefix}-${token}'
    tags: tags
  }
  dependsOn: [
    segmentStorage
  ]
}

module eventsRbac 'modules/events-rbac.bicep' = if (refreshEvents) {
  name: 'events-rbac'
  params: {
    storageAccountName: storage.outputs.name
    queueName: storage.outputs.eventsQueueName
    topicPrincipalId: eventsTopic.outputs.principalId
  }
}

module eventsSubscriptions 'modules/events-subscriptions.bicep' = if (refreshEvents) {
  name: 'events-subscriptions'
  scope: resourceGroup(segmentSubscriptionId, segmentResourceGroupName)
  params: {
    topicName: eventsTopic.outputs.topicName
    containers: segmentContainers
    queueStorageAccountId: storage.outputs.id
    queueName: storage.outputs.eventsQueueName
  }
  dependsOn: [
    eventsRbac
  ]
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    namePrefix: 'alert-${namePrefix}'
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    notify: alertNotify
    maxBadSharePercent: alertMaxBadSharePercent
    staleAfterHours: alertStaleAfterHours
  }
}

output functionAppName string = functionApp.outputs.name
output functionAppUrl string = 'https://${functionApp.outputs.defaultHostName}'
output keyVaultUri string = keyVault.outputs.uri
output keyVaultName string = keyVault.outputs.name
output identityClientId string = identity.outputs.clientId
output appStorageAccountName string = storage.outputs.name
output segmentStorageAccountName string = segmentStorageName
output appInsightsName string = monitoring.outputs.appInsightsName
