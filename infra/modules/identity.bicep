// The function app's user-assigned managed identity: every data-plane call (storage, Key Vault,
// Application Insights ingestion) authenticates as this identity, so no key or connection string
// with a secret exists anywhere in the deployment.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
