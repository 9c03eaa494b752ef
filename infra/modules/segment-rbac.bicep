// READ-only access for the app's identity to the segment storage account. Deployed at the resource
// group of that account, which may be another resource group or subscription than the app's: the
// deploying principal needs Microsoft.Authorization/roleAssignments/write there (Owner or User
// Access Administrator on the account or its group).

@description('Name of the (existing) segment storage account in this deployment scope.')
param storageAccountName string

@description('Principal (object) id of the function app identity.')
param principalId string

// Storage Blob Data Reader: list and read blobs, nothing else. The app never writes segments.
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'

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
