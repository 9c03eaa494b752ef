// READ-only access for the app's identity to the segment storage account. Deployed at the resource
// group of that account, which may be another resource group or subscription than the app's: the
// deploying principal needs Microsoft.Authorization/roleAssignments/write there (Owner or User
// Access Administrator on the account or its group).

@description('Name of the (existing) segment storage account in this deployment scope.')
param storageAccountName string

@description('Principal (object) id of the function app identity.')
param principalId string

@description('Container of this account that exports write their feedback folder into (an export\'s feedback.container), or empty for none: the app may write there and nowhere else in the account.')
param feedbackContainerName string = ''

// Storage Blob Data Reader: list and read blobs, nothing else. The app never writes segments.
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
// Storage Blob Data Contributor, scoped to the feedback container only (issue 26).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource segmentReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, storageBlobDataReader)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource feedbackContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: empty(feedbackContainerName) ? 'unused' : feedbackContainerName
}

resource feedbackWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(feedbackContainerName)) {
  name: guid(feedbackContainer.id, principalId, storageBlobDataContributor)
  scope: feedbackContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
