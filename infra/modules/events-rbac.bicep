// The one role Event Grid needs: Storage Queue Data Message Sender, for the system topic's
// identity, on the refresh-event queue only (not the account: it cannot touch the run queue).

@description('App storage account (AzureWebJobsStorage) holding the event queue.')
param storageAccountName string

@description('The refresh-event queue (shared/storage.py SEGMENT_EVENTS_QUEUE).')
param queueName string

@description('Principal (object) id of the system topic identity.')
param topicPrincipalId string

// Storage Queue Data Message Sender: add messages, nothing else (no read, no delete).
var storageQueueDataMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: queueName
}

resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, topicPrincipalId, storageQueueDataMessageSender)
  scope: queue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSender)
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
  }
}
