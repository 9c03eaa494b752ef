// One Event Grid subscription per segment container: BlobCreated events of model.json and .csv
// blobs, delivered with the topic's identity to the app's refresh-event queue (Event Grid event
// schema; functions/events.py reads it). The filters drop everything else before it is delivered:
// other containers, other files, and blob writes that are not complete yet (only PutBlob,
// PutBlockList, CopyBlob, on Data Lake accounts FlushWithClose, and SftpCommit for a file uploaded
// over SFTP, as plain CSV folders often are, create a whole blob). String filters are
// case-insensitive, so '.csv' also matches '.CSV'.

@description('Name of the system topic on the segment storage account (in this deployment scope).')
param topicName string

@description('Containers of the segment account the exports read.')
param containers array

@description('Resource id of the app storage account holding the queue.')
param queueStorageAccountId string

@description('The refresh-event queue.')
param queueName string

@description('Seconds an event waits on the queue before it expires (the timer catches up on any lost event).')
@minValue(60)
@maxValue(604800)
param queueMessageTimeToLiveInSeconds int = 86400

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource subscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = [
  for container in containers: {
    parent: topic
    name: take('segments-${container}', 64)
    properties: {
      eventDeliverySchema: 'EventGridSchema'
      deliveryWithResourceIdentity: {
        identity: {
          type: 'SystemAssigned'
        }
        destination: {
          endpointType: 'StorageQueue'
          properties: {
            resourceId: queueStorageAccountId
            queueName: queueName
            queueMessageTimeToLiveInSeconds: queueMessageTimeToLiveInSeconds
          }
        }
      }
      filter: {
        includedEventTypes: [
          'Microsoft.Storage.BlobCreated'
        ]
        subjectBeginsWith: '/blobServices/default/containers/${container}/blobs/'
        advancedFilters: [
          {
            operatorType: 'StringEndsWith'
            key: 'subject'
            values: [
              '/model.json'
              '.csv'
            ]
          }
          {
            operatorType: 'StringIn'
            key: 'data.api'
            values: [
              'PutBlob'
              'PutBlockList'
              'CopyBlob'
              'FlushWithClose'
              'SftpCommit'
            ]
          }
        ]
      }
      retryPolicy: {
        maxDeliveryAttempts: 30
        eventTimeToLiveInMinutes: 1440
      }
    }
  }
]

output subscriptionNames array = [for (container, i) in containers: subscriptions[i].name]
