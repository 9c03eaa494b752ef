// The app's own storage account (AzureWebJobsStorage): Functions host state (timer locks, queue
// trigger), the deployment package of the Flex Consumption app, and the app's data: container
// `activecampaign-export` (configuration, delivered state, checkpoints, run records and reports) and
// the run queue `export-runs` (+ `export-runs-poison`) and the refresh-event queue `segment-events`.
// Names: shared/storage.py.
// Shared keys are off: only Entra ID (the managed identity, or a signed-in user with a data role).

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Blob container holding the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Blob container of the app data (shared/storage.py APP_CONTAINER).')
param appContainerName string = 'activecampaign-export'

@description('Run queue (shared/storage.py RUNS_QUEUE); its poison queue is "<name>-poison".')
param runsQueueName string = 'export-runs'

@description('Refresh-event queue (shared/storage.py SEGMENT_EVENTS_QUEUE): Event Grid writes BlobCreated events of the segment account here.')
param eventsQueueName string = 'segment-events'

@description('Days a deleted blob or container can be restored.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  // checkov:skip=CKV_AZURE_35: The Flex Consumption app is not VNet-integrated, so it reaches storage over the public endpoint; shared keys are off and every request needs an Entra ID token with a data role.
  // checkov:skip=CKV_AZURE_59: Same: public network access stays on for the non-integrated app; anonymous and key access are both disabled.
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // checkov:skip=CKV_AZURE_206: LRS is enough: everything in this account is re-creatable (segments stay in their own account; state can be rebuilt by a full resync).
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource appContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: appContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource runsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: runsQueueName
}

resource runsPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${runsQueueName}-poison'
}

resource eventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: eventsQueueName
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output deploymentContainerName string = deploymentContainer.name
output eventsQueueName string = eventsQueue.name
