// Least-privilege data-plane roles of the function app identity on the resources of this resource
// group (the segment account's READ role is in segment-rbac.bicep, at that account's scope).
// Assignment names are guid(scope id, principal id, role id): stable, so redeploying is a no-op.

@description('Principal (object) id of the function app identity.')
param principalId string

@description('App storage account (AzureWebJobsStorage).')
param storageAccountName string

@description('Key Vault holding the connection API keys.')
param keyVaultName string

@description('Application Insights component.')
param appInsightsName string

@description('Object id of the deploying user or principal, granted Key Vault Secrets Officer to store the first API key. Empty: none.')
param deployerPrincipalId string = ''

@description('Type of deployerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

// Role definition ids (built-in roles, the same in every tenant).
// Storage Blob Data Owner: the Functions host on Flex Consumption needs it on AzureWebJobsStorage
// (blob leases for timer/singleton locks, the deployment package); the app's own blobs live there too.
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// Storage Queue Data Contributor: the queue trigger reads/deletes run messages; the API enqueues them.
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// No Storage Table role: neither the app nor its triggers use tables (no Durable Functions).
// Key Vault Secrets Officer, not Secrets User: the HTTP API creates, rotates and deletes the
// ActiveCampaign API key of each connection it manages (secrets.py set/delete), which needs
// write access to secrets. It grants nothing on keys or certificates, nor on the vault itself.
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
// Monitoring Metrics Publisher: Entra ID-authenticated ingestion into Application Insights
// (local auth is disabled).
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The deployer (optional): Secrets Officer on the vault so scripts/deploy.sh can store the first
// ActiveCampaign API key (the vault uses RBAC; being Owner of the group grants no secret access).
resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}
