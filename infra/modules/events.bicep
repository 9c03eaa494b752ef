// Refresh events: an Event Grid system topic on the segment storage account, created in that
// account's resource group (this module's scope, which may be another group or subscription than
// the app's). Its system-assigned identity delivers the events to the app's queue (no keys, no
// webhook handshake): it gets Storage Queue Data Message Sender on that queue (events-rbac.bicep),
// and the subscriptions are made once that role exists (events-subscriptions.bicep).
// Azure allows one system topic per storage account: if the account already has one, deploy with
// enableRefreshEvents=false and subscribe that topic by hand (docs/deploy.md).

@description('Name of the (existing) segment storage account in this deployment scope.')
param storageAccountName string

@description('Name of the system topic.')
param topicName string

@description('Tags for every resource.')
param tags object = {}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: topicName
  // A system topic lives where its source account lives.
  location: account.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output topicName string = topic.name
output principalId string = topic.identity.principalId
